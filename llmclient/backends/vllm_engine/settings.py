"""The settings of the ``vllm-engine`` backend type, as written in ``llmclient.toml``.

Kept apart from the engine so that reading and checking a configuration imports nothing of vLLM.
The common engine arguments have settings of their own (checked here); any other ``vllm.LLM``
keyword goes in ``engine_args``, passed through untouched.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from llmclient._settings import Settings
from llmclient.cost import Prices
from llmclient.tools.profiles import PROFILES

DEFAULT_MAX_NEW_TOKENS = 256
"""Tokens generated when neither the call nor the backend's ``defaults`` set ``max_new_tokens`` (the
local backend's default too; vLLM's own is 16)."""
DTYPE_NAMES = ("auto", "float32", "float", "bfloat16", "float16", "half")
"""The names ``dtype`` accepts: vLLM's."""
OWN_KEYS = (
    "dtype",
    "max_model_len",
    "gpu_memory_utilization",
    "tensor_parallel_size",
    "revision",
    "trust_remote_code",
    "seed",
)
"""Engine arguments that are settings of their own, refused in ``engine_args`` (one place per value)."""


@dataclass(frozen=True)
class VLLMEngineSettings(Settings):
    """How to build and run a ``vllm.LLM`` engine in this process.

    Every field has a default, so ``llmclient.load("vllm-engine:smollm2")`` needs none of them (on a
    CPU-only machine, ``engine_args = { kv_cache_memory_bytes = 1073741824 }`` is usually needed: see
    docs/vllm.md).
    """

    engine_args: dict[str, Any] = field(default_factory=dict)
    """Any other ``vllm.LLM`` keyword argument, passed through: ``{ enforce_eager = true,
    kv_cache_memory_bytes = 1073741824, max_num_seqs = 64 }``."""
    dtype: str = "auto"
    """Weights' dtype: ``auto`` (the model's, float16 for float32 models on GPUs), ``float32``,
    ``bfloat16``, ``float16`` (also ``float``, ``half``)."""
    max_model_len: int | None = None
    """The context window the engine serves, in tokens; the model's own when unset. Lower it to fit
    the KV cache into memory."""
    gpu_memory_utilization: float | None = None
    """Fraction of the GPU's memory (on the CPU build: of the machine's memory) vLLM may take; vLLM's
    0.92 when unset."""
    tensor_parallel_size: int = 1
    """GPUs one model is split over."""
    revision: str | None = None
    """A branch, tag or commit of a hub model."""
    trust_remote_code: bool = False
    """Run the Python code a hub repository ships with its model. Off unless you trust the repository."""
    seed: int | None = None
    """The engine's seed (sampling without a per-call ``seed`` is reproducible from it); vLLM's 0 when
    unset."""
    chat_template: str | None = None
    """A Jinja chat template, or the path of a file holding one, replacing the tokenizer's own."""
    tool_profile: str | None = None
    """How tools are shown to a model whose chat template does not read ``tools``, and how its calls
    are read: ``smollm2`` (the built-in alias's default), ``hermes`` (also ``qwen2.5``) or ``llama3``,
    as on the local backend. Unset, a template that reads ``tools`` renders them, and another model
    given tools raises UnsupportedFeatureError."""
    cache_dir: str | None = None
    """Where the built-in ``smollm2`` model's converted checkpoint is kept (the local backend's cache:
    ``$LLMCLIENT_CACHE``, else ``$XDG_CACHE_HOME/llmclient``, else ``~/.cache/llmclient``)."""
    load: Literal["lazy", "eager"] = "lazy"
    """``lazy`` starts the engine on the first call; ``eager`` when the backend is built."""
    prices: Prices = field(default_factory=Prices)
    """Per-token prices, ``{ input_per_million = 0.02, output_per_million = 0.02 }``: each reply's
    ``usage.cost``; unset, a local reply costs ``None``."""

    def problems(self) -> Iterator[tuple[str, str, str]]:
        """A dtype that names no dtype, sizes below 1, a memory fraction outside (0, 1], an unknown
        tool profile, and engine arguments that are settings of their own.
        """
        if self.dtype.lower() not in DTYPE_NAMES:
            yield "dtype", "unknown dtype", f"Use one of {', '.join(DTYPE_NAMES)}"
        for key in ("max_model_len", "tensor_parallel_size"):
            value = getattr(self, key)
            if value is not None and value < 1:
                yield key, "must be at least 1", f"Set {key} to a positive number"
        fraction = self.gpu_memory_utilization
        if fraction is not None and not 0 < fraction <= 1:
            yield "gpu_memory_utilization", "must be in (0, 1]", "Set a fraction such as 0.8"
        if self.tool_profile is not None and self.tool_profile not in PROFILES:
            yield "tool_profile", "unknown tool profile", f"Use one of {', '.join(sorted(PROFILES))}"
        if "model" in self.engine_args:
            yield "engine_args", "sets model", "Give the model as the backend's model, not an engine argument"
        for key in OWN_KEYS:
            if key in self.engine_args:
                yield "engine_args", f"sets {key}, which is a setting of its own", f"Set {key} = ... instead"

    def engine_kwargs(self, model: str) -> dict[str, Any]:
        """The keyword arguments of ``vllm.LLM`` for ``model`` (a hub id or a local directory)."""
        kwargs: dict[str, Any] = {
            "model": model,
            "dtype": self.dtype.lower(),
            "tensor_parallel_size": self.tensor_parallel_size,
            "trust_remote_code": self.trust_remote_code,
        }
        optional = {
            "max_model_len": self.max_model_len,
            "gpu_memory_utilization": self.gpu_memory_utilization,
            "revision": self.revision,
            "seed": self.seed,
        }
        kwargs.update({key: value for key, value in optional.items() if value is not None})
        kwargs.update(self.engine_args)
        structured = kwargs.get("structured_outputs_config")
        if isinstance(structured, dict) and structured.get("backend") == "guidance":
            # vLLM's guidance backend reads this per engine, not per request: objects stay closed, as
            # every other backend keeps them, unless the configuration says otherwise.
            kwargs["structured_outputs_config"] = {"disable_additional_properties": True, **structured}
        return kwargs
