"""The one way into the thread that runs a backend's model: :meth:`Scheduler.submit`.

Every local call goes through ``submit`` and gets a :class:`Handle` back: ``chat`` and ``chat_many``
wait on their handles from the calling thread, ``achat`` and ``achat_many`` await them, ``stream``
and ``astream`` read token ids from them. One worker thread takes what has queued up, runs one
waiting stream or else the first planned batch, and repeats, so calls that wait at the same time
share a batch: ``chat`` from several threads at once, and the ``achat`` calls of one event-loop turn
(async callers pass ``gather=loop``: their jobs join the queue together when the turn ends).

Why one long-lived thread: torch's CPU kernels run on an OpenMP thread team that belongs to the
thread that calls them. Calling the model from a fresh thread per stream cost 1.06-1.11x a plain
``generate`` on 2 cores; one long-lived thread keeps one team and runs at 0.99x a plain ``generate``
(``bench/local.py``, docs/benchmarks.md).

Batches are planned by :func:`plan_batches`: jobs that may share a ``generate`` call (the same
sampling) are grouped, sorted by prompt length so a batch pads little, and cut so that rows x
(longest prompt + most new tokens) fits a token budget, which bounds the KV cache one batch needs.

Two kinds of job go through ``submit``: a :class:`~.generation.Job` (a reply, its handle gives an
:class:`~.generation.Outcome`) and a :class:`~.scoring.ScoreJob` (candidates to score, its handle
gives their :class:`~llmclient.logprobs.RawScore` s). Score jobs form batches of their own (their
``batch_key`` is shared by no generation job), each conversation weighing one row per candidate, and
run through :meth:`Generator.score <.generation.Generator.score>` instead of ``generate``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import queue
import threading
from collections import abc
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any, Generic, TypeVar, overload

from llmclient.backends.huggingface.generation import Generator, Job, Outcome
from llmclient.backends.huggingface.scoring import ScoreJob
from llmclient.errors import BackendUnavailableError
from llmclient.logprobs import RawScore

R = TypeVar("R")
AnyJob = Job | ScoreJob
"""What ``submit`` takes: a reply to generate, or candidates to score."""


class Handle(Generic[R]):
    """One submitted job: wait on it from a thread, await it from a coroutine, or read its tokens.

    ``handle.result()`` waits from sync code and ``await handle`` from async code; leaving either
    early by any exception (KeyboardInterrupt, a timeout, a cancelled task) cancels the job, which
    then never starts or stops at its next token. A stream handle is also the streamer its
    ``generate`` call reports to: :meth:`tokens` (sync) and :meth:`atokens` (async) read the ids of
    each new token as it is made.
    """

    def __init__(self, job: AnyJob, *, stream: bool = False) -> None:
        self.job = job
        self.future: concurrent.futures.Future[R] = concurrent.futures.Future()
        self._tokens: queue.SimpleQueue[list[int] | None] | None = queue.SimpleQueue() if stream else None
        self._prompt_seen = False
        self._arrived: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def streams(self) -> bool:
        """Whether this is a stream's handle (it runs alone, with the handle as its streamer)."""
        return self._tokens is not None

    def result(self, timeout: float | None = None) -> R:
        """The reply, waited for from this thread; raises what ended the job, or ``TimeoutError``."""
        wait_all([self], timeout)
        return self.future.result()

    def __await__(self) -> abc.Generator[Any, None, R]:
        """The reply, awaited; cancelling the awaiting task cancels the job."""
        yield from await_all([self]).__await__()
        return self.future.result()

    def cancel(self) -> None:
        """Stop the job: a waiting one never starts, a running one stops at its next token."""
        self.job.cancel.set()
        if self.future.cancel():
            self._push(None)

    def close(self) -> None:
        """Cancel the job and wait until the worker has let go of it: the model is free again."""
        self.cancel()
        concurrent.futures.wait([self.future])

    async def aclose(self) -> None:
        """Async :meth:`close`: the event loop runs on while the worker lets go."""
        self.cancel()
        if not self.future.done():
            await asyncio.wait([_watched(self.future)])

    # -- a stream's tokens ---------------------------------------------------------------------

    def tokens(self) -> Iterator[list[int]]:
        """The ids of each new token until the job ends, read from this thread."""
        items = self._stream_items()
        while (ids := items.get()) is not None:
            yield ids

    async def atokens(self) -> AsyncIterator[list[int]]:
        """The ids of each new token until the job ends, read from a coroutine (no pump thread)."""
        items = self._stream_items()
        self._arrived = arrived = asyncio.Event()
        self._loop = asyncio.get_running_loop()  # from now on the worker wakes this loop per token
        while True:
            try:
                ids = items.get_nowait()
            except queue.Empty:
                arrived.clear()
                await arrived.wait()
                continue
            if ids is None:
                return
            yield ids

    def put(self, value: Any) -> None:
        """Called by ``generate`` with the prompt first (skipped), then with each new token."""
        if self._prompt_seen:
            self._push(value.reshape(-1).tolist())
        else:
            self._prompt_seen = True

    def end(self) -> None:
        """Called by ``generate`` when it is done; the end of the tokens comes with the reply."""

    def _stream_items(self) -> queue.SimpleQueue[list[int] | None]:
        if self._tokens is None:
            raise TypeError("only a stream's handle has tokens: submit(..., stream=True)")
        return self._tokens

    def _push(self, ids: list[int] | None) -> None:
        """Hand a stream's reader the next ids (``None``: the job has ended)."""
        if self._tokens is None:
            return
        self._tokens.put(ids)
        loop = self._loop
        if loop is not None:
            try:
                loop.call_soon_threadsafe(self._arrived.set)  # type: ignore[union-attr]
            except RuntimeError:  # the loop is closed: nobody reads any more
                self.job.cancel.set()

    # -- the worker's side ---------------------------------------------------------------------

    def claim(self) -> bool:
        """Mark the job as running; false if it was cancelled first."""
        return not self.job.cancel.is_set() and self.future.set_running_or_notify_cancel()

    def finish(self, outcome: R | BaseException) -> None:
        """Give a claimed job its reply or the error that ended it."""
        if isinstance(outcome, BaseException):
            self.future.set_exception(outcome)
        else:
            self.future.set_result(outcome)
        self._push(None)


def wait_all(handles: Sequence[Handle[Any]], timeout: float | None = None) -> None:
    """Wait from this thread until every handle is settled; leaving early cancels them all.

    Any exception that interrupts the wait (KeyboardInterrupt, ``TimeoutError`` after ``timeout``
    seconds) cancels every job, so the model is free for the next call at once.
    """
    try:
        _, pending = concurrent.futures.wait([h.future for h in handles], timeout)
        if pending:
            raise TimeoutError(f"{len(pending)} job(s) still running after {timeout} s; cancelled")
    except BaseException:
        for handle in handles:
            handle.cancel()
        raise


async def await_all(handles: Sequence[Handle[Any]]) -> None:
    """Await every handle being settled; cancelling the awaiting task cancels them all."""
    if not handles:
        return
    try:
        await asyncio.wait([_watched(h.future) for h in handles])
    except BaseException:
        for handle in handles:
            handle.cancel()
        raise


def _watched(future: concurrent.futures.Future[R]) -> asyncio.Future[R]:
    """``future`` as an asyncio future; its error is read from ``future`` itself, not from this one."""
    waiter = asyncio.wrap_future(future)
    waiter.add_done_callback(lambda f: f.cancelled() or f.exception())
    return waiter


class Scheduler:
    """The worker thread that runs one model, and the one way to give it work.

    Args:
        generator: runs one batch on the model.
        token_budget: most rows x (longest prompt + most new tokens) in one batch.
        max_rows: most conversations in one batch.
    """

    def __init__(self, generator: Generator, *, token_budget: int, max_rows: int) -> None:
        self._generator: Generator | None = generator
        self._token_budget = token_budget
        self._max_rows = max_rows
        self._queue: queue.SimpleQueue[list[Handle[Any]] | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._running: list[Handle[Any]] = []
        self._gathering: dict[asyncio.AbstractEventLoop, list[Handle[Any]]] = {}

    @property
    def thread(self) -> threading.Thread | None:
        """The worker thread, once the first job has started it."""
        return self._thread

    @overload
    def submit(
        self, jobs: Sequence[Job], *, stream: bool = False, gather: asyncio.AbstractEventLoop | None = None
    ) -> list[Handle[Outcome]]: ...

    @overload
    def submit(
        self, jobs: Sequence[ScoreJob], *, gather: asyncio.AbstractEventLoop | None = None
    ) -> list[Handle[list[RawScore]]]: ...

    def submit(
        self, jobs: Sequence[AnyJob], *, stream: bool = False, gather: asyncio.AbstractEventLoop | None = None
    ) -> list[Handle[Any]]:
        """Queue ``jobs`` for the worker; their handles come back in the same order.

        Args:
            jobs: what to generate (:class:`Job`) or to score (:class:`ScoreJob`).
            stream: the jobs run alone, one at a time, each handle receiving its tokens (generation
                jobs only).
            gather: the running event loop, for async callers: the jobs join the queue when the
                loop's current turn ends, with everything else submitted in that turn, so the
                tasks of one ``asyncio.gather`` share a batch. Sync callers leave it out (their jobs
                are queued at once; a sync wait inside the loop would never see the turn end).
        """
        if stream and any(isinstance(job, ScoreJob) for job in jobs):
            raise TypeError("a score job has no tokens to stream")
        handles: list[Handle[Any]] = [Handle(job, stream=stream) for job in jobs]
        if not handles:
            return handles
        if gather is None:
            self._enqueue(handles)
            return handles
        with self._lock:
            bucket = self._gathering.get(gather)
            if bucket is None:
                bucket = self._gathering[gather] = []
                gather.call_soon(self._flush, gather)
            bucket.extend(handles)
        return handles

    def close(self) -> None:
        """Stop what runs at its next token, fail what waits, end the thread, let go of the model.

        Jobs waiting (or submitted later) fail with :class:`BackendUnavailableError`.
        """
        with self._lock:
            self._closed = True
            thread, self._thread = self._thread, None
            running = list(self._running)
        if thread is not None:
            self._queue.put(None)
        for handle in running:
            handle.job.cancel.set()
        if thread is not None:
            thread.join()
        self._generator = None

    def _flush(self, loop: asyncio.AbstractEventLoop) -> None:
        with self._lock:
            bucket = self._gathering.pop(loop, [])
        self._enqueue(bucket)

    def _enqueue(self, handles: list[Handle[Any]]) -> None:
        with self._lock:
            if not self._closed:
                if self._thread is None:
                    self._thread = threading.Thread(
                        target=self._serve, name="llmclient-hf-model", daemon=True
                    )
                    self._thread.start()
                self._queue.put(handles)
                return
        _fail(handles)

    # -- on the worker thread ------------------------------------------------------------------

    def _serve(self) -> None:
        waiting: list[Handle[Any]] = []
        while not self._closed:
            if not waiting:
                waiting.extend(self._queue.get() or [])  # blocks; close() wakes it with None
            self._drain(waiting)
            if waiting and not self._closed:
                waiting = self._step(waiting)
        self._drain(waiting)  # nothing is queued once closed is seen
        _fail(waiting)

    def _drain(self, waiting: list[Handle[Any]]) -> None:
        """Add everything queued up to ``waiting``, without blocking."""
        while True:
            try:
                waiting.extend(self._queue.get_nowait() or [])
            except queue.Empty:
                return

    def _step(self, waiting: list[Handle[Any]]) -> list[Handle[Any]]:
        """Run one stream, or else one planned batch; return what still waits."""
        waiting = [h for h in waiting if not h.future.cancelled()]
        stream = next((h for h in waiting if h.streams), None)
        if stream is not None:
            chosen = [stream]
        elif waiting:
            by_job = {id(h.job): h for h in waiting}
            plan = plan_batches(
                [h.job for h in waiting], token_budget=self._token_budget, max_rows=self._max_rows
            )
            chosen = [by_job[id(job)] for job in plan[0]]
        else:
            return []
        with self._lock:  # close() sees what runs, or this sees close()
            if self._closed:
                return waiting
            live = self._running = [h for h in chosen if h.claim()]
        if live:
            self._run(live)
        taken = {id(h) for h in chosen}
        return [h for h in waiting if id(h) not in taken]

    def _run(self, live: list[Handle[Any]]) -> None:
        generator = self._generator
        assert generator is not None  # released only once this thread has ended
        jobs = [h.job for h in live]
        try:
            outcomes: Sequence[Any]
            if isinstance(jobs[0], ScoreJob):
                outcomes = generator.score([j for j in jobs if isinstance(j, ScoreJob)], self._token_budget)
            else:
                outcomes = generator.run(
                    [j for j in jobs if isinstance(j, Job)], live[0] if live[0].streams else None
                )
        except BaseException as exc:
            for handle in live:
                handle.finish(exc)
        else:
            for handle, outcome in zip(live, outcomes, strict=True):
                handle.finish(outcome)
        finally:
            with self._lock:
                self._running = []


def _fail(handles: list[Handle[Any]]) -> None:
    """Fail jobs that can no longer run: the backend was closed."""
    for handle in handles:
        if handle.claim():
            handle.finish(BackendUnavailableError("the backend was closed before this request ran"))


def plan_batches(jobs: Sequence[AnyJob], *, token_budget: int, max_rows: int) -> list[list[AnyJob]]:
    """Cut ``jobs`` into batches that share a :attr:`Job.batch_key`, of similar prompt lengths.

    A batch holds at most ``max_rows`` jobs (and no more than any of its jobs' own ``max_rows``), and
    rows x (longest prompt + most new tokens) stays within ``token_budget``, where a generation job
    is one row and a score job one per candidate. A job that alone exceeds
    the budget still runs, alone. A ``response_format`` never splits a batch: each row keeps its own
    grammar (or none) inside the shared ``generate`` call.
    """
    groups: dict[tuple[Any, ...], list[AnyJob]] = {}
    for job in jobs:
        groups.setdefault(job.batch_key, []).append(job)
    batches: list[list[AnyJob]] = []
    for group in groups.values():
        batch: list[AnyJob] = []
        width = new = rows = 0
        cap = max_rows
        for job in sorted(group, key=lambda j: len(j.prompt.ids)):
            length = len(job.prompt.ids)
            grown = (max(width, length), max(new, job.max_new_tokens), min(cap, job.max_rows))
            if batch and (
                (rows + job.weight) * (grown[0] + grown[1]) > token_budget or len(batch) >= grown[2]
            ):
                batches.append(batch)
                batch, rows, grown = [], 0, (length, job.max_new_tokens, min(max_rows, job.max_rows))
            batch.append(job)
            rows += job.weight
            width, new, cap = grown
        if batch:
            batches.append(batch)
    return batches
