"""OpenTelemetry for the tracing tests: one SDK tracer and meter provider for the whole session
(OpenTelemetry allows one global provider per process), with in-memory exporters cleared per test.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest


@dataclass
class Telemetry:
    """What the tests read: finished spans, and the metrics recorded so far."""

    spans_exporter: Any
    metrics_reader: Any

    def spans(self) -> list[Any]:
        return list(self.spans_exporter.get_finished_spans())

    def metrics(self) -> dict[str, list[Any]]:
        """Data points by metric name."""
        data = self.metrics_reader.get_metrics_data()
        out: dict[str, list[Any]] = {}
        for resource in data.resource_metrics if data else ():
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    out.setdefault(metric.name, []).extend(metric.data.data_points)
        return out


_SESSION: dict[str, Telemetry] = {}


@pytest.fixture
def telemetry() -> Iterator[Telemetry]:
    """Spans and metrics recorded during the test (the global providers are set once)."""
    if "t" not in _SESSION:
        from opentelemetry import metrics, trace
        from opentelemetry.sdk.metrics import Histogram, MeterProvider
        from opentelemetry.sdk.metrics.export import AggregationTemporality, InMemoryMetricReader
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        trace.set_tracer_provider(provider)
        reader = InMemoryMetricReader(preferred_temporality={Histogram: AggregationTemporality.DELTA})
        metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
        _SESSION["t"] = Telemetry(exporter, reader)
    telemetry = _SESSION["t"]
    telemetry.spans_exporter.clear()
    telemetry.metrics_reader.get_metrics_data()  # deltas: what earlier tests recorded is collected away
    yield telemetry
    telemetry.spans_exporter.clear()
