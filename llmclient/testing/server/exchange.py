"""What the loopback server passes to a handler and takes back: :class:`Request`, :class:`Reply`,
:data:`Handler`.

Plain data, shared by the server (:mod:`llmclient.testing.server.serving`) and the handlers
(:mod:`llmclient.testing.server.replies`, :mod:`llmclient.testing.server.faults`).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Request:
    """One HTTP request as the server received it (recorded in
    :attr:`~llmclient.testing.server.loopback.LoopbackServer.requests`).
    """

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


Handler = Callable[[Request], Reply | Awaitable[Reply]]
"""Answers a request, synchronously or as a coroutine. Exceptions become a 500 reply."""
