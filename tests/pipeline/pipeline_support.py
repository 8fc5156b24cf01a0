"""Helpers shared by the batch-runner tests (fixtures are in conftest.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from llmclient.testing.server import OpenAIHandler, Reply, Request, error_reply


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


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def read_results(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]
