"""Progress of a run: a one-line bar on a terminal, silence elsewhere, and the end-of-run summary."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from llmclient.types import Message


@dataclass
class RunSummary:
    """What a run did.

    Attributes:
        output: the results file.
        total: rows read from the input.
        done: rows answered in this run.
        failed: rows that failed in this run (their error is in the results file).
        skipped: rows already done by an earlier run, or failed earlier and not retried.
        duplicates: rows identical to an earlier row of the same input (same key), not sent again.
        prompt_tokens: tokens sent, as the backend counted them.
        completion_tokens: tokens received.
        wall_time: seconds the run took.
        latencies: seconds each answered row took.
        over_window: rows whose prompt does not fit the context window (dry runs, where countable).
        dry_run: whether no model was called.
        cost: what this run's replies cost (``usage.cost`` summed, ok and failed rows alike).
        priced: replies whose cost was known; the cost is shown only when some were.
        stopped: why the run started no more rows before the end of its input (``max_cost``
            reached); ``None`` when it ran to the end.
        failed_earlier: of the ``skipped`` rows, those whose last line is an error, not retried
            (``retry_failed`` retries them).
        first_error: the first failure of this run, with its row (``row 3: TemplateError: ...``).
        retry_may_fix: failed rows whose error a retry may fix (a server or network failure, a reply
            that did not validate), as opposed to those that need the input or template changed.
        rendered: rows whose prompt rendered (dry runs).
        first_prompt: the first rendered prompt, one ``[role] text`` block per message (dry runs).
    """

    output: Path
    total: int = 0
    done: int = 0
    failed: int = 0
    skipped: int = 0
    duplicates: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    wall_time: float = 0.0
    latencies: list[float] = field(default_factory=list, repr=False)
    over_window: int = 0
    dry_run: bool = False
    cost: float = 0.0
    priced: int = 0
    stopped: str | None = None
    failed_earlier: int = 0
    first_error: str | None = None
    retry_may_fix: int = 0
    rendered: int = 0
    first_prompt: str | None = None

    def note_failure(self, row_id: Any, kind: str, message: str, retry_may_fix: bool) -> None:
        """Keep the first failure's description and count those a retry may fix."""
        if self.first_error is None:
            self.first_error = f"row {row_id!r}: {kind}: {message}"
        self.retry_may_fix += retry_may_fix

    def percentile(self, fraction: float) -> float | None:
        """The latency below which ``fraction`` of answered rows fall, or None with no rows."""
        if not self.latencies:
            return None
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]

    def __str__(self) -> str:
        if self.dry_run:
            failed = f", {self.failed} failed to render" if self.failed else ""
            return (
                f"dry run: {self.total} rows rendered{failed}, {self.prompt_tokens} prompt tokens, "
                f"{self.over_window} over the context window, {self.skipped} already done; no model called"
            )
        p50, p95 = self.percentile(0.5), self.percentile(0.95)
        latency = (
            f"latency p50 {p50:.2f}s p95 {p95:.2f}s" if p50 is not None and p95 is not None else "no latency"
        )
        return (
            f"{self.done} done, {self.failed} failed, {self.skipped} skipped"
            + (f" ({self.failed_earlier} of them failed earlier)" if self.failed_earlier else "")
            + (f", {self.duplicates} duplicate" if self.duplicates else "")
            + f" of {self.total} rows in {self.wall_time:.1f}s; tokens in {self.prompt_tokens}, "
            f"out {self.completion_tokens}{self._cost()}; {latency}; results in {self.output}"
            + (f"; stopped early: {self.stopped}" if self.stopped else "")
        )

    def _cost(self) -> str:
        return f"; cost {self.cost:.6g}" if self.priced else ""


class Progress:
    """A one-line progress bar: rows/s, tokens/s, ETA and errors, redrawn at most 10 times a second."""

    def __init__(
        self, summary: RunSummary, *, stream: TextIO | None = None, enabled: bool | None = None
    ) -> None:
        self._summary = summary
        self._stream = stream or sys.stderr
        self.enabled = self._stream.isatty() if enabled is None else enabled
        self._started = time.perf_counter()
        self._drawn = 0.0
        self.expected: int | None = None

    def update(self, *, force: bool = False) -> None:
        """Redraw the line if it is time to."""
        if not self.enabled:
            return
        now = time.perf_counter()
        if not force and now - self._drawn < 0.1:
            return
        self._drawn = now
        s = self._summary
        elapsed = max(now - self._started, 1e-9)
        finished = s.done + s.failed
        rate = finished / elapsed
        tokens = (s.prompt_tokens + s.completion_tokens) / elapsed
        total = f"/{self.expected}" if self.expected is not None else ""
        eta = ""
        if self.expected is not None and rate > 0:
            remaining = max(self.expected - finished - s.skipped - s.duplicates, 0) / rate
            eta = f" | ETA {_clock(remaining)}"
        self._stream.write(
            f"\r{finished + s.skipped}{total} rows | {rate:.1f} rows/s | {tokens:.0f} tok/s{eta} | "
            f"errors {s.failed}{s._cost().replace(';', ' |')}  "
        )
        self._stream.flush()

    def close(self) -> None:
        """Draw the last state and end the line."""
        if self.enabled:
            self.update(force=True)
            self._stream.write("\n")
            self._stream.flush()


def shown_prompt(row_id: Any, messages: list[Message]) -> str:
    """A rendered prompt as a person reads it: the row, then ``[role] text`` for each message."""
    turns = "\n".join(f"[{m.role}] {m.text}" for m in messages)
    return f"row {row_id!r}:\n{turns}"


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"
