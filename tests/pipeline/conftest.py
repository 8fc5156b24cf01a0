"""Fixtures for the batch runner: a loopback server whose replies depend on the prompt."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from pipeline_support import EchoServer

from llmclient.backends.openai import OpenAICompatibleBackend
from llmclient.retry import RetryPolicy
from llmclient.testing.server import LoopbackServer


@pytest.fixture
def echo() -> Iterator[tuple[EchoServer, LoopbackServer]]:
    handler = EchoServer()
    with LoopbackServer(handler) as server:
        yield handler, server


@pytest.fixture
def backend(echo: tuple[EchoServer, LoopbackServer]) -> Iterator[OpenAICompatibleBackend]:
    _, server = echo
    with OpenAICompatibleBackend(
        model="test-model", base_url=server.base_url, retry=RetryPolicy(max_attempts=1)
    ) as chat_backend:
        yield chat_backend
