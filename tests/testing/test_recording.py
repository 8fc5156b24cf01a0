"""RecordingBackend, ReplayBackend, cassette() and CassetteSession, recorded from real HTTP against the
loopback server through the OpenAI-compatible backend, and replayed with the server gone.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml

import llmclient
from llmclient import (
    BackendConfig,
    CassetteError,
    ChatBackend,
    ChatRequest,
    ChatResponse,
    ContextWindowExceededError,
    LLMClientError,
    StreamDelta,
    Usage,
)
from llmclient.backends.openai import OpenAICompatibleBackend
from llmclient.errors import BackendUnavailableError, ConfigError
from llmclient.registry import register, unregister
from llmclient.retry import RetryPolicy
from llmclient.testing import (
    CassetteSession,
    FunctionBackend,
    RecordingBackend,
    ReplayBackend,
    block_real_backends,
    cassette,
)
from llmclient.testing.cassettes.entries import deltas_from_dicts, deltas_to_dicts
from llmclient.testing.server import LoopbackServer, OpenAIHandler, Request, error_reply

API_KEY = "sk-test-0f1e2d3c4b5a-SECRET"
MESSAGES = [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "Capital of France?"}]
QUESTIONS = ["one", "two", "three"]


def echo(body: dict[str, Any]) -> str:
    return f"echo: {body['messages'][-1]['content']}"


@pytest.fixture
def server() -> Iterator[LoopbackServer]:
    with LoopbackServer(OpenAIHandler(echo)) as srv:
        yield srv


def remote(server: LoopbackServer) -> OpenAICompatibleBackend:
    """The real backend replies are recorded from."""
    return OpenAICompatibleBackend(
        model="test-model",
        base_url=server.base_url,
        api_key=API_KEY,
        name="remote",
        retry=RetryPolicy(max_attempts=1),
    )


def timeless(value: Any) -> Any:
    """``value`` with every reply's latency zeroed: replay keeps everything else."""
    if isinstance(value, ChatResponse):
        return replace(value, latency=0.0)
    if isinstance(value, (list, tuple)):
        return [timeless(v) for v in value]
    return value


def do_chat(backend: ChatBackend) -> Any:
    return backend.chat(MESSAGES, max_new_tokens=16, temperature=0)


def do_achat(backend: ChatBackend) -> Any:
    return asyncio.run(backend.achat(MESSAGES, max_new_tokens=16, temperature=0))


def do_stream(backend: ChatBackend) -> Any:
    stream = backend.stream(MESSAGES, max_new_tokens=16)
    return list(stream), stream.final()


def do_astream(backend: ChatBackend) -> Any:
    async def run() -> Any:
        stream = backend.astream(MESSAGES, max_new_tokens=16)
        return [d async for d in stream], await stream.final()

    return asyncio.run(run())


def do_chat_many(backend: ChatBackend) -> Any:
    return backend.chat_many(QUESTIONS, concurrency=2, temperature=0)


def do_achat_many(backend: ChatBackend) -> Any:
    return asyncio.run(backend.achat_many(QUESTIONS, temperature=0))


CALLS: dict[str, Callable[[ChatBackend], Any]] = {
    "chat": do_chat,
    "achat": do_achat,
    "stream": do_stream,
    "astream": do_astream,
    "chat_many": do_chat_many,
    "achat_many": do_achat_many,
}


@pytest.mark.parametrize("call", sorted(CALLS))
def test_replayed_replies_equal_the_recorded_ones_except_latency(tmp_path: Path, call: str) -> None:
    path = tmp_path / "c.yaml"
    with (
        LoopbackServer(OpenAIHandler(echo)) as server,
        cassette(path, remote(server), mode="once") as backend,
    ):
        recorded = CALLS[call](backend)
    assert len(server.requests) >= 1
    with cassette(path, name="remote") as replay:  # the server is gone
        replayed = CALLS[call](replay)
    assert timeless(replayed) == timeless(recorded)
    assert len(yaml.safe_load(path.read_text())["interactions"]) == len(server.requests)


def test_streams_replay_as_the_recorded_deltas(tmp_path: Path, server: LoopbackServer) -> None:
    path = tmp_path / "c.yaml"
    with cassette(path, remote(server), mode="once") as backend:
        recorded = list(backend.stream("Tell me a story"))
    assert len(recorded) > 3
    entry = yaml.safe_load(path.read_text())["interactions"][0]
    assert [d["text"] for d in entry["stream"]] == [d.text for d in recorded]
    assert entry["request"]["stream"] is True
    with cassette(path) as replay:
        assert list(replay.stream("Tell me a story")) == recorded


def test_replay_in_a_fresh_process_imports_no_model_and_no_http_stack(
    tmp_path: Path, server: LoopbackServer
) -> None:
    path = tmp_path / "c.yaml"
    with cassette(path, remote(server), mode="once") as backend:
        expected = {
            "chat": backend.chat("chat").text,
            "stream": [d.text for d in backend.stream("stream")],
            "many": [r.text for r in backend.chat_many(QUESTIONS)],
            "achat": asyncio.run(backend.achat("achat")).text,
        }
    script = textwrap.dedent(
        f"""
        import asyncio, json, sys
        from llmclient.testing.recording import cassette
        with cassette({str(path)!r}) as backend:
            out = {{
                "chat": backend.chat("chat").text,
                "stream": [d.text for d in backend.stream("stream")],
                "many": [r.text for r in backend.chat_many({QUESTIONS!r})],
                "achat": asyncio.run(backend.achat("achat")).text,
            }}
        heavy = {{"torch", "transformers", "tokenizers", "httpx2", "httpx", "aiohttp", "openai", "requests",
                 "urllib3", "tenacity"}}
        loaded = {{m.split(".")[0] for m in sys.modules}}
        http = "http.client" in sys.modules
        print(json.dumps({{"out": out, "heavy": sorted(loaded & heavy), "http": http}}))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    result = json.loads(done.stdout)
    assert result == {"out": expected, "heavy": [], "http": False}


def test_llmclient_testing_exports_the_cassette_helper_and_loads_no_module_until_asked() -> None:
    script = textwrap.dedent(
        """
        import importlib, json, pkgutil, sys
        import llmclient.testing
        loaded = sorted(m for m in sys.modules if m.startswith("llmclient.testing."))
        for module in pkgutil.iter_modules(llmclient.testing.__path__):  # no submodule shadows a name
            importlib.import_module(f"llmclient.testing.{module.name}")
        from llmclient.testing import cassette
        from llmclient.testing.recording import cassette as helper
        print(json.dumps({"loaded": loaded, "exported": cassette is helper}))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    assert json.loads(done.stdout) == {"loaded": [], "exported": True}


# -- record modes -----------------------------------------------------------------------------------


def test_mode_none_replays_only_and_a_miss_says_how_to_record(tmp_path: Path, server: LoopbackServer) -> None:
    with (
        cassette(tmp_path / "c.yaml", remote(server), mode="none") as backend,
        pytest.raises(CassetteError, match="Record it with mode 'once' or 'new_episodes'"),
    ):
        backend.chat("Hi")
    assert server.requests == []
    assert not (tmp_path / "c.yaml").exists()


def test_mode_once_records_a_new_cassette_then_only_replays(tmp_path: Path, server: LoopbackServer) -> None:
    path = tmp_path / "c.yaml"
    with cassette(path, remote(server), mode="once") as backend:
        backend.chat("first")
    with cassette(path, remote(server), mode="once") as backend:
        assert backend.chat("first").text == "echo: first"
        with pytest.raises(
            CassetteError, match="Mode 'once' records only into a cassette that does not exist"
        ):
            backend.chat("second")
    assert len(server.requests) == 1


def test_mode_new_episodes_records_only_what_is_missing(tmp_path: Path, server: LoopbackServer) -> None:
    path = tmp_path / "c.yaml"
    with cassette(path, remote(server), mode="new_episodes") as backend:
        backend.chat("first")
    with cassette(path, remote(server), mode="new_episodes") as backend:
        assert backend.chat("first").text == "echo: first"
        assert backend.chat("second").text == "echo: second"
    assert [r.json()["messages"][0]["content"] for r in server.requests] == ["first", "second"]
    assert len(yaml.safe_load(path.read_text())["interactions"]) == 2


def test_mode_all_re_records_everything_and_drops_the_old_entries(
    tmp_path: Path, server: LoopbackServer
) -> None:
    path = tmp_path / "c.yaml"
    with cassette(path, remote(server), mode="once") as backend:
        backend.chat("old")
        backend.chat("kept")
    with cassette(path, remote(server), mode="all") as backend:
        backend.chat("kept")
    assert len(server.requests) == 3
    entries = yaml.safe_load(path.read_text())["interactions"]
    assert [e["request"]["messages"][0]["content"] for e in entries] == ["kept"]


def test_replay_only_helper_refuses_the_recording_modes(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="pass the backend to record them from"):
        cassette(tmp_path / "c.yaml", mode="all")


# -- what is recorded -------------------------------------------------------------------------------


def test_a_stream_closed_early_is_not_recorded(tmp_path: Path, server: LoopbackServer) -> None:
    path = tmp_path / "c.yaml"
    with cassette(path, remote(server), mode="once") as backend, backend.stream("a long story") as stream:
        next(stream)
    assert not path.exists()


def test_a_refused_request_is_recorded_and_raised_again_on_replay(tmp_path: Path) -> None:
    message = "This model's maximum context length is 8192 tokens. However, you requested 9000 tokens."
    refusal = error_reply(400, message, code="context_length_exceeded")
    path = tmp_path / "c.yaml"
    with (
        LoopbackServer(lambda request: refusal) as server,
        cassette(path, remote(server), mode="once") as backend,
    ):
        with pytest.raises(ContextWindowExceededError) as recorded:
            backend.chat("too long")
        with pytest.raises(ContextWindowExceededError):
            list(backend.stream("too long"))
    with cassette(path) as replay:
        with pytest.raises(ContextWindowExceededError) as replayed:
            replay.chat("too long")
        with pytest.raises(ContextWindowExceededError):
            list(replay.stream("too long"))
        (failed,) = replay.chat_many(["too long"], return_exceptions=True)
    for error in (replayed.value, failed):
        assert isinstance(error, ContextWindowExceededError)
        assert (error.message, error.status_code, error.provider_reason) == (
            recorded.value.message,
            400,
            "context_length_exceeded",
        )


def test_server_failures_are_not_recorded(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    failing = error_reply(503, "overloaded", type="server_error")
    with (
        LoopbackServer(lambda request: failing) as server,
        cassette(path, remote(server), mode="once") as backend,
        pytest.raises(BackendUnavailableError),
    ):
        backend.chat("Hi")
    assert not path.exists()


def test_a_planted_key_never_reaches_the_cassette_file(tmp_path: Path, server: LoopbackServer) -> None:
    path = tmp_path / "c.yaml"
    question = f"Is {API_KEY} a valid key?"
    with cassette(path, remote(server), mode="once") as backend:
        assert API_KEY in backend.chat(question).text  # the server echoes it back
        list(backend.stream(question))
    text = path.read_text()
    assert API_KEY not in text and "**scrubbed**" in text
    with cassette(path) as replay:
        assert replay.chat(question).text == "echo: Is **scrubbed** a valid key?"


def test_a_cassette_ignoring_the_seed_replays_across_seeds(tmp_path: Path, server: LoopbackServer) -> None:
    path = tmp_path / "c.yaml"
    with cassette(path, remote(server), mode="once", ignore=["seed"]) as backend:
        backend.chat("roll a die", seed=1, temperature=0.9)
    with cassette(path, ignore=["seed"]) as replay:
        assert replay.chat("roll a die", seed=2, temperature=0.9).text == "echo: roll a die"
    with cassette(path) as strict, pytest.raises(CassetteError, match=r"params\.seed: recorded 1, got 2"):
        strict.chat("roll a die", seed=2, temperature=0.9)


def test_ignoring_stream_lets_chat_and_stream_share_recordings(
    tmp_path: Path, server: LoopbackServer
) -> None:
    path = tmp_path / "c.yaml"
    with cassette(path, remote(server), mode="once") as backend:
        chatted = backend.chat("chatted")
        streamed = backend.stream("streamed").final()
    with cassette(path, ignore=["stream"], name="remote") as replay:
        (delta,) = list(replay.stream("chatted"))
        assert (delta.text, delta.finish_reason, delta.usage) == (chatted.text, "stop", chatted.usage)
        joined = replay.chat("streamed")
    assert timeless(joined) == timeless(streamed)


def test_the_replay_backend_takes_the_recorded_name_and_model(tmp_path: Path, server: LoopbackServer) -> None:
    with cassette(tmp_path / "c.yaml", remote(server), mode="once") as backend:
        backend.chat("Hi")
    replay = ReplayBackend(tmp_path / "c.yaml")
    assert (replay.name, replay.model, replay.type_name) == ("remote", "test-model", "replay")
    assert replay.chat("Hi").backend == "remote"


def test_a_replay_for_another_model_misses(tmp_path: Path, server: LoopbackServer) -> None:
    with cassette(tmp_path / "c.yaml", remote(server), mode="once") as backend:
        backend.chat("Hi")
    assert ReplayBackend(tmp_path / "c.yaml", model="test-model").chat("Hi").text == "echo: Hi"
    with pytest.raises(CassetteError, match="model: recorded 'test-model', got 'other-model'"):
        ReplayBackend(tmp_path / "c.yaml", model="other-model").chat("Hi")


# -- building the real backend only to record ----------------------------------------------------


def test_a_backend_factory_is_called_only_when_a_reply_must_be_recorded(
    tmp_path: Path, server: LoopbackServer
) -> None:
    built: list[OpenAICompatibleBackend] = []

    def build() -> OpenAICompatibleBackend:
        built.append(remote(server))
        return built[-1]

    path = tmp_path / "c.yaml"
    with cassette(path, build, mode="once") as backend:
        backend.chat("Hi")
    with cassette(path, build, mode="new_episodes") as backend:
        backend.chat("Hi")
        assert len(built) == 1  # replayed: nothing built
        backend.chat("new")
        backend.chat("newer")
    assert len(built) == 2  # built once for both new requests


class BatchingEcho(ChatBackend):
    """A sync-native backend (like a local model) that answers a batch in one call."""

    type_name = "batching-echo"

    def __init__(self) -> None:
        super().__init__(model="tiny", name="local")
        self.batches: list[int] = []

    def _chat(self, request: ChatRequest) -> ChatResponse:
        text = request.messages[-1].text
        return ChatResponse(text=text.upper(), finish_reason="stop", usage=Usage(3, 1), model=self.model)

    async def _achat_many(
        self, requests: Sequence[ChatRequest], concurrency: int
    ) -> list[ChatResponse | LLMClientError]:
        self.batches.append(len(requests))
        return await super()._achat_many(requests, concurrency)


def test_chat_many_sends_only_the_missing_requests_to_the_inner_batch(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    first = BatchingEcho()
    with cassette(path, first, mode="new_episodes") as backend:
        backend.chat_many(["a", "b"])
    second = BatchingEcho()
    with cassette(path, second, mode="new_episodes") as backend:
        replies = backend.chat_many(["a", "x", "b", "y", "z"])
    assert [r.text for r in replies] == ["A", "X", "B", "Y", "Z"]
    assert all(r.backend == "local" for r in replies)
    assert (first.batches, second.batches) == ([2], [3])


def test_concurrent_tasks_record_into_one_cassette(tmp_path: Path, server: LoopbackServer) -> None:
    path = tmp_path / "c.yaml"
    backend = RecordingBackend(remote(server), path, mode="new_episodes")

    async def record() -> list[ChatResponse]:
        return await asyncio.gather(*(backend.achat(f"question {n}") for n in range(20)))

    replies = asyncio.run(record())
    backend.close()
    assert sorted(r.text for r in replies) == sorted(f"echo: question {n}" for n in range(20))
    entries = yaml.safe_load(path.read_text())["interactions"]
    assert sorted(e["response"]["text"] for e in entries) == sorted(r.text for r in replies)


def test_a_session_keys_loaded_backends_on_their_configured_type_and_model(
    tmp_path: Path, server: LoopbackServer
) -> None:
    config = {"type": "openai-compatible", "model": "test-model", "base_url": server.base_url}
    recording = CassetteSession(tmp_path / "c.yaml", mode="once")
    assert recording.load(config, defaults={"max_new_tokens": 8}).chat("Hi").text == "echo: Hi"
    recording.close()
    (entry,) = yaml.safe_load((tmp_path / "c.yaml").read_text())["interactions"]
    assert entry["request"]["backend"] == "openai-compatible"
    assert entry["request"]["params"] == {"max_new_tokens": 8}
    assert server.requests[0].json()["max_tokens"] == 8

    nowhere = {**config, "base_url": "http://127.0.0.1:9/v1"}  # nothing listens: replay never sends
    replaying = CassetteSession(tmp_path / "c.yaml")
    assert replaying.load(nowhere, defaults={"max_new_tokens": 8}).chat("Hi").text == "echo: Hi"
    assert replaying.unused() == []
    with pytest.raises(CassetteError, match="model: recorded 'test-model', got 'other'"):
        replaying.load({**nowhere, "model": "other"}, defaults={"max_new_tokens": 8}).chat("Hi")
    replaying.close()


# -- keeping real backends out of tests ------------------------------------------------------------


def test_blocked_real_backends_cannot_be_loaded_but_can_be_built_to_record(
    tmp_path: Path, server: LoopbackServer
) -> None:
    config = {"type": "openai-compatible", "model": "test-model", "base_url": server.base_url}
    with block_real_backends("no real models in this test"):
        with pytest.raises(CassetteError, match="blocked: no real models in this test"):
            llmclient.load(config)
        session = CassetteSession(tmp_path / "c.yaml", mode="once")
        assert session.load(config).chat("Hi").text == "echo: Hi"
        session.close()
    with llmclient.load(config) as unblocked:  # the registry is as it was
        assert unblocked.chat("Hi").text == "echo: Hi"


def test_blocking_leaves_types_registered_at_run_time_alone(server: LoopbackServer) -> None:
    def stand_in(config: BackendConfig) -> ChatBackend:
        return remote(server)

    register("vllm", stand_in)
    try:
        with block_real_backends():
            with llmclient.load("vllm:any-model") as backend:
                assert backend.chat("Hi").text == "echo: Hi"
            with pytest.raises(CassetteError, match="is blocked"):
                llmclient.load("ollama:any-model")
        with llmclient.load("vllm:any-model") as backend:
            assert backend.name == "remote"
    finally:
        unregister("vllm")


def test_the_inner_backend_gets_its_own_defaults_under_the_call(tmp_path: Path) -> None:
    seen: list[dict[str, Any]] = []

    def handler(request: Request) -> Any:
        seen.append(request.json())
        return OpenAIHandler(echo)(request)

    with LoopbackServer(handler) as server:
        inner = OpenAICompatibleBackend(
            model="m",
            base_url=server.base_url,
            defaults=llmclient.GenerationParams(max_new_tokens=7, temperature=0.5),
        )
        with cassette(tmp_path / "c.yaml", lambda: inner, mode="once") as backend:
            backend.chat("Hi", temperature=0)
    assert (seen[0]["max_tokens"], seen[0]["temperature"]) == (7, 0)


def test_recorded_deltas_keep_their_details(tmp_path: Path) -> None:
    class Reasoner(ChatBackend):
        type_name = "reasoner"

        def _chat(self, request: ChatRequest) -> ChatResponse:
            raise NotImplementedError

        def _stream(self, request: ChatRequest) -> Iterator[StreamDelta]:
            yield StreamDelta(details={"reasoning": "thinking..."})
            yield StreamDelta(text="42", finish_reason="stop", usage=Usage(5, 1), details={"provider": "p"})

    path = tmp_path / "c.yaml"
    with cassette(path, Reasoner(model="r"), mode="once") as backend:
        recorded = backend.stream("?")
        deltas = list(recorded)
    with cassette(path, name="reasoner") as replay:
        replayed = replay.stream("?")
        assert list(replayed) == deltas
    assert timeless(replayed.final()) == timeless(recorded.final())
    assert replayed.final().details == {"reasoning": "thinking...", "provider": "p"}


def test_stream_details_are_written_only_where_they_change() -> None:
    same = {"id": "c1", "model": "m"}
    deltas = [
        StreamDelta(text="a", details=same),
        StreamDelta(text="b", details=dict(same)),
        StreamDelta(text="c"),
        StreamDelta(text="", finish_reason="stop", usage=Usage(2, 3), details=same),
    ]
    written = deltas_to_dicts(deltas)
    assert written == [
        {"text": "a", "details": same},
        {"text": "b"},
        {"text": "c", "details": {}},
        {
            "text": "",
            "finish_reason": "stop",
            "usage": {"prompt_tokens": 2, "completion_tokens": 3},
            "details": same,
        },
    ]
    assert deltas_from_dicts(written) == deltas


def test_a_replay_miss_in_an_existing_cassette_offers_new_episodes_not_once(tmp_path: Path) -> None:
    answering = FunctionBackend(lambda messages, params: "ok")
    recorded_once = cassette(tmp_path / "c.yaml", answering, mode="once")
    recorded_once.chat("first")
    recorded_once.close()
    for replaying in (
        ReplayBackend(tmp_path / "c.yaml"),
        cassette(tmp_path / "c.yaml", answering, mode="none"),
    ):
        with replaying as backend, pytest.raises(CassetteError) as info:
            backend.chat("second")
        message = str(info.value)
        assert "record the new request with mode 'new_episodes'" in message
        assert "re-record the whole cassette with mode 'all'" in message
        assert "'once'" not in message  # once would not record into this file
    assert len(answering.requests) == 1


def test_a_reply_holding_a_lone_surrogate_is_recorded_and_replayed(tmp_path: Path) -> None:
    half = "an emoji cut in half: \ud83d"
    path = tmp_path / "c.yaml"
    with cassette(path, FunctionBackend(lambda messages, params: half), mode="once") as backend:
        live = backend.chat("Hi")
        streamed = [d.text for d in backend.stream("Hi again")]
    assert live.text == half
    with cassette(path) as backend:
        assert timeless(backend.chat("Hi")) == timeless(live)
        assert [d.text for d in backend.stream("Hi again")] == streamed
