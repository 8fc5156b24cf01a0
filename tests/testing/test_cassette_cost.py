"""A reply's cost is recorded in a chat cassette and replayed with it, streamed and not."""

from __future__ import annotations

from pathlib import Path

import yaml

from llmclient.backends.openai import OpenAICompatibleBackend
from llmclient.testing import cassette
from llmclient.testing.server import LoopbackServer, Reply, Request
from llmclient.testing.server.replies import completion, completion_chunks, json_reply, sse_reply


def openrouter_like(request: Request) -> Reply:
    """Replies carrying OpenRouter's ``usage.cost`` (in the last chunk when streamed)."""
    if b'"stream":true' in request.body:
        chunks = completion_chunks("Hello there")
        chunks[-1]["usage"]["cost"] = 0.0021
        return sse_reply(chunks)
    return json_reply(
        completion("Paris.", usage={"prompt_tokens": 9, "completion_tokens": 1, "cost": 0.0012})
    )


def test_cost_round_trips_through_a_cassette(tmp_path: Path) -> None:
    path = tmp_path / "cost.yaml"
    with LoopbackServer(openrouter_like) as server:
        remote = OpenAICompatibleBackend("m", base_url=server.base_url)
        with cassette(path, remote, mode="once") as recording:
            chatted = recording.chat("Capital of France?")
            streamed = recording.stream("Say hello").final()
    assert chatted.usage is not None and chatted.usage.cost == 0.0012
    assert streamed.usage is not None and streamed.usage.cost == 0.0021
    document = yaml.safe_load(path.read_text())
    assert "cost: 0.0012" in path.read_text() and document

    with cassette(path) as replay:
        again = replay.chat("Capital of France?")
        again_streamed = replay.stream("Say hello").final()
    assert again.usage == chatted.usage
    assert again_streamed.usage == streamed.usage
    assert again.usage is not None and again.usage.cost_source == "provider"


def test_config_priced_replies_replay_with_their_cost(tmp_path: Path) -> None:
    path = tmp_path / "priced.yaml"
    prices = {"input_per_million": 1.0, "output_per_million": 1.0}
    with LoopbackServer(lambda r: json_reply(completion("a b", prompt_tokens=8))) as server:
        remote = OpenAICompatibleBackend("m", base_url=server.base_url, prices=prices)
        with cassette(path, remote, mode="once") as recording:
            usage = recording.chat("x").usage
    with cassette(path) as replay:
        replayed = replay.chat("x").usage
    assert usage is not None and usage.cost is not None and replayed is not None
    assert (replayed.cost, replayed.cost_source) == (usage.cost, usage.cost_source)
