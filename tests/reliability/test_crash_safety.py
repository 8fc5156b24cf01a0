"""A real ``llmclient run`` killed with SIGKILL at random moments, again and again, loses nothing."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

from llmclient.testing.server.faults import FaultHandler
from llmclient.testing.server import LoopbackServer, Reply, Request


class FlakyServer:
    """Normal replies after 100 ms, with a 503 or a 429 the first time some prompts are seen."""

    def __init__(self) -> None:
        self._faults = FaultHandler()
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    async def __call__(self, request: Request) -> Reply:
        import asyncio

        content = request.json()["messages"][-1]["content"]
        with self._lock:
            first = content not in self._seen
            self._seen.add(content)
        number = int(content.split()[-1])
        if first and number % 17 == 0:
            request.headers["x-fault"] = "server_503"
        elif first and number % 23 == 0:
            request.headers["x-fault"] = "rate_limit_seconds"
        await asyncio.sleep(0.1)
        return self._faults(request)


def test_killed_runs_resume_until_every_row_is_done_exactly_once(tmp_path: Path, soak: bool) -> None:
    kills, count = (100, 5000) if soak else (10, 500)
    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(json.dumps({"id": i, "dish": f"dish {i}"}) + "\n" for i in range(count)))
    out = tmp_path / "out.jsonl"
    rng = random.Random(20261128)
    with LoopbackServer(FlakyServer()) as server:
        (tmp_path / "llmclient.toml").write_text(
            f'[backends.flaky]\ntype = "openai-compatible"\nmodel = "m"\nbase_url = "{server.base_url}"\n'
            "initial_backoff = 0.01\nmax_backoff = 0.05\n"
        )
        command = [
            sys.executable,
            "-m",
            "llmclient",
            "run",
            str(rows),
            "-t",
            "Analyse {{ dish }}",
            "-o",
            str(out),
            "--id-field",
            "id",
            "-c",
            "8",
            "--no-progress",
        ]
        survived = 0
        for _ in range(kills):
            process = subprocess.Popen(
                command, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            time.sleep(rng.uniform(0.35, 0.9))
            if process.poll() is not None:
                break  # finished before the kill: nothing left to interrupt
            process.send_signal(signal.SIGKILL)
            process.wait()
            survived += 1
        final = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert final.returncode == 0, final.stderr
    assert survived == kills
    lines = [json.loads(line) for line in out.read_text().splitlines()]  # every line parses
    done = Counter(line["row_id"] for line in lines if line["status"] == "ok")
    assert done == Counter(range(count)), f"lost: {set(range(count)) - set(done)}"
    assert all(line["text"] for line in lines if line["status"] == "ok")
