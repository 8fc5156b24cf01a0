"""Fixtures for the batch runner: a loopback server whose replies depend on the prompt."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from llmclient.backends.openai_compat import OpenAICompatibleBackend
from llmclient.retry import RetryPolicy
from llmclient.testing.server import LoopbackServer, OpenAIHandler, Reply, Request, error_reply


class EchoServer:
    """Answers ``echo: <user prompt>``; prompts containing ``FAIL`` get a 400 while ``failing`` is set."""

    def __init__(self) -> None:
        self.failing = True
        self._ok = OpenAIHandler(text=lambda body: "echo: " + body["messages"][-1]["content"])

    def __call__(self, request: Request) -> Reply:
        content = request.json()["messages"][-1]["content"]
        if self.failing and "FAIL" in content:
            return error_reply(400, "this prompt is refused")
        return self._ok(request)


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


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def read_results(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]
