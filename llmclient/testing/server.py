"""A fast loopback HTTP/1.1 server that stands in for an OpenAI-compatible API in tests and benchmarks.

Standard library only: an :class:`asyncio.Protocol` with a small hand-written HTTP/1.1 parser, so the
server is never the bottleneck of a client benchmark (keep-alive, pipelining, ``Content-Length`` and
``Transfer-Encoding: chunked`` request bodies). Replies are plain data (:class:`Reply`) and can inject
faults: delays, slow streams, connection resets mid-reply, forced closes.

Typical use::

    with LoopbackServer(OpenAIHandler(text="Hello there")) as server:
        client = openai.OpenAI(base_url=server.base_url, api_key="sk-test")
        client.chat.completions.create(model="m", messages=[...])
        assert server.requests[0].json()["model"] == "m"

Run ``python -m llmclient.testing.server --help`` to serve from a separate process (benchmarks, where
the client must not share the server's GIL).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http
import json
import logging
import re
import signal
import socket
import struct
import sys
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from typing_extensions import Self

__all__ = [
    "Handler",
    "LoopbackServer",
    "OpenAIHandler",
    "Reply",
    "Request",
    "completion",
    "completion_chunks",
    "error_reply",
    "json_reply",
    "main",
    "sse_reply",
]

_log = logging.getLogger(__name__)

_MAX_HEAD = 64 * 1024
_REASONS: dict[int, str] = {s.value: s.phrase for s in http.HTTPStatus}
_NO_BODY_STATUSES = frozenset({204, 304})


@dataclass
class Request:
    """One HTTP request as the server received it (recorded in :attr:`LoopbackServer.requests`)."""

    method: str
    path: str
    """The request path, without the query string."""
    query: str
    """The raw query string, without the ``?``."""
    headers: dict[str, str]
    """Header names lower-cased; repeated headers joined with ``", "``."""
    body: bytes
    """The body, de-chunked if it was sent with ``Transfer-Encoding: chunked``."""
    connection_id: int
    """Which TCP connection carried the request, counting from 1 (to check keep-alive)."""

    def json(self) -> Any:
        """Decode the body as JSON."""
        return json.loads(self.body)


@dataclass
class Reply:
    """What the server answers to one request, including optional delays and injected faults."""

    status: int = 200
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    """Sent with ``Content-Length`` (ignored when :attr:`chunks` is set)."""
    chunks: list[bytes] | None = None
    """If set, sent with ``Transfer-Encoding: chunked``: one write, then a drain, per chunk."""
    delay: float = 0.0
    """Seconds to wait before sending the status line (simulates time to first byte)."""
    chunk_delay: float = 0.0
    """Seconds to wait between two chunks (simulates a slow stream)."""
    reset_before_body: bool = False
    """Send the head (which promises a body), then abort the TCP connection with a RST."""
    reset_after_chunks: int | None = None
    """Send this many chunks, then abort the connection with a RST (needs :attr:`chunks`)."""
    close_connection: bool = False
    """Send ``Connection: close`` and close the connection after the reply."""

    def __post_init__(self) -> None:
        if self.reset_after_chunks is not None and self.chunks is None:
            raise ValueError("Reply.reset_after_chunks needs Reply.chunks")

    def _is_simple(self) -> bool:
        """Whether the reply can be written at once, without a task (the fast path)."""
        return (
            self.chunks is None
            and self.delay <= 0
            and not self.reset_before_body
            and not self.close_connection
        )


Handler = Callable[[Request], Reply | Awaitable[Reply]]
"""Answers a request, synchronously or as a coroutine. Exceptions become a 500 reply."""


# --------------------------------------------------------------------------------------------------
# Reply builders
# --------------------------------------------------------------------------------------------------


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def json_reply(
    obj: Any, status: int = 200, headers: list[tuple[str, str]] | None = None, delay: float = 0.0
) -> Reply:
    """Build a reply whose body is ``obj`` as JSON (``Content-Type: application/json``)."""
    hdrs = [("Content-Type", "application/json")]
    if headers:
        hdrs.extend(headers)
    return Reply(status=status, headers=hdrs, body=_dumps(obj), delay=delay)


def error_reply(
    status: int,
    message: str,
    *,
    type: str = "invalid_request_error",
    param: str | None = None,
    code: str | None = None,
    headers: list[tuple[str, str]] | None = None,
    delay: float = 0.0,
) -> Reply:
    """Build an error reply in OpenAI's shape: ``{"error": {"message", "type", "param", "code"}}``."""
    err = {"error": {"message": message, "type": type, "param": param, "code": code}}
    return json_reply(err, status=status, headers=headers, delay=delay)


def sse_reply(
    events: Sequence[str | dict[str, Any]],
    *,
    done: bool = True,
    chunk_delay: float = 0.0,
    delay: float = 0.0,
    extra_lines: Sequence[str] = (),
) -> Reply:
    r"""Build a server-sent-events reply the way OpenAI streams: one ``data:`` event per chunk.

    Each event becomes ``b"data: <json or str>\n\n"`` sent as its own chunk, followed by
    ``b"data: [DONE]\n\n"`` when ``done``. ``extra_lines`` are raw SSE lines (for example
    ``": keep-alive"`` comments) sent, each followed by ``"\n"``, as one chunk before the first event,
    to exercise the client's SSE parser.
    """
    chunks: list[bytes] = []
    if extra_lines:
        chunks.append("".join(f"{line}\n" for line in extra_lines).encode())
    for event in events:
        data = event.encode() if isinstance(event, str) else _dumps(event)
        chunks.append(b"data: " + data + b"\n\n")
    if done:
        chunks.append(b"data: [DONE]\n\n")
    headers = [("Content-Type", "text/event-stream; charset=utf-8"), ("Cache-Control", "no-cache")]
    return Reply(headers=headers, chunks=chunks, delay=delay, chunk_delay=chunk_delay)


def _word_count(text: str) -> int:
    return len(text.split())


def _usage(prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def completion(
    text: str,
    *,
    model: str = "test-model",
    finish_reason: str = "stop",
    prompt_tokens: int = 5,
    completion_tokens: int | None = None,
    id: str = "chatcmpl-test",
    **extra: Any,
) -> dict[str, Any]:
    """Build a ``chat.completion`` object as the OpenAI API returns it for a non-streamed call.

    ``completion_tokens`` defaults to the number of whitespace-separated words of ``text``;
    ``extra`` keys are added to (or override) the top-level object.
    """
    if completion_tokens is None:
        completion_tokens = _word_count(text)
    obj: dict[str, Any] = {
        "id": id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text, "refusal": None},
                "logprobs": None,
                "finish_reason": finish_reason,
            }
        ],
        "usage": _usage(prompt_tokens, completion_tokens),
        "system_fingerprint": None,
    }
    obj.update(extra)
    return obj


_WORD_RE = re.compile(r"\s*\S+")


def _split_text(text: str, pieces: int | None) -> list[str]:
    """Split ``text`` into stream pieces whose concatenation is ``text``.

    By default one piece per word, each carrying its leading whitespace (like ``" world"`` tokens);
    with ``pieces=n``, exactly ``n`` pieces of near-equal length (some empty if ``text`` is shorter).
    """
    if pieces is None:
        parts = _WORD_RE.findall(text)
        if not parts:
            return [text] if text else []
        tail = len(text) - sum(len(p) for p in parts)
        if tail:
            parts[-1] += text[len(text) - tail :]
        return parts
    if pieces < 1:
        raise ValueError("pieces must be >= 1")
    n = len(text)
    return [text[i * n // pieces : (i + 1) * n // pieces] for i in range(pieces)]


def completion_chunks(
    text: str,
    *,
    pieces: int | None = None,
    model: str = "test-model",
    finish_reason: str = "stop",
    prompt_tokens: int = 5,
    include_usage: bool = True,
    id: str = "chatcmpl-test",
) -> list[dict[str, Any]]:
    """Build the ``chat.completion.chunk`` objects the OpenAI API streams for ``text``.

    A first chunk with role ``"assistant"`` and empty content, the content pieces (``pieces`` of them,
    default one per word keeping spaces, so they join back to ``text``), a chunk with
    ``finish_reason`` and an empty delta, then, if ``include_usage``, a final chunk with
    ``"choices": []`` and the usage (as with ``stream_options={"include_usage": True}``, every
    earlier chunk then carries ``"usage": null``).
    """
    created = int(time.time())

    def chunk(delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
        obj: dict[str, Any] = {
            "id": id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "system_fingerprint": None,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        if include_usage:
            obj["usage"] = None
        return obj

    out = [chunk({"role": "assistant", "content": "", "refusal": None}, None)]
    out.extend(chunk({"content": piece}, None) for piece in _split_text(text, pieces))
    out.append(chunk({}, finish_reason))
    if include_usage:
        out.append(
            {
                "id": id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "system_fingerprint": None,
                "choices": [],
                "usage": _usage(prompt_tokens, _word_count(text)),
            }
        )
    return out


DEFAULT_TEXT = "Hello! This is the loopback test server."


class OpenAIHandler:
    """A :data:`Handler` that answers ``POST /v1/chat/completions`` like the OpenAI API.

    Reads the request JSON; if ``"stream"`` is true it answers SSE built from
    :func:`completion_chunks` (with the usage chunk only when ``stream_options.include_usage`` is
    true), else :func:`json_reply` of :func:`completion`. ``text`` is a string or a function of the
    request body returning one; ``latency`` delays the status line; ``stream_pieces`` and
    ``chunk_delay`` shape the stream; ``model`` overrides the model echoed back (default: the
    request's ``model``). Other paths get a 404, in OpenAI's error shape.

    Encoded replies are cached per (text, model, stream mode), so repeated identical requests are
    cheap; their ``created`` timestamp is the one of the first such reply.
    """

    def __init__(
        self,
        text: str | Callable[[dict[str, Any]], str] = DEFAULT_TEXT,
        *,
        latency: float = 0.0,
        stream_pieces: int | None = None,
        chunk_delay: float = 0.0,
        model: str | None = None,
        prompt_tokens: int = 5,
    ) -> None:
        self.text = text
        self.latency = latency
        self.stream_pieces = stream_pieces
        self.chunk_delay = chunk_delay
        self.model = model
        self.prompt_tokens = prompt_tokens
        self._cache: dict[tuple[str, str, bool, bool, int | None, int], Reply] = {}

    def __call__(self, request: Request) -> Reply:
        """Answer one request."""
        if request.path.rstrip("/") != "/v1/chat/completions":
            return error_reply(
                404,
                f"Unknown request URL: {request.method} {request.path}. Please check the URL for typos.",
                code="unknown_url",
            )
        if request.method != "POST":
            return error_reply(405, f"Method {request.method} not allowed; use POST.")
        try:
            body = request.json()
        except ValueError as exc:
            return error_reply(400, f"Request body is not valid JSON: {exc}")
        if not isinstance(body, dict):
            return error_reply(400, "Request body must be a JSON object.")
        text = self.text(body) if callable(self.text) else self.text
        model = self.model or str(body.get("model") or "test-model")
        stream = bool(body.get("stream"))
        include_usage = False
        if stream:
            options = body.get("stream_options") or {}
            include_usage = bool(isinstance(options, dict) and options.get("include_usage"))
        # Encoding the JSON is most of the per-request cost: keep the encoded replies for reuse.
        key = (text, model, stream, include_usage, self.stream_pieces, self.prompt_tokens)
        cached = self._cache.get(key)
        if cached is None:
            if len(self._cache) >= 256:
                self._cache.clear()
            if stream:
                events = completion_chunks(
                    text,
                    pieces=self.stream_pieces,
                    model=model,
                    prompt_tokens=self.prompt_tokens,
                    include_usage=include_usage,
                )
                cached = sse_reply(events)
            else:
                cached = json_reply(completion(text, model=model, prompt_tokens=self.prompt_tokens))
            self._cache[key] = cached
        return Reply(
            status=cached.status,
            headers=list(cached.headers),
            body=cached.body,
            chunks=None if cached.chunks is None else list(cached.chunks),
            delay=self.latency,
            chunk_delay=self.chunk_delay if stream else 0.0,
        )


# --------------------------------------------------------------------------------------------------
# The HTTP/1.1 server
# --------------------------------------------------------------------------------------------------


class _BadRequest(Exception):
    """The peer sent something that is not HTTP/1.x; answered with a 400 and a close."""


class _State:
    """What all connections of one server share (touched only from the server's loop, except reads)."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.requests: list[Request] = []
        self.errors: list[BaseException] = []
        self.lock = threading.Lock()
        self.connections_opened = 0
        self.protocols: set[_HTTPProtocol] = set()


# Chunked request-body parser states.
_CH_SIZE, _CH_DATA, _CH_TRAILER = 0, 1, 2


class _HTTPProtocol(asyncio.Protocol):
    """One HTTP/1.1 connection: parses requests, calls the handler, writes replies in order."""

    def __init__(self, state: _State) -> None:
        self._state = state
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._conn_id = 0
        self._buf = bytearray()
        self._closed = False  # no more requests are read or answered on this connection
        self._eof = False  # the peer half-closed: close once the replies in flight are sent
        # Requests parsed while an earlier reply is still being sent asynchronously.
        self._queue: deque[tuple[Request, bool, bool]] = deque()
        self._task: asyncio.Task[None] | None = None
        self._write_paused = False
        self._drain_waiter: asyncio.Future[None] | None = None
        # Parser state for the request whose head has been read but whose body is incomplete.
        self._head: tuple[str, str, str, dict[str, str], bool, bool] | None = None
        self._length = 0
        self._chunked = False
        self._ch_state = _CH_SIZE
        self._ch_left = 0
        self._ch_body = bytearray()

    # -- asyncio.Protocol callbacks ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        state = self._state
        state.connections_opened += 1
        self._conn_id = state.connections_opened
        state.protocols.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._state.protocols.discard(self)
        self._queue.clear()
        task = self._task
        if task is not None and not task.done():
            # Cancel on the next iteration, so that a task created in this one has started and a
            # coroutine returned by the handler gets awaited (and closed) rather than leaked.
            self._loop.call_soon(task.cancel)
        waiter = self._drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(ConnectionResetError("connection lost"))
            # Nobody may be awaiting it any more (task cancelled): mark the exception retrieved.
            waiter.exception()
        self._drain_waiter = None

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        waiter = self._drain_waiter
        self._drain_waiter = None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def data_received(self, data: bytes) -> None:
        if self._closed:
            return
        self._buf += data
        try:
            self._parse()
        except _BadRequest as exc:
            self._closed = True
            self._queue.clear()
            body = _dumps({"error": {"message": f"Bad request: {exc}", "type": "invalid_request_error"}})
            reply = Reply(status=400, body=body, headers=[("Content-Type", "application/json")])
            self._write_now(reply, head_only=False, keep_alive=False)
            assert self._transport is not None
            self._transport.close()

    def eof_received(self) -> bool | None:
        # Half-closed by the peer: finish the replies in flight, then close.
        self._eof = True
        if self._task is None:
            return None  # the transport closes itself
        return True

    # -- request parsing -----------------------------------------------------------------------------

    def _parse(self) -> None:
        buf = self._buf
        while not self._closed:
            if self._head is None:
                # Tolerate stray CRLFs between requests (RFC 9112 section 2.2).
                while buf[:2] == b"\r\n":
                    del buf[:2]
                end = buf.find(b"\r\n\r\n")
                if end < 0:
                    if len(buf) > _MAX_HEAD:
                        raise _BadRequest("request head too large")
                    return
                head = buf[:end].decode("latin-1")
                del buf[: end + 4]
                self._start_request(head)
            head_tuple = self._head
            assert head_tuple is not None
            if self._chunked:
                if not self._parse_chunked():
                    return
                body = bytes(self._ch_body)
                self._ch_body = bytearray()
            else:
                n = self._length
                if len(buf) < n:
                    return
                body = bytes(buf[:n])
                del buf[:n]
            self._head = None
            method, target, _version, headers, keep_alive, is_head = head_tuple
            path, _, query = target.partition("?")
            if path[:1] != "/" and "://" in path:  # absolute-form target
                path = "/" + path.split("://", 1)[1].partition("/")[2]
            request = Request(method, path, query, headers, body, self._conn_id)
            with self._state.lock:
                self._state.requests.append(request)
            self._dispatch(request, keep_alive, is_head)

    def _start_request(self, head: str) -> None:
        lines = head.split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            raise _BadRequest(f"bad request line {lines[0][:100]!r}")
        method, target, version = parts
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep:
                raise _BadRequest(f"bad header line {line[:100]!r}")
            name = name.strip().lower()
            value = value.strip()
            if name in headers:
                headers[name] = headers[name] + ", " + value
            else:
                headers[name] = value
        conn = headers.get("connection", "").lower()
        keep_alive = "close" not in conn if version == "HTTP/1.1" else "keep-alive" in conn
        te = headers.get("transfer-encoding")
        if te is not None and "chunked" in te.lower():
            self._chunked = True
            self._ch_state = _CH_SIZE
            self._ch_body = bytearray()
        else:
            self._chunked = False
            try:
                self._length = int(headers.get("content-length", "0"))
            except ValueError:
                raise _BadRequest("bad Content-Length") from None
            if self._length < 0:
                raise _BadRequest("bad Content-Length")
        self._head = (method, target, version, headers, keep_alive, method == "HEAD")
        if headers.get("expect", "").lower() == "100-continue" and self._transport is not None:
            self._transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def _parse_chunked(self) -> bool:
        """Consume chunked body data from the buffer; True once the whole body (and trailers) is in."""
        buf = self._buf
        while True:
            if self._ch_state == _CH_SIZE:
                end = buf.find(b"\r\n")
                if end < 0:
                    if len(buf) > _MAX_HEAD:
                        raise _BadRequest("chunk size line too long")
                    return False
                line = bytes(buf[:end]).split(b";", 1)[0].strip()
                del buf[: end + 2]
                try:
                    size = int(line, 16)
                except ValueError:
                    raise _BadRequest(f"bad chunk size {line[:20]!r}") from None
                if size < 0:
                    raise _BadRequest("bad chunk size")
                if size == 0:
                    self._ch_state = _CH_TRAILER
                else:
                    self._ch_state = _CH_DATA
                    self._ch_left = size
            elif self._ch_state == _CH_DATA:
                need = self._ch_left
                if len(buf) < need + 2:
                    # Take what is there to keep the buffer small; keep the CRLF check for later.
                    take = min(len(buf), need)
                    if take:
                        self._ch_body += buf[:take]
                        del buf[:take]
                        self._ch_left -= take
                    return False
                self._ch_body += buf[:need]
                if buf[need : need + 2] != b"\r\n":
                    raise _BadRequest("chunk data not followed by CRLF")
                del buf[: need + 2]
                self._ch_left = 0
                self._ch_state = _CH_SIZE
            else:  # trailers, up to an empty line
                end = buf.find(b"\r\n")
                if end < 0:
                    return False
                del buf[: end + 2]
                if end == 0:
                    self._ch_state = _CH_SIZE
                    return True

    # -- answering -----------------------------------------------------------------------------------

    def _call_handler(self, request: Request) -> Reply | Awaitable[Reply]:
        try:
            return self._state.handler(request)
        except Exception as exc:
            return self._handler_failed(exc)

    def _handler_failed(self, exc: Exception) -> Reply:
        _log.exception("loopback server handler failed")
        with self._state.lock:
            self._state.errors.append(exc)
        return error_reply(500, f"handler raised {type(exc).__name__}: {exc}", type="server_error")

    def _dispatch(self, request: Request, keep_alive: bool, is_head: bool) -> None:
        if self._task is not None:  # an earlier reply is still going out: keep replies in order
            self._queue.append((request, keep_alive, is_head))
            return
        result = self._call_handler(request)
        if isinstance(result, Reply) and result._is_simple():
            self._write_now(result, head_only=is_head, keep_alive=keep_alive)
            if not keep_alive:
                self._closed = True
                assert self._transport is not None
                self._transport.close()
            return
        self._task = self._loop.create_task(self._serve_slowly(result, keep_alive, is_head))

    async def _serve_slowly(self, first: Reply | Awaitable[Reply], keep_alive: bool, is_head: bool) -> None:
        """Send replies that need awaiting (delays, chunks, faults), then any queued requests."""
        try:
            result = first
            while True:
                if isinstance(result, Reply):
                    reply = result
                else:
                    try:
                        reply = await result
                        if not isinstance(reply, Reply):
                            raise TypeError(f"handler returned {type(reply).__name__}, not Reply")
                    except Exception as exc:
                        reply = self._handler_failed(exc)
                if not await self._send(reply, keep_alive, is_head):
                    return
                if not self._queue:
                    return
                request, keep_alive, is_head = self._queue.popleft()
                result = self._call_handler(request)
        except (ConnectionError, asyncio.CancelledError):
            return
        finally:
            self._task = None
            transport = self._transport
            if (self._closed or self._eof) and transport is not None and not transport.is_closing():
                transport.close()

    def _head_bytes(self, reply: Reply, framing: str, keep_alive: bool) -> bytes:
        status = reply.status
        out = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}\r\n"]
        for name, value in reply.headers:
            out.append(f"{name}: {value}\r\n")
        if framing == "length":
            if not any(n.lower() == "content-length" for n, _ in reply.headers):
                out.append(f"Content-Length: {len(reply.body)}\r\n")
        elif framing == "chunked":
            out.append("Transfer-Encoding: chunked\r\n")
        out.append("Connection: keep-alive\r\n\r\n" if keep_alive else "Connection: close\r\n\r\n")
        return "".join(out).encode("latin-1")

    def _write_now(self, reply: Reply, *, head_only: bool, keep_alive: bool) -> None:
        transport = self._transport
        assert transport is not None
        if reply.status in _NO_BODY_STATUSES:
            transport.write(self._head_bytes(reply, "none", keep_alive))
        elif head_only:
            transport.write(self._head_bytes(reply, "length", keep_alive))
        else:
            transport.write(self._head_bytes(reply, "length", keep_alive) + reply.body)

    async def _drain(self) -> None:
        transport = self._transport
        if self._closed or transport is None or transport.is_closing():
            raise ConnectionResetError("connection closed")
        if self._write_paused:
            waiter = self._loop.create_future()
            self._drain_waiter = waiter
            await waiter

    async def _flush(self) -> None:
        """Wait until everything written so far has been handed to the kernel."""
        transport = self._transport
        assert transport is not None
        while transport.get_write_buffer_size() and not transport.is_closing():
            await asyncio.sleep(0.001)

    def _reset(self) -> None:
        """Abort the connection so that the peer sees a TCP RST (SO_LINGER with a zero timeout)."""
        self._closed = True
        self._queue.clear()
        transport = self._transport
        assert transport is not None
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()

    async def _send(self, reply: Reply, keep_alive: bool, is_head: bool) -> bool:
        """Send one reply, honouring delays and faults; True if the connection stays usable."""
        if reply.delay > 0:
            await asyncio.sleep(reply.delay)
        await self._drain()
        transport = self._transport
        assert transport is not None
        keep_alive = keep_alive and not reply.close_connection
        chunks = reply.chunks
        if chunks is None or reply.status in _NO_BODY_STATUSES:
            if reply.reset_before_body:
                transport.write(self._head_bytes(reply, "length", keep_alive))
                await self._flush()
                self._reset()
                return False
            self._write_now(reply, head_only=is_head, keep_alive=keep_alive)
        else:
            transport.write(self._head_bytes(reply, "chunked", keep_alive))
            if reply.reset_before_body:
                await self._flush()
                self._reset()
                return False
            if not is_head:
                limit = reply.reset_after_chunks
                for i, chunk in enumerate(chunks):
                    if limit is not None and i >= limit:
                        break
                    if i and reply.chunk_delay > 0:
                        await asyncio.sleep(reply.chunk_delay)
                    if chunk:  # an empty chunk would end the body: skip it
                        transport.write(b"%x\r\n%b\r\n" % (len(chunk), chunk))
                    await self._drain()
                if limit is not None:
                    await self._flush()
                    self._reset()
                    return False
                transport.write(b"0\r\n\r\n")
        if not keep_alive:
            self._closed = True
            self._queue.clear()
            transport.close()
            return False
        return True

    def kill(self) -> None:
        """Abort the connection at once (server shutdown)."""
        self._closed = True
        if self._transport is not None:
            self._transport.abort()


class _Core:
    """The listening socket and its connections, living on one event loop."""

    def __init__(self, handler: Handler) -> None:
        self.state = _State(handler)
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self, host: str, port: int) -> None:
        loop = asyncio.get_running_loop()
        state = self.state
        self.server = await loop.create_server(
            lambda: _HTTPProtocol(state), host, port, backlog=1024, reuse_address=True
        )
        self.port = self.server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
        for proto in list(self.state.protocols):
            proto.kill()
        current = asyncio.current_task()
        tasks = [t for t in asyncio.all_tasks() if t is not current]
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if self.server is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.server.wait_closed(), 5)
        # Let the transports' connection_lost callbacks run.
        await asyncio.sleep(0)


class LoopbackServer:
    """An HTTP/1.1 server on 127.0.0.1 running in a background thread with its own event loop.

    Binds a free port by default; use as a context manager or call :meth:`start` / :meth:`stop`.
    Every request is recorded in :attr:`requests` (in arrival order) and answered by ``handler``.
    """

    def __init__(self, handler: Handler, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.handler = handler
        self.host = host
        self._port = port
        self._core = _Core(handler)
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._started = threading.Event()
        self._start_error: BaseException | None = None

    @property
    def port(self) -> int:
        """The port listened on (the real one once started, even if 0 was asked)."""
        return self._core.port or self._port

    @property
    def url(self) -> str:
        """``http://HOST:PORT`` of the running server."""
        if not self._core.port:
            raise RuntimeError("LoopbackServer is not started")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self._core.port}"

    @property
    def base_url(self) -> str:
        """The OpenAI-style base URL: :attr:`url` + ``"/v1"``."""
        return self.url + "/v1"

    @property
    def requests(self) -> list[Request]:
        """Every request received so far, in order of arrival."""
        return self._core.state.requests

    @property
    def errors(self) -> list[BaseException]:
        """Exceptions raised by the handler (each was answered with a 500)."""
        return self._core.state.errors

    @property
    def connections_opened(self) -> int:
        """How many TCP connections the server has accepted so far."""
        return self._core.state.connections_opened

    def start(self) -> Self:
        """Start the server thread; returns once the socket is listening."""
        if self._thread is not None:
            raise RuntimeError("LoopbackServer already started")
        self._thread = threading.Thread(target=self._run, name="LoopbackServer", daemon=True)
        self._thread.start()
        self._started.wait()
        if self._start_error is not None:
            self._thread.join()
            self._thread = None
            raise self._start_error
        return self

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            try:
                loop.run_until_complete(self._core.start(self.host, self._port))
            except BaseException as exc:
                self._start_error = exc
                return
            finally:
                self._started.set()
            loop.run_forever()
            loop.run_until_complete(self._core.close())
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            loop.close()

    def stop(self) -> None:
        """Close the listening socket and all connections, and join the server thread."""
        thread, loop = self._thread, self._loop
        if thread is None or loop is None:
            return
        with contextlib.suppress(RuntimeError):  # loop already closed
            loop.call_soon_threadsafe(loop.stop)
        thread.join()
        self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


# --------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------


async def _serve_forever(handler: Handler, host: str, port: int) -> None:
    core = _Core(handler)
    await core.start(host, port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):  # not on Windows
            loop.add_signal_handler(sig, stop.set)
    display_host = f"[{host}]" if ":" in host else host
    sys.stdout.write(f"LISTENING http://{display_host}:{core.port}\n")
    sys.stdout.flush()
    try:
        await stop.wait()
    finally:
        await core.close()


def main(argv: Sequence[str] | None = None) -> int:
    """Serve an :class:`OpenAIHandler` until SIGTERM/SIGINT (for benchmarks in a separate process)."""
    parser = argparse.ArgumentParser(
        prog="python -m llmclient.testing.server",
        description="Loopback OpenAI-compatible chat-completions server for tests and benchmarks. "
        "Prints 'LISTENING http://HOST:PORT' once ready.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (default)")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds before each status line")
    parser.add_argument(
        "--stream-pieces", type=int, default=None, help="content chunks per stream (default: one per word)"
    )
    parser.add_argument("--chunk-delay", type=float, default=0.0, help="seconds between stream chunks")
    parser.add_argument("--text", default=DEFAULT_TEXT, help="the assistant reply text")
    parser.add_argument("--model", default=None, help="model name to answer with (default: echo request)")
    args = parser.parse_args(argv)
    handler = OpenAIHandler(
        args.text,
        latency=args.latency,
        stream_pieces=args.stream_pieces,
        chunk_delay=args.chunk_delay,
        model=args.model,
    )
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve_forever(handler, args.host, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
