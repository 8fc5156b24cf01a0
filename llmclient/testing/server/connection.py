"""The loopback server's HTTP/1.1: a small hand-written parser and writer on an :class:`asyncio.Protocol`.

Standard library only, so the server is never the bottleneck of a client benchmark: keep-alive,
pipelining (replies go out in order), ``Content-Length`` and ``Transfer-Encoding: chunked`` request
bodies, ``Expect: 100-continue``. Replies that need no waiting are written at once; the rest
(delays, chunked streams, injected faults: connection resets, forced closes) are sent by a task per
connection. :class:`ServerCore` is the listening socket and its connections on one event loop, which
:class:`~llmclient.testing.server.LoopbackServer` runs in a thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import http
import logging
import socket
import struct
import threading
from collections import deque
from collections.abc import Awaitable

from llmclient.testing.openai_replies import error_reply, json_reply
from llmclient.testing.server_types import Handler, Reply, Request

_log = logging.getLogger("llmclient.testing.server")  # the server's logger, whichever module logs

_MAX_HEAD = 64 * 1024
_REASONS: dict[int, str] = {s.value: s.phrase for s in http.HTTPStatus}
_NO_BODY_STATUSES = frozenset({204, 304})


class _BadRequest(Exception):
    """The peer sent something that is not HTTP/1.x; answered with a 400 and a close."""


class ServerState:
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

    def __init__(self, state: ServerState) -> None:
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
            error = {"error": {"message": f"Bad request: {exc}", "type": "invalid_request_error"}}
            reply = json_reply(error, status=400)
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


class ServerCore:
    """The listening socket and its connections, living on one event loop."""

    def __init__(self, handler: Handler) -> None:
        self.state = ServerState(handler)
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self, host: str, port: int) -> None:
        """Listen on ``host``:``port`` (0: a free port, then in :attr:`port`)."""
        loop = asyncio.get_running_loop()
        state = self.state
        self.server = await loop.create_server(
            lambda: _HTTPProtocol(state), host, port, backlog=1024, reuse_address=True
        )
        self.port = self.server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        """Stop listening, abort every connection and cancel the loop's other tasks."""
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
