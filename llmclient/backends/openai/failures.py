"""What a server's failures look like on the chat-completions wire, as typed errors.

Pure functions over status codes, headers and bodies, like ``wire``: error replies (OpenAI's
``{"error": ...}``, FastAPI's ``{"detail": ...}``, plain text), error objects inside a 200 or a
stream, replies that are not the API at all (a redirect, an HTML page), and the wait a server
asks for after a 429.
"""

from __future__ import annotations

import email.utils
import json
import re
import time
from collections.abc import Mapping
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
    UnsupportedFeatureError,
)


def malformed(problem: str, raw: bytes, status: int, headers: Mapping[str, str]) -> MalformedResponseError:
    """A reply that is not the API's JSON: says what came back, and that base_url may be wrong."""
    text = raw[:500].decode(errors="replace")
    return MalformedResponseError(
        f"{problem} (HTTP {status}): {text!r}; is base_url an OpenAI-compatible /v1 endpoint?",
        status_code=status,
        body=text,
        headers=headers,
    )


def not_the_api(status: int, headers: Mapping[str, str], raw: bytes, wanted: str) -> ProviderError:
    """A redirect, or a page that is not ``wanted``: what came back (status, content type, where it
    points, the first bytes). Final: asking again gets the same page.
    """
    lowered = {k.lower(): v for k, v in headers.items()}
    kind = lowered.get("content-type") or "no content type"
    where = f", Location: {lowered['location']}" if "location" in lowered else ""
    what = "a redirect" if 300 <= status < 400 else f"{kind} instead of {wanted}"
    text = raw[:200].decode(errors="replace")
    return ProviderError(
        f"the server answered with {what} (HTTP {status}, {kind}{where}): {text!r}. Check base_url: "
        f"it should be the API root ending in /v1, with the scheme (http/https) the server uses",
        status_code=status,
        body=text,
        headers=headers,
    )


_CONTEXT_PATTERNS = re.compile(
    r"context[_ ]length|context window|maximum context|too many tokens|prompt is too long|"
    r"exceeds the (?:model's )?(?:maximum|max)|input is too long|max input tokens",
    re.IGNORECASE,
)
_FORMAT_SUBJECT = re.compile(
    r"response[_ ]?format|json[_ ]?schema|json[_ ]?object|structured[_ ]output|guided[_ ]json",
    re.IGNORECASE,
)
_FORMAT_REFUSED = re.compile(
    r"not supported|unsupported|not available|unavailable|does not support|doesn't support|not enabled",
    re.IGNORECASE,
)
_NO_ENDPOINT = re.compile(r"no endpoints found that can handle the requested parameters", re.IGNORECASE)
STRUCTURED_FIX = (
    'set structured_fallback = "prompt" to send the schema in the system message instead (the reply is '
    "still validated), or use a model that supports structured output"
)
"""What an :class:`UnsupportedFeatureError` for a refused ``response_format`` tells the user to do."""
_IMAGES_REFUSED = re.compile(
    r"image_url is only supported by certain models|no endpoints found that support image|"
    r"(?:does not|doesn't|do not|cannot) (?:support|accept|take) (?:image|vision|multimodal)|"
    r"(?:image|vision|multimodal) (?:input|content)s? (?:is |are )?not supported|is not a multimodal model",
    re.IGNORECASE,
)
"""The wordings of servers whose model takes no images: OpenAI's ``Invalid content type. image_url is only
supported by certain models``, OpenRouter's 404 ``No endpoints found that support image input``, vLLM's
``<model> is not a multimodal model``, and the plain ``does not support image input``."""
IMAGES_FIX = (
    "use a vision model (one that takes image input), or send the text without llmclient.image() parts"
)
"""What an :class:`UnsupportedFeatureError` for refused image parts tells the user to do."""
_IMAGES_REFUSAL = "the model does not take images"


def refuses_images(error: BaseException) -> bool:
    """Whether ``error`` is a server's refusal of image parts (not of ``response_format`` or tools)."""
    return isinstance(error, UnsupportedFeatureError) and error.message.startswith(_IMAGES_REFUSAL)


_NUMBERS = re.compile(r"(\d[\d,]*) tokens")
_LITELLM_NUMBERS = re.compile(r"Max Input Tokens\s*=\s*(\d+)\s*,\s*Got\s*=\s*(\d+)", re.IGNORECASE)


def _detail_message(detail: Any) -> str:
    """FastAPI's ``detail``: a string, or a list of validation errors each with a ``msg``."""
    if isinstance(detail, list):
        parts = []
        for item in detail:
            if isinstance(item, Mapping) and "msg" in item:
                where = ".".join(str(p) for p in item.get("loc") or ())
                parts.append(f"{where}: {item['msg']}" if where else str(item["msg"]))
            else:
                parts.append(str(item))
        return "; ".join(parts)
    return str(detail)


def error_from_status(status: int, headers: Mapping[str, str], raw: bytes) -> LLMClientError:
    """The typed error for a non-2xx reply."""
    try:
        data: Any = json.loads(raw.decode(errors="replace")) if raw else None
    except ValueError:
        data = None
    if isinstance(data, Mapping) and isinstance(data.get("error"), (Mapping, str)):
        return error_from_payload(data, status=status, headers=headers)
    if isinstance(data, Mapping) and data.get("object") == "error" and isinstance(data.get("message"), str):
        reason = str(data.get("type") or "") or None  # vLLM's flat error: {"object": "error", "message": ...}
        return _error_for(status, data["message"], reason, headers=headers, body=dict(data))
    if isinstance(data, Mapping) and data.get("detail") is not None:
        message = _detail_message(data["detail"])
        return _error_for(status, message or f"HTTP {status}", None, headers=headers, body=dict(data))
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


def error_from_event(text: str) -> BackendUnavailableError:
    """A stream event that is an error but not JSON (``event: error``, ``data: Internal error``)."""
    return BackendUnavailableError(f"error in the middle of the stream: {text[:500]}", body=text)


def _context_numbers(message: str) -> tuple[int | None, int | None]:
    """The window and the prompt's size, where the message gives them."""
    litellm = _LITELLM_NUMBERS.search(message)
    if litellm:
        return int(litellm.group(1)), int(litellm.group(2))
    numbers = [int(n.replace(",", "")) for n in _NUMBERS.findall(message)]
    return (numbers[0] if numbers else None), (numbers[1] if len(numbers) > 1 else None)


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
        window, prompt = _context_numbers(message)
        return ContextWindowExceededError(
            f"the prompt does not fit the model's context window: {message}. Shorten the messages or "
            f"lower max_new_tokens",
            context_window=window,
            prompt_tokens=prompt,
            **common,
        )
    if status in (400, 404, 415, 422) and _IMAGES_REFUSED.search(message):
        return UnsupportedFeatureError(
            f"{_IMAGES_REFUSAL} (HTTP {status}): {message}. To go on, {IMAGES_FIX}", **common
        )
    if status in (400, 404, 422) and (
        _NO_ENDPOINT.search(message) or (_FORMAT_SUBJECT.search(message) and _FORMAT_REFUSED.search(message))
    ):
        routed = (
            " (on OpenRouter, require_parameters = false routes it anyway)"
            if _NO_ENDPOINT.search(message)
            else ""
        )
        return UnsupportedFeatureError(
            f"the model does not support this response_format (HTTP {status}): {message}. To go on, "
            f"{STRUCTURED_FIX}{routed}",
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


def refused(status: int, headers: Mapping[str, str], *, stream: bool) -> bool:
    """Whether a reply's head already says it is no answer: an error status, a redirect (never
    followed: it would turn the POST into a GET), or an HTML page where a stream was asked for.
    """
    if status >= 300:
        return True
    return stream and "html" in next((v for k, v in headers.items() if k.lower() == "content-type"), "")


def refusal(status: int, headers: Mapping[str, str], raw: bytes, *, stream: bool) -> LLMClientError:
    """The typed error for a reply :func:`refused` (its body read into ``raw``)."""
    if status >= 400:
        return error_from_status(status, headers, raw)
    return not_the_api(status, headers, raw, "an event stream" if stream else "JSON")
