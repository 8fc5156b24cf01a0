"""Thousands of rows: a run SIGKILLed at a random point resumes to every row exactly once, and a
resume holds a small entry per row, not the rows (issue 17; bench/pipeline_scale.py runs a million).
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

from pipeline_support import EchoBackend, write_jsonl

from llmclient import pipeline
from llmclient.testing.server import LoopbackServer, OpenAIHandler

ROWS = 3000


def test_a_run_killed_at_a_random_row_then_rerun_has_every_row_exactly_once(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "rows.jsonl", [{"id": i, "dish": f"dish {i}"} for i in range(ROWS)])
    out = tmp_path / "out.jsonl"
    kill_after = random.Random().randint(ROWS // 10, ROWS * 8 // 10)  # lines written before the kill
    with LoopbackServer(OpenAIHandler(text=lambda body: "ok " + body["messages"][-1]["content"])) as server:
        code = (
            "import sys; from llmclient import pipeline\n"
            "pipeline.run({'type': 'openai-compatible', 'model': 'm', 'base_url': sys.argv[1]}, sys.argv[2],"
            " template='Analyse {{ dish }}', output=sys.argv[3], id_field='id', concurrency=64,"
            " progress=False)"
        )
        command = [sys.executable, "-c", code, server.base_url, str(source), str(out)]
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while process.poll() is None and time.monotonic() < deadline and lines(out) < kill_after:
            time.sleep(0.01)
        process.send_signal(signal.SIGKILL)
        process.wait()
        killed_at = lines(out)
        assert kill_after <= killed_at < ROWS, "the run ended before it could be killed"
        resumed = subprocess.run(command, capture_output=True, text=True, timeout=180)
    assert resumed.returncode == 0, resumed.stderr
    counts = [0] * ROWS
    with out.open("rb") as handle:  # streamed, as for a file too large to hold
        for line in handle:
            record = json.loads(line)
            assert record["status"] == "ok" and record["text"] == f"ok Analyse dish {record['row_id']}"
            counts[record["row_id"]] += 1
    assert counts == [1] * ROWS, f"killed at {killed_at} lines: rows missing or repeated"
    assert [r["index"] for r in pipeline.read_results(out)] == list(range(ROWS))


def test_a_resume_holds_a_small_entry_per_row_not_the_rows(tmp_path: Path) -> None:
    rows = [{"id": i, "dish": f"dish {i} " + "x" * 200} for i in range(10_000)]
    out = tmp_path / "out.jsonl"
    with EchoBackend() as backend:
        assert pipeline.run(
            backend, rows, template="{{ dish }}", output=out, id_field="id", concurrency=64
        ).done
        tracemalloc.start()
        try:
            again = pipeline.run(backend, rows, template="{{ dish }}", output=out, id_field="id")
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert again.skipped == len(rows)
    # two sets and a dict of str keys and (index, digest) tuples took about 370 bytes a row; now 115
    assert peak / len(rows) < 200, f"the resume peaked at {peak / len(rows):.0f} bytes a row"


def lines(path: Path) -> int:
    """Whole lines in ``path`` so far (0 before it exists)."""
    try:
        return path.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0
