"""One actor of a Ray run: one backend built from its config, batches of planned rows in, a shard out.

The driver decides each row's fate (skip, fail, send) with the batch runner's own
:class:`~llmclient.pipeline.plan.Plan` and hands the actors only rows to send, as
``(line start, messages)`` pairs. An actor answers each row exactly as :func:`llmclient.pipeline.run`
does (the runner's own row code: retries paced by the rate, per-row errors as error lines, a
backend's bug as an error line, structured output checked) and appends the lines to its own shard.
A batch never fails because of one row; it reports its counts back to the driver as one small
:class:`BatchReport`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import pickle
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmclient.config import BackendConfig, load
from llmclient.pipeline.options import RunOptions
from llmclient.pipeline.progress import Progress, RunSummary
from llmclient.pipeline.runner import RowRun
from llmclient.retry import RequestRate
from llmclient.scale.shards import Shard, new_shard_path
from llmclient.types import Message

if TYPE_CHECKING:
    import pyarrow as pa

WORK_COLUMN = "work"
"""The column of a work block: one pickled ``(line start, messages)`` pair per row to send."""
REPORT_COLUMN = "report"
"""The column of an actor's output: one JSON :class:`BatchReport` per batch."""

Work = tuple[dict[str, Any], list[Message]]
"""A row to send: the start of its result line (row id, key, input, backend, model) and its messages."""


@dataclass
class BatchReport:
    """What an actor did with one batch: the counts the driver adds to the run's summary."""

    done: int = 0
    failed: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latencies: list[float] = field(default_factory=list)
    cost: float = 0.0
    priced: int = 0
    unpriced: int = 0
    unsaved: int = 0
    """Answered rows whose line could not be written (the shard's disk is full, say)."""
    write_error: tuple[int, str] | None = None
    """The failed write that stopped this actor, as ``(errno, message)``."""

    def add_to(self, summary: RunSummary) -> None:
        """Add this batch's counts to the run's ``summary``."""
        summary.done += self.done
        summary.failed += self.failed
        summary.prompt_tokens += self.prompt_tokens
        summary.completion_tokens += self.completion_tokens
        summary.latencies.extend(self.latencies)
        summary.cost += self.cost
        summary.priced += self.priced

    def to_json(self) -> str:
        """The report as one JSON string (the actor's output row)."""
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> BatchReport:
        """Read a report written by :meth:`to_json`."""
        data = json.loads(text)
        error = data.pop("write_error")
        return cls(**data, write_error=tuple(error) if error else None)


def option_fields(options: RunOptions) -> dict[str, Any]:
    """The fields of ``options``, to build an equal :class:`RunOptions` in another process.

    ``RunOptions`` itself is not sent: its compiled template is not picklable, and the fields are.
    """
    return {f.name: getattr(options, f.name) for f in dataclasses.fields(options)}


class RowAnswerer:
    """The callable class of ``map_batches``: one per actor, holding one backend and one shard.

    Args:
        config: the backend's configuration, resolved by the driver (so a name from the driver's
            ``llmclient.toml`` works on every node); the backend is built here, once per actor.
        options: the run's options, as :func:`option_fields` gives them.
        folder: the output folder (on a cluster, a path every node sees).
        requests_per_minute: this actor's share of the run's ``requests_per_minute``.
    """

    def __init__(
        self,
        config: BackendConfig,
        options: Mapping[str, Any],
        folder: str,
        requests_per_minute: float | None = None,
    ) -> None:
        self.options = RunOptions(**options)
        self.backend = load(config)
        self.shard = Shard(new_shard_path(Path(folder)), fsync=self.options.fsync)
        self.rate = RequestRate(requests_per_minute)
        self._gate: asyncio.Semaphore | None = None
        self._write_failure: OSError | None = None

    async def __call__(self, batch: pa.Table) -> pa.Table:
        """Answer one batch of work; its output is one row holding the batch's report."""
        import pyarrow as pa

        work: list[Work] = [pickle.loads(item) for item in batch.column(WORK_COLUMN).to_pylist()]
        report = await self.answer(work)
        return pa.table({REPORT_COLUMN: [report.to_json()]})

    async def answer(self, work: list[Work]) -> BatchReport:
        """Send each row, ``concurrency`` at a time across all of this actor's batches, writing each line.

        Once a write has failed, no further row is sent (its reply could not be kept); those rows
        have no line, so a rerun sends them.
        """
        if self._gate is None:  # made here, on the actor's event loop
            self._gate = asyncio.Semaphore(self.options.concurrency)
        gate = self._gate
        summary = RunSummary(output=self.shard.path)
        run = RowRun(self.backend, self.options, self.shard, summary, Progress(summary, enabled=False))
        run.write_failure = self._write_failure

        async def one(base: dict[str, Any], messages: list[Message]) -> None:
            async with gate:
                if not run.stopped():
                    await run.answer(base, messages, self.rate)

        await asyncio.gather(*(one(base, messages) for base, messages in work))
        self._write_failure = run.write_failure
        failure = run.write_failure
        return BatchReport(
            done=summary.done,
            failed=summary.failed,
            prompt_tokens=summary.prompt_tokens,
            completion_tokens=summary.completion_tokens,
            latencies=summary.latencies,
            cost=run.budget.spent,
            priced=run.budget.priced,
            unpriced=run.budget.unpriced,
            unsaved=run.unsaved,
            write_error=None if failure is None else (failure.errno or 0, failure.strerror or str(failure)),
        )
