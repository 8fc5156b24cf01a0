"""Bridges between sync and async code, so each behaviour is written once.

A sync-native backend gets its async side by running on worker threads; an async-native one gets
its sync side from a private event loop on a daemon thread that lives as long as the backend.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from typing import Any, TypeVar

from llmclient.errors import BackendClosedError

T = TypeVar("T")

_DONE = object()

UNWIND_SECONDS = 5.0
"""How long an interrupted :meth:`LoopThread.run`, or a close, waits for cancelled work to unwind."""


class LoopThread:
    """An event loop running on its own daemon thread; sync code submits coroutines to it.

    One loop for the owner's whole life matters: async HTTP sessions belong to the loop that made
    them, so a fresh ``asyncio.run`` per call would throw the connection pool away each time.
    """

    def __init__(self, name: str = "llmclient-loop") -> None:
        self._name = name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._waiting: set[concurrent.futures.Future[Any]] = set()

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The loop, started on first use."""
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(target=loop.run_forever, name=self._name, daemon=True)
                thread.start()
                self._loop, self._thread = loop, thread
            return self._loop

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the loop thread and wait for its result from this thread.

        Whatever ends the wait early (Ctrl-C's ``KeyboardInterrupt``, any ``BaseException``) cancels
        ``coro`` on the loop thread and waits (up to :data:`UNWIND_SECONDS`) until it has unwound
        before raising, so a batch sends no request after its caller was interrupted. If
        :meth:`close` cancels ``coro`` instead, this raises "the backend was closed".
        """
        loop = self.loop
        outcome: concurrent.futures.Future[T] = concurrent.futures.Future()
        tasks: list[asyncio.Task[T]] = []

        def start() -> None:  # on the loop thread; callbacks run in order, so before cancel()
            task = loop.create_task(coro)
            tasks.append(task)
            task.add_done_callback(lambda done: _settle(done, outcome))

        def cancel() -> None:
            for task in tasks:
                task.cancel()

        with self._lock:
            self._waiting.add(outcome)
        try:
            try:
                loop.call_soon_threadsafe(start)
            except RuntimeError:  # the loop was closed between self.loop and here
                _cancel(outcome)
            return outcome.result()
        except concurrent.futures.CancelledError:  # close() cancelled it, or it never started
            if not tasks:
                coro.close()
            raise BackendClosedError() from None
        except BaseException:
            if not outcome.done():
                with contextlib.suppress(RuntimeError):  # the loop was closed meanwhile
                    loop.call_soon_threadsafe(cancel)
                concurrent.futures.wait([outcome], timeout=UNWIND_SECONDS)
            raise
        finally:
            with self._lock:
                self._waiting.discard(outcome)

    def close(self) -> None:
        """Cancel what still runs on the loop, stop it and join its thread; a later ``run`` starts a
        new one. A ``run`` waiting meanwhile (a ``chat_many`` on another thread) raises "the backend
        was closed" instead of waiting forever.
        """
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is None or thread is None:
            return
        unwound = asyncio.run_coroutine_threadsafe(_cancel_all(), loop)
        concurrent.futures.wait([unwound], timeout=UNWIND_SECONDS + 1)
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()
        with self._lock:  # whatever was handed over too late to run: its caller stops waiting
            late = list(self._waiting)
        for outcome in late:
            _cancel(outcome)


def _settle(task: asyncio.Task[T], outcome: concurrent.futures.Future[T]) -> None:
    """Copy a finished task's result, error or cancellation into the future its caller waits on."""
    if task.cancelled():
        _cancel(outcome)
    elif (error := task.exception()) is not None:
        outcome.set_exception(error)
    else:
        outcome.set_result(task.result())


def _cancel(outcome: concurrent.futures.Future[Any]) -> None:
    """Cancel a future nobody runs, waking ``concurrent.futures.wait`` too (``cancel()`` alone does not)."""
    if outcome.cancel():
        outcome.set_running_or_notify_cancel()


async def _cancel_all() -> None:
    """Cancel every other task on this loop and wait (a while) until they have unwound."""
    tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    for task in tasks:
        task.cancel()
    if tasks:
        await asyncio.wait(tasks, timeout=UNWIND_SECONDS)


async def iterate_in_thread(make: Callable[[], Iterator[T]]) -> AsyncIterator[T]:
    """Run a blocking iterator on a worker thread and yield its items to async code.

    Errors raised by the iterator reach the consumer; when the consumer stops early the iterator is
    closed on its thread, so whatever it holds (a model, a connection) is released.
    """
    loop = asyncio.get_running_loop()
    items: asyncio.Queue[tuple[bool, Any]] = asyncio.Queue()
    stop = threading.Event()

    def pump() -> None:
        iterator = make()
        try:
            for item in iterator:
                loop.call_soon_threadsafe(items.put_nowait, (True, item))
                if stop.is_set():
                    break
            loop.call_soon_threadsafe(items.put_nowait, (True, _DONE))
        except BaseException as exc:
            loop.call_soon_threadsafe(items.put_nowait, (False, exc))
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()

    worker = asyncio.ensure_future(asyncio.to_thread(pump))
    try:
        while True:
            ok, item = await items.get()
            if not ok:
                raise item
            if item is _DONE:
                return
            yield item
    finally:
        stop.set()
        await asyncio.shield(worker)


def call_in_thread(fn: Callable[..., T], *args: Any) -> Awaitable[T]:
    """Run a blocking call on a worker thread so the event loop stays free."""
    return asyncio.to_thread(fn, *args)
