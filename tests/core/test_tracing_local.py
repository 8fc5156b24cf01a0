"""The local backend in traces and costs: INTERNAL spans named for the model, usage priced by config."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest


def test_a_local_chat_is_an_internal_huggingface_span_priced_by_its_settings(
    telemetry: Any, tiny_models: dict[str, Path]
) -> None:
    from opentelemetry.trace import SpanKind

    from llmclient.backends.huggingface import HuggingFaceBackend

    prices = {"input_per_million": 2.0, "output_per_million": 4.0}
    with HuggingFaceBackend(str(tiny_models["llama"]), device="cpu", prices=prices) as backend:
        reply = backend.chat("hello", max_new_tokens=3, temperature=0)
    usage = reply.usage
    assert usage is not None and usage.cost_source == "config"
    assert usage.cost == pytest.approx((usage.prompt_tokens * 2.0 + usage.completion_tokens * 4.0) / 1e6)
    (span,) = telemetry.spans()
    assert span.kind == SpanKind.INTERNAL
    assert span.attributes["gen_ai.provider.name"] == "huggingface"
    assert span.attributes["gen_ai.usage.output_tokens"] == usage.completion_tokens
    assert "server.address" not in span.attributes


def test_an_unpriced_local_reply_costs_nothing_known(llama_backend: Any) -> None:
    usage = llama_backend.chat("hello", max_new_tokens=2, temperature=0).usage
    assert usage is not None and usage.cost is None and usage.cost_source is None
