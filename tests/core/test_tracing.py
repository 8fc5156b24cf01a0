"""OpenTelemetry GenAI spans and metrics from ChatBackend, for every backend and call style.

Spans are read with the SDK's in-memory exporter (tests/core/conftest.py). The remote backend is
traced against the real loopback server; the local kind with FunctionBackend and a tiny real model.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from llmclient import ChatResponse, Usage
from llmclient.backends.openai import OpenAICompatibleBackend
from llmclient.errors import AuthenticationError, BackendUnavailableError, RateLimitError
from llmclient.testing import FunctionBackend
from llmclient.testing.server import LoopbackServer, OpenAIHandler
from llmclient.testing.server.replies import completion_chunks, error_reply, sse_reply

KEY = "sk-planted-secret-0123456789abcdef"


class LocalFunction(FunctionBackend):
    """A FunctionBackend declaring an in-process model, as the local backend does."""

    in_process = True


def reply(text: str = "Paris.") -> ChatResponse:
    return ChatResponse(
        text=text,
        finish_reason="stop",
        usage=Usage(prompt_tokens=7, completion_tokens=2),
        model="served-model",
        details={"id": "chatcmpl-1"},
    )


def only(spans: list[Any]) -> Any:
    assert len(spans) == 1, [s.name for s in spans]
    return spans[0]


def test_a_chat_is_one_span_with_the_genai_attributes(telemetry) -> None:
    from opentelemetry.trace import SpanKind

    backend = FunctionBackend(lambda m, p: reply(), model="tiny")
    backend.chat("Capital of France?", temperature=0.5, top_p=0.9, max_new_tokens=8, stop=["\n"], seed=3)
    span = only(telemetry.spans())
    assert span.name == "chat tiny"
    assert span.kind == SpanKind.CLIENT  # FunctionBackend does not say it runs in process
    a = dict(span.attributes)
    assert a["gen_ai.operation.name"] == "chat"
    assert a["gen_ai.provider.name"] == "function"
    assert a["gen_ai.request.model"] == "tiny"
    assert a["gen_ai.request.temperature"] == 0.5
    assert a["gen_ai.request.top_p"] == 0.9
    assert a["gen_ai.request.max_tokens"] == 8
    assert a["gen_ai.request.seed"] == 3
    assert list(a["gen_ai.request.stop_sequences"]) == ["\n"]
    assert a["gen_ai.response.id"] == "chatcmpl-1"
    assert a["gen_ai.response.model"] == "served-model"
    assert list(a["gen_ai.response.finish_reasons"]) == ["stop"]
    assert a["gen_ai.usage.input_tokens"] == 7
    assert a["gen_ai.usage.output_tokens"] == 2
    assert "server.address" not in a
    assert "gen_ai.input.messages" not in a and "gen_ai.output.messages" not in a  # off by default


def test_an_in_process_backend_gets_internal_spans(telemetry) -> None:
    from opentelemetry.trace import SpanKind

    LocalFunction(lambda m, p: "hi", model="local").chat("hello")
    assert only(telemetry.spans()).kind == SpanKind.INTERNAL


def test_the_metrics_record_duration_and_tokens(telemetry) -> None:
    FunctionBackend(lambda m, p: reply(), model="metered").chat("hello")
    metrics = telemetry.metrics()
    durations = metrics["gen_ai.client.operation.duration"]
    (duration,) = [p for p in durations if p.attributes["gen_ai.request.model"] == "metered"]
    assert duration.count == 1 and duration.attributes["gen_ai.response.model"] == "served-model"
    tokens = {p.attributes["gen_ai.token.type"]: p.sum for p in metrics["gen_ai.client.token.usage"]}
    assert tokens == {"input": 7, "output": 2}


def test_a_failure_sets_error_type_and_status(telemetry) -> None:
    from opentelemetry.trace import StatusCode

    def fail(messages: Any, params: Any) -> str:
        raise RateLimitError("slow down")

    with pytest.raises(RateLimitError):
        FunctionBackend(fail, model="m").chat("hello")
    span = only(telemetry.spans())
    assert span.attributes["error.type"] == "RateLimitError"
    assert span.status.status_code == StatusCode.ERROR


def test_a_reply_failing_its_format_is_an_error_with_its_usage(telemetry) -> None:
    from llmclient.errors import StructuredOutputError

    with pytest.raises(StructuredOutputError):
        backend = FunctionBackend(lambda m, p: reply("not json"), model="m")
        backend.chat("hello", response_format={"type": "object"})
    a = only(telemetry.spans()).attributes
    assert a["error.type"] == "StructuredOutputError"
    assert a["gen_ai.usage.output_tokens"] == 2  # it was paid for


async def test_achat_is_traced_and_current_inside_the_call(telemetry) -> None:
    from opentelemetry import trace

    seen: list[Any] = []

    async def answer(messages: Any, params: Any) -> str:
        seen.append(trace.get_current_span().get_span_context().span_id)
        return "hi"

    await FunctionBackend(answer, model="m").achat("hello")
    span = only(telemetry.spans())
    assert seen == [span.context.span_id]


@pytest.mark.parametrize("style", ["sync", "async"])
def test_a_stream_span_has_time_to_first_chunk_and_the_final_usage(telemetry, style: str) -> None:
    backend = FunctionBackend(lambda m, p: ["Hel", "lo"], model="m")
    if style == "sync":
        with backend.stream("hello") as stream:
            text = stream.final().text
    else:

        async def read() -> str:
            return (await backend.astream("hello").final()).text

        text = asyncio.run(read())
    assert text == "Hello"
    a = only(telemetry.spans()).attributes
    assert a["gen_ai.response.time_to_first_chunk"] >= 0
    assert list(a["gen_ai.response.finish_reasons"]) == ["stop"]


def test_a_stream_that_fails_midway_records_the_error(telemetry) -> None:
    def pieces(messages: Any, params: Any) -> Any:
        yield "Hel"
        raise BackendUnavailableError("cut")

    with pytest.raises(BackendUnavailableError):
        FunctionBackend(pieces, model="m").stream("hello").final()
    assert only(telemetry.spans()).attributes["error.type"] == "BackendUnavailableError"


@pytest.mark.parametrize("style", ["sync", "async"])
def test_each_chat_many_item_is_a_span(telemetry, style: str) -> None:
    def answer(messages: Any, params: Any) -> str:
        if messages[-1].text == "bad":
            raise RateLimitError("no")
        return messages[-1].text.upper()

    backend = FunctionBackend(answer, model="m")
    conversations = ["a", "bad", "c"]
    if style == "sync":
        backend.chat_many(conversations, return_exceptions=True)
    else:
        asyncio.run(backend.achat_many(conversations, return_exceptions=True))
    spans = telemetry.spans()
    assert [s.name for s in spans] == ["chat m"] * 3
    assert sorted(s.attributes.get("error.type", "") for s in spans) == ["", "", "RateLimitError"]


def test_content_is_captured_only_with_the_variable_and_redacted(telemetry, monkeypatch) -> None:
    backend = FunctionBackend(lambda m, p: f"echo {m[-1].text}", model="m")
    backend.chat("hello")
    assert "gen_ai.input.messages" not in only(telemetry.spans()).attributes
    telemetry.spans_exporter.clear()
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "true")
    backend.chat("hello")
    a = only(telemetry.spans()).attributes
    assert json.loads(a["gen_ai.input.messages"]) == [
        {"role": "user", "parts": [{"type": "text", "content": "hello"}]}
    ]
    output = json.loads(a["gen_ai.output.messages"])
    assert output[0]["parts"][0]["content"] == "echo hello" and output[0]["finish_reason"] == "stop"


def test_remote_spans_are_client_spans_naming_server_and_provider(telemetry, monkeypatch) -> None:
    from opentelemetry.trace import SpanKind

    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "true")
    with LoopbackServer(OpenAIHandler(f"key is {KEY}", model="gpt-x")) as server:
        backend = OpenAICompatibleBackend("gpt-x", base_url=server.base_url, api_key=KEY, preset="vllm")
        with backend:
            backend.chat(f"my key is {KEY}")
            with backend.stream("hi") as stream:
                stream.final()
    spans = telemetry.spans()
    assert len(spans) == 2
    for span in spans:
        a = dict(span.attributes)
        assert span.kind == SpanKind.CLIENT
        assert a["gen_ai.provider.name"] == "vllm"
        assert a["server.address"] == "127.0.0.1" and a["server.port"] == server.port
        assert a["gen_ai.usage.input_tokens"] > 0
        assert KEY not in json.dumps({k: str(v) for k, v in a.items()})  # planted in both directions
    assert "gen_ai.response.time_to_first_chunk" in spans[1].attributes


def test_a_remote_error_names_the_error_class_and_no_key(telemetry) -> None:
    with LoopbackServer(lambda request: error_reply(401, f"bad key {KEY}")) as server:
        backend = OpenAICompatibleBackend("m", base_url=server.base_url, api_key=KEY)
        with backend, pytest.raises(AuthenticationError):
            backend.chat("hi")
    span = only(telemetry.spans())
    assert span.attributes["error.type"] == "AuthenticationError"
    assert KEY not in (span.status.description or "")
    assert KEY not in json.dumps({k: str(v) for k, v in span.attributes.items()})


def test_streamed_remote_reply_records_openrouter_cost(telemetry) -> None:
    chunks = completion_chunks("Hi there")
    chunks[-1]["usage"]["cost"] = 0.00042  # OpenRouter's last chunk
    with (
        LoopbackServer(lambda request: sse_reply(chunks)) as server,
        OpenAICompatibleBackend("m", base_url=server.base_url) as backend,
    ):
        backend.stream("hi").final()
    a = only(telemetry.spans()).attributes
    assert a["llmclient.usage.cost"] == 0.00042 and a["llmclient.usage.cost_source"] == "provider"


def test_a_pipeline_run_is_the_parent_of_each_rows_call(telemetry, tmp_path) -> None:
    from llmclient import pipeline

    async def answer(messages: Any, params: Any) -> ChatResponse:
        return reply(messages[-1].text)

    rows = [{"id": i, "dish": f"dish {i}"} for i in range(3)]
    with FunctionBackend(answer, model="m") as backend:
        pipeline.run(backend, rows, template="{{ dish }}", output=tmp_path / "o.jsonl", id_field="id")
    spans = telemetry.spans()
    (run,) = [s for s in spans if s.name == "llmclient.run"]
    calls = [s for s in spans if s.name == "chat m"]
    assert len(calls) == 3
    assert all(c.parent is not None and c.parent.span_id == run.context.span_id for c in calls)
    assert all(c.context.trace_id == run.context.trace_id for c in calls)
    assert run.attributes["llmclient.run.rows"] == 3 and run.attributes["llmclient.run.done"] == 3


def test_nothing_is_recorded_and_streams_are_not_wrapped_without_a_provider() -> None:
    import subprocess
    import sys

    probe = (
        "import sys, llmclient\n"
        "from llmclient.testing import FunctionBackend\n"
        "b = FunctionBackend(lambda m, p: ['a', 'b'])\n"
        "b.chat('x'); s = b.stream('x'); s.final()\n"
        "assert not llmclient.tracing.enabled()\n"
        "assert not any(m.startswith('opentelemetry') for m in sys.modules), 'opentelemetry was imported'\n"
        "assert type(s._deltas).__name__ != 'async_generator' and s._deltas.__name__ != 'watched'\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
