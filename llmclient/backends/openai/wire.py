"""The chat-completions wire format: request bodies out, replies, stream chunks and errors in.

Pure functions over bytes and dicts, no I/O and no secrets, so the sync and async paths of the
backend share every rule (the backend masks the API key in errors, once, where they leave it). The
reference is the OpenAI API spec (openai/openai-openapi); the vendor fields we read (OpenRouter's
``provider``, ``native_finish_reason``, ``reasoning``, usage ``cost``) are kept in ``details``.
"""

from __future__ import annotations

import email.utils
import json
import re
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from llmclient.errors import (
    AuthenticationError,
    BackendUnavailableError,
    ContextWindowExceededError,
    InvalidRequestError,
    LLMClientError,
    MalformedResponseError,
    ProviderError,
    RateLimitError,
    TimeoutError,
)
from llmclient.types import ChatRequest, ChatResponse, StreamDelta, Usage, normalise_finish_reason


@dataclass(frozen=True)
class WireOptions:
    """How one provider wants the standard fields spelled.

    Attributes:
        max_tokens_field: the body field for ``max_new_tokens``.
        supports_top_k: whether the API accepts ``top_k`` (if not, it is refused before sending).
        body_extra: fields added to every body (the provider's own and the user's ``extra_body``).
    """

    max_tokens_field: str = "max_tokens"
    supports_top_k: bool = True
    body_extra: Mapping[str, Any] | None = None


def build_body(model: str, request: ChatRequest, options: WireOptions, *, stream: bool) -> dict[str, Any]:
    """The JSON body of a chat-completions request."""
    params = request.params
    body: dict[str, Any] = {"model": model, "messages": [m.to_dict() for m in request.messages]}
    if params.max_new_tokens is not None:
        body[options.max_tokens_field] = params.max_new_tokens
    if params.temperature is not None:
        body["temperature"] = params.temperature
    if params.top_p is not None:
        body["top_p"] = params.top_p
    if params.top_k is not None:
        if not options.supports_top_k:
            raise InvalidRequestError(
                f"top_k is not accepted by this API (model {model!r}); leave it unset or use top_p"
            )
        body["top_k"] = params.top_k
    if params.stop is not None:
        body["stop"] = list(params.stop)
    if params.seed is not None:
        body["seed"] = params.seed
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    if options.body_extra:
        body.update(options.body_extra)
    if params.extra:
        body.update(params.extra)
    return body


def _usage(data: Any) -> Usage | None:
    if not isinstance(data, Mapping):
        return None
    return Usage(
        prompt_tokens=int(data.get("prompt_tokens") or 0),
        completion_tokens=int(data.get("completion_tokens") or 0),
    )


_DETAIL_KEYS = ("id", "provider", "system_fingerprint", "created", "service_tier")


def _top_details(data: Mapping[str, Any], details: dict[str, Any]) -> None:
    for key in _DETAIL_KEYS:
        value = data.get(key)
        if value is not None:
            details[key] = value
    usage = data.get("usage")
    if isinstance(usage, Mapping) and usage.get("cost") is not None:
        details["cost"] = usage["cost"]


def _choice_details(choice: Mapping[str, Any], part: Mapping[str, Any], details: dict[str, Any]) -> None:
    native = choice.get("native_finish_reason") or choice.get("finish_reason")
    if native is not None and normalise_finish_reason(native) != native:
        details["native_finish_reason"] = native
    if choice.get("logprobs") is not None:
        details["logprobs"] = choice["logprobs"]
    reasoning = part.get("reasoning") or part.get("reasoning_content")
    if reasoning:
        details["reasoning"] = reasoning
    if part.get("refusal"):
        details["refusal"] = part["refusal"]


def parse_completion(raw: bytes, *, status: int, headers: Mapping[str, str]) -> ChatResponse:
    """Read a non-streamed chat completion; an error object inside it raises the typed error."""
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise _malformed("the reply is not valid JSON", raw, status, headers) from exc
    if not isinstance(data, dict):
        raise _malformed("the reply is not a JSON object", raw, status, headers)
    if "error" in data and not data.get("choices"):
        raise error_from_payload(data, status=status, headers=headers)
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], Mapping):
        raise _malformed("the reply has no choices", raw, status, headers)
    choice = choices[0]
    message = choice.get("message")
    if not isinstance(message, Mapping):
        raise _malformed("choices[0] has no message", raw, status, headers)
    details: dict[str, Any] = {}
    _top_details(data, details)
    _choice_details(choice, message, details)
    content = message.get("content")
    return ChatResponse(
        text=content if isinstance(content, str) else "",
        finish_reason=normalise_finish_reason(choice.get("finish_reason")),
        usage=_usage(data.get("usage")),
        model=str(data.get("model") or ""),
        tool_calls=message.get("tool_calls") or None,
        details=details,
    )


def parse_chunk(data: Any) -> StreamDelta:
    """Read one ``chat.completion.chunk``; an error object in it raises the typed error."""
    if not isinstance(data, Mapping):
        raise MalformedResponseError(f"stream event is not a JSON object: {str(data)[:200]}")
    if data.get("error"):
        raise error_from_payload(data, status=200, headers={}, during_stream=True)
    details: dict[str, Any] = {}
    _top_details(data, details)
    if data.get("model"):
        details["model"] = data["model"]
    text = ""
    finish = None
    choices = data.get("choices") or ()
    if choices:
        choice = choices[0]
        delta = choice.get("delta") or {}
        content = delta.get("content")
        if isinstance(content, str):
            text = content
        if delta.get("tool_calls"):
            details["tool_calls"] = delta["tool_calls"]
        _choice_details(choice, delta, details)
        finish = choice.get("finish_reason")
    return StreamDelta(
        text=text,
        finish_reason=normalise_finish_reason(finish),
        usage=_usage(data.get("usage")),
        details=details,
    )


class SSEDecoder:
    """Incremental server-sent-events decoder yielding each event's ``data``.

    Follows the SSE rules that matter for chat streams: any line ending, comment lines (OpenRouter's
    ``: OPENROUTER PROCESSING`` keep-alives) skipped, multi-line data joined with newlines.
    """

    def __init__(self) -> None:
        self._buffer = b""
        self._data: list[bytes] = []

    def feed(self, chunk: bytes) -> Iterator[bytes]:
        """Take bytes off the wire; yield the data of every event they complete."""
        buffer = self._buffer + chunk if self._buffer else chunk
        if b"\r" in buffer:
            if buffer.endswith(b"\r"):
                buffer, self._buffer = buffer[:-1], b"\r"
            else:
                self._buffer = b""
            buffer = buffer.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        else:
            self._buffer = b""
        lines = buffer.split(b"\n")
        self._buffer = lines.pop() + self._buffer
        for line in lines:
            if not line:
                if self._data:
                    yield b"\n".join(self._data)
                    self._data = []
            elif line.startswith(b"data:"):
                value = line[5:]
                self._data.append(value[1:] if value.startswith(b" ") else value)


DONE = b"[DONE]"


def load_event(data: bytes) -> Any:
    """Parse one event's JSON data."""
    try:
        return json.loads(data)
    except ValueError as exc:
        raise MalformedResponseError(
            f"stream event is not valid JSON: {data[:200].decode(errors='replace')!r}",
            body=data.decode(errors="replace"),
        ) from exc


class StreamReader:
    """Turns the bytes of a streamed reply into deltas, and checks that the stream ended properly."""

    def __init__(self) -> None:
        self._decoder = SSEDecoder()
        self._done = False
        self._finished = False

    def feed(self, chunk: bytes) -> list[StreamDelta]:
        """Deltas completed by ``chunk``; events after ``[DONE]`` are ignored."""
        if self._done:
            return []
        deltas = []
        for data in self._decoder.feed(chunk):
            if data == DONE:
                self._done = True
                break
            delta = parse_chunk(load_event(data))
            if delta.finish_reason is not None:
                self._finished = True
            deltas.append(delta)
        return deltas

    def finish(self) -> list[StreamDelta]:
        """What the body's end completes; a stream cut off before its end raises."""
        deltas = [] if self._done else self.feed(b"\n\n")
        if not self._done and not self._finished:
            raise BackendUnavailableError(
                "the stream ended before the reply was complete (no finish_reason and no [DONE]); "
                "the connection was probably cut"
            )
        return deltas


def _malformed(problem: str, raw: bytes, status: int, headers: Mapping[str, str]) -> MalformedResponseError:
    text = raw[:500].decode(errors="replace")
    return MalformedResponseError(
        f"{problem} (HTTP {status}): {text!r}; is base_url an OpenAI-compatible /v1 endpoint?",
        status_code=status,
        body=text,
        headers=headers,
    )


_CONTEXT_PATTERNS = re.compile(
    r"context[_ ]length|context window|maximum context|too many tokens|prompt is too long|"
    r"exceeds the (?:model's )?(?:maximum|max)|input is too long",
    re.IGNORECASE,
)
_NUMBERS = re.compile(r"(\d[\d,]*) tokens")


def error_from_status(status: int, headers: Mapping[str, str], raw: bytes) -> LLMClientError:
    """The typed error for a non-2xx reply."""
    try:
        data: Any = json.loads(raw) if raw else None
    except ValueError:
        data = None
    if isinstance(data, Mapping) and isinstance(data.get("error"), (Mapping, str)):
        return error_from_payload(data, status=status, headers=headers)
    text = raw[:500].decode(errors="replace").strip()
    return _error_for(status, text or f"HTTP {status}", None, headers=headers, body=text)


def error_from_payload(
    data: Mapping[str, Any],
    *,
    status: int,
    headers: Mapping[str, str],
    during_stream: bool = False,
) -> LLMClientError:
    """The typed error for an ``{"error": {...}}`` object, in an error reply or inside a 200."""
    error = data["error"]
    if isinstance(error, str):
        error = {"message": error}
    message = str(error.get("message") or "unknown error")
    code = error.get("code")
    reason = str(error.get("code") or error.get("type") or "") or None
    effective = status
    if status < 400:
        effective = int(code) if isinstance(code, int) or (isinstance(code, str) and code.isdigit()) else 0
    metadata = error.get("metadata")
    raw = metadata.get("raw") if isinstance(metadata, Mapping) else None
    if raw:
        message = f"{message} ({str(raw)[:300]})"
    if during_stream:
        message = f"error in the middle of the stream: {message}"
    elif status < 400:
        message = f"error inside an HTTP {status} reply: {message}"
    return _error_for(effective, message, reason, headers=headers, body=dict(data), payload=error)


def _error_for(
    status: int,
    message: str,
    reason: str | None,
    *,
    headers: Mapping[str, str],
    body: Any,
    payload: Mapping[str, Any] | None = None,
) -> LLMClientError:
    common: dict[str, Any] = {
        "status_code": status or None,
        "body": body,
        "headers": headers,
        "provider_reason": reason,
    }
    if reason == "context_length_exceeded" or (
        status in (400, 413, 422) and _CONTEXT_PATTERNS.search(message)
    ):
        numbers = [int(n.replace(",", "")) for n in _NUMBERS.findall(message)]
        return ContextWindowExceededError(
            f"the prompt does not fit the model's context window: {message}. Shorten the messages or "
            f"lower max_new_tokens",
            context_window=numbers[0] if numbers else None,
            prompt_tokens=numbers[1] if len(numbers) > 1 else None,
            **common,
        )
    if status in (401, 403):
        return AuthenticationError(
            f"the server refused the credentials (HTTP {status}): {message}. Check the API key "
            f"(its environment variable or api_key setting) and that it may use this model",
            **common,
        )
    if status == 429:
        return RateLimitError(
            f"rate limited (HTTP 429): {message}", retry_after=retry_after(headers, payload), **common
        )
    if status == 408:
        return TimeoutError(f"the server timed out (HTTP 408): {message}", **common)
    if status == 409 or status >= 500:
        return BackendUnavailableError(f"the server failed (HTTP {status}): {message}", **common)
    if status == 404:
        return InvalidRequestError(
            f"not found (HTTP 404): {message}. Check the model id and that base_url ends in /v1", **common
        )
    if status in (400, 413, 422):
        return InvalidRequestError(f"the server rejected the request (HTTP {status}): {message}", **common)
    return ProviderError(
        f"the provider reported an error{f' (HTTP {status})' if status else ''}: {message}", **common
    )


def retry_after(headers: Mapping[str, str], payload: Mapping[str, Any] | None = None) -> float | None:
    """Seconds the server asked us to wait: ``retry-after-ms``, then ``retry-after`` (seconds or an
    HTTP date), then OpenRouter's ``X-RateLimit-Reset`` (epoch milliseconds, in the headers or in the
    error's metadata).
    """
    lowered = {k.lower(): v for k, v in headers.items()}
    value = lowered.get("retry-after-ms")
    if value is not None:
        try:
            return max(0.0, float(value) / 1000)
        except ValueError:
            pass
    value = lowered.get("retry-after")
    if value is not None:
        try:
            return max(0.0, float(value))
        except ValueError:
            try:
                when = email.utils.parsedate_to_datetime(value)
            except (TypeError, ValueError):
                when = None
            if when is not None:
                return max(0.0, when.timestamp() - time.time())
    reset = lowered.get("x-ratelimit-reset")
    if reset is None and payload is not None:
        metadata = payload.get("metadata")
        inner = metadata.get("headers") if isinstance(metadata, Mapping) else None
        if isinstance(inner, Mapping):
            reset = next((str(v) for k, v in inner.items() if k.lower() == "x-ratelimit-reset"), None)
    if reset is not None:
        try:
            stamp = float(reset)
        except ValueError:
            return None
        seconds = stamp / 1000 if stamp > 1e11 else stamp
        return max(0.0, seconds - time.time())
    return None
