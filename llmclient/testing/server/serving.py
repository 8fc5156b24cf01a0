"""The loopback server's HTTP, on ``aiohttp.web``'s low-level server: one request in, one :class:`Reply` out.

aiohttp parses HTTP/1.1 (keep-alive, pipelining in order, ``Content-Length`` and chunked request
bodies, ``HEAD``) and writes plain replies; this module adds what a test server needs on top:

- every request recorded as a :class:`~llmclient.testing.server.exchange.Request`, with the number
  of the TCP connection that carried it (counted as connections are accepted, to check keep-alive);
- replies sent as the :class:`Reply` says: after a delay, as chunks with pauses between them, with
  ``Connection: close``;
- the faults that need the raw socket: a connection reset (a TCP RST, by ``SO_LINGER`` 0) after the
  head or after some chunks, which no HTTP library sends on purpose;
- a handler that raises answered with a 500 in OpenAI's error shape, and kept in :attr:`errors`.

:class:`ServerCore` is the listening socket and its connections on one event loop, which
:class:`~llmclient.testing.server.loopback.LoopbackServer` runs in a thread and the command line
(:mod:`llmclient.testing.server.cli`) runs in its own process.
"""

from __future__ import annotations

import asyncio
import contextlib
import http
import logging
import socket
import struct
import threading
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from multidict import CIMultiDict

from llmclient.testing.server.exchange import Handler, Reply, Request
from llmclient.testing.server.replies import error_reply

_log = logging.getLogger("llmclient.testing.server")
_NO_BODY_STATUSES = frozenset({204, 304})
_MAX_BODY = 1 << 30  # a test may send a long prompt; aiohttp's default cap is 1 MiB
_REASONS: dict[int, str] = {s.value: s.phrase for s in http.HTTPStatus}


class _CountingServer(web.Server):
    """aiohttp's low-level server, numbering each TCP connection as it is accepted."""

    def __init__(self, handler: Any, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self.opened = 0
        self.ids: dict[RequestHandler, int] = {}
        self.transports: dict[RequestHandler, asyncio.Transport] = {}

    def connection_made(self, handler: RequestHandler, transport: asyncio.Transport) -> None:
        super().connection_made(handler, transport)
        self.opened += 1
        self.ids[handler] = self.opened
        self.transports[handler] = transport

    def connection_lost(self, handler: RequestHandler, exc: BaseException | None = None) -> None:
        super().connection_lost(handler, exc)
        self.ids.pop(handler, None)
        self.transports.pop(handler, None)


def _headers(reply: Reply) -> CIMultiDict[str]:
    return CIMultiDict(reply.headers)


def _head_bytes(reply: Reply) -> bytes:
    """The status line and headers of ``reply``, promising a body of ``len(reply.body) or 64`` bytes
    (the fault is that it never comes).
    """
    lines = [f"HTTP/1.1 {reply.status} {_REASONS.get(reply.status, 'Unknown')}"]
    lines += [f"{name}: {value}" for name, value in reply.headers if name.lower() != "content-length"]
    lines.append(f"Content-Length: {len(reply.body) or 64}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def _flushed(transport: asyncio.BaseTransport) -> None:
    """Wait until what was written is handed to the kernel, so the peer gets it before a reset."""
    assert isinstance(transport, asyncio.WriteTransport)
    while transport.get_write_buffer_size() and not transport.is_closing():
        await asyncio.sleep(0.001)


def _reset(transport: asyncio.BaseTransport) -> None:
    """Abort the connection so that the peer sees a TCP RST (``SO_LINGER`` with a zero timeout)."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    assert isinstance(transport, asyncio.WriteTransport)
    transport.abort()


class ServerCore:
    """The listening socket and its connections on one event loop: records requests, asks the
    handler, sends its replies.
    """

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.requests: list[Request] = []
        self.errors: list[BaseException] = []
        self.port = 0
        self._lock = threading.Lock()
        self._http: _CountingServer | None = None
        self._listener: asyncio.Server | None = None

    @property
    def connections_opened(self) -> int:
        """How many TCP connections have been accepted so far."""
        return self._http.opened if self._http is not None else 0

    async def start(self, host: str, port: int) -> None:
        """Listen on ``host``:``port`` (0: a free port, then in :attr:`port`)."""
        loop = asyncio.get_running_loop()
        self._http = _CountingServer(
            self._answer,
            request_factory=self._make_request,
            access_log=None,
            keepalive_timeout=75.0,
        )
        self._listener = await loop.create_server(self._http, host, port, backlog=1024, reuse_address=True)
        self.port = self._listener.sockets[0].getsockname()[1]

    def _make_request(self, *args: Any) -> web.BaseRequest:
        message, payload, protocol, writer, task = args
        return web.BaseRequest(
            message, payload, protocol, writer, task, asyncio.get_running_loop(), client_max_size=_MAX_BODY
        )

    async def close(self) -> None:
        """Stop listening, abort every connection and cancel the loop's other tasks."""
        if self._listener is not None:
            self._listener.close()
        if self._http is not None:
            for transport in list(self._http.transports.values()):
                transport.abort()
        current = asyncio.current_task()
        tasks = [t for t in asyncio.all_tasks() if t is not current]
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if self._listener is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._listener.wait_closed(), 5)
        await asyncio.sleep(0)  # let the transports' connection_lost callbacks run

    # -- one request ---------------------------------------------------------------------------------

    async def _answer(self, raw: web.BaseRequest) -> web.StreamResponse:
        if raw.headers.get("Expect", "").lower() == "100-continue":
            await raw.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        headers: dict[str, str] = {}
        for name, value in raw.raw_headers:
            key, text = name.decode("latin-1").lower(), value.decode("latin-1")
            headers[key] = f"{headers[key]}, {text}" if key in headers else text
        assert self._http is not None
        path, _, query = raw.raw_path.partition("?")
        if "://" in path:  # an absolute-form target: keep its path
            path = "/" + path.split("://", 1)[1].partition("/")[2]
        request = Request(
            method=raw.method,
            path=path,
            query=query,
            headers=headers,
            body=await raw.read(),
            connection_id=self._http.ids.get(raw.protocol, 0),
        )
        with self._lock:
            self.requests.append(request)
        reply = await self._reply(request)
        if reply.delay > 0:
            await asyncio.sleep(reply.delay)
        if reply.reset_before_body:
            return await self._reset_after(raw, _head_bytes(reply))
        response: web.StreamResponse
        if reply.chunks is None or reply.status in _NO_BODY_STATUSES:
            response = web.Response(status=reply.status, headers=_headers(reply), body=reply.body or None)
        else:
            response = await self._send_chunks(raw, reply)
        if reply.close_connection:
            response.force_close()
        return response

    async def _reply(self, request: Request) -> Reply:
        """The handler's reply; a 500 in OpenAI's error shape where it raised."""
        try:
            result = self.handler(request)
            reply = result if isinstance(result, Reply) else await result
            if not isinstance(reply, Reply):
                raise TypeError(f"handler returned {type(reply).__name__}, not Reply")
            return reply
        except Exception as exc:
            _log.exception("loopback server handler failed")
            with self._lock:
                self.errors.append(exc)
            return error_reply(500, f"handler raised {type(exc).__name__}: {exc}", type="server_error")

    async def _send_chunks(self, raw: web.BaseRequest, reply: Reply) -> web.StreamResponse:
        """Send ``reply.chunks`` one write each, with ``chunk_delay`` between them; reset the
        connection after ``reset_after_chunks`` of them where the reply says so.
        """
        assert reply.chunks is not None
        response = web.StreamResponse(status=reply.status, headers=_headers(reply))
        response.enable_chunked_encoding()
        if reply.close_connection:
            response.force_close()
        await response.prepare(raw)
        if raw.method == "HEAD":
            return response
        limit = reply.reset_after_chunks
        for i, chunk in enumerate(reply.chunks):
            if limit is not None and i >= limit:
                break
            if i and reply.chunk_delay > 0:
                await asyncio.sleep(reply.chunk_delay)
            if chunk:  # an empty chunk would end the body: skip it
                await response.write(chunk)
        transport = raw.transport
        if limit is not None and transport is not None:
            raw.writer.send_headers()  # the head, even where no chunk went out
            await _flushed(transport)
            _reset(transport)
        return response

    async def _reset_after(self, raw: web.BaseRequest, head: bytes) -> web.StreamResponse:
        """Send ``head`` (which promises a body) straight to the socket, then reset the connection."""
        transport = raw.transport
        if transport is not None:
            transport.write(head)
            await _flushed(transport)
            _reset(transport)
        return web.Response(status=500)  # never sent: the connection is gone
