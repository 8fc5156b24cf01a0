"""The private event-loop thread a sync call waits on: interrupted waits and closes stop its work.

Issue 12 item 14: Ctrl-C during a sync ``chat_many`` left the batch running on the loop thread,
sending (and billing) every remaining request (tested on a real loopback server); item 13:
``close()`` while a call waited on the loop from another thread left that thread waiting forever.
"""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from llmclient import BackendUnavailableError
from llmclient._bridge import LoopThread
from llmclient.backends.openai import OpenAICompatibleBackend
from llmclient.testing.server import LoopbackServer, OpenAIHandler

LATENCY = 0.3
CONCURRENCY = 4
PROMPTS = [f"prompt {i}" for i in range(100)]


@pytest.fixture
def server() -> Iterator[LoopbackServer]:
    with LoopbackServer(OpenAIHandler(text="ok", latency=LATENCY)) as running:
        yield running


@pytest.fixture
def backend(server: LoopbackServer) -> Iterator[OpenAICompatibleBackend]:
    remote = OpenAICompatibleBackend(base_url=server.base_url, model="m", api_key="sk-test-bridge-123456")
    yield remote
    remote.close()


def press_ctrl_c_when(ready: Callable[[], bool]) -> threading.Thread:
    """From a timer thread, send SIGINT to the main thread (as Ctrl-C does) once ``ready()``."""
    main = threading.main_thread().ident
    assert main is not None and threading.current_thread() is threading.main_thread()

    def press() -> None:
        deadline = time.monotonic() + 30
        while not ready() and time.monotonic() < deadline:
            time.sleep(0.01)
        signal.pthread_kill(main, signal.SIGINT)

    presser = threading.Thread(target=press, daemon=True)
    presser.start()
    return presser


def test_ctrl_c_during_a_sync_chat_many_stops_sending_the_batch(
    server: LoopbackServer, backend: OpenAICompatibleBackend
) -> None:
    presser = press_ctrl_c_when(lambda: len(server.requests) >= CONCURRENCY)
    with pytest.raises(KeyboardInterrupt):
        backend.chat_many(PROMPTS, concurrency=CONCURRENCY)
    presser.join()
    at_interrupt = len(server.requests)
    time.sleep(6 * LATENCY)  # the old code sent about 4 more requests in each of these periods
    sent = len(server.requests)
    assert sent <= at_interrupt + CONCURRENCY  # at most what was already on its way
    assert sent <= 3 * CONCURRENCY < len(PROMPTS)
    # the loop thread is free: the next call runs at once
    assert backend.chat("after", max_new_tokens=2).text == "ok"


class LongWork:
    """A coroutine that waits 30 s, recording (from the loop thread) when it started and unwound."""

    def __init__(self) -> None:
        self.started, self.unwound = threading.Event(), threading.Event()

    async def run(self) -> None:
        self.started.set()
        try:
            await asyncio.sleep(30)
        finally:
            self.unwound.set()


def test_an_interrupted_wait_unwinds_the_coroutine_before_raising() -> None:
    loop_thread = LoopThread("test-bridge")
    work = LongWork()
    try:
        presser = press_ctrl_c_when(work.started.is_set)
        with pytest.raises(KeyboardInterrupt):
            loop_thread.run(work.run())
        presser.join()
        assert work.unwound.is_set()  # cancelled on the loop thread, and finished, before run() raised
        assert loop_thread.run(asyncio.sleep(0, result="free")) == "free"
    finally:
        loop_thread.close()


def test_close_while_another_thread_waits_ends_that_wait_as_closed() -> None:
    # before: close() stopped the loop under the waiting coroutine, and its caller waited forever
    loop_thread = LoopThread("test-bridge")
    work = LongWork()
    outcome: dict[str, BaseException] = {}

    def wait_on_it() -> None:
        try:
            loop_thread.run(work.run())
        except BaseException as exc:
            outcome["error"] = exc

    waiting = threading.Thread(target=wait_on_it, daemon=True)
    waiting.start()
    assert work.started.wait(30)
    loop_thread.close()
    waiting.join(10)
    assert not waiting.is_alive(), "run() still waits after close()"
    assert work.unwound.is_set()
    error = outcome["error"]
    assert isinstance(error, BackendUnavailableError) and "the backend was closed" in str(error)
    assert error.retryable is False


def test_a_run_after_close_starts_a_new_loop() -> None:
    loop_thread = LoopThread("test-bridge")
    assert loop_thread.run(asyncio.sleep(0, result=1)) == 1
    loop_thread.close()
    # a later run starts a new loop, as before
    assert loop_thread.run(asyncio.sleep(0, result=2)) == 2
    loop_thread.close()
