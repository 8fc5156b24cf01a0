"""A planted API key must appear nowhere llmclient writes: logs, errors, reprs, results, CLI output."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

import llmclient
from llmclient import pipeline
from llmclient.errors import LLMClientError
from llmclient.testing.server import LoopbackServer, OpenAIHandler, Reply, Request, error_reply, json_reply

KEY = "sk-or-v1-PLANTED0123456789abcdefSECRET"


class LeakyServer:
    """A server that echoes the key back in error bodies, as careless APIs do."""

    def __init__(self) -> None:
        self._ok = OpenAIHandler(text="fine")

    def __call__(self, request: Request) -> Reply:
        prompt = request.json()["messages"][-1]["content"]
        auth = request.headers.get("authorization", "")
        if prompt == "unauthorised":
            return error_reply(
                401,
                f"Incorrect API key provided: {auth[7:]}",
                code="invalid_api_key",
            )
        if prompt == "flaky":
            return json_reply({"error": {"message": f"upstream rejected {auth}", "code": 503}}, status=503)
        if prompt == "broken":
            return Reply(headers=[("Content-Type", "application/json")], body=f"not json {auth}".encode())
        return self._ok(request)


def _everything(errors: list[LLMClientError]) -> str:
    return "\n".join(f"{e}\n{e!r}\n{e.body}\n{dict(e.headers)}\n{e.provider_reason}" for e in errors)


def test_the_key_never_reaches_logs_errors_or_reprs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENROUTER_API_KEY", KEY)
    errors: list[LLMClientError] = []
    with LoopbackServer(LeakyServer()) as server, caplog.at_level(logging.DEBUG):
        backend = llmclient.load(
            {
                "type": "openrouter",
                "model": "m",
                "base_url": server.base_url,
                "initial_backoff": 0.01,
                "max_backoff": 0.02,
            }
        )
        assert backend.chat("hello").text == "fine"
        assert server.requests[-1].headers["authorization"] == f"Bearer {KEY}"  # it was really sent
        for prompt in ("unauthorised", "flaky", "broken"):
            for call in (
                lambda p: backend.chat(p),
                lambda p: backend.stream(p).final(),
                lambda p: asyncio.run(backend.achat(p)),
            ):
                with pytest.raises(LLMClientError) as info:
                    call(prompt)
                errors.append(info.value)
        replies = backend.chat_many(["hello", "flaky"], return_exceptions=True)
        errors.extend(r for r in replies if isinstance(r, LLMClientError))
        produced = [_everything(errors), caplog.text, repr(backend), str(vars(backend).keys())]
        backend.close()
    assert len(errors) == 10
    assert any("***" in str(e) for e in errors)  # the echoed key was there, and masked
    for text in produced:
        assert KEY not in text


def test_the_key_never_reaches_pipeline_results(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENROUTER_API_KEY", KEY)
    out = tmp_path / "out.jsonl"
    with LoopbackServer(LeakyServer()) as server:
        spec = {"type": "openrouter", "model": "m", "base_url": server.base_url, "max_attempts": 1}
        summary = pipeline.run(
            spec, [{"p": "hello"}, {"p": "unauthorised"}, {"p": "broken"}], template="{{ p }}", output=out
        )
    assert (summary.done, summary.failed) == (1, 2)
    assert "***" in out.read_text()
    assert KEY not in out.read_text()


def test_the_key_never_reaches_cli_output(tmp_path: Path) -> None:
    (tmp_path / "rows.jsonl").write_text('{"p": "hello"}\n{"p": "unauthorised"}\n{"p": "flaky"}\n')
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("LLMCLIENT_")},
        "OPENROUTER_API_KEY": KEY,
    }
    with LoopbackServer(LeakyServer()) as server:
        (tmp_path / "llmclient.toml").write_text(
            f'[backends.or]\ntype = "openrouter"\nmodel = "m"\nbase_url = "{server.base_url}"\n'
            "initial_backoff = 0.01\nmax_backoff = 0.02\n"
        )
        runs = [
            ["run", "rows.jsonl", "-t", "{{ p }}", "-o", "out.jsonl", "-v"],
            ["chat", "-v", "unauthorised"],
            ["chat", "-v", "--no-stream", "broken"],
            ["render", "-v", "hello"],
            ["backends", "--check", "-v"],
        ]
        outputs = [
            subprocess.run(
                [sys.executable, "-m", "llmclient", *args],
                cwd=tmp_path,
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
            )
            for args in runs
        ]
    assert [o.returncode for o in outputs] == [1, 1, 1, 0, 0]
    for output in outputs:
        assert KEY not in output.stdout + output.stderr
    assert "***" in outputs[1].stderr
    assert KEY not in (tmp_path / "out.jsonl").read_text()
