"""Token logprobs in chat cassettes (recorded from real HTTP, replayed without it) and from the
loopback server's OpenAI handler."""

from __future__ import annotations

import json
from pathlib import Path

import httpx2
import pytest

from llmclient.backends.openai import OpenAICompatibleBackend
from llmclient.errors import CassetteError
from llmclient.retry import RetryPolicy
from llmclient.testing import RecordingBackend, ReplayBackend
from llmclient.testing.cassettes.entries import (
    deltas_from_dicts,
    deltas_to_dicts,
    response_from_dict,
    response_to_dict,
)
from llmclient.testing.server import LoopbackServer, OpenAIHandler
from llmclient.types import ChatResponse, StreamDelta, TokenLogprob


def test_a_recorded_reply_and_stream_replay_their_logprobs(tmp_path: Path) -> None:
    path = tmp_path / "logprobs.yaml"
    with LoopbackServer(OpenAIHandler(text="Paris, of course")) as server:
        inner = OpenAICompatibleBackend(
            model="m", base_url=server.base_url, name="remote", retry=RetryPolicy(max_attempts=1)
        )
        with RecordingBackend(inner, path, mode="once") as recorder:
            live = recorder.chat("Capital?", logprobs=True, top_logprobs=2)
            streamed = recorder.stream("Capital?", logprobs=True).final()
            plain = recorder.chat("Capital?")
    assert len(live.logprobs) == 3 and live.logprobs[0].top[1] == ("<alt1>", -2.1)
    text = path.read_text()
    assert "top_logprobs" in text and "logprobs: true" in text  # the parameters are part of the key
    with ReplayBackend(path) as replay:
        assert replay.chat("Capital?", logprobs=True, top_logprobs=2).logprobs == live.logprobs
        assert replay.stream("Capital?", logprobs=True).final().logprobs == streamed.logprobs
        assert replay.chat("Capital?").logprobs == plain.logprobs == []
        with pytest.raises(CassetteError, match="top_logprobs"):
            replay.chat("Capital?", logprobs=True, top_logprobs=5)  # other parameters: another request


def test_entries_write_logprobs_in_openais_shape_and_read_them_back() -> None:
    token = TokenLogprob("é", -0.25, "é".encode(), [("é", -0.25), ("e", -1.5)])
    entry = response_to_dict(ChatResponse(text="é", logprobs=[token]))
    assert entry["logprobs"] == [
        {
            "token": "é",
            "logprob": -0.25,
            "bytes": [195, 169],
            "top_logprobs": [{"token": "é", "logprob": -0.25}, {"token": "e", "logprob": -1.5}],
        }
    ]
    assert response_from_dict(json.loads(json.dumps(entry))).logprobs == [token]
    assert "logprobs" not in response_to_dict(ChatResponse(text="x"))
    deltas = [StreamDelta(text="é", logprobs=[token]), StreamDelta(finish_reason="stop")]
    assert deltas_from_dicts(deltas_to_dicts(deltas)) == deltas
    with pytest.raises(CassetteError, match="'response' is malformed"):
        response_from_dict({"text": "x", "logprobs": [{"token": "x"}]})


def test_the_servers_handler_answers_logprobs_when_asked() -> None:
    with LoopbackServer(OpenAIHandler(text="a b")) as server:
        url = f"{server.base_url}/chat/completions"
        body = {"model": "m", "messages": [{"role": "user", "content": "x"}]}
        plain = httpx2.post(url, json=body).json()
        asked = httpx2.post(url, json={**body, "logprobs": True, "top_logprobs": 1}).json()
    assert plain["choices"][0]["logprobs"] is None
    content = asked["choices"][0]["logprobs"]["content"]
    assert [(e["token"], len(e["top_logprobs"])) for e in content] == [("a", 1), (" b", 1)]
