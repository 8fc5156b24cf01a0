"""Helpers shared by the ray engine's tests (fixtures are in conftest.py)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from llmclient.scale.shards import read_results
from llmclient.testing.server import LoopbackServer, OpenAIHandler, Reply, Request, error_reply

RAY_WARNINGS = pytest.mark.filterwarnings("ignore::DeprecationWarning:ray")
"""Ray's own deprecation warnings (its DataContext warns about its own defaults) are not ours to fix."""


class EchoServer:
    """Answers ``echo: <user prompt>`` after ``latency`` seconds; a prompt holding ``FAIL`` gets a 400
    while ``failing`` is set.
    """

    def __init__(self, latency: float = 0.0) -> None:
        self.failing = True
        self._ok = OpenAIHandler(
            text=lambda body: "echo: " + body["messages"][-1]["content"], latency=latency
        )

    def __call__(self, request: Request) -> Reply:
        if self.failing and "FAIL" in request.json()["messages"][-1]["content"]:
            return error_reply(400, "this prompt is refused")
        return self._ok(request)


def echo_config(server: LoopbackServer) -> dict[str, object]:
    """The loopback server as a backend configuration (actors build their backend from it)."""
    return {
        "type": "openai-compatible",
        "model": "test-model",
        "base_url": server.base_url,
        "retry": {"max_attempts": 1},
    }


def lines_by_key(lines: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Result lines by key, after checking each key has exactly one line."""
    counts = Counter(line["key"] for line in lines)
    assert [key for key, n in counts.items() if n > 1] == []
    return {line["key"]: line for line in lines}


def shard_lines(folder: Path) -> dict[str, dict[str, Any]]:
    """The result lines of an output folder, by key, each key once."""
    return lines_by_key(list(read_results(folder)))


def comparable(line: dict[str, Any]) -> tuple[Any, ...]:
    """What a line of the ray engine and of the batch runner must share for the same row."""
    error = line["error"]
    return (
        line["row_id"],
        line["input"],
        line["status"],
        line["text"],
        error and error["type"],
        line["model"],
    )


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The lines of the batch runner's results file."""
    return [json.loads(line) for line in path.read_text().splitlines()]
