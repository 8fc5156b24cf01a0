"""The registry: built-in and third-party backend types found by name through one mechanism."""

from __future__ import annotations

from collections.abc import Iterator
from importlib.metadata import entry_points

import pytest

import llmclient
from llmclient import BackendConfig, ChatBackend, ChatRequest, ChatResponse, ConfigError
from llmclient.registry import ENTRY_POINT_GROUP, get_factory, is_backend_type, register, unregister

BUILT_IN = ["openai", "openrouter", "vllm", "ollama", "openai-compatible", "huggingface", "hf"]


class ShoutBackend(ChatBackend):
    """A third-party backend: answers in capitals."""

    type_name = "shout"

    def __init__(self, *, model: str, name: str | None, volume: int) -> None:
        super().__init__(model=model, name=name)
        self.volume = volume

    def _chat(self, request: ChatRequest) -> ChatResponse:
        return ChatResponse(text=request.messages[-1].text.upper() + "!" * self.volume, model=self.model)


def shout_from_config(config: BackendConfig) -> ShoutBackend:
    return ShoutBackend(
        model=config.model, name=config.name or None, volume=int(config.options.get("volume", 1))
    )


@pytest.fixture
def shout() -> Iterator[str]:
    register("mytype", shout_from_config)
    yield "mytype"
    unregister("mytype")


@pytest.mark.parametrize("type_name", BUILT_IN)
def test_built_in_types_are_listed(type_name: str) -> None:
    assert type_name in llmclient.backend_types()
    assert is_backend_type(type_name)


def test_built_in_types_come_from_the_entry_point_group() -> None:
    declared = {ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)}
    assert set(BUILT_IN) <= declared
    assert set(declared) <= set(llmclient.backend_types())


def test_backend_types_are_sorted_and_unique() -> None:
    types = llmclient.backend_types()
    assert types == sorted(set(types))


def test_a_type_registered_at_run_time_is_listed_and_built_by_load(shout: str) -> None:
    assert shout in llmclient.backend_types()
    with llmclient.load({"type": shout, "model": "m1", "name": "loud", "volume": 3}) as backend:
        assert isinstance(backend, ShoutBackend)
        reply = backend.chat("hello")
    assert (reply.text, reply.model, reply.backend) == ("HELLO!!!", "m1", "loud")


def test_a_registered_type_works_from_a_provider_model_string(shout: str) -> None:
    with llmclient.load(f"{shout}:tiny") as backend:
        assert backend.model == "tiny"
        assert backend.chat("hi").text == "HI!"


def test_unregister_removes_the_type() -> None:
    register("temporary", shout_from_config)
    assert is_backend_type("temporary")
    unregister("temporary")
    assert not is_backend_type("temporary")
    assert "temporary" not in llmclient.backend_types()
    unregister("temporary")  # removing twice is harmless


def test_a_registered_type_takes_precedence_over_an_entry_point() -> None:
    register("vllm", shout_from_config)
    try:
        assert get_factory("vllm") is shout_from_config
    finally:
        unregister("vllm")
    assert get_factory("vllm") is not shout_from_config


def test_an_entry_point_factory_is_loaded_by_name() -> None:
    declared = {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}
    openai = declared["openai"]
    try:
        factory = get_factory("openai")
    except ImportError:
        pytest.skip(f"{openai.value} is not importable yet")
    assert factory is openai.load()


def test_an_unknown_type_lists_the_known_types_with_a_suggestion() -> None:
    with pytest.raises(ConfigError) as info:
        get_factory("openruter")
    message = str(info.value)
    assert "unknown backend type 'openruter'; did you mean 'openrouter'?" in message
    for name in BUILT_IN:
        assert name in message
    assert ENTRY_POINT_GROUP in message


def test_load_of_an_unknown_type_is_a_config_error() -> None:
    with pytest.raises(
        ConfigError, match=r"unknown backend type 'huggingfase'; did you mean 'huggingface'\?"
    ):
        llmclient.load({"type": "huggingfase", "model": "m"})


def test_an_unknown_type_far_from_any_name_gets_no_suggestion() -> None:
    with pytest.raises(ConfigError) as info:
        get_factory("zzzzzz")
    assert "did you mean" not in str(info.value)
