"""Tests of the loopback server with real HTTP clients: httpx2, aiohttp and the openai SDK."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import aiohttp
import httpx2
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from llmclient.testing.server import (
    LoopbackServer,
    OpenAIHandler,
    Reply,
    Request,
    completion,
    completion_chunks,
    error_reply,
    json_reply,
    sse_reply,
)

TEXT = "The quick brown fox jumps over the lazy dog."
MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]


@pytest.fixture
def server() -> Iterator[LoopbackServer]:
    with LoopbackServer(OpenAIHandler(TEXT)) as srv:
        yield srv


def _sdk(srv: LoopbackServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=srv.base_url, api_key="sk-test", max_retries=0, timeout=5)


# -- reply builders -----------------------------------------------------------------------------------


def test_completion_shape() -> None:
    obj = completion("a b c", model="m", prompt_tokens=7, id="x", service_tier="default")
    assert obj["object"] == "chat.completion"
    assert obj["id"] == "x" and obj["model"] == "m" and obj["service_tier"] == "default"
    assert isinstance(obj["created"], int)
    (choice,) = obj["choices"]
    assert choice["message"]["role"] == "assistant" and choice["message"]["content"] == "a b c"
    assert choice["finish_reason"] == "stop" and choice["index"] == 0
    assert obj["usage"] == {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}
    assert completion("x", completion_tokens=9)["usage"]["completion_tokens"] == 9


def test_completion_chunks_shape() -> None:
    chunks = completion_chunks("  Hello  brave world ", finish_reason="length")
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": "", "refusal": None}
    pieces = [c["choices"][0]["delta"]["content"] for c in chunks[1:-2]]
    assert pieces == ["  Hello", "  brave", " world "]
    assert "".join(pieces) == "  Hello  brave world "
    assert chunks[-2]["choices"][0] == {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "length"}
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}
    assert all(c["object"] == "chat.completion.chunk" and c["usage"] is None for c in chunks[:-1])

    fixed = completion_chunks("abcdefg", pieces=3, include_usage=False)
    assert len(fixed) == 1 + 3 + 1 and all("usage" not in c for c in fixed)
    assert "".join(c["choices"][0]["delta"]["content"] for c in fixed[1:-1]) == "abcdefg"
    assert len(completion_chunks("ab", pieces=5, include_usage=False)) == 7


def test_sse_reply_framing() -> None:
    reply = sse_reply(["raw", {"a": 1}], extra_lines=[": ping"])
    assert reply.chunks == [b": ping\n", b"data: raw\n\n", b'data: {"a":1}\n\n', b"data: [DONE]\n\n"]
    assert ("Content-Type", "text/event-stream; charset=utf-8") in reply.headers
    assert sse_reply([], done=False).chunks == []
    with pytest.raises(ValueError):
        Reply(reset_after_chunks=1)


# -- the openai SDK -----------------------------------------------------------------------------------


def test_sdk_plain_completion(server: LoopbackServer) -> None:
    client = _sdk(server)
    with client:
        resp = client.chat.completions.create(model="my-model", messages=MESSAGES)
    assert resp.choices[0].message.content == TEXT
    assert resp.choices[0].finish_reason == "stop"
    assert resp.model == "my-model"
    assert resp.usage is not None and resp.usage.completion_tokens == len(TEXT.split())
    (req,) = server.requests
    assert (req.method, req.path) == ("POST", "/v1/chat/completions")
    assert req.headers["authorization"] == "Bearer sk-test"
    assert req.json()["messages"] == MESSAGES
    assert req.connection_id == 1


def test_sdk_stream_with_usage(server: LoopbackServer) -> None:
    client = _sdk(server)
    with client:
        stream = client.chat.completions.create(
            model="m",
            messages=MESSAGES,
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == TEXT
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 5 + len(TEXT.split())


def test_sdk_stream_without_usage_and_404() -> None:
    with LoopbackServer(OpenAIHandler(lambda body: f"echo {body['model']}", stream_pieces=2)) as srv:
        client = _sdk(srv)
        with client:
            chunks = list(client.chat.completions.create(model="zz", messages=MESSAGES, stream=True))
            assert all(c.usage is None and c.choices for c in chunks)
            assert len(chunks) == 1 + 2 + 1
            assert "".join(c.choices[0].delta.content or "" for c in chunks) == "echo zz"
            with pytest.raises(openai.NotFoundError) as info:
                client.embeddings.create(model="e", input="x")
    assert info.value.status_code == 404
    assert isinstance(info.value.body, dict) and info.value.body["code"] == "unknown_url"
    assert set(info.value.body) == {"message", "type", "param", "code"}


# -- httpx2 -------------------------------------------------------------------------------------------


def test_keep_alive_httpx2(server: LoopbackServer) -> None:
    with httpx2.Client(base_url=server.base_url) as client:
        for i in range(10):
            r = client.post("/chat/completions", json={"model": f"m{i}", "messages": MESSAGES})
            assert r.status_code == 200 and r.json()["model"] == f"m{i}"
    assert server.connections_opened == 1
    assert [r.connection_id for r in server.requests] == [1] * 10
    assert [r.json()["model"] for r in server.requests] == [f"m{i}" for i in range(10)]


def test_chunked_request_body(server: LoopbackServer) -> None:
    payload = json.dumps({"model": "chunky", "messages": MESSAGES}).encode()

    def body() -> Iterator[bytes]:
        for i in range(0, len(payload), 7):
            yield payload[i : i + 7]

    with httpx2.Client() as client:
        r = client.post(server.base_url + "/chat/completions?x=1", content=body())
        assert r.status_code == 200 and r.json()["model"] == "chunky"
        r = client.post(server.base_url + "/chat/completions", content=payload)  # same connection
        assert r.status_code == 200
    first, second = server.requests
    assert first.headers["transfer-encoding"] == "chunked"
    assert first.body == payload and first.query == "x=1" and first.path == "/v1/chat/completions"
    assert second.body == payload and second.connection_id == first.connection_id


def test_reset_before_body_httpx2() -> None:
    with LoopbackServer(lambda req: Reply(body=b"x" * 100, reset_before_body=True)) as srv:
        with httpx2.Client() as client, pytest.raises(httpx2.TransportError):
            client.get(srv.url + "/x")
        with httpx2.Client() as client, pytest.raises(httpx2.TransportError):
            client.get(srv.url + "/x")  # fresh connection, same fault
    assert srv.connections_opened == 2


def test_reset_after_chunks_cuts_stream() -> None:
    def handler(req: Request) -> Reply:
        reply = sse_reply([{"n": i} for i in range(5)])
        reply.reset_after_chunks = 2
        return reply

    got: list[bytes] = []
    with (
        LoopbackServer(handler) as srv,
        httpx2.Client() as client,
        pytest.raises(httpx2.TransportError),
        client.stream("POST", srv.url + "/s") as resp,
    ):
        assert resp.status_code == 200
        got.extend(resp.iter_raw())
    data = b"".join(got)
    assert data.startswith(b'data: {"n":0}\n\n')
    assert b'{"n":2}' not in data and b"[DONE]" not in data


def test_delay_and_chunk_delay_honoured() -> None:
    def handler(req: Request) -> Reply:
        if req.path == "/slow":
            return json_reply({"ok": True}, delay=0.3)
        return Reply(chunks=[b"a", b"b", b"c"], chunk_delay=0.1)

    with LoopbackServer(handler) as srv, httpx2.Client() as client:
        t0 = time.perf_counter()
        assert client.get(srv.url + "/slow").json() == {"ok": True}
        slow = time.perf_counter() - t0
        t0 = time.perf_counter()
        parts: list[bytes] = []
        arrivals: list[float] = []
        with client.stream("GET", srv.url + "/chunks") as resp:
            for part in resp.iter_raw():
                parts.append(part)
                arrivals.append(time.perf_counter() - t0)
    assert parts == [b"a", b"b", b"c"]  # each chunk arrived on its own
    assert 0.25 <= slow < 2.0
    assert arrivals[-1] - arrivals[0] >= 0.15


def test_close_connection_and_async_handler_and_errors() -> None:
    async def handler(req: Request) -> Reply:
        await asyncio.sleep(0.01)
        if req.path == "/boom":
            raise RuntimeError("kaput")
        if req.path == "/close":
            return Reply(body=b"bye", close_connection=True)
        return error_reply(429, "slow down", type="rate_limit_error", headers=[("Retry-After", "1")])

    with LoopbackServer(handler) as srv, httpx2.Client() as client:
        r = client.get(srv.url + "/close")
        assert r.text == "bye" and r.headers["connection"] == "close"
        r = client.get(srv.url + "/limited")
        assert r.status_code == 429 and r.headers["retry-after"] == "1"
        assert r.json()["error"]["type"] == "rate_limit_error"
        r = client.get(srv.url + "/boom")
        assert r.status_code == 500 and "kaput" in r.json()["error"]["message"]
    assert srv.connections_opened == 2
    assert [type(e) for e in srv.errors] == [RuntimeError]


def test_pipelined_requests_answered_in_order() -> None:
    def handler(req: Request) -> Reply:
        return Reply(body=req.path.encode(), delay=0.1 if req.path == "/first" else 0.0)

    with LoopbackServer(handler) as srv, socket.create_connection(("127.0.0.1", srv.port)) as sock:
        sock.sendall(
            b"GET /first HTTP/1.1\r\nHost: x\r\n\r\n"
            b"POST /second HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
            b"GET /third HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    assert data.count(b"HTTP/1.1 200 OK") == 3
    assert data.index(b"/first") < data.index(b"/second") < data.index(b"/third")
    assert srv.requests[1].body == b"abc"


def test_stop_with_request_in_flight() -> None:
    srv = LoopbackServer(lambda req: Reply(delay=30)).start()
    errors: list[BaseException] = []

    def call() -> None:
        try:
            with httpx2.Client(timeout=5) as client:
                client.get(srv.url)
        except httpx2.TransportError as exc:
            errors.append(exc)

    thread = threading.Thread(target=call)
    thread.start()
    deadline = time.monotonic() + 5
    while not srv.requests and time.monotonic() < deadline:
        time.sleep(0.01)
    t0 = time.perf_counter()
    srv.stop()
    thread.join()
    assert time.perf_counter() - t0 < 2
    assert len(errors) == 1


# -- aiohttp ------------------------------------------------------------------------------------------


async def test_aiohttp_plain_stream_and_faults(server: LoopbackServer) -> None:
    async with aiohttp.ClientSession() as session:
        url = server.base_url + "/chat/completions"
        for _ in range(3):
            async with session.post(url, json={"model": "a", "messages": MESSAGES}) as resp:
                assert resp.status == 200
                assert (await resp.json())["choices"][0]["message"]["content"] == TEXT
        body = {"model": "a", "messages": MESSAGES, "stream": True, "stream_options": {"include_usage": True}}
        async with session.post(url, json=body) as resp:
            assert resp.headers["Content-Type"].startswith("text/event-stream")
            lines = [line async for line in resp.content if line.strip()]
        assert lines[-1] == b"data: [DONE]\n"
        events = [json.loads(line[len(b"data: ") :]) for line in lines[:-1]]
        expected = completion_chunks(TEXT, model="a")
        assert [{**e, "created": 0} for e in events] == [{**e, "created": 0} for e in expected]
        assert "".join(e["choices"][0]["delta"].get("content", "") for e in events if e["choices"]) == TEXT
    assert server.connections_opened == 1

    def faulty(req: Request) -> Reply:
        if req.path == "/head-only":
            return Reply(body=b"{}", reset_before_body=True)
        return Reply(chunks=[b"one", b"two", b"three"], reset_after_chunks=1)

    with LoopbackServer(faulty) as srv:
        async with aiohttp.ClientSession() as session:
            with pytest.raises(aiohttp.ClientError):
                async with session.get(srv.url + "/head-only") as resp:
                    await resp.read()
            got = b""
            with pytest.raises(aiohttp.ClientError):
                async with session.get(srv.url + "/cut") as resp:
                    async for chunk in resp.content.iter_any():
                        got += chunk
            assert got == b"one"


# -- command line -------------------------------------------------------------------------------------


def test_cli_subprocess() -> None:
    cmd = [sys.executable, "-m", "llmclient.testing.server", "--port", "0", "--latency", "0.01"]
    cmd += ["--stream-pieces", "3", "--text", "from the cli"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("LISTENING http://127.0.0.1:"), line
        url = line.split()[1]
        with httpx2.Client(base_url=url + "/v1", timeout=5) as client:
            r = client.post("/chat/completions", json={"model": "cli", "messages": MESSAGES})
            assert r.json()["choices"][0]["message"]["content"] == "from the cli"
            body = {"model": "cli", "messages": MESSAGES, "stream": True}
            r = client.post("/chat/completions", json=body)
            assert r.text.count("data: ") == 1 + 3 + 1 + 1
        proc.terminate()
        _, err = proc.communicate(timeout=5)
        assert proc.returncode == 0, err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
