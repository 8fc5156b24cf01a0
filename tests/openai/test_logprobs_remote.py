"""Token logprobs on the remote backend: asked for in the body, read from ``logprobs.content`` of
replies and stream chunks, a warning (once) where none come back; and a real recorded OpenAI stream
replayed through :class:`~llmclient.testing.CassetteTransport`, read by us and by the openai SDK alike.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import openai
import pytest
from remote_support import API_KEY, Caller

from llmclient.backends.openai import OpenAICompatibleBackend
from llmclient.testing import CassetteTransport
from llmclient.testing.server import OpenAIHandler, Reply

yaml = pytest.importorskip("yaml")

REAL = (
    Path(__file__).resolve().parents[1]
    / "data/real-cassettes/chatlas/tests/_vcr/test_provider_openai_completions"
    / "test_openai_logprobs.yaml"
)


def test_the_body_asks_for_logprobs_only_when_the_call_does(serve, make_backend) -> None:
    backend = make_backend(serve(OpenAIHandler()))
    body = json.loads(backend.render_prompt("Hi", logprobs=True, top_logprobs=3))
    assert (body["logprobs"], body["top_logprobs"]) == (True, 3)
    assert json.loads(backend.render_prompt("Hi", top_logprobs=2))["logprobs"] is True
    plain = json.loads(backend.render_prompt("Hi"))
    assert "logprobs" not in plain and "top_logprobs" not in plain
    assert "logprobs" not in json.loads(backend.render_prompt("Hi", logprobs=False, top_logprobs=2))


def test_replies_and_streams_carry_one_entry_per_token(serve, make_backend, call: Caller) -> None:
    backend = make_backend(serve(OpenAIHandler(text="Paris is lovely")))
    reply = call.chat(backend, logprobs=True, top_logprobs=2)
    assert [t.token for t in reply.logprobs] == ["Paris", " is", " lovely"]
    assert "".join(t.token for t in reply.logprobs) == reply.text
    first = reply.logprobs[0]
    assert (first.logprob, first.bytes, first.top) == (
        pytest.approx(-0.1),
        b"Paris",
        [("Paris", -0.1), ("<alt1>", -2.1)],
    )
    assert first.top[0][0] == first.token  # at temperature 0 the chosen token is the top one
    pieces, streamed = call.stream(backend, logprobs=True, top_logprobs=2)
    assert "".join(pieces) == streamed.text
    assert streamed.logprobs == reply.logprobs
    assert call.chat(backend).logprobs == []


def test_stream_deltas_each_carry_the_entries_of_their_tokens(serve, make_backend) -> None:
    backend = make_backend(serve(OpenAIHandler(text="one two")))
    with backend.stream("Hi", logprobs=True) as stream:
        carried = [[t.token for t in delta.logprobs] for delta in stream if delta.text]
    assert carried == [["one"], [" two"]]


def test_a_provider_that_returns_none_gives_an_empty_list_and_one_warning(
    serve, make_backend, call: Caller, caplog
) -> None:
    backend = make_backend(serve(OpenAIHandler(text="no logprobs here", logprobs=False)))
    with caplog.at_level(logging.WARNING, logger="llmclient"):
        assert call.chat(backend, logprobs=True).logprobs == []
        assert call.stream(backend, logprobs=True)[1].logprobs == []
        assert call.chat(backend, top_logprobs=3).logprobs == []
    warnings = [r.getMessage() for r in caplog.records if "returned no logprobs" in r.getMessage()]
    assert len(warnings) == 1 and "test-model" in warnings[0]


# -- a real OpenAI stream with logprobs ------------------------------------------------------------


def _sdk_entries(base_url: str) -> list[tuple[str, float, list[int] | None, list[Any]]]:
    """What the openai SDK reads from the same streamed bytes: the oracle."""
    with openai.OpenAI(base_url=base_url, api_key=API_KEY, max_retries=0) as client:
        stream = client.chat.completions.create(
            model="gpt-5.4", messages=[{"role": "user", "content": "Hi"}], logprobs=True, stream=True
        )
        return [
            (t.token, t.logprob, t.bytes, [(a.token, a.logprob) for a in t.top_logprobs])
            for chunk in stream
            for choice in chunk.choices
            if choice.logprobs is not None
            for t in choice.logprobs.content or []
        ]


@pytest.mark.skipif(not REAL.exists(), reason=f"{REAL} not found (real recordings)")
def test_a_real_openai_stream_with_logprobs_reads_as_the_sdk_reads_it(serve, tmp_path) -> None:
    cassette = tmp_path / "logprobs.yaml"
    cassette.write_bytes(
        REAL.read_bytes()
    )  # replayed from a copy: nothing is ever written next to the original
    with OpenAICompatibleBackend(
        "gpt-5.4", preset="openai", api_key=API_KEY, transport=CassetteTransport(cassette)
    ) as backend:
        with backend.stream("Hi", logprobs=True, seed=1014) as stream:
            per_delta = [len(delta.logprobs) for delta in stream if delta.text]
        reply = stream.final()
    assert reply.text == "Hi! How can I help?"
    assert per_delta == [1] * 7  # each text chunk carried its one token
    assert "".join(t.token for t in reply.logprobs) == reply.text
    assert reply.logprobs[0].bytes == b"Hi" and reply.logprobs[0].top == []

    body = yaml.safe_load(REAL.read_text())["interactions"][0]["response"]["body"]["string"].encode()
    served = serve(lambda request: Reply(headers=[("content-type", "text/event-stream")], chunks=[body]))
    oracle = _sdk_entries(served.base_url)
    ours = [(t.token, t.logprob, list(t.bytes or b""), t.top) for t in reply.logprobs]
    assert ours == oracle
    assert any(t.logprob > 0 for t in reply.logprobs)  # the API's rounding, kept as sent
