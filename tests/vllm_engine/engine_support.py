"""What the vllm-engine tests share: whether vLLM is here, and the engine settings that fit this machine."""

from __future__ import annotations

import importlib.util
from typing import Any

import pytest

VLLM_WARNINGS = [
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::FutureWarning"),
    pytest.mark.filterwarnings("ignore::UserWarning"),
    pytest.mark.filterwarnings("ignore::ResourceWarning"),
]
"""The marks of a module that runs a real engine: vLLM and the torch it runs on warn about their own
internals (torch.jit, reduce_op) on start-up, and the project's filterwarnings = error would turn
those into failures of vLLM's, not ours."""

CPU_ENGINE: dict[str, Any] = {
    "dtype": "float32",
    "max_model_len": 2048,
    # vLLM's CPU build reserves gpu_memory_utilization (0.92) of the NUMA node's memory unless the KV
    # cache is sized outright; 1 GiB holds far more than these tests use. Eager mode skips compiling.
    "engine_args": {"kv_cache_memory_bytes": 1 << 30, "enforce_eager": True},
}
"""Settings of the engine the tests run: float32, as ``hf:smollm2`` runs on a CPU."""


def vllm_installed() -> bool:
    """Whether vLLM itself is importable (under pytest this folder, ``vllm``, is on sys.path too, and
    would be found as a namespace package: it has no ``origin``).
    """
    spec = importlib.util.find_spec("vllm")
    return spec is not None and spec.origin is not None
