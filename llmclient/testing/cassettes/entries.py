"""The chat cassette format: how requests, replies, streams and refusals are written in the file.

A chat cassette holds one entry per interaction: the normalised request (backend type, model, whether
it streamed, the messages, the generation parameters that were set) and what came back (a reply, the
stream's deltas, or an error), with the llmclient version and the time it was recorded::

    llmclient_cassette: 1
    interactions:
    - request:
        backend: openai-compatible
        model: test-model
        stream: false
        messages:
        - role: user
          content: Capital of France?
        params:
          max_new_tokens: 16
          temperature: 0
      response:
        text: Paris.
        finish_reason: stop
        usage: {prompt_tokens: 12, completion_tokens: 2}   # cost, cost_source where known
        logprobs: [...]     # where the call asked for them: OpenAI's logprobs.content entries
        tool_calls: [...]   # where the model called tools: {id, type, function: {name, arguments}}
        model: test-model
        backend: remote
      recorded_at: '2025-06-01T12:00:00Z'
      llmclient_version: 0.1.0

This module turns llmclient's values into those entries and back (:func:`normalise_request`,
:func:`response_to_dict`, :func:`deltas_to_dicts`, :func:`error_to_dict` and their inverses) and
checks a file's document (:class:`Interaction`, :func:`read_interactions`); finding and recording
entries is :class:`~llmclient.testing.cassettes.chat.Cassette`'s work.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmclient.errors import (
    CassetteError,
    ChatTemplateError,
    ContextWindowExceededError,
    InvalidRequestError,
    UnsupportedFeatureError,
)
from llmclient.testing.cassettes.matching import short_repr
from llmclient.tools import ToolCall
from llmclient.types import (
    ChatRequest,
    ChatResponse,
    StreamDelta,
    TokenLogprob,
    Usage,
    normalise_finish_reason,
)

_FORMAT_KEY = "llmclient_cassette"
_FORMAT_VERSION = 1
_OUTCOMES = ("response", "stream", "error")


@dataclass(frozen=True)
class Interaction:
    """One recorded exchange: the normalised request and exactly one of ``response`` (a complete
    reply), ``stream`` (the deltas of a streamed reply) or ``error`` (a refused request).
    """

    request: dict[str, Any]
    response: dict[str, Any] | None = None
    stream: list[dict[str, Any]] | None = None
    error: dict[str, Any] | None = None
    recorded_at: str = ""
    llmclient_version: str = ""

    def to_dict(self) -> dict[str, Any]:
        """The entry as it is written to the file."""
        out: dict[str, Any] = {"request": self.request}
        for name in _OUTCOMES:
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        out["recorded_at"] = self.recorded_at
        out["llmclient_version"] = self.llmclient_version
        return out

    @classmethod
    def from_dict(cls, data: Any, where: str) -> Interaction:
        """Read one entry; ``where`` names it in the :class:`CassetteError` raised when it is malformed."""
        if not isinstance(data, Mapping):
            raise CassetteError(
                f"{where} must be a mapping with 'request' and a reply, got {short_repr(data)}"
            )
        request = data.get("request")
        if not isinstance(request, Mapping) or not isinstance(request.get("messages"), list):
            raise CassetteError(f"{where}: 'request' must be a mapping with a 'messages' list")
        present = [name for name in _OUTCOMES if data.get(name) is not None]
        if len(present) != 1:
            raise CassetteError(
                f"{where} must hold exactly one of {', '.join(_OUTCOMES)}; it has {present or 'none'}"
            )
        outcome = data[present[0]]
        expected = list if present[0] == "stream" else Mapping
        if not isinstance(outcome, expected) or (
            present[0] == "stream" and not all(isinstance(d, Mapping) for d in outcome)
        ):
            raise CassetteError(f"{where}: '{present[0]}' is malformed: {short_repr(outcome)}")
        try:  # read the outcome now, so a bad entry is named where it sits, not when it replays
            _READERS[present[0]](outcome)
        except CassetteError as exc:
            raise CassetteError(f"{where}: {exc}") from exc
        return cls(
            request=dict(request),
            response=dict(data["response"]) if present[0] == "response" else None,
            stream=[dict(d) for d in data["stream"]] if present[0] == "stream" else None,
            error=dict(data["error"]) if present[0] == "error" else None,
            recorded_at=str(data.get("recorded_at", "")),
            llmclient_version=str(data.get("llmclient_version", "")),
        )


def read_interactions(data: Any, path: Path) -> list[dict[str, Any]]:
    """The interaction entries of a parsed chat cassette ``data`` read from ``path``, unchecked; a
    :class:`CassetteError` when the document is not a chat cassette (an HTTP-level one, say).
    """
    if isinstance(data, Mapping) and _FORMAT_KEY not in data and "interactions" in data:
        raise CassetteError(
            f"{path} is an HTTP-level (VCR) cassette, not a chat cassette: replay it with "
            f"llmclient.testing.CassetteTransport"
        )
    if not isinstance(data, Mapping) or data.get(_FORMAT_KEY) != _FORMAT_VERSION:
        raise CassetteError(
            f"{path} is not an llmclient cassette (it needs '{_FORMAT_KEY}: {_FORMAT_VERSION}')"
        )
    items = data.get("interactions")
    if items is None:
        return []
    if not isinstance(items, list):
        raise CassetteError(f"{path}: 'interactions' must be a list")
    return items


def chat_document(items: list[dict[str, Any]]) -> dict[str, Any]:
    """The document a chat cassette file holds, for its interaction entries ``items``."""
    return {_FORMAT_KEY: _FORMAT_VERSION, "interactions": items}


# -- requests and replies as entries ----------------------------------------------------------------


def normalise_request(
    request: ChatRequest, *, backend: str | None, model: str | None, stream: bool
) -> dict[str, Any]:
    """The request as a cassette keys it: backend type, model, whether it streams, the messages, and the
    generation parameters that are set. ``backend`` or ``model`` left ``None`` are left out.
    """
    out: dict[str, Any] = {}
    if backend is not None:
        out["backend"] = backend
    if model is not None:
        out["model"] = model
    out["stream"] = stream
    out["messages"] = [m.to_dict() for m in request.messages]
    out["params"] = request.params.to_dict()
    return out


def _what_is_wrong(exc: Exception) -> str:
    """What a reading error says is wrong with an entry, in words."""
    if isinstance(exc, KeyError):
        return f"{exc.args[0]!r} is missing"
    return str(exc)


def _usage_to_dict(usage: Usage) -> dict[str, Any]:
    out: dict[str, Any] = {"prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens}
    if usage.cost is not None:
        out["cost"] = usage.cost
        out["cost_source"] = usage.cost_source
    return out


def _usage_from_dict(data: Any) -> Usage | None:
    if data is None:
        return None
    cost = data.get("cost")
    source = data.get("cost_source") if cost is not None else None
    if source not in (None, "provider", "config"):
        raise ValueError(f"cost_source {source!r} is not 'provider' or 'config'")
    return Usage(
        prompt_tokens=int(data["prompt_tokens"]),
        completion_tokens=int(data["completion_tokens"]),
        cost=float(cost) if cost is not None else None,
        cost_source=source,
    )


def _finish_reason(data: Mapping[str, Any]) -> Any:
    reason = data.get("finish_reason")
    if reason is not None and normalise_finish_reason(reason) != reason:
        raise ValueError(f"finish_reason {reason!r} is not one of llmclient's")
    return reason


def _logprobs_to_list(entries: list[TokenLogprob]) -> list[dict[str, Any]]:
    return [entry.to_dict() for entry in entries]


def _logprobs_from_list(data: Any) -> list[TokenLogprob]:
    if data is None:
        return []
    if not isinstance(data, list):
        raise TypeError(f"'logprobs' must be a list of token entries, got {short_repr(data)}")
    return [TokenLogprob.from_dict(entry) for entry in data]


def _tool_calls_from_list(data: Any) -> list[ToolCall]:
    """Recorded tool calls (the OpenAI shape ``ToolCall.to_dict`` writes); a ``ValueError`` if malformed."""
    if data is None:
        return []
    if not isinstance(data, list):
        raise TypeError(f"'tool_calls' must be a list of tool calls, got {short_repr(data)}")
    try:
        return [ToolCall.from_dict(call, f"tool_calls[{i}]") for i, call in enumerate(data)]
    except InvalidRequestError as exc:
        raise ValueError(exc.message) from None


def response_to_dict(reply: ChatResponse) -> dict[str, Any]:
    """A reply as a cassette holds it (everything but ``latency``; empty fields left out)."""
    out: dict[str, Any] = {"text": reply.text}
    if reply.finish_reason is not None:
        out["finish_reason"] = reply.finish_reason
    if reply.usage is not None:
        out["usage"] = _usage_to_dict(reply.usage)
    if reply.logprobs:
        out["logprobs"] = _logprobs_to_list(reply.logprobs)
    out["model"] = reply.model
    out["backend"] = reply.backend
    if reply.tool_calls:
        out["tool_calls"] = [call.to_dict() for call in reply.tool_calls]
    if reply.details:
        out["details"] = dict(reply.details)
    return out


def response_from_dict(data: Mapping[str, Any]) -> ChatResponse:
    """The reply a cassette holds; :class:`CassetteError` if it is malformed."""
    try:
        return ChatResponse(
            text=str(data["text"]),
            finish_reason=_finish_reason(data),
            usage=_usage_from_dict(data.get("usage")),
            model=str(data.get("model", "")),
            backend=str(data.get("backend", "")),
            tool_calls=_tool_calls_from_list(data.get("tool_calls")),
            details=dict(data.get("details") or {}),
            logprobs=_logprobs_from_list(data.get("logprobs")),
        )
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        raise CassetteError(
            f"'response' is malformed: {_what_is_wrong(exc)} in {short_repr(dict(data))}"
        ) from exc


def deltas_to_dicts(deltas: Iterable[StreamDelta]) -> list[dict[str, Any]]:
    """Stream deltas as a cassette holds them: empty fields left out (but always the text), and
    ``details`` written only where they change from the previous delta's (``{}`` where they empty).
    """
    out: list[dict[str, Any]] = []
    previous: dict[str, Any] = {}
    for delta in deltas:
        item: dict[str, Any] = {"text": delta.text}
        if delta.finish_reason is not None:
            item["finish_reason"] = delta.finish_reason
        if delta.usage is not None:
            item["usage"] = _usage_to_dict(delta.usage)
        if delta.logprobs:
            item["logprobs"] = _logprobs_to_list(delta.logprobs)
        details = dict(delta.details)
        if details != previous:
            item["details"] = details
        previous = details
        out.append(item)
    return out


def deltas_from_dicts(items: Iterable[Mapping[str, Any]]) -> list[StreamDelta]:
    """The stream deltas a cassette holds (a delta without ``details`` has the previous delta's);
    :class:`CassetteError` if they are malformed.
    """
    out: list[StreamDelta] = []
    details: dict[str, Any] = {}
    for position, item in enumerate(items):
        try:
            details = dict(item.get("details", details) or {})
            out.append(
                StreamDelta(
                    text=str(item.get("text", "")),
                    finish_reason=_finish_reason(item),
                    usage=_usage_from_dict(item.get("usage")),
                    details=details,
                    logprobs=_logprobs_from_list(item.get("logprobs")),
                )
            )
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise CassetteError(
                f"'stream' delta {position} is malformed: {_what_is_wrong(exc)} in {short_repr(dict(item))}"
            ) from exc
    return out


_RECORDED_ERRORS: dict[str, type[InvalidRequestError]] = {
    cls.__name__: cls
    for cls in (InvalidRequestError, ContextWindowExceededError, ChatTemplateError, UnsupportedFeatureError)
}
_ERROR_NUMBERS = ("prompt_tokens", "max_new_tokens", "context_window")


def error_to_dict(error: InvalidRequestError) -> dict[str, Any]:
    """A refused request as a cassette holds it: class, message, status and the provider's reason."""
    out: dict[str, Any] = {"type": type(error).__name__, "message": error.message}
    if error.status_code is not None:
        out["status_code"] = error.status_code
    if error.provider_reason is not None:
        out["provider_reason"] = error.provider_reason
    if isinstance(error, ContextWindowExceededError):
        out.update({k: getattr(error, k) for k in _ERROR_NUMBERS if getattr(error, k) is not None})
    return out


def error_from_dict(data: Mapping[str, Any]) -> InvalidRequestError:
    """The error a cassette holds, ready to raise; :class:`CassetteError` if it is malformed."""
    cls = _RECORDED_ERRORS.get(str(data.get("type")))
    if cls is None or not isinstance(data.get("message"), str):
        raise CassetteError(
            f"'error' is malformed: 'type' must be one of {sorted(_RECORDED_ERRORS)} and 'message' a "
            f"string, in {short_repr(dict(data))}"
        )
    common = {"status_code": data.get("status_code"), "provider_reason": data.get("provider_reason")}
    if cls is ContextWindowExceededError:
        return ContextWindowExceededError(
            data["message"], **common, **{k: data.get(k) for k in _ERROR_NUMBERS}
        )
    return cls(data["message"], **common)


_READERS: dict[str, Callable[[Any], object]] = {
    "response": response_from_dict,
    "stream": deltas_from_dicts,
    "error": error_from_dict,
}
"""How each kind of outcome is read: checked when an entry is loaded."""
