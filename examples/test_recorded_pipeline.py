"""A pipeline test that records its model replies once and replays them ever after.

The pipeline, ``triage``, labels customer reviews in one batch and streams a one-line summary. Its
test runs against a cassette (examples/cassettes/test_recorded_pipeline/triage.yaml): replayed by
default, with no model, no network and no key, so it runs the same on a laptop and in CI.

    python -m pytest examples/test_recorded_pipeline.py                         # replay
    python -m pytest examples/test_recorded_pipeline.py --llm-record-mode=all   # re-record

The replies were recorded from a stand-in OpenAI-compatible server on loopback, so recording needs
nothing either. To record from a real model, change the one line in ``real_backend`` (for example to
``llmclient.load("hf:smollm2")``) and re-record.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

import llmclient
from llmclient.testing import CassetteSession
from llmclient.testing.server import LoopbackServer, OpenAIHandler

SYSTEM = "Label the customer review as positive or negative. Answer with one word."


def triage(backend: llmclient.ChatBackend, reviews: list[str]) -> dict[str, Any]:
    """The pipeline under test: label each review, then summarise the labels in one line."""
    conversations = [[{"role": "system", "content": SYSTEM}, {"role": "user", "content": r}] for r in reviews]
    replies = backend.chat_many(conversations, max_new_tokens=4, temperature=0)
    labels = [reply.text.strip().lower() for reply in replies]
    counts = {label: labels.count(label) for label in sorted(set(labels))}
    with backend.stream(f"Summarise in one line: {counts}", max_new_tokens=32, temperature=0) as stream:
        summary = stream.final().text
    return {"labels": labels, "summary": summary}


def stand_in_model(body: dict[str, Any]) -> str:
    """What the stand-in server answers: a keyword rule for labels, a plain sentence for summaries."""
    last = body["messages"][-1]["content"]
    if body["messages"][0]["content"] == SYSTEM:
        return "negative" if any(w in last.lower() for w in ("broke", "late", "refund")) else "positive"
    return f"Reviews by label: {last.partition(': ')[2]}"


@pytest.fixture
def stand_in() -> Iterator[Callable[[], str]]:
    """Starts the stand-in server on demand (only when recording) and gives its base URL."""
    servers: list[LoopbackServer] = []

    def start() -> str:
        servers.append(LoopbackServer(OpenAIHandler(stand_in_model)).start())
        return servers[-1].base_url

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def backend(llm_cassette: CassetteSession, stand_in: Callable[[], str]) -> llmclient.ChatBackend:
    def real_backend() -> llmclient.ChatBackend:
        # The backend the replies are recorded from: the one line to change,
        # e.g. to `return llmclient.load("hf:smollm2")`.
        return llmclient.load({"type": "openai-compatible", "model": "stand-in", "base_url": stand_in()})

    return llm_cassette.wrap(real_backend)  # built only when a reply must be recorded


@pytest.mark.llm_cassette("triage")
def test_triage_labels_each_review_and_summarises(backend: llmclient.ChatBackend) -> None:
    result = triage(backend, ["Great phone, love it", "Arrived late and broke", "Does the job"])
    assert result["labels"] == ["positive", "negative", "positive"]
    assert result["summary"] == "Reviews by label: {'negative': 1, 'positive': 2}"
