"""--rpm caps every request a run sends, retries included (issue 12 item 8)."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from pipeline_support import read_results

from llmclient import pipeline
from llmclient.backends.openai import OpenAICompatibleBackend
from llmclient.retry import RetryPolicy
from llmclient.testing.server import LoopbackServer, Reply, Request, completion, error_reply, json_reply


class FlakyOnce:
    """Fails each prompt's first request with a 503, answers its second; notes when each arrived."""

    def __init__(self) -> None:
        self.seen: dict[str, int] = {}
        self.arrivals: list[float] = []
        self._lock = threading.Lock()

    def __call__(self, request: Request) -> Reply:
        prompt = request.json()["messages"][-1]["content"]
        with self._lock:
            self.arrivals.append(time.monotonic())
            self.seen[prompt] = self.seen.get(prompt, 0) + 1
            first = self.seen[prompt] == 1
        return error_reply(503, "busy", type="server_error") if first else json_reply(completion("ok"))


def most_in_any_window(arrivals: list[float], seconds: float) -> int:
    times = sorted(arrivals)
    return max(sum(1 for t in times if start <= t < start + seconds) for start in times)


def test_retries_take_their_slot_from_the_runs_rate_limit(tmp_path: Path) -> None:
    handler = FlakyOnce()
    rows: list[dict[str, Any]] = [{"n": n} for n in range(6)]
    fast_retries = RetryPolicy(max_attempts=3, initial_backoff=0.0, jitter=0.0)
    with (
        LoopbackServer(handler) as server,
        OpenAICompatibleBackend(model="m", base_url=server.base_url, retry=fast_retries) as backend,
    ):
        started = time.monotonic()
        summary = pipeline.run(
            backend,
            rows,
            template="row {{ n }}",
            output=tmp_path / "out.jsonl",
            concurrency=6,
            requests_per_minute=300,
            progress=False,
        )
        elapsed = time.monotonic() - started
    assert summary.done == 6 and len(handler.arrivals) == 12
    assert all(line["status"] == "ok" for line in read_results(tmp_path / "out.jsonl"))
    # 300 a minute is one start every 0.2 s: 12 requests span at least 11 intervals, and no second
    # holds more than 5 starts (6 with the edges), retries included
    assert elapsed >= 11 * 0.2 - 0.05
    assert most_in_any_window(handler.arrivals, 1.0) <= 6
