"""The GenAI semantic-convention attributes of a call: request, server, reply, error, content."""

from __future__ import annotations

import functools
import os
from typing import Any
from urllib.parse import urlsplit

from llmclient.types import ChatRequest, ChatResponse

CAPTURE_ENV = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
"""Set to ``true`` to record the messages sent and received on spans (secrets redacted)."""

PARAMS = (  # (attribute, GenerationParams field)
    ("gen_ai.request.temperature", "temperature"),
    ("gen_ai.request.top_p", "top_p"),
    ("gen_ai.request.top_k", "top_k"),
    ("gen_ai.request.max_tokens", "max_new_tokens"),
    ("gen_ai.request.seed", "seed"),
)


@functools.lru_cache(maxsize=64)
def server(endpoint: str | None) -> tuple[tuple[str, Any], ...]:
    """``server.address`` and ``server.port`` of an endpoint URL (no credentials are in it)."""
    if not endpoint:
        return ()
    parts = urlsplit(endpoint)
    if not parts.hostname:
        return ()
    port = parts.port or {"https": 443, "http": 80}.get(parts.scheme)
    return (("server.address", parts.hostname), *((("server.port", port),) if port else ()))


def error_type(error: BaseException) -> str:
    """``error.type``: llmclient's error class by name, any other by its qualified name."""
    from llmclient.errors import LLMClientError

    kind = type(error)
    return kind.__name__ if isinstance(error, LLMClientError) else f"{kind.__module__}.{kind.__qualname__}"


def capturing() -> bool:
    """Whether message content is recorded (:data:`CAPTURE_ENV` is ``true``), read per call."""
    return os.environ.get(CAPTURE_ENV, "").strip().lower() == "true"


def _parts(text: str) -> list[dict[str, str]]:
    return [{"type": "text", "content": text}]


def messages(request: ChatRequest) -> list[dict[str, Any]]:
    """The request's messages in the conventions' shape (role and text parts)."""
    return [{"role": m.role, "parts": _parts(m.text)} for m in request.messages]


def output(reply: ChatResponse) -> list[dict[str, Any]]:
    """The reply as ``gen_ai.output.messages`` holds it."""
    message: dict[str, Any] = {"role": "assistant", "parts": _parts(reply.text)}
    if reply.finish_reason is not None:
        message["finish_reason"] = reply.finish_reason
    return [message]


def response_attributes(reply: ChatResponse) -> dict[str, Any]:
    """What the reply says: id, model, finish reason, tokens, and ``llmclient.usage.cost`` where known."""
    out: dict[str, Any] = {}
    if reply.details.get("id") is not None:
        out["gen_ai.response.id"] = str(reply.details["id"])
    if reply.model:
        out["gen_ai.response.model"] = reply.model
    if reply.finish_reason is not None:
        out["gen_ai.response.finish_reasons"] = [reply.finish_reason]
    usage = reply.usage
    if usage is not None:
        out["gen_ai.usage.input_tokens"] = usage.prompt_tokens
        out["gen_ai.usage.output_tokens"] = usage.completion_tokens
        if usage.cost is not None:
            out["llmclient.usage.cost"] = usage.cost
            out["llmclient.usage.cost_source"] = usage.cost_source or ""
    return out
