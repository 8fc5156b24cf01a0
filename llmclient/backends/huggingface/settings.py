"""The settings of the ``huggingface`` backend type, as written in ``llmclient.toml``.

Kept apart from the backend so that reading and checking a configuration imports nothing heavy.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal

from llmclient._settings import Settings
from llmclient.cost import Prices
from llmclient.tools.profiles import PROFILES

DEFAULT_MAX_NEW_TOKENS = 256
"""Tokens generated when neither the call nor the backend's ``defaults`` set ``max_new_tokens``."""
DTYPE_NAMES = ("auto", "float32", "fp32", "bfloat16", "bf16", "float16", "fp16")
"""The names ``dtype`` accepts (any case)."""


@dataclass(frozen=True)
class HuggingFaceSettings(Settings):
    """How to load and run a local Hugging Face model.

    Every field has a default, so ``llmclient.load("hf:smollm2")`` needs none of them.
    """

    device: str = "auto"
    """``auto`` (cuda, then mps, then cpu), or a torch device: ``cpu``, ``cuda``, ``cuda:1``, ``mps``."""
    dtype: str = "auto"
    """``auto``: bfloat16 on GPUs that support it, float16 on other GPUs; on a CPU, bfloat16 where it
    has bfloat16 instructions (AMX-BF16, AVX512-BF16: a batch runs 2-3x faster), float32 elsewhere.
    Or ``float32``/``fp32`` (full precision, the same greedy replies as a float32 reference),
    ``bfloat16``/``bf16``, ``float16``/``fp16``."""
    device_map: str | dict[str, int | str] | None = None
    """Passed to ``from_pretrained`` to spread a model over several GPUs (``"auto"``); ``device`` is
    then not used. Needs accelerate."""
    revision: str | None = None
    """A branch, tag or commit of a hub model."""
    local_files_only: bool = False
    """Never reach the hub: use only a local directory or what the hub cache already holds."""
    trust_remote_code: bool = False
    """Run the Python code a hub repository ships with its model. Off unless you trust the repository."""
    gguf_file: str | None = None
    """A GGUF file inside the model's repository or directory. It is converted once into a
    transformers checkpoint under ``cache_dir``; later loads read that."""
    cache_dir: str | None = None
    """Where converted GGUF checkpoints are kept; ``$LLMCLIENT_CACHE``, else
    ``$XDG_CACHE_HOME/llmclient``, else ``~/.cache/llmclient``."""
    chat_template: str | None = None
    """A Jinja chat template, or the path of a file holding one, replacing the tokenizer's own. Needed
    for models that ship none."""
    system_role: Literal["error", "merge"] = "error"
    """What to do with system messages: ``error`` passes them to the template (which may refuse them,
    raising ChatTemplateError); ``merge`` puts their text in front of the first user message."""
    context_window: int | None = None
    """The model's window in tokens, overriding what its config says (``max_position_embeddings``)."""
    context_policy: Literal["error", "truncate"] = "error"
    """When prompt plus ``max_new_tokens`` exceed the window: ``error`` raises
    ContextWindowExceededError; ``truncate`` drops the oldest non-system turns, then cuts the last
    message from the left."""
    batch_token_budget: int = 16384
    """Most tokens (rows x (longest prompt + max_new_tokens)) one batched ``generate`` may hold; this
    bounds the KV cache a batch needs."""
    max_batch_size: int = 32
    """Most conversations in one batched ``generate``."""
    tool_profile: str | None = None
    """How tools are shown to a model whose chat template does not read ``tools``, and how its calls
    are written and read: ``smollm2`` (the default for the built-in alias), ``hermes`` (also
    ``qwen2.5``) or ``llama3``. Unset, a template that reads ``tools`` renders them, and another model
    given tools raises UnsupportedFeatureError."""
    load: Literal["lazy", "eager"] = "lazy"
    """``lazy`` loads the model on the first call; ``eager`` when the backend is built."""
    prices: Prices = field(default_factory=Prices)
    """Per-token prices, ``{ input_per_million = 0.02, output_per_million = 0.02 }`` (what your GPU
    hours cost you, say): each reply's ``usage.cost`` is priced by them; unset, a local reply costs
    ``None``."""

    def problems(self) -> Iterator[tuple[str, str, str]]:
        """A dtype that names no dtype, and sizes below 1."""
        if self.dtype.lower() not in DTYPE_NAMES:
            yield "dtype", "unknown dtype", f"Use one of {', '.join(DTYPE_NAMES)}"
        if self.tool_profile is not None and self.tool_profile not in PROFILES:
            yield "tool_profile", "unknown tool profile", f"Use one of {', '.join(sorted(PROFILES))}"
        for key in ("batch_token_budget", "max_batch_size", "context_window"):
            value = getattr(self, key)
            if value is not None and value < 1:
                yield key, "must be at least 1", f"Set {key} to a positive number"
