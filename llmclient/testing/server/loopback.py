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

This module holds :class:`LoopbackServer` and the command line; every name tests use is importable
from here, though defined beside it: :class:`Request`, :class:`Reply` and :data:`Handler` in
:mod:`llmclient.testing.server_types`, the OpenAI-shaped reply builders and :class:`OpenAIHandler` in
:mod:`llmclient.testing.openai_replies`, the HTTP/1.1 protocol in :mod:`llmclient.testing.server_protocol`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
import threading
from collections.abc import Sequence
from types import TracebackType

from typing_extensions import Self

from llmclient.testing.openai_replies import (
    DEFAULT_TEXT,
    OpenAIHandler,
    completion,
    completion_chunks,
    error_reply,
    json_reply,
    sse_reply,
)
from llmclient.testing.server_protocol import ServerCore
from llmclient.testing.server_types import Handler, Reply, Request

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


class LoopbackServer:
    """An HTTP/1.1 server on 127.0.0.1 running in a background thread with its own event loop.

    Binds a free port by default; use as a context manager or call :meth:`start` / :meth:`stop`.
    Every request is recorded in :attr:`requests` (in arrival order) and answered by ``handler``.
    """

    def __init__(self, handler: Handler, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.handler = handler
        self.host = host
        self._port = port
        self._core = ServerCore(handler)
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
    core = ServerCore(handler)
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
