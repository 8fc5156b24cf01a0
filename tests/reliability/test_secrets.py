"""A planted API key must appear nowhere llmclient writes: logs, errors, reprs, results, CLI output."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx2
import pytest

import llmclient
from llmclient import GenerationParams, Message, pipeline
from llmclient.backends.openai import OpenAICompatibleBackend
from llmclient.errors import InvalidRequestError, LLMClientError
from llmclient.testing import CassetteTransport, FunctionBackend, cassette
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


# -- cassettes (issue 12 item 19): a backend's own credentials, whatever their shape -------------------

GATEWAY_KEY = "gw-tenant-7f3a9c1e5b2d"  # looks like no known key: only its value can find it
PASSWORD = "correct horse battery staple"


class KeyedBackend(FunctionBackend):
    """A backend configured with secrets that look like no known key, and a dummy one."""

    @property
    def credentials(self) -> tuple[str, ...]:
        return (GATEWAY_KEY, PASSWORD, "EMPTY")


def leaky(messages: list[Message], params: GenerationParams) -> str:
    """Echoes the credentials, as careless servers do in replies and error messages."""
    if messages[-1].text == "refuse":
        raise InvalidRequestError(f"Unexpected key {GATEWAY_KEY} for user:{PASSWORD} (EMPTY is a dummy)")
    return f"EMPTY? no: {GATEWAY_KEY} and {PASSWORD}"


@pytest.mark.parametrize("lazily", [False, True], ids=["backend", "factory"])
def test_a_backends_credentials_never_reach_a_chat_cassette(tmp_path: Path, lazily: bool) -> None:
    path = tmp_path / "chat.yaml"
    inner: Any = (lambda: KeyedBackend(leaky)) if lazily else KeyedBackend(leaky)
    with cassette(path, inner, mode="once") as backend:
        backend.chat("hello")
        assert [d.text for d in backend.stream("stream it")]
        with pytest.raises(InvalidRequestError):
            backend.chat("refuse")
    text = path.read_text()
    assert GATEWAY_KEY not in text and PASSWORD not in text
    assert text.count("**scrubbed**") >= 6
    assert "Unexpected" in text and "EMPTY" in text  # a dummy key under 8 characters is left alone
    with cassette(path) as replay, pytest.raises(InvalidRequestError) as refused:
        replay.chat("refuse")
    assert str(refused.value).startswith("Unexpected key **scrubbed** for user:**scrubbed**")


def test_query_keys_key_headers_and_echoed_keys_never_reach_an_http_cassette(tmp_path: Path) -> None:
    query_key = "az-query-0123456789abcdef"  # Azure's ?api-key=, shaped like no known key
    named_header_key = "goog-header-0123456789"  # in x-goog-api-key: a credential by its name
    tenant_key = "tenant-9876543210-zyx"  # in a header named like nothing secret: a credential by value
    url_password = "pa55word-in-the-url"

    def careless(request: Request) -> Reply:
        seen = f"{request.query} {request.headers}"  # echoes every key it got, as some gateways do
        return error_reply(401, f"Incorrect API key provided: {seen}", code="invalid_api_key")

    path = tmp_path / "http.yaml"
    with LoopbackServer(careless) as server:
        host = server.url.split("://", 1)[1]
        url = f"http://user:{url_password}@{host}/v1/chat/completions?api-version=2024-06-01&api-key={query_key}"
        headers = {"x-goog-api-key": named_header_key, "x-tenant": tenant_key}
        transport = CassetteTransport(path, mode="once")
        transport.add_secrets([tenant_key, "EMPTY"])  # what a backend given this transport registers
        with httpx2.Client(transport=transport) as client:
            live = client.post(url, json={"messages": []}, headers=headers)
    assert live.status_code == 401 and query_key in live.text and tenant_key in live.text
    text = path.read_text()
    for secret in (query_key, named_header_key, tenant_key, url_password):
        assert secret not in text
    assert "api-version=2024-06-01" in text  # parameters that are not credentials stay
    with httpx2.Client(transport=CassetteTransport(path)) as client:  # the scrubbed URL still matches
        replayed = client.post(url, json={"messages": []}, headers=headers)
    assert replayed.status_code == 401 and "**scrubbed**" in replayed.text


# -- issue 12 items 17, 18 and 25: keys in headers and in the base URL; dummy keys left alone ----------

AZURE_KEY = "az-PLANTED-0123456789abcdef"
MY_TOKEN = "tok-PLANTED-fedcba9876543210"
PASSWORD = "pw-PLANTED-5551234"


def _echo_headers(request: Request) -> Reply:
    """A careless gateway: every request header echoed in its error message (and a header)."""
    echoed = "; ".join(f"{k}={v}" for k, v in request.headers.items())
    prompt = request.json()["messages"][-1]["content"]
    status = 503 if prompt == "flaky" else 401
    return error_reply(status, f"rejected: {echoed}", code=echoed[:200], headers=[("X-Echo", echoed[:500])])


def test_header_keys_and_url_passwords_never_leave(caplog: pytest.LogCaptureFixture) -> None:
    from llmclient.backends.openai import OpenAICompatibleBackend

    errors: list[LLMClientError] = []
    with LoopbackServer(_echo_headers) as server, caplog.at_level(logging.INFO):
        base_url = server.base_url.replace("http://", f"http://user:{PASSWORD}@")
        backend = OpenAICompatibleBackend(
            model="m",
            base_url=base_url,
            headers={"api-key": AZURE_KEY, "x-my-token": f"Token {MY_TOKEN}"},
            secret_headers=["X-My-Token"],
            retry={"max_attempts": 2, "initial_backoff": 0.01},
        )
        for prompt in ("denied", "flaky"):
            for call in (
                lambda p: backend.chat(p),
                lambda p: backend.stream(p).final(),
                lambda p: asyncio.run(backend.achat(p)),
            ):
                with pytest.raises(LLMClientError) as info:
                    call(prompt)
                errors.append(info.value)
        seen = server.requests[-1].headers
        produced = [
            _everything(errors),
            caplog.text,
            repr(backend),
            repr(backend.settings),
            str(backend.endpoint),
        ]
        produced += [str(e.args) for e in errors]
        backend.close()
    assert seen["api-key"] == AZURE_KEY and MY_TOKEN in seen["x-my-token"]  # really sent
    assert "retrying" in caplog.text  # the WARNING retry log was written
    assert set(backend.credentials) >= {AZURE_KEY, MY_TOKEN, PASSWORD}
    assert backend.endpoint == server.base_url
    for text in produced:
        for secret in (AZURE_KEY, MY_TOKEN, PASSWORD):
            assert secret not in text


def test_short_dummy_keys_do_not_mask_server_text() -> None:
    from llmclient.backends.openai import OpenAICompatibleBackend

    server_text = "Unexpected fields: extra_field"
    with LoopbackServer(lambda r: error_reply(422, server_text)) as server:
        for dummy in ("x", "EMPTY", "ollama"):
            backend = OpenAICompatibleBackend(model="m", base_url=server.base_url, api_key=dummy)
            with pytest.raises(LLMClientError) as info:
                backend.chat("hi")
            backend.close()
            assert server_text in str(info.value)
            assert backend.credentials == ()


def test_a_remote_backend_hands_its_credentials_to_a_recording_transport(tmp_path: Path) -> None:
    path = tmp_path / "http.yaml"
    with LoopbackServer(_echo_headers) as server:
        backend = OpenAICompatibleBackend(
            "m",
            base_url=server.url + "/v1",
            api_key="x",
            headers={"x-tenant": MY_TOKEN},  # a header named like nothing secret
            secret_headers=["x-tenant"],
            retry={"max_attempts": 1},
            transport=CassetteTransport(path, mode="once"),
        )
        with backend, pytest.raises(LLMClientError):
            backend.chat("hello")
    text = path.read_text()
    assert MY_TOKEN not in text and "**scrubbed**" in text
