"""Fixtures for the OpenAI-compatible backend: a real loopback server and backends pointed at it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest

from llmclient.backends.openai_compat import OpenAICompatibleBackend
from llmclient.retry import RetryPolicy
from llmclient.testing.server import Handler, LoopbackServer, Reply, Request
from llmclient.types import ChatResponse

API_KEY = "sk-test-9f8e7d6c5b4a-SECRET"


class Script:
    """A handler answering requests with prepared replies in order; the last one repeats."""

    def __init__(self, replies: Sequence[Reply | Callable[[Request], Reply]]) -> None:
        self.replies = list(replies)
        self.seen: list[Request] = []

    def __call__(self, request: Request) -> Reply:
        self.seen.append(request)
        reply = self.replies[min(len(self.seen), len(self.replies)) - 1]
        return reply(request) if callable(reply) else reply


@pytest.fixture
def serve() -> Iterator[Callable[[Handler], LoopbackServer]]:
    servers: list[LoopbackServer] = []

    def start(handler: Handler) -> LoopbackServer:
        server = LoopbackServer(handler).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


FAST_RETRY = RetryPolicy(max_attempts=3, initial_backoff=0.01, max_backoff=0.05, jitter=0.0)


@pytest.fixture
def runner() -> Iterator[asyncio.Runner]:
    """One event loop for the whole test, closed after the backends (which close on it)."""
    with asyncio.Runner() as loop_runner:
        yield loop_runner


@pytest.fixture
def make_backend(runner: asyncio.Runner) -> Iterator[Callable[..., OpenAICompatibleBackend]]:
    backends: list[OpenAICompatibleBackend] = []

    def make(server: LoopbackServer, **kwargs: Any) -> OpenAICompatibleBackend:
        kwargs.setdefault("model", "test-model")
        kwargs.setdefault("api_key", API_KEY)
        kwargs.setdefault("retry", FAST_RETRY)
        backend = OpenAICompatibleBackend(base_url=server.base_url, **kwargs)
        backends.append(backend)
        return backend

    yield make
    for backend in backends:
        backend.close()  # closes the async session on the runner's loop, still open here


class Caller:
    """Calls a backend's sync or async methods, so one test checks both paths."""

    def __init__(self, mode: str, runner: asyncio.Runner) -> None:
        self.mode = mode
        self.runner = runner

    def chat(self, backend: OpenAICompatibleBackend, messages: Any = "Hi", **options: Any) -> ChatResponse:
        if self.mode == "sync":
            return backend.chat(messages, **options)
        return self.runner.run(backend.achat(messages, **options))

    def stream(
        self, backend: OpenAICompatibleBackend, messages: Any = "Hi", **options: Any
    ) -> tuple[list[str], ChatResponse]:
        """The pieces and the final reply of ``stream`` or ``astream``."""
        if self.mode == "sync":
            s = backend.stream(messages, **options)
            pieces = [d.text for d in s]
            return pieces, s.final()

        async def run() -> tuple[list[str], ChatResponse]:
            s = backend.astream(messages, **options)
            pieces = [d.text async for d in s]
            return pieces, await s.final()

        return self.runner.run(run())


@pytest.fixture(params=["sync", "async"])
def call(request: pytest.FixtureRequest, runner: asyncio.Runner) -> Caller:
    return Caller(str(request.param), runner)
