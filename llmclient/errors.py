"""The exception hierarchy: every failure a backend can report, typed, with the fix in the message.

Errors from HTTP libraries, transformers or torch are mapped once, at the backend's boundary, into
these classes and raised ``from`` the original, so callers catch one family whatever the backend.
The whole tree (``*`` marks what the retry policy retries)::

    LLMClientError                        base of everything llmclient raises
    +-- ConfigError                       bad or missing configuration, unknown type, missing API key
    +-- ModelLoadError                    a model or tokenizer cannot be loaded
    +-- InvalidRequestError               bad messages or parameters; the server's 400, 404, 422
    |   +-- ContextWindowExceededError    prompt plus max_new_tokens over the model's window
    |   +-- ChatTemplateError             no chat template, or it rejects the conversation
    |   +-- UnsupportedFeatureError       the model or backend cannot do what was asked
    |   +-- pipeline.TemplateError        a row cannot be rendered (llmclient.pipeline)
    |   +-- pipeline.MissingIdFieldError  a row lacks its id field (llmclient.pipeline)
    |   +-- pipeline.OutputError          the results file cannot be written (llmclient.pipeline)
    +-- AuthenticationError               401, 403
    +-- RateLimitError *                  429, with retry_after
    +-- BackendUnavailableError *         5xx, connection failures
    |   +-- TimeoutError *                no reply within the timeout
    |   +-- BackendClosedError            the backend was closed before or during the call
    +-- ProviderError                     a provider error that fits no narrower class
    |   +-- MalformedResponseError        a reply that is not chat completions
    +-- StructuredOutputError             a reply does not parse or validate as response_format asked
    |   +-- tools.ToolCallError           a tool call names no offered tool, or its arguments do not fit
    +-- CassetteError                     replay found no recorded reply, or a bad cassette
    +-- pipeline.ResultsWriteError        a write failed mid-run (llmclient.pipeline)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class LLMClientError(Exception):
    """Base of every error llmclient raises.

    Attributes:
        status_code: the HTTP status, where the error came from a server.
        body: the parsed (or raw) response body, where there was one.
        headers: the response headers, where there were any.
        provider_reason: the provider's own error code or type (``context_length_exceeded``, ...).
    """

    retryable: bool = False
    """Whether the retry policy may try the request again."""

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
        provider_reason: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.body = body
        self.headers: Mapping[str, str] = dict(headers or {})
        self.provider_reason = provider_reason

    def __repr__(self) -> str:
        status = f", status_code={self.status_code}" if self.status_code is not None else ""
        return f"{type(self).__name__}({self.message!r}{status})"


class ConfigError(LLMClientError):
    """Bad or missing configuration: unknown backend type, bad value, missing API key."""


class ModelLoadError(LLMClientError):
    """A model or tokenizer cannot be loaded, or is not a text-generation model."""


class InvalidRequestError(LLMClientError):
    """Bad messages or parameters, found before sending or reported by the server (400, 404, 422)."""


class ContextWindowExceededError(InvalidRequestError):
    """The prompt plus ``max_new_tokens`` does not fit the model's context window.

    Attributes:
        prompt_tokens: tokens in the prompt, where known.
        max_new_tokens: tokens asked for, where known.
        context_window: the model's window, where known.
    """

    def __init__(
        self,
        message: str,
        *,
        prompt_tokens: int | None = None,
        max_new_tokens: int | None = None,
        context_window: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(message, **kwargs)
        self.prompt_tokens = prompt_tokens
        self.max_new_tokens = max_new_tokens
        self.context_window = context_window


class ChatTemplateError(InvalidRequestError):
    """The model has no chat template, or its template rejects the conversation."""


class UnsupportedFeatureError(InvalidRequestError):
    """The model or backend cannot do what was asked (a JSON schema a server refuses, a keyword the
    constrained-decoding engine cannot compile); the message names the part and the fix. Never
    answered instead with something that only looks right.
    """


class AuthenticationError(LLMClientError):
    """The server refused the credentials (401) or the permission (403)."""


class RateLimitError(LLMClientError):
    """The server asked us to slow down (429).

    Attributes:
        retry_after: seconds the server asked to wait, where it said.
    """

    retryable = True

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.retry_after = retry_after


class BackendUnavailableError(LLMClientError):
    """The server failed (5xx) or could not be reached; worth retrying."""

    retryable = True


class TimeoutError(BackendUnavailableError):
    """The request did not complete within the configured timeout."""


class BackendClosedError(BackendUnavailableError):
    """The backend was closed before or while the call ran: final, never retried. Build a new
    backend to go on.
    """

    retryable = False

    def __init__(self, message: str = "the backend was closed; build a new one to go on", **kwargs: Any):
        super().__init__(message, **kwargs)


class ProviderError(LLMClientError):
    """The provider reported an error that fits no narrower class, e.g. an error object inside a 200."""


class MalformedResponseError(ProviderError):
    """The server's reply cannot be read as a chat-completions response (bad JSON, missing fields)."""


class StructuredOutputError(LLMClientError):
    """A reply does not parse or validate as ``response_format`` asked.

    Attributes:
        text: the reply's raw text, kept so nothing paid for is lost.
        errors: what is wrong, one line per validation error.
        finish_reason: why generation ended; ``"length"`` means the reply was cut, and the fix is a
            larger ``max_new_tokens``.
        reply: the whole reply (a :class:`~llmclient.types.ChatResponse`: usage, latency, model),
            where the check ran on one: what it cost is not lost with it.
    """

    def __init__(
        self,
        message: str,
        *,
        text: str = "",
        errors: tuple[str, ...] = (),
        finish_reason: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(message, **kwargs)
        self.text = text
        self.errors = errors
        self.finish_reason = finish_reason
        self.reply: Any = None


class CassetteError(LLMClientError):
    """Replay found no recorded reply for a request, or a cassette file is malformed."""


def redact(text: str, secrets: tuple[str, ...]) -> str:
    """``text`` with every secret replaced by a fixed mask, so keys never reach messages or logs."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text
