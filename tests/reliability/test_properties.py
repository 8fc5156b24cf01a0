"""Property tests: whatever users or servers hand us, only typed errors come out, and stream parsing
does not depend on where the network split the bytes."""

from __future__ import annotations

import contextlib
import json
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmclient import pipeline
from llmclient._settings import read_settings
from llmclient.backend import ChatBackend
from llmclient.backends.openai import OpenAICompatibleSettings
from llmclient.backends.openai.wire import StreamReader, parse_completion
from llmclient.config import BackendConfig
from llmclient.errors import ConfigError, InvalidRequestError, LLMClientError
from llmclient.stream import StreamAccumulator
from llmclient.testing.cassettes.chat import Cassette
from llmclient.testing.cassettes.entries import (
    Interaction,
    deltas_from_dicts,
    deltas_to_dicts,
    normalise_request,
    response_from_dict,
    response_to_dict,
)
from llmclient.types import ChatRequest, ChatResponse, GenerationParams, StreamDelta, Usage, to_messages

yaml = pytest.importorskip("yaml")

CASSETTES = Path(__file__).resolve().parents[1] / "data" / "real-cassettes"

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
setting_names = st.sampled_from(
    [f.name for f in OpenAICompatibleSettings.__dataclass_fields__.values()]
) | st.text(max_size=12)
FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(
    st.dictionaries(st.sampled_from(["type", "model", "defaults", "name"]) | st.text(max_size=8), json_values)
)
def test_any_backend_table_is_read_or_refused_with_a_config_error(table: dict[str, Any]) -> None:
    try:
        BackendConfig.from_mapping(table, name="fuzz", source="fuzz.toml", in_file=True)
    except ConfigError as error:
        assert "fuzz.toml" in str(error)


@FAST
@given(st.dictionaries(setting_names, json_values, max_size=6))
def test_any_settings_are_read_or_refused_with_a_config_error(options: dict[str, Any]) -> None:
    config = BackendConfig(
        type="vllm", model="m", name="fuzz", options=options, source="fuzz.toml", in_file=True
    )
    try:
        read_settings(OpenAICompatibleSettings, config)
    except ConfigError as error:
        assert "fuzz.toml [backends.fuzz]" in str(error)


message_like = st.dictionaries(
    st.sampled_from(["role", "content", "name", "tool_calls", "tool_call_id"]) | st.text(max_size=6),
    st.sampled_from(["user", "assistant", "system", "tool", "developer"]) | json_values,
    max_size=4,
)


@FAST
@given(st.lists(message_like | json_values, max_size=4) | st.text(max_size=10))
def test_any_messages_are_normalised_or_refused_with_an_invalid_request_error(messages: Any) -> None:
    try:
        normalised = to_messages(messages)
    except InvalidRequestError:
        return
    assert all(m.role in ("user", "assistant", "system", "tool", "developer") for m in normalised)
    assert all(isinstance(m.text, str) for m in normalised)


@FAST
@given(
    st.dictionaries(
        st.sampled_from(
            ["max_new_tokens", "max_tokens", "temperature", "top_p", "top_k", "stop", "seed", "extra"]
        )
        | st.text(max_size=8),
        json_values,
        max_size=5,
    )
)
def test_any_generation_options_are_validated_or_refused(options: dict[str, Any]) -> None:
    try:
        params = GenerationParams.from_options(options)
    except InvalidRequestError:
        return
    params.validate()


@FAST
@given(st.binary(max_size=300))
def test_any_reply_body_is_read_or_refused_with_a_typed_error(body: bytes) -> None:
    with contextlib.suppress(LLMClientError):
        parse_completion(body, status=200, headers={})


# Text that YAML mangles when written carelessly: trailing spaces and newlines, tabs, carriage returns,
# line separators, leading indentation, document markers, quotes, "null", emoji, control characters.
awkward_text = st.lists(
    st.characters(codec="utf-8", exclude_categories=("Cs",))
    | st.sampled_from(
        [" ", "\n", "\r", "\t", "\u2028", "\x85", "---", "...", "#", ": ", "'", '"', "null", "🙂"]
    ),
    max_size=20,
).map("".join)
usages = st.builds(Usage, st.integers(0, 10**6), st.integers(0, 10**6))
finish_reasons = st.sampled_from([None, "stop", "length", "tool_calls", "content_filter"])
finite_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | awkward_text,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(awkward_text, children, max_size=3),
    max_leaves=8,
)
details = st.dictionaries(awkward_text, finite_json, max_size=3)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    prompt=awkward_text,
    system=awkward_text,
    seed=st.none() | st.integers(0, 2**31),
    reply=st.builds(
        ChatResponse,
        text=awkward_text,
        finish_reason=finish_reasons,
        usage=st.none() | usages,
        model=awkward_text,
        backend=st.just("hf"),
        details=details,
    ),
    deltas=st.lists(
        st.builds(
            StreamDelta,
            text=awkward_text,
            finish_reason=finish_reasons,
            usage=st.none() | usages,
            details=details,
        ),
        max_size=5,
    ),
)
def test_any_interaction_reads_back_from_the_saved_cassette_as_recorded(
    tmp_path: Path, prompt: str, system: str, seed: int | None, reply: ChatResponse, deltas: list[StreamDelta]
) -> None:
    path = tmp_path / "round_trip.yaml"
    path.unlink(missing_ok=True)
    request = ChatRequest(
        to_messages([{"role": "system", "content": system}, {"role": "user", "content": prompt}]),
        GenerationParams(seed=seed),
    )
    asked = normalise_request(request, backend="hf", model="m", stream=False)
    streamed = normalise_request(request, backend="hf", model="m", stream=True)
    writing = Cassette(path)
    writing.record(Interaction(asked, response=response_to_dict(reply)))
    writing.record(Interaction(streamed, stream=deltas_to_dicts(deltas)))
    writing.save()

    reading = Cassette(path)
    found = reading.find(asked)
    found_stream = reading.find(streamed)
    assert found is not None and found.response is not None
    assert found_stream is not None and found_stream.stream is not None
    assert response_from_dict(found.response) == reply
    assert deltas_from_dicts(found_stream.stream) == deltas
    assert reading.unused() == []


def _streamed_bodies() -> list[Any]:
    if not CASSETTES.is_dir():
        return [pytest.param(None, marks=pytest.mark.skip(reason=f"{CASSETTES} not found (real recordings)"))]
    bodies = []
    for path in sorted(CASSETTES.rglob("*.yaml")):
        for index, item in enumerate(yaml.safe_load(path.read_text())["interactions"]):
            body = item["response"]["body"]["string"]
            if item["request"]["uri"].endswith("/chat/completions") and "chat.completion.chunk" in body:
                bodies.append(pytest.param(body.encode(), id=f"{path.name}#{index}"))
    return bodies


def _read(chunks: list[bytes]) -> tuple[str, Any, Any, Any]:
    reader = StreamReader()
    acc = StreamAccumulator(model="m", backend="b")
    for chunk in chunks:
        for delta in reader.feed(chunk):
            acc.add(delta)
    for delta in reader.finish():
        acc.add(delta)
    reply = acc.response()
    return reply.text, reply.finish_reason, reply.usage, reply.tool_calls


@pytest.mark.parametrize("body", _streamed_bodies())
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_real_streams_read_the_same_whatever_the_split(body: bytes, data: st.DataObject) -> None:
    cuts = sorted(data.draw(st.lists(st.integers(0, len(body)), max_size=40)))
    pieces = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)], strict=True)]
    assert _read(pieces) == _read([body])


@pytest.mark.parametrize("body", _streamed_bodies())
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_damaged_real_streams_give_only_typed_errors(body: bytes, data: st.DataObject) -> None:
    start = data.draw(st.integers(0, len(body)))
    damaged = body[:start] + data.draw(st.binary(max_size=30)) + body[start + data.draw(st.integers(0, 50)) :]
    with contextlib.suppress(LLMClientError):
        _read([damaged])


def test_the_stream_oracle_matches_the_raw_events() -> None:
    if not CASSETTES.is_dir():
        pytest.skip("no real recordings")
    body = next(p.values[0] for p in _streamed_bodies())
    events = [
        json.loads(line[5:])
        for line in body.decode().splitlines()
        if line.startswith("data:") and "[DONE]" not in line
    ]
    text = "".join((e["choices"][0]["delta"].get("content") or "") for e in events if e.get("choices"))
    assert _read([body])[0] == text


class _Echo(ChatBackend):
    """The smallest backend: replies with the prompt (the batch runner is what is under test)."""

    type_name = "echo"

    def _chat(self, request: ChatRequest) -> ChatResponse:
        return ChatResponse(text=request.messages[-1].text, finish_reason="stop")


row_values = (
    json_values
    | st.text(alphabet=st.characters(blacklist_categories=()), max_size=8)  # lone surrogates too
    | st.dates()
    | st.datetimes()
    | st.decimals(allow_nan=False)
    | st.binary(max_size=8)
)


@settings(max_examples=60, deadline=None)
@given(
    rows=st.lists(st.dictionaries(st.sampled_from(["a", "b", "id"]), row_values, max_size=3), max_size=6),
    id_field=st.sampled_from([None, "id"]),
)
def test_every_row_ends_in_exactly_one_valid_line_and_a_rerun_adds_none(
    rows: list[dict[str, Any]], id_field: str | None
) -> None:
    with tempfile.TemporaryDirectory() as folder, _Echo(model="echo") as backend:
        out = Path(folder) / "out.jsonl"
        first = pipeline.run(backend, rows, template="{{ a }}", output=out, id_field=id_field)
        assert first.done + first.failed + first.duplicates == first.total == len(rows)
        text = out.read_bytes().decode("utf-8") if out.exists() else ""  # strict UTF-8
        lines = [json.loads(line) for line in text.split("\n") if line]  # not splitlines: \x85 is text
        assert len(lines) == first.done + first.failed
        again = pipeline.run(backend, rows, template="{{ a }}", output=out, id_field=id_field)
        assert (again.done, again.failed) == (0, 0)
        assert again.skipped + again.duplicates == len(rows)
        assert out.read_bytes().decode("utf-8") == text
