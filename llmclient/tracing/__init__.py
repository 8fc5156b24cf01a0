"""OpenTelemetry spans and metrics for every call, following the GenAI semantic conventions.

:class:`~llmclient.backend.ChatBackend` opens one :class:`Call` per ``chat``, ``achat``, ``stream``,
``astream`` and ``chat_many`` item, so every backend (third-party ones too) is traced without doing
anything. A span is named ``{gen_ai.operation.name} {gen_ai.request.model}``, is a CLIENT span for a
remote backend and INTERNAL for a model in this process (``ChatBackend.in_process``), and carries
the request parameters, the reply's id, model, finish reason and tokens, ``server.address`` and
``server.port`` (from ``backend.endpoint``), ``error.type`` on failure and, for streams,
``gen_ai.response.time_to_first_chunk``. Messages are recorded (redacted) only when
``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true``. The metrics are the
``gen_ai.client.operation.duration`` and ``gen_ai.client.token.usage`` histograms.

Only ``opentelemetry-api`` is used (``pip install "llmclient[otel]"``), and never imported here: a
process that has not imported ``opentelemetry.trace`` cannot have a tracer provider, so the check
is a dictionary lookup, and with no provider configured a call pays that and one ``isinstance``.
A future ``score()`` opens its span with ``call(backend, request, operation="score")``.
"""

from __future__ import annotations

from llmclient.tracing.attributes import CAPTURE_ENV
from llmclient.tracing.calls import OFF, Batch, Call, RunSpan, call
from llmclient.tracing.providers import SCOPE, enabled
from llmclient.tracing.streams import awatched, watched

__all__ = [
    "CAPTURE_ENV",
    "OFF",
    "SCOPE",
    "Batch",
    "Call",
    "RunSpan",
    "awatched",
    "call",
    "enabled",
    "watched",
]
