"""The one thread that runs a backend's model: every reply, streamed, single or batched, runs here.

Why one thread: torch's CPU kernels run on an OpenMP thread team that belongs to the thread that
calls them. Calling the model from a new thread for each stream, or from several threads in turn,
leaves teams competing for the cores; on a 2-core machine that cost 5-9% of every ``generate``
(``bench/local.py``). One long-lived thread keeps one team, and streams run at the speed of a plain
``generate`` call.

It also makes batching natural. Callers (sync ``chat`` from any thread, ``achat``, ``chat_many``,
streams) submit :class:`Pending` jobs; at each step the worker takes everything that has queued up,
runs one waiting stream or else the first planned batch, and repeats, so requests that arrive while
a batch runs join the next one. ``Collector`` hands over every ``achat`` of one event-loop turn
together, so the tasks of one ``asyncio.gather`` share a batch.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import queue
import threading
from collections.abc import Callable, Sequence
from typing import Any

from llmclient.backends._hf_generation import Job, Outcome
from llmclient.errors import BackendUnavailableError

Deliver = Callable[[Outcome | BaseException], None]
"""Hands a job's reply, or the error that ended it, to whoever waits for it."""


class Pending:
    """A job waiting for the worker, and where its reply goes.

    Args:
        job: what to generate.
        deliver: called (on the worker thread) with the reply or the error.
        streamer: a transformers streamer; a job with one runs alone.
    """

    def __init__(self, job: Job, deliver: Deliver, streamer: Any = None) -> None:
        self.job = job
        self.streamer = streamer
        self._deliver = deliver
        self._lock = threading.Lock()
        self._started = False
        self._finished = threading.Event()

    @classmethod
    def on_loop(cls, job: Job) -> tuple[Pending, asyncio.Future[Outcome]]:
        """A job whose reply goes to a future of the running event loop; cancelling the future
        cancels the job.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Outcome] = loop.create_future()
        future.add_done_callback(lambda f: job.cancel.set() if f.cancelled() else None)

        def deliver(outcome: Outcome | BaseException) -> None:
            try:
                loop.call_soon_threadsafe(_settle, future, outcome)
            except RuntimeError:  # the loop is closed: nobody waits any more
                job.cancel.set()

        return cls(job, deliver), future

    @classmethod
    def on_thread(cls, job: Job) -> tuple[Pending, concurrent.futures.Future[Outcome]]:
        """A job whose reply goes to a future that a thread can wait on."""
        future: concurrent.futures.Future[Outcome] = concurrent.futures.Future()

        def deliver(outcome: Outcome | BaseException) -> None:
            if isinstance(outcome, BaseException):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)

        return cls(job, deliver), future

    def claim(self) -> bool:
        """Mark the job as running; false (and finished) if it was cancelled first."""
        with self._lock:
            if self.job.cancel.is_set():
                self._finished.set()
                return False
            self._started = True
            return True

    def resolve(self, outcome: Outcome | BaseException) -> None:
        """Deliver the reply or error and mark the job finished."""
        try:
            self._deliver(outcome)
        finally:
            self._finished.set()

    def cancel(self) -> None:
        """Stop the job; if it is running, wait until the model has let go of it."""
        with self._lock:
            self.job.cancel.set()
            running = self._started
        if running:
            self._finished.wait()


def _settle(future: asyncio.Future[Outcome], outcome: Outcome | BaseException) -> None:
    if future.done():
        return
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)


class GenerationWorker:
    """The thread that runs the model; see the module docstring.

    Args:
        run: generates one batch of jobs, with a streamer or ``None``.
        plan: cuts waiting jobs into batches, the first of which runs next.
    """

    def __init__(
        self,
        run: Callable[[list[Job], Any], list[Outcome]],
        plan: Callable[[Sequence[Job]], list[list[Job]]],
    ) -> None:
        self._run = run
        self._plan = plan
        self._queue: queue.SimpleQueue[list[Pending] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._running: list[Pending] = []

    def submit(self, pending: list[Pending]) -> None:
        """Queue jobs for the worker."""
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._serve, name="llmclient-hf-model", daemon=True)
                self._thread.start()
        self._queue.put(pending)

    def close(self) -> None:
        """Stop what runs at its next token, fail what waits, and end the thread."""
        with self._lock:
            thread, self._thread = self._thread, None
            running = list(self._running)
        if thread is None:
            return
        for pending in running:
            pending.job.cancel.set()
        self._queue.put(None)
        thread.join()

    def _serve(self) -> None:
        waiting: list[Pending] = []
        while True:
            if not waiting:
                first = self._queue.get()
                if first is None:
                    break
                waiting.extend(first)
            if self._drain(waiting):
                break
            waiting = self._step(waiting)
        closed = BackendUnavailableError("the backend was closed before this request ran")
        while True:
            try:
                more = self._queue.get_nowait()
            except queue.Empty:
                break
            waiting.extend(more or [])
        for pending in waiting:
            pending.resolve(closed)

    def _drain(self, waiting: list[Pending]) -> bool:
        """Add what has queued up to ``waiting``; true if the worker was asked to stop."""
        while True:
            try:
                more = self._queue.get_nowait()
            except queue.Empty:
                return False
            if more is None:
                return True
            waiting.extend(more)

    def _step(self, waiting: list[Pending]) -> list[Pending]:
        """Run one stream, or else one planned batch; return what still waits."""
        stream = next((p for p in waiting if p.streamer is not None), None)
        if stream is not None:
            chosen = [stream]
        else:
            by_job = {id(p.job): p for p in waiting}
            chosen = [by_job[id(job)] for job in self._plan([p.job for p in waiting])[0]]
        taken = {id(p) for p in chosen}
        rest = [p for p in waiting if id(p) not in taken]
        live = [p for p in chosen if p.claim()]
        if live:
            self._execute(live)
        return rest

    def _execute(self, live: list[Pending]) -> None:
        with self._lock:
            self._running = live
        try:
            outcomes = self._run([p.job for p in live], live[0].streamer)
        except BaseException as exc:
            for pending in live:
                pending.resolve(exc)
        else:
            for pending, outcome in zip(live, outcomes, strict=True):
                pending.resolve(outcome)
        finally:
            with self._lock:
                self._running = []


class Collector:
    """Gathers the ``achat`` calls of one event-loop turn and submits them to the worker together.

    The first call in a turn schedules a flush with ``call_soon``; every task that runs before it in
    the same turn (say, the 16 tasks of one ``asyncio.gather``) joins the same submission.
    """

    def __init__(self, worker: GenerationWorker) -> None:
        self._worker = worker
        self._buckets: dict[asyncio.AbstractEventLoop, list[Pending]] = {}
        self._lock = threading.Lock()

    def add(self, pending: Pending) -> None:
        """Add a job to the running loop's current turn."""
        loop = asyncio.get_running_loop()
        with self._lock:
            bucket = self._buckets.get(loop)
            if bucket is None:
                bucket = self._buckets[loop] = []
                loop.call_soon(self._flush, loop)
            bucket.append(pending)

    def _flush(self, loop: asyncio.AbstractEventLoop) -> None:
        with self._lock:
            bucket = self._buckets.pop(loop, [])
        if bucket:
            self._worker.submit(bucket)
