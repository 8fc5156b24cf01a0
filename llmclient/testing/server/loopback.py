""":class:`LoopbackServer`: a loopback HTTP/1.1 server that stands in for an OpenAI-compatible API in
tests and benchmarks, on its own event loop in a background thread.

The HTTP is aiohttp's (:mod:`llmclient.testing.server.serving`), fast enough that the server is never
the bottleneck of a client benchmark (keep-alive, pipelining, ``Content-Length`` and chunked request
bodies). Replies are plain data (:class:`~llmclient.testing.server.exchange.Reply`) and can inject
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

import asyncio
import contextlib
import threading
from types import TracebackType

from typing_extensions import Self

from llmclient.testing.server.exchange import Handler, Request
from llmclient.testing.server.serving import ServerCore


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
        return self._core.requests

    @property
    def errors(self) -> list[BaseException]:
        """Exceptions raised by the handler (each was answered with a 500)."""
        return self._core.errors

    @property
    def connections_opened(self) -> int:
        """How many TCP connections the server has accepted so far."""
        return self._core.connections_opened

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
