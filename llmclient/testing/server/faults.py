"""Faults an OpenAI-compatible API really produces, served on demand by the loopback server.

A :class:`FaultHandler` answers each request with the next fault of its script (then, once the
script is used up, with a normal reply), so a test can say "a 429 with ``Retry-After``, then
success" and watch what the client does::

    with LoopbackServer(FaultHandler(["rate_limit_seconds"])) as server:
        ...  # the first request gets a 429, the second a completion

A request may also ask for a fault itself with the ``x-fault`` header, which benchmarks and
subprocess tests use.
"""

from __future__ import annotations

import email.utils
import json
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from llmclient.testing.server.exchange import Reply, Request
from llmclient.testing.server.replies import (
    OpenAIHandler,
    completion,
    completion_chunks,
    error_reply,
    json_reply,
    sse_reply,
)

TEXT = "The answer is forty-two, and here is why."


def _stream_wanted(request: Request) -> bool:
    try:
        return bool(request.json().get("stream"))
    except ValueError:
        return False


def _chunks(text: str = TEXT) -> list[dict[str, Any]]:
    return completion_chunks(text, pieces=6)


def _rate_limit_seconds(request: Request) -> Reply:
    return error_reply(
        429,
        "Rate limit reached for requests",
        type="requests",
        code="rate_limit_exceeded",
        headers=[("Retry-After", "0.2")],
    )


def _rate_limit_date(request: Request) -> Reply:
    when = email.utils.formatdate(time.time() + 1, usegmt=True)
    return error_reply(
        429,
        "Rate limit reached for requests",
        type="requests",
        code="rate_limit_exceeded",
        headers=[("Retry-After", when)],
    )


def _rate_limit_openrouter(request: Request) -> Reply:
    reset = str(int((time.time() + 0.2) * 1000))
    body = {
        "error": {
            "message": "Rate limit exceeded: free-models-per-min",
            "code": 429,
            "metadata": {
                "headers": {
                    "X-RateLimit-Limit": "20",
                    "X-RateLimit-Remaining": "0",
                    "X-RateLimit-Reset": reset,
                }
            },
        }
    }
    return json_reply(body, status=429)


def _server_error(status: int) -> Callable[[Request], Reply]:
    def reply(request: Request) -> Reply:
        return error_reply(
            status, "The server had an error while processing your request.", type="server_error"
        )

    return reply


def _reset_before_body(request: Request) -> Reply:
    return Reply(headers=[("Content-Type", "application/json")], body=b"{" * 64, reset_before_body=True)


def _reset_mid_body(request: Request) -> Reply:
    if _stream_wanted(request):
        reply = sse_reply(_chunks())
        reply.reset_after_chunks = 3
        return reply
    body = json.dumps(completion(TEXT)).encode()
    return Reply(
        headers=[("Content-Type", "application/json")], chunks=[body[:40], body[40:]], reset_after_chunks=1
    )


def _stream_cut(request: Request) -> Reply:
    if _stream_wanted(request):
        return sse_reply(_chunks()[:4], done=False)
    return Reply(
        headers=[("Content-Type", "application/json")], body=json.dumps(completion(TEXT)).encode()[:50]
    )


def _stall(request: Request) -> Reply:
    if _stream_wanted(request):
        return sse_reply(_chunks(), chunk_delay=5.0)
    return json_reply(completion(TEXT), delay=5.0)


def _error_in_200(request: Request) -> Reply:
    body = {"error": {"message": "Internal Server Error", "code": 500}, "user_id": "user_1"}
    if _stream_wanted(request):
        return sse_reply([*_chunks()[:2], body])
    return json_reply(body)


def _bad_request_in_200(request: Request) -> Reply:
    body = {"error": {"code": 400, "message": "Token limit reached"}}
    if _stream_wanted(request):
        return sse_reply([*_chunks()[:2], body])
    return json_reply(body)


def _malformed(request: Request) -> Reply:
    if _stream_wanted(request):
        return sse_reply([_chunks()[0], '{"choices": [{"delta": {"content": "x"'])
    return Reply(headers=[("Content-Type", "application/json")], body=b'{"choices": [{"message": ')


def _large(request: Request) -> Reply:
    text = "lorem ipsum dolor sit amet " * 200_000  # 5.4 MB of text
    if _stream_wanted(request):
        return sse_reply(completion_chunks(text, pieces=400))
    return json_reply(completion(text))


FAULTS: dict[str, Callable[[Request], Reply]] = {
    "rate_limit_seconds": _rate_limit_seconds,
    "rate_limit_date": _rate_limit_date,
    "rate_limit_openrouter": _rate_limit_openrouter,
    "server_500": _server_error(500),
    "server_502": _server_error(502),
    "server_503": _server_error(503),
    "reset_before_body": _reset_before_body,
    "reset_mid_body": _reset_mid_body,
    "stream_cut": _stream_cut,
    "stall": _stall,
    "error_in_200": _error_in_200,
    "bad_request_in_200": _bad_request_in_200,
    "malformed": _malformed,
    "large": _large,
}
"""Every fault by name; each answers a streamed request as a stream and a plain one as JSON."""


class FaultHandler:
    """Answers requests with scripted faults, then normally.

    Args:
        script: fault names, one per request, in order; when used up, requests get normal replies
            (or, with ``repeat``, the last fault again).
        repeat: keep answering with the last fault of the script.
        text: the normal reply's text.
    """

    def __init__(self, script: Iterable[str] = (), *, repeat: bool = False, text: str = TEXT) -> None:
        self.script = list(script)
        unknown = [name for name in self.script if name not in FAULTS]
        if unknown:
            raise ValueError(f"unknown fault(s) {unknown}; known: {sorted(FAULTS)}")
        self.repeat = repeat
        self._normal = OpenAIHandler(text=text)
        self._lock = threading.Lock()
        self.served: list[str] = []

    def __call__(self, request: Request) -> Reply:
        """Answer one request: the header's fault, the script's next one, or a normal reply."""
        name = request.headers.get("x-fault")
        with self._lock:
            if name is None and self.script:
                name = self.script[0] if self.repeat and len(self.script) == 1 else self.script.pop(0)
            self.served.append(name or "ok")
        if name is None or name == "ok":
            return self._normal(request)
        return FAULTS[name](request)
