"""The chat-completions wire format: request bodies out, replies, stream chunks and errors in.

Pure functions over bytes and dicts, no I/O and no secrets, so the sync and async paths of the
backend share every rule (the backend masks the API key in errors, once, where they leave it). The
reference is the OpenAI API spec (openai/openai-openapi); the vendor fields we read (OpenRouter's
``provider``, ``native_finish_reason``, ``reasoning``, usage ``cost``) are kept in ``details``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from llmclient.backends.openai.failures import error_from_event, error_from_payload, malformed, not_the_api
from llmclient.backends.openai.schemas import response_format_field
from llmclient.backends.openai.toolcalls import reply_calls, tools_fields
from llmclient.errors import BackendUnavailableError, InvalidRequestError, MalformedResponseError
from llmclient.types import (
    ChatRequest,
    ChatResponse,
    StreamDelta,
    TokenLogprob,
    Usage,
    normalise_finish_reason,
)


@dataclass(frozen=True)
class WireOptions:
    """How one provider wants the standard fields spelled.

    Attributes:
        max_tokens_field: the body field for ``max_new_tokens``.
        supports_top_k: whether the API accepts ``top_k`` (if not, it is refused before sending).
        body_extra: fields added to every body (the provider's own and the user's ``extra_body``).
        developer_role: the role ``developer`` messages are sent as (``system`` for servers that
            do not know the newer name).
        constrained_extra: fields added under those of the body when the request constrains the reply
            (a ``response_format`` or ``tools``: OpenRouter's ``provider.require_parameters``); a dict
            merges under the body's own.
    """

    max_tokens_field: str = "max_tokens"
    supports_top_k: bool = True
    body_extra: Mapping[str, Any] | None = None
    developer_role: str = "developer"
    constrained_extra: Mapping[str, Any] | None = None


def _message(message: Any, options: WireOptions) -> dict[str, Any]:
    data: dict[str, Any] = message.to_dict()
    if data["role"] == "developer":
        data["role"] = options.developer_role
    return data


def build_body(model: str, request: ChatRequest, options: WireOptions, *, stream: bool) -> dict[str, Any]:
    """The JSON body of a chat-completions request."""
    params = request.params
    body: dict[str, Any] = {"model": model, "messages": [_message(m, options) for m in request.messages]}
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
    if params.response_format is not None:
        body["response_format"] = response_format_field(params.response_format)
    if params.wants_logprobs:
        body["logprobs"] = True
        if params.top_logprobs:
            body["top_logprobs"] = params.top_logprobs
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    if options.body_extra:
        body.update(options.body_extra)
    if params.tools:
        body.update(tools_fields(params))
    if (params.response_format is not None or params.tools) and options.constrained_extra:
        for key, value in options.constrained_extra.items():  # what the user set wins, merged
            given = body.get(key)
            if isinstance(value, Mapping) and isinstance(given, Mapping):
                body[key] = {**value, **given}
            elif given is None:
                body[key] = value
    if params.extra:
        body.update(params.extra)
    return body


def _usage(data: Any) -> Usage | None:
    if not isinstance(data, Mapping):
        return None
    cost = data.get("cost")  # OpenRouter's, authoritative: what the request was billed
    known = isinstance(cost, (int, float)) and not isinstance(cost, bool)
    return Usage(
        prompt_tokens=int(data.get("prompt_tokens") or 0),
        completion_tokens=int(data.get("completion_tokens") or 0),
        cost=float(cost) if known else None,  # type: ignore[arg-type]
        cost_source="provider" if known else None,
    )


_DETAIL_KEYS = ("id", "provider", "system_fingerprint", "created", "service_tier", "prompt_logprobs")
"""Top-level reply fields kept in ``details`` (``prompt_logprobs`` is vLLM's, read by scoring)."""


def _top_details(data: Mapping[str, Any], details: dict[str, Any]) -> None:
    for key in _DETAIL_KEYS:
        value = data.get(key)
        if value is not None:
            details[key] = value
    usage = data.get("usage")
    if usage is not None and isinstance(usage, Mapping) and usage.get("cost") is not None:
        details["cost"] = usage["cost"]


def _choice_details(choice: Mapping[str, Any], part: Mapping[str, Any], details: dict[str, Any]) -> None:
    native = choice.get("native_finish_reason") or choice.get("finish_reason")
    if native is not None and normalise_finish_reason(native) != native:
        details["native_finish_reason"] = native
    reasoning = part.get("reasoning") or part.get("reasoning_content")
    if reasoning:
        details["reasoning"] = reasoning
    if part.get("refusal"):
        details["refusal"] = part["refusal"]


def token_logprobs(choice: Mapping[str, Any]) -> list[TokenLogprob] | None:
    """The entries of a choice's ``logprobs.content``; ``None`` where the choice carries none at all
    (a provider that ignores ``logprobs``), so the backend can tell "none returned" from "no tokens".
    """
    block = choice.get("logprobs")
    content = block.get("content") if isinstance(block, Mapping) else None
    if not isinstance(content, list):
        return None
    try:
        return [TokenLogprob.from_dict(entry) for entry in content]
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        raise MalformedResponseError(f"logprobs.content is malformed: {str(content)[:200]}") from exc


def parse_completion(raw: bytes, *, status: int, headers: Mapping[str, str]) -> ChatResponse:
    """Read a non-streamed chat completion; an error object inside it raises the typed error."""
    try:
        data = json.loads(raw.decode(errors="replace"))  # a stray invalid byte costs one character
    except ValueError as exc:
        raise malformed("the reply is not valid JSON", raw, status, headers) from exc
    if not isinstance(data, dict):
        raise malformed("the reply is not a JSON object", raw, status, headers)
    if "error" in data and not data.get("choices"):
        raise error_from_payload(data, status=status, headers=headers)
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], Mapping):
        raise malformed("the reply has no choices", raw, status, headers)
    choice = choices[0]
    message = choice.get("message")
    if not isinstance(message, Mapping):
        raise malformed("choices[0] has no message", raw, status, headers)
    details: dict[str, Any] = {}
    _top_details(data, details)
    _choice_details(choice, message, details)
    content = message.get("content")
    return ChatResponse(
        text=content if isinstance(content, str) else "",
        finish_reason=normalise_finish_reason(choice.get("finish_reason")),
        usage=_usage(data.get("usage")),
        model=str(data.get("model") or ""),
        tool_calls=reply_calls(message, raw, status, headers),
        details=details,
        logprobs=token_logprobs(choice) or [],
    )


def parse_chunk(data: Any) -> StreamDelta:
    """Read one ``chat.completion.chunk``; an error object in it raises the typed error.

    Run once per streamed token, so the common chunk (text, nothing else) takes the shortest path:
    absent and ``null`` fields are skipped before any helper is called.
    """
    if not isinstance(data, dict) and not isinstance(data, Mapping):  # dict first: no ABC check
        raise MalformedResponseError(f"stream event is not a JSON object: {str(data)[:200]}")
    if data.get("error"):
        raise error_from_payload(data, status=200, headers={}, during_stream=True)
    details: dict[str, Any] = {}
    _top_details(data, details)
    if data.get("model"):
        details["model"] = data["model"]
    text = ""
    finish = None
    logprobs = None
    choices = data.get("choices")
    if choices:
        choice = choices[0]
        delta = choice.get("delta") or {}
        content = delta.get("content")
        if isinstance(content, str):
            text = content
        if delta.get("tool_calls"):  # fragments, merged by the stream (llmclient.tools.fragments)
            details["tool_calls"] = delta["tool_calls"]
        _choice_details(choice, delta, details)
        finish = choice.get("finish_reason")
        if choice.get("logprobs") is not None:
            logprobs = token_logprobs(choice)
    usage = data.get("usage")
    return StreamDelta(
        text=text,
        finish_reason=None if finish is None else normalise_finish_reason(finish),
        usage=None if usage is None else _usage(usage),
        details=details,
        logprobs=logprobs or [],
    )


class SSEDecoder:
    """Incremental server-sent-events decoder yielding each event's name and ``data``.

    Follows the SSE rules that matter for chat streams: any line ending, comment lines (OpenRouter's
    ``: OPENROUTER PROCESSING`` keep-alives) skipped, multi-line data joined with newlines, the
    ``event:`` field kept (an ``error`` event carries the server's message).
    """

    def __init__(self) -> None:
        self._buffer = b""
        self._data: list[bytes] = []
        self._event = b""

    def feed(self, chunk: bytes) -> list[tuple[bytes, bytes]]:
        """Take bytes off the wire; return ``(event name, data)`` for every event they complete."""
        if (  # the common chunk, one whole event of one data line: no splitting (once per token)
            chunk[:6] == b"data: "
            and chunk.find(b"\n") == len(chunk) - 2
            and chunk[-1:] == b"\n"
            and not (self._buffer or self._data or self._event)
            and b"\r" not in chunk
        ):
            return [(b"", chunk[6:-2])]
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
        events = []
        for line in lines:
            if not line:
                if self._data:
                    events.append((self._event, b"\n".join(self._data)))
                    self._data = []
                self._event = b""
            elif line.startswith(b"data:"):
                value = line[5:]
                self._data.append(value[1:] if value.startswith(b" ") else value)
            elif line.startswith(b"event:"):
                self._event = line[6:].strip()
        return events


DONE = b"[DONE]"


def load_event(data: bytes, event: bytes = b"") -> Any:
    """Parse one event's JSON data; an event that is plainly not JSON (``Internal error``, or any
    ``event: error``) is the server's error message.
    """
    text = data.decode(errors="replace")
    if event == b"error" or not text.lstrip().startswith(("{", "[")):
        try:
            parsed = json.loads(text)
        except ValueError:
            raise error_from_event(text) from None
        if isinstance(parsed, Mapping) and parsed.get("error"):
            return parsed
        raise error_from_event(text)
    try:
        return json.loads(text)
    except ValueError as exc:
        raise MalformedResponseError(f"stream event is not valid JSON: {text[:200]!r}", body=text) from exc


class StreamReader:
    """Turns the bytes of a streamed reply into deltas, and checks that the stream ended properly.

    ``status`` and ``headers`` describe the reply, to say what came back when it is no event
    stream at all (an HTML page). ``events`` counts data events (comments do not count), which is
    how the backend tells a live stream from one kept open by keep-alives. ``complete`` is true
    once the finish reason and the usage chunk (asked for on every stream) have come: the reply
    is whole even if ``[DONE]`` never does.
    """

    def __init__(self, status: int = 200, headers: Mapping[str, str] | None = None) -> None:
        self._decoder = SSEDecoder()
        self._status = status
        self._headers = headers or {}
        self._head = b""
        self._done = False
        self._finished = False
        self._usage = False
        self.events = 0
        self.text = False
        """Whether any delta carried text."""
        self.logprobs = False
        """Whether any delta carried token logprobs."""

    @property
    def finished(self) -> bool:
        """Whether the finish reason (or ``[DONE]``) has come."""
        return self._finished or self._done

    @property
    def complete(self) -> bool:
        """Whether the reply is whole: ``[DONE]``, or its finish reason and its usage."""
        return self._done or (self._finished and self._usage)

    def feed(self, chunk: bytes) -> list[StreamDelta]:
        """Deltas completed by ``chunk``; events after ``[DONE]`` are ignored."""
        if self._done:
            return []
        if len(self._head) < 200:
            self._head += chunk[: 200 - len(self._head)]
        deltas = []
        for event, data in self._decoder.feed(chunk):
            self.events += 1
            if data == DONE:
                self._done = True
                break
            delta = parse_chunk(load_event(data, event))
            self._finished = self._finished or delta.finish_reason is not None
            self._usage = self._usage or delta.usage is not None
            self.text = self.text or bool(delta.text)
            self.logprobs = self.logprobs or bool(delta.logprobs)
            deltas.append(delta)
        return deltas

    def finish(self) -> list[StreamDelta]:
        """What the body's end completes; a stream cut off before its end raises."""
        deltas = [] if self._done else self.feed(b"\n\n")
        if not self.events and self._head.strip() and not self._head.lstrip().startswith((b":", b"data")):
            raise not_the_api(self._status, self._headers, self._head, "an event stream")
        if not self.finished:
            raise BackendUnavailableError(
                "the stream ended before the reply was complete (no finish_reason and no [DONE]); "
                "the connection was probably cut"
            )
        return deltas
