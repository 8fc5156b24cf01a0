"""A real ``llmclient run`` killed with SIGKILL at random moments, again and again, loses nothing."""

from __future__ import annotations

import json
import random
import resource
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from llmclient.testing.server import LoopbackServer, OpenAIHandler, Reply, Request
from llmclient.testing.server.faults import FaultHandler


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


def _run_command(rows: Path, out: Path, *extra: str) -> list[str]:
    return [
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
        "--no-progress",
        *extra,
    ]


def _write_rows(tmp_path: Path, count: int) -> Path:
    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(json.dumps({"id": i, "dish": f"dish {i}"}) + "\n" for i in range(count)))
    return rows


def test_killed_runs_resume_until_every_row_is_done_exactly_once(tmp_path: Path, soak: bool) -> None:
    kills, count = (100, 5000) if soak else (10, 500)
    rows, out = _write_rows(tmp_path, count), tmp_path / "out.jsonl"
    rng = random.Random(20261128)
    with LoopbackServer(FlakyServer()) as server:
        (tmp_path / "llmclient.toml").write_text(
            f'[backends.flaky]\ntype = "openai-compatible"\nmodel = "m"\nbase_url = "{server.base_url}"\n'
            "initial_backoff = 0.01\nmax_backoff = 0.05\n"
        )
        command = _run_command(rows, out, "-c", "8")
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


def test_a_second_run_on_a_live_output_refuses_and_a_dry_run_cuts_nothing(tmp_path: Path) -> None:
    rows, out = _write_rows(tmp_path, 40), tmp_path / "out.jsonl"
    with LoopbackServer(OpenAIHandler(text="slow answer", latency=0.2)) as server:
        (tmp_path / "llmclient.toml").write_text(
            f'[backends.slow]\ntype = "openai-compatible"\nmodel = "m"\nbase_url = "{server.base_url}"\n'
        )
        first = subprocess.Popen(_run_command(rows, out, "-c", "1"), cwd=tmp_path, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and (not out.exists() or out.read_text().count("\n") < 4):
            time.sleep(0.01)
        second = subprocess.run(_run_command(rows, out), cwd=tmp_path, capture_output=True, text=True)
        dry = subprocess.run(
            _run_command(rows, out, "--dry-run"), cwd=tmp_path, capture_output=True, text=True
        )
        still_running = first.poll() is None
        assert first.wait(timeout=60) == 0
        requests = len(server.requests)
    assert second.returncode == 2
    assert f"another run (pid {first.pid}) is writing" in second.stderr and "Traceback" not in second.stderr
    assert dry.returncode == 0 and "dry run: 40 rows rendered" in dry.stdout
    assert still_running and requests == 40  # the refused run sent nothing: every row was paid once
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert Counter(line["row_id"] for line in lines) == Counter(range(40))  # each row once, none cut


def _file_size_limit(limit: int) -> Callable[[], None]:
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def test_a_write_that_fails_mid_run_stops_it_and_keeps_what_was_written(tmp_path: Path) -> None:
    rows, out = _write_rows(tmp_path, 50), tmp_path / "out.jsonl"
    with LoopbackServer(OpenAIHandler(text="answer")) as server:
        (tmp_path / "llmclient.toml").write_text(
            f'[backends.b]\ntype = "openai-compatible"\nmodel = "m"\nbase_url = "{server.base_url}"\n'
        )
        limited = subprocess.run(
            _run_command(rows, out, "-c", "1"),
            cwd=tmp_path,
            capture_output=True,
            text=True,
            preexec_fn=_file_size_limit(3000),  # ulimit -f: a few lines fit
        )
        sent = len(server.requests)
        kept = out.read_text().splitlines()
        assert limited.returncode == 1, limited.stderr
        assert "ResultsWriteError" in limited.stderr and "File too large" in limited.stderr
        assert "1 answered row(s) could not be saved" in limited.stderr
        assert "Traceback" not in limited.stderr
        assert 3 <= len(kept) < 50 and sent <= len(kept) + 2  # stopped at once, not after paying for all
        assert [json.loads(line)["row_id"] for line in kept] == list(range(len(kept)))  # whole lines only
        again = subprocess.run(
            _run_command(rows, out, "-c", "1"),
            cwd=tmp_path,
            capture_output=True,
            text=True,
            preexec_fn=_file_size_limit(len(out.read_bytes())),
        )
        assert again.returncode == 2 and "file-size limit of this process (ulimit -f)" in again.stderr
        assert len(server.requests) == sent  # refused before the first request
        resumed = subprocess.run(_run_command(rows, out), cwd=tmp_path, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    done = Counter(json.loads(line)["row_id"] for line in out.read_text().splitlines())
    assert done == Counter(range(50))
