"""Replies in the OpenAI API's shape, and :class:`OpenAIHandler`, which serves chat completions with them.

The builders (:func:`json_reply`, :func:`error_reply`, :func:`sse_reply`, :func:`completion`,
:func:`completion_chunks`, :func:`token_logprobs`) make the bodies a test's own handler answers with;
:class:`OpenAIHandler` answers ``POST /v1/chat/completions`` plain or streamed, with token logprobs
when asked, as the API does.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Sequence
from typing import Any

from llmclient.testing.server.exchange import Reply, Request


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


def token_logprobs(tokens: Sequence[str], top: int = 0) -> list[dict[str, Any]]:
    """The ``logprobs.content`` entries of ``tokens`` (one entry each), as OpenAI writes them.

    Token ``i`` has logprob ``-0.1 * (i + 1)``; with ``top`` alternatives, the token itself comes first
    and ``<alt1>``, ``<alt2>``, ... follow, each one lower.
    """
    entries = []
    for index, token in enumerate(tokens):
        logprob = -0.1 * (index + 1)
        alternatives = [(token, logprob)] + [(f"<alt{k}>", logprob - 2.0 * k) for k in range(1, top)]
        entries.append(
            {
                "token": token,
                "logprob": logprob,
                "bytes": list(token.encode()),
                "top_logprobs": [
                    {"token": t, "logprob": lp, "bytes": list(t.encode())} for t, lp in alternatives[:top]
                ],
            }
        )
    return entries


def completion(
    text: str,
    *,
    model: str = "test-model",
    finish_reason: str = "stop",
    prompt_tokens: int = 5,
    completion_tokens: int | None = None,
    id: str = "chatcmpl-test",
    logprobs: list[dict[str, Any]] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """Build a ``chat.completion`` object as the OpenAI API returns it for a non-streamed call.

    ``completion_tokens`` defaults to the number of whitespace-separated words of ``text``;
    ``logprobs`` (entries as :func:`token_logprobs` makes them) go in ``choices[0].logprobs.content``;
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
                "logprobs": None if logprobs is None else {"content": logprobs, "refusal": None},
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
    top_logprobs: int | None = None,
) -> list[dict[str, Any]]:
    """Build the ``chat.completion.chunk`` objects the OpenAI API streams for ``text``.

    A first chunk with role ``"assistant"`` and empty content, the content pieces (``pieces`` of them,
    default one per word keeping spaces, so they join back to ``text``), a chunk with
    ``finish_reason`` and an empty delta, then, if ``include_usage``, a final chunk with
    ``"choices": []`` and the usage (as with ``stream_options={"include_usage": True}``, every
    earlier chunk then carries ``"usage": null``). With ``top_logprobs`` (0 or more), each content
    chunk carries its piece's :func:`token_logprobs` entry, one token per piece.
    """
    created = int(time.time())
    parts = _split_text(text, pieces)
    entries = token_logprobs(parts, top_logprobs) if top_logprobs is not None else None

    def chunk(delta: dict[str, Any], finish: str | None, index: int | None = None) -> dict[str, Any]:
        logprobs = None
        if entries is not None and index is not None:
            logprobs = {"content": [entries[index]], "refusal": None}
        obj: dict[str, Any] = {
            "id": id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "system_fingerprint": None,
            "choices": [{"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": finish}],
        }
        if include_usage:
            obj["usage"] = None
        return obj

    out = [chunk({"role": "assistant", "content": "", "refusal": None}, None)]
    out.extend(chunk({"content": piece}, None, i) for i, piece in enumerate(parts))
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
    request's ``model``). A request with ``"logprobs": true`` gets :func:`token_logprobs` of the reply's
    stream pieces (one token per word), with ``top_logprobs`` alternatives, unless ``logprobs=False``
    (a provider that returns none). Other paths get a 404, in OpenAI's error shape.

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
        logprobs: bool = True,
    ) -> None:
        self.text = text
        self.logprobs = logprobs
        self.latency = latency
        self.stream_pieces = stream_pieces
        self.chunk_delay = chunk_delay
        self.model = model
        self.prompt_tokens = prompt_tokens
        self._cache: dict[tuple[str, str, bool, bool, int | None, int, int | None], Reply] = {}

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
        top = _top_logprobs(body) if self.logprobs else None
        # Encoding the JSON is most of the per-request cost: keep the encoded replies for reuse.
        key = (text, model, stream, include_usage, self.stream_pieces, self.prompt_tokens, top)
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
                    top_logprobs=top,
                )
                cached = sse_reply(events)
            else:
                entries = None if top is None else token_logprobs(_split_text(text, self.stream_pieces), top)
                cached = json_reply(
                    completion(text, model=model, prompt_tokens=self.prompt_tokens, logprobs=entries)
                )
            self._cache[key] = cached
        return Reply(
            status=cached.status,
            headers=list(cached.headers),
            body=cached.body,
            chunks=None if cached.chunks is None else list(cached.chunks),
            delay=self.latency,
            chunk_delay=self.chunk_delay if stream else 0.0,
        )


def _top_logprobs(body: dict[str, Any]) -> int | None:
    """The alternatives a request asks for per token; ``None`` when it asks for no logprobs."""
    if body.get("logprobs") is not True:
        return None
    top = body.get("top_logprobs")
    return top if isinstance(top, int) and not isinstance(top, bool) else 0
