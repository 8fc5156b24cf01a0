"""Helpers shared by the remote backend tests (fixtures are in conftest.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

from llmclient.backends.openai import OpenAICompatibleBackend
from llmclient.retry import RetryPolicy
from llmclient.testing.server import Reply, Request
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


FAST_RETRY = RetryPolicy(max_attempts=3, initial_backoff=0.01, max_backoff=0.05, jitter=0.0)


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
