"""The run: rows in, prompts rendered, replies out, resumable, with bounded concurrency."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from typing import Any, TypeVar

from llmclient import tracing
from llmclient.backend import ChatBackend
from llmclient.config import BackendConfig
from llmclient.errors import InvalidRequestError, LLMClientError, StructuredOutputError
from llmclient.logprobs import CandidateScore, best
from llmclient.pipeline.budget import Budget
from llmclient.pipeline.keys import run_fingerprint
from llmclient.pipeline.options import RunOptions
from llmclient.pipeline.output import OutputLock, ResultsWriteError, check_writable
from llmclient.pipeline.plan import Plan
from llmclient.pipeline.progress import Progress, RunSummary, shown_prompt
from llmclient.pipeline.prompt import Nulls
from llmclient.pipeline.results import Finished, ResultsFile, parsed_json
from llmclient.pipeline.rows import RowSource, count_rows, read_rows
from llmclient.retry import RequestRate, retries_paced_by
from llmclient.types import ChatResponse, Message, MessageLike, Usage

BackendSpec = ChatBackend | str | Mapping[str, Any] | BackendConfig
"""A backend, or anything :func:`llmclient.load` takes."""

T = TypeVar("T")

logger = logging.getLogger("llmclient.pipeline")


class RowRun:
    """One run's state: what it writes for each row, and the counts of its summary."""

    def __init__(
        self,
        backend: ChatBackend,
        options: RunOptions,
        results: ResultsFile,
        summary: RunSummary,
        progress: Progress,
    ) -> None:
        self.backend = backend
        self.options = options
        self.results = results
        self.summary = summary
        self.progress = progress
        self.fingerprint = run_fingerprint(
            options.prompt,
            backend.defaults.merged(options.generation),
            backend.model,
            backend_type=backend.type_name,
            endpoint=backend.endpoint,
            choices=None if options.choices is None else tuple(options.choices),
        )
        self.write_failure: OSError | None = None
        """The first failed write: once set, the run stops and nothing more is written."""
        self.unsaved = 0
        """Finished rows whose line could not be written."""
        self.crash: BaseException | None = None
        """An exception that escaped a row's task (a bug, never a row's own failure): stops the run."""
        self.budget = Budget(options.max_cost)

    def record(self, row_id: Any, key: str, row: Mapping[str, Any]) -> dict[str, Any]:
        """The fields every line of this row starts with: its id, key, kept input, backend, model."""
        keep = self.options.keep_fields
        fields = row if keep is None else {k: row[k] for k in keep if k in row}
        return {
            "row_id": row_id,
            "key": key,
            "input": dict(fields),
            "backend": self.backend.name,
            "model": self.backend.model,
        }

    def save(self, line: dict[str, Any]) -> bool:
        """Append ``line``; a failed write is kept as the reason to stop, and counted, never raised here."""
        if self.write_failure is None:
            try:
                self.results.append(line)
                return True
            except OSError as error:
                self.write_failure = error
        self.unsaved += 1
        return False

    def write_reply(self, base: dict[str, Any], reply: ChatResponse) -> None:
        """Record an answered row (its text, parsed value, usage and cost) and count it."""
        usage = reply.usage
        saved = self.save(
            {
                **base,
                "status": "ok",
                "text": reply.text,
                "parsed": parsed_json(reply.parsed),
                "finish_reason": reply.finish_reason,
                "usage": usage.to_dict() if usage else None,
                "latency": round(reply.latency, 4),
                "model": reply.model or base["model"],
                "error": None,
            }
        )
        self.charge(usage)
        if not saved:
            return
        self.summary.done += 1
        self.summary.latencies.append(reply.latency)
        if usage:
            self.summary.prompt_tokens += usage.prompt_tokens
            self.summary.completion_tokens += usage.completion_tokens

    def write_scores(self, base: dict[str, Any], scored: list[CandidateScore], latency: float) -> None:
        """Record a scored row: the chosen label (``text`` and ``parsed``), every label's probability."""
        chosen = best(scored)
        saved = self.save(
            {
                **base,
                "status": "ok",
                "text": chosen.text,
                "parsed": chosen.text,
                "scores": {s.text: s.probability for s in scored},
                "exact": chosen.exact,
                "finish_reason": None,
                "usage": None,
                "latency": round(latency, 4),
                "error": None,
            }
        )
        if saved:
            self.summary.done += 1
            self.summary.latencies.append(latency)

    def write_error(self, base: dict[str, Any], error: Exception) -> None:
        """Record a failed row; a dry run only counts it.

        A reply that did not pass ``response_format`` keeps its raw text, finish reason and
        validation errors in the line: it was paid for, and shows what the model did instead.
        """
        status = error.status_code if isinstance(error, LLMClientError) else None
        message = error.message if isinstance(error, LLMClientError) else str(error) or repr(error)
        self.summary.note_failure(base["row_id"], type(error).__name__, message, _retry_may_fix(error))
        if self.summary.dry_run:
            self.summary.failed += 1
            return
        described: dict[str, Any] = {"type": type(error).__name__, "message": message, "status_code": status}
        invalid = error if isinstance(error, StructuredOutputError) else None
        paid: ChatResponse | None = invalid.reply if invalid is not None else None
        if invalid is not None:
            described["errors"] = list(invalid.errors)
        if self.options.choices is not None:
            base = {**base, "scores": None, "exact": None}
        saved = self.save(
            {
                **base,
                "status": "error",
                "text": invalid.text if invalid is not None else None,
                "parsed": None,
                "finish_reason": invalid.finish_reason if invalid is not None else None,
                "usage": paid.usage.to_dict() if paid is not None and paid.usage else None,
                "latency": round(paid.latency, 4) if paid is not None else None,
                "error": described,
            }
        )
        self.summary.failed += saved
        self.charge(paid.usage if paid is not None else None)

    def charge(self, usage: Usage | None) -> None:
        """Add a paid reply's cost to the run's total (the summary, the bar, the budget)."""
        self.budget.charge(usage)
        self.summary.cost, self.summary.priced = self.budget.spent, self.budget.priced

    async def answer(self, base: dict[str, Any], messages: list[Message], rate: RequestRate) -> None:
        """Send one row (or score its choices) within the run's rate, and write what came back."""
        await rate.wait()
        choices = self.options.choices
        started = time.perf_counter()
        try:
            with retries_paced_by(rate):  # a retry takes its slot from the run's cap too
                if choices is not None:
                    scored = await self.backend.ascore(messages, choices, **self.options.call_options)
                else:
                    reply = await self.backend.achat(messages, **self.options.call_options)
        except LLMClientError as error:
            self.write_error(base, error)
        except Exception as error:  # a backend's bug fails its row with a line, never silently
            logger.warning("row %r failed: %s", base["row_id"], error, exc_info=error)
            self.write_error(base, error)
        else:
            if choices is not None:
                self.write_scores(base, scored, time.perf_counter() - started)
            else:
                self.write_reply(base, reply)
        self.progress.update()

    def settled(self, task: asyncio.Task[None]) -> None:
        """A row's task ended: keep what escaped it, so the run stops instead of losing the row."""
        if not task.cancelled() and task.exception() is not None and self.crash is None:
            self.crash = task.exception()

    def stopped(self) -> bool:
        """Whether the run must stop: a write failed, or something escaped a row."""
        return self.write_failure is not None or self.crash is not None

    def count(self, messages: list[Message], window: int | None, row_id: Any = None) -> None:
        """A dry run's row: rendered, its prompt tokens, and whether it fits the context window."""
        self.summary.rendered += 1
        if self.summary.first_prompt is None:
            self.summary.first_prompt = shown_prompt(row_id, messages)
        backend = self.backend
        if not backend.can_count_tokens:
            return
        tokens = backend.count_tokens(messages)
        self.summary.prompt_tokens += tokens
        wanted = self.options.generation.max_new_tokens or backend.defaults.max_new_tokens or 0
        if window is not None and tokens + wanted > window:
            self.summary.over_window += 1


async def arun(
    backend: BackendSpec,
    rows: RowSource,
    *,
    template: str,
    output: str | os.PathLike[str],
    system: str | None = None,
    few_shot: Sequence[MessageLike] = (),
    params: Mapping[str, Any] | None = None,
    response_format: Any = None,
    choices: Sequence[str] | None = None,
    id_field: str | None = None,
    keep_fields: Sequence[str] | None = None,
    concurrency: int = 16,
    requests_per_minute: float | None = None,
    retry_failed: bool = False,
    dry_run: bool = False,
    limit: int | None = None,
    progress: bool | None = None,
    fsync: bool = False,
    nulls: Nulls = "error",
    max_cost: float | None = None,
) -> RunSummary:
    """Run ``template`` over every row of ``rows`` on ``backend`` and append the replies to ``output``.

    Rows already answered in ``output`` (same row, template, parameters and model) are skipped, so
    a rerun after a crash picks up where it stopped; rows that failed are retried when
    ``retry_failed``. At most ``concurrency`` requests are in flight, and at most
    ``requests_per_minute`` start per minute. A ``dry_run`` renders every prompt and counts tokens
    (where the backend can) without calling the model. ``progress`` shows a bar on stderr (default:
    when stderr is a terminal). ``response_format`` asks every reply for structured output: each ok
    line gets its checked value as ``parsed``, and a reply that does not pass is a failed row that
    keeps its raw text. ``choices=[...]`` classifies each row by scoring the labels instead
    (``backend.ascore``): each ok line gets the chosen label as ``parsed``, every label's
    probability in ``scores`` and ``exact``; a backend that cannot score fails the rows saying why.
    ``max_cost`` starts no more rows once the run's cost (``usage.cost``) would pass it: rows
    in flight finish and are written, ``summary.stopped`` says why, and a rerun continues. Every
    option is described on :class:`RunOptions`. Returns a :class:`RunSummary`; failed
    rows do not raise, their errors are in the results file.

    Before the first request the output is checked writable and locked against a second run
    (:class:`~llmclient.pipeline.output.OutputError`); a write that fails mid-run stops the run
    (:class:`~llmclient.pipeline.output.ResultsWriteError`), lines already written kept.
    """
    options = RunOptions(
        template=template,
        output=output,
        system=system,
        few_shot=few_shot,
        params=params or {},
        response_format=response_format,
        choices=choices,
        id_field=id_field,
        keep_fields=keep_fields,
        concurrency=concurrency,
        requests_per_minute=requests_per_minute,
        retry_failed=retry_failed,
        dry_run=dry_run,
        limit=limit,
        progress=progress,
        fsync=fsync,
        nulls=nulls,
        max_cost=max_cost,
    )
    return await arun_with(backend, rows, options)


def run(backend: BackendSpec, rows: RowSource, **options: Any) -> RunSummary:
    """Sync :func:`arun`: the same arguments; call it from code that is not async."""
    return _sync(lambda: arun(backend, rows, **options))


async def arun_with(backend: BackendSpec, rows: RowSource, options: RunOptions) -> RunSummary:
    """:func:`arun` with its options already built: what the ``llmclient run`` command calls.

    A backend given as a spec (a name, a dict, a :class:`BackendConfig`) is loaded here and closed at
    the end; a :class:`ChatBackend` is the caller's to close.
    """
    if isinstance(backend, ChatBackend):
        return await _execute(backend, rows, options)
    from llmclient.config import load

    owned = load(backend)
    try:
        return await _execute(owned, rows, options)
    finally:
        await owned.aclose()


def run_with(backend: BackendSpec, rows: RowSource, options: RunOptions) -> RunSummary:
    """Sync :func:`arun_with`."""
    return _sync(lambda: arun_with(backend, rows, options))


def _sync(make: Callable[[], Coroutine[Any, Any, T]]) -> T:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass  # no loop: run below, outside this block, so the run's errors are not chained to this one
    else:
        raise InvalidRequestError(
            "pipeline.run() was called inside a running event loop; use 'await pipeline.arun(...)'"
        )
    return asyncio.run(make())


async def _execute(backend: ChatBackend, rows: RowSource, options: RunOptions) -> RunSummary:
    started = time.perf_counter()
    source = read_rows(rows)  # a missing input is reported before the output is touched
    results = ResultsFile(options.output, fsync=options.fsync)
    summary = RunSummary(output=results.path, dry_run=options.dry_run)
    with contextlib.ExitStack() as stack:
        check_writable(results.path, create=not options.dry_run)
        if not options.dry_run:
            stack.enter_context(OutputLock(results.path))  # held until the last line is written
        finished = results.scan(repair=not options.dry_run)  # only the lock holder cuts a damaged tail
        bar = Progress(summary, enabled=options.progress)
        if bar.enabled:
            bar.expected = count_rows(rows)
        run = RowRun(backend, options, results, summary, bar)
        with tracing.RunSpan() as span:  # each row's call is a child of the run's span
            try:
                await _rows(run, source, finished)
            finally:
                results.close()
                summary.wall_time = time.perf_counter() - started
                bar.close()
                span.set(_span_attributes(summary))
    if run.write_failure is not None:
        raise ResultsWriteError(results.path, run.write_failure, run.unsaved) from run.write_failure
    if run.crash is not None:
        raise run.crash
    return summary


async def _rows(run: RowRun, source: Iterable[dict[str, Any]], finished: Finished) -> None:
    """Every row of ``source``: skipped, failed, counted (dry run) or sent, ``concurrency`` at a time."""
    options, summary = run.options, run.summary
    rate = RequestRate(options.requests_per_minute)
    window = run.backend.context_window if options.dry_run else None
    plan = Plan(run, finished)
    in_flight: set[asyncio.Task[None]] = set()
    gate = asyncio.Semaphore(options.concurrency)
    try:
        for index, row in enumerate(source):
            if run.stopped() or (options.limit is not None and index >= options.limit):
                break
            summary.total += 1
            work = plan.row(index, row)
            if work is None:
                continue
            base, messages = work
            if options.dry_run:
                run.count(messages, window, base["row_id"])
                continue
            await gate.acquire()
            summary.stopped = run.budget.stop_reason(len(in_flight))
            if run.stopped() or summary.stopped:
                gate.release()
                if summary.stopped:  # this row and the rest are not started: a rerun sends them
                    logger.warning("stopping: %s", summary.stopped)
                break
            task = asyncio.ensure_future(run.answer(base, messages, rate))
            task.add_done_callback(in_flight.discard)
            task.add_done_callback(lambda _: gate.release())
            task.add_done_callback(run.settled)
            in_flight.add(task)
        while in_flight and not run.stopped():  # answered rows are paid for: let them land
            await asyncio.wait(list(in_flight), return_when=asyncio.FIRST_COMPLETED)
    except Exception:
        if in_flight and not run.stopped():  # a bad input line: keep the replies already paid for
            await asyncio.wait(list(in_flight))
        raise
    finally:
        for task in in_flight:
            task.cancel()
        if in_flight:
            await asyncio.wait(list(in_flight))


def _retry_may_fix(error: Exception) -> bool:
    """Whether sending the row again may succeed: not for a row the request itself is wrong for (a
    template that fails on it, a missing id, a prompt too long, a request the server refused as
    invalid), which only a change to the input, the template or the parameters fixes.
    """
    return not isinstance(error, InvalidRequestError)


def _span_attributes(summary: RunSummary) -> dict[str, Any]:
    """The run's span attributes: rows read, answered, failed, skipped, and the cost where known."""
    return {
        "llmclient.run.rows": summary.total,
        "llmclient.run.done": summary.done,
        "llmclient.run.failed": summary.failed,
        "llmclient.run.skipped": summary.skipped,
        "llmclient.run.cost": summary.cost if summary.priced else None,
        "llmclient.run.stopped": summary.stopped,
    }
