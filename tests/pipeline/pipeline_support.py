"""Helpers shared by the batch-runner tests (fixtures are in conftest.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, ClassVar

from llmclient.backend import ChatBackend
from llmclient.testing.server import OpenAIHandler, Reply, Request, error_reply
from llmclient.types import ChatRequest, ChatResponse, Usage

ROWS = [{"id": i, "dish": f"dish {i}"} for i in range(8)]
"""The rows of the ``project`` fixture's ``rows.jsonl``."""


def llmclient(
    *args: str, cwd: Path, stdin: str | None = None, timeout: float = 60, **popen: Any
) -> subprocess.CompletedProcess[str]:
    """Run the ``llmclient`` command as a user does, in ``cwd``, without the caller's LLMCLIENT_ settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLMCLIENT_")}
    return subprocess.run(
        [sys.executable, "-m", "llmclient", *args],
        cwd=cwd,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        **popen,
    )


def write_project(folder: Path, base_url: str) -> Path:
    """An llmclient.toml whose default backend is the server at ``base_url``, and ``rows.jsonl``."""
    (folder / "llmclient.toml").write_text(
        'default = "test"\n\n[backends.test]\ntype = "openai-compatible"\nmodel = "test-model"\n'
        f'base_url = "{base_url}"\nmax_attempts = 1\n\n'
        '[backends.broken]\ntype = "openai-compatible"\nmodel = "m"\nbase_url = "http://127.0.0.1:9/v1"\n'
        "max_attempts = 1\n"
    )
    write_jsonl(folder / "rows.jsonl", ROWS)
    return folder


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


class ParrotServer:
    """Answers with the user prompt itself, so the template writes the reply (JSON, a choice).

    While ``chatty`` is set, a prompt containing ``CHATTY`` is answered with ``Sure! `` before it,
    as a model that talks around its JSON does.
    """

    def __init__(self) -> None:
        self.chatty = True
        self._ok = OpenAIHandler(text=self._text)

    def _text(self, body: dict[str, Any]) -> str:
        content = str(body["messages"][-1]["content"])
        return ("Sure! " if self.chatty and "CHATTY" in content else "") + content

    def __call__(self, request: Request) -> Reply:
        return self._ok(request)


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def read_results(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


class EchoBackend(ChatBackend):
    """A small in-process backend (the contract a third party implements): echoes the prompt.

    ``endpoint`` is its own setting, as a remote backend's base URL is; a prompt containing ``BUG``
    raises ``ValueError``, as a backend with a bug does.
    """

    type_name: ClassVar[str] = "echo"

    def __init__(self, *, endpoint: str | None = None, **options: Any) -> None:
        super().__init__(model="echo-model", **options)
        self._endpoint = endpoint
        self.calls: list[ChatRequest] = []

    @property
    def endpoint(self) -> str | None:
        return self._endpoint

    def _chat(self, request: ChatRequest) -> ChatResponse:
        self.calls.append(request)
        prompt = request.messages[-1].text
        if "BUG" in prompt:
            raise ValueError(f"cannot handle {prompt!r}")
        return ChatResponse(text="echo: " + prompt, finish_reason="stop", usage=Usage(3, 2))
