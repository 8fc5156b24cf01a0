"""Fixtures for the batch runner: loopback servers whose replies depend on the prompt."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pipeline_support import EchoServer, ParrotServer, write_project

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


@pytest.fixture
def project(echo: tuple[EchoServer, LoopbackServer], tmp_path: Path) -> Path:
    """A working directory with an llmclient.toml pointing at the loopback server, and rows.jsonl."""
    _, server = echo
    return write_project(tmp_path, server.base_url)


@pytest.fixture
def parrot(tmp_path: Path) -> Iterator[tuple[ParrotServer, Path]]:
    """A server answering each prompt with itself, and a project (llmclient.toml, rows.jsonl) using it."""
    handler = ParrotServer()
    with LoopbackServer(handler) as server:
        yield handler, write_project(tmp_path, server.base_url)
