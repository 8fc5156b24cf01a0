"""Fixtures for the OpenAI-compatible backend: a real loopback server and backends pointed at it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from remote_support import API_KEY, FAST_RETRY, Caller

import llmclient
from llmclient.backends.openai import OpenAICompatibleBackend
from llmclient.testing.server import Handler, LoopbackServer


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


@pytest.fixture
def built(runner: asyncio.Runner) -> Iterator[Callable[..., OpenAICompatibleBackend]]:
    """``llmclient.load`` for remote backends, closed after the test."""
    backends: list[OpenAICompatibleBackend] = []

    def load(spec: Any, **options: Any) -> OpenAICompatibleBackend:
        backend = llmclient.load(spec, **options)
        assert isinstance(backend, OpenAICompatibleBackend)
        backends.append(backend)
        return backend

    yield load
    for backend in backends:
        backend.close()


@pytest.fixture(params=["sync", "async"])
def call(request: pytest.FixtureRequest, runner: asyncio.Runner) -> Caller:
    return Caller(str(request.param), runner)
