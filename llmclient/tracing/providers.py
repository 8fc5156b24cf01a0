"""Which tracer and meter to use: none unless the application configured OpenTelemetry providers.

A process that has not imported ``opentelemetry.trace`` cannot have a tracer provider, so the check
is a dictionary lookup; with providers configured, the tracer and instruments are cached by
provider identity.
"""

from __future__ import annotations

import sys
from typing import Any

SCOPE = "llmclient"
"""The instrumentation scope of llmclient's spans and metrics."""

_DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)
_TOKEN_BUCKETS = tuple(float(4**i) for i in range(14))  # 1 .. 67,108,864, as the conventions advise


class _Providers:
    """The tracer and instruments of the providers in force, cached by provider identity."""

    tracer: tuple[object, Any] | None = None
    meters: tuple[object, Any, Any] | None = None


def tracer() -> Any:
    """The tracer to use, or ``None`` when no tracer provider is configured (the usual case)."""
    trace = sys.modules.get("opentelemetry.trace")
    if trace is None:
        return None
    provider = trace.get_tracer_provider()
    cached = _Providers.tracer
    if cached is not None and cached[0] is provider:
        return cached[1]
    if isinstance(provider, (trace.ProxyTracerProvider, trace.NoOpTracerProvider)):
        return None
    from llmclient import __version__

    _Providers.tracer = (provider, provider.get_tracer(SCOPE, __version__))
    return _Providers.tracer[1]


def instruments() -> tuple[Any, Any] | None:
    """The duration and token histograms, or ``None`` when no meter provider is configured."""
    metrics = sys.modules.get("opentelemetry.metrics")
    if metrics is None:
        return None
    provider = metrics.get_meter_provider()
    cached = _Providers.meters
    if cached is not None and cached[0] is provider:
        return cached[1], cached[2]
    proxy = getattr(getattr(metrics, "_internal", None), "_ProxyMeterProvider", metrics.NoOpMeterProvider)
    if isinstance(provider, (metrics.NoOpMeterProvider, proxy)):  # none configured (yet)
        return None
    from llmclient import __version__

    meter = provider.get_meter(SCOPE, __version__)
    duration = meter.create_histogram(
        "gen_ai.client.operation.duration",
        unit="s",
        description="GenAI operation duration",
        explicit_bucket_boundaries_advisory=list(_DURATION_BUCKETS),
    )
    tokens = meter.create_histogram(
        "gen_ai.client.token.usage",
        unit="{token}",
        description="Number of input and output tokens used",
        explicit_bucket_boundaries_advisory=list(_TOKEN_BUCKETS),
    )
    _Providers.meters = (provider, duration, tokens)
    return duration, tokens


def enabled() -> bool:
    """Whether a tracer or meter provider is configured, so calls are recorded."""
    return tracer() is not None or instruments() is not None
