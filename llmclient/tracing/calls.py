"""A traced call (:class:`Call`), the calls of a batch (:class:`Batch`), and a pipeline run's span."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any

from llmclient.errors import redact
from llmclient.tracing import providers
from llmclient.tracing.attributes import (
    PARAMS,
    capturing,
    error_type,
    messages,
    output,
    response_attributes,
    server,
)
from llmclient.types import ChatRequest, ChatResponse

if TYPE_CHECKING:
    from llmclient.backend import ChatBackend


class Call:
    """One traced operation: a span (where tracing is on) and its metrics (where metrics are on).

    Used as a context manager by the public methods of :class:`~llmclient.backend.ChatBackend`:
    entering makes the span current (so whatever the call does nests under it), :meth:`done`
    records the reply, and an exception leaving the block is recorded as ``error.type``. Streams
    and batch items are not made current (``current=False``) and are ended with :meth:`end`.
    """

    active = True

    def __init__(
        self,
        backend: ChatBackend,
        request: ChatRequest,
        operation: str,
        tracer: Any,
        instruments: tuple[Any, Any] | None,
        current: bool,
    ) -> None:
        self._backend = backend
        self._request = request
        self._common: dict[str, Any] = {
            "gen_ai.operation.name": operation,
            "gen_ai.provider.name": backend.provider_name,
            "gen_ai.request.model": backend.model,
            **dict(server(backend.endpoint)),
        }
        self._started = time.perf_counter()
        self._instruments = instruments
        self._token: Any = None
        self._ended = False
        self.first_chunk: float | None = None
        self._span = None if tracer is None else self._open(tracer, operation, current)

    def _open(self, tracer: Any, operation: str, current: bool) -> Any:
        from opentelemetry import context, trace

        params = self._request.params
        attributes = dict(self._common)
        for attribute, name in PARAMS:
            value = getattr(params, name)
            if value is not None:
                attributes[attribute] = value
        if params.stop:
            attributes["gen_ai.request.stop_sequences"] = list(params.stop)
        kind = trace.SpanKind.INTERNAL if self._backend.in_process else trace.SpanKind.CLIENT
        span = tracer.start_span(f"{operation} {self._backend.model}", kind=kind, attributes=attributes)
        if capturing():
            span.set_attribute("gen_ai.input.messages", self._redacted(messages(self._request)))
        if current:
            self._token = context.attach(trace.set_span_in_context(span))
        return span

    def _redacted(self, value: Any) -> str:
        return redact(json.dumps(value, ensure_ascii=False), self._backend.credentials)

    def __enter__(self) -> Call:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.end(exc)

    def done(self, reply: ChatResponse) -> ChatResponse:
        """Record ``reply`` and end the call; returns ``reply``."""
        self.end(None, reply)
        return reply

    def end(self, error: BaseException | None, reply: ChatResponse | None = None) -> None:
        """End the call once, with its reply or the error that ended it (a reply that failed its
        ``response_format`` is recorded too: it was paid for).
        """
        if self._ended:
            return
        self._ended = True
        reply = reply if reply is not None else getattr(error, "reply", None)
        attributes = dict(self._common)
        if isinstance(reply, ChatResponse):
            attributes.update(response_attributes(reply))
        if error is not None:
            attributes["error.type"] = error_type(error)
        if self._instruments is not None:
            self._record(attributes, reply)
        span = self._span
        if span is None:
            return
        if self.first_chunk is not None:
            attributes["gen_ai.response.time_to_first_chunk"] = self.first_chunk
        if isinstance(reply, ChatResponse) and capturing():
            attributes["gen_ai.output.messages"] = self._redacted(output(reply))
        span.set_attributes(attributes)
        if error is not None:
            from opentelemetry.trace import Status, StatusCode

            text = redact(str(error), self._backend.credentials)[:500]
            span.set_status(Status(StatusCode.ERROR, text or attributes["error.type"]))
        if self._token is not None:
            from opentelemetry import context

            context.detach(self._token)
        span.end()

    def _record(self, attributes: dict[str, Any], reply: Any) -> None:
        duration, tokens = self._instruments  # type: ignore[misc]
        keep = ("gen_ai.response.model", "error.type")
        point = {**self._common, **{k: attributes[k] for k in keep if k in attributes}}
        duration.record(time.perf_counter() - self._started, point)
        usage = reply.usage if isinstance(reply, ChatResponse) else None
        if usage is not None:
            tokens.record(usage.prompt_tokens, {**point, "gen_ai.token.type": "input"})
            tokens.record(usage.completion_tokens, {**point, "gen_ai.token.type": "output"})


class _Off(Call):
    """The call when nothing is recorded: every method does nothing."""

    active = False

    def __init__(self) -> None:
        pass

    def done(self, reply: ChatResponse) -> ChatResponse:
        return reply

    def end(self, error: BaseException | None, reply: ChatResponse | None = None) -> None:
        pass


OFF: Call = _Off()
"""The call when no tracer or meter provider is configured."""


def call(
    backend: ChatBackend, request: ChatRequest, operation: str = "chat", *, current: bool = True
) -> Call:
    """Start recording one operation of ``backend`` (:data:`OFF` when nothing is configured)."""
    found, recorders = providers.tracer(), providers.instruments()
    if found is None and recorders is None:
        return OFF
    return Call(backend, request, operation, found, recorders, current)


class Batch:
    """The calls of one ``chat_many``: a span per item, all started when the batch is.

    The items run inside the backend's batch hook, which only returns them all together, so each
    item's span ends when the batch returns (its own time is the reply's ``latency``).
    """

    def __init__(self, backend: ChatBackend, requests: Sequence[ChatRequest]) -> None:
        self.calls = [call(backend, r, current=False) for r in requests] if providers.enabled() else []

    def __enter__(self) -> Batch:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for item in self.calls:
            item.end(exc)

    def done(self, results: list[Any]) -> list[Any]:
        """Record each item's reply or error; returns ``results``."""
        for item, result in zip(self.calls, results, strict=False):  # no calls when tracing is off
            if isinstance(result, ChatResponse):
                item.done(result)
            else:
                item.end(result)
        return results


class RunSpan:
    """The parent span of a pipeline run (INTERNAL, ``llmclient.run``), current while it runs, so
    each row's call is its child; a no-op when tracing is off.
    """

    def __init__(self, name: str = "llmclient.run") -> None:
        found = providers.tracer()
        self._span: Any = None
        self._token: Any = None
        if found is not None:
            from opentelemetry import context, trace

            self._span = found.start_span(name, kind=trace.SpanKind.INTERNAL)
            self._token = context.attach(trace.set_span_in_context(self._span))

    def set(self, attributes: dict[str, Any]) -> None:
        """Set attributes on the span (values that are ``None`` left out)."""
        if self._span is not None:
            self._span.set_attributes({k: v for k, v in attributes.items() if v is not None})

    def __enter__(self) -> RunSpan:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._span is None:
            return
        from opentelemetry import context
        from opentelemetry.trace import Status, StatusCode

        if exc is not None:
            self._span.set_attribute("error.type", error_type(exc))
            self._span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
        context.detach(self._token)
        self._span.end()
