"""Bridges between sync and async code, so each behaviour is written once.

A sync-native backend gets its async side by running on worker threads; an async-native one gets
its sync side from a private event loop on a daemon thread that lives as long as the backend.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from typing import Any, TypeVar

T = TypeVar("T")

_DONE = object()


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
        """Run ``coro`` on the loop thread and wait for its result from this thread."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def close(self) -> None:
        """Stop the loop and join its thread; a later ``run`` starts a new one."""
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is None or thread is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()


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
