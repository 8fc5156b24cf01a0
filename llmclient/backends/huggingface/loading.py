"""Loading a local model and its tokenizer: where from, which class, which device and dtype.

Every failure is mapped here, once, into :class:`~llmclient.errors.ModelLoadError` (or
:class:`~llmclient.errors.ConfigError` for a bad setting) with the fix in the message.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from llmclient.backends.huggingface import gguf
from llmclient.backends.huggingface.settings import HuggingFaceSettings
from llmclient.backends.huggingface.smollm2 import ModelSource, resolve_alias
from llmclient.errors import ConfigError, LLMClientError, ModelLoadError

logger = logging.getLogger("llmclient")

INSTALL_HINT = 'pip install "llmclient[hf]"'

_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}
_NATIVE_BF16_FLAGS = ("amx_bf16", "avx512_bf16")
"""CPU flags (as torch and ``/proc/cpuinfo`` name them) of hardware bfloat16 arithmetic."""
_WINDOW_ATTRIBUTES = (
    "max_position_embeddings",
    "n_positions",
    "max_sequence_length",
    "seq_length",
    "n_ctx",
    "max_seq_len",
)


@dataclass(frozen=True)
class LoadedModel:
    """A model ready to generate, with its tokenizer.

    Attributes:
        model: the transformers model, in eval mode, on its device.
        tokenizer: its tokenizer.
        is_seq2seq: whether it is an encoder-decoder model (T5, BART): the prompt goes to the encoder.
        processor: a vision-language model's processor (its ``tokenizer`` is ``tokenizer``), which
            reads the images of a conversation (:mod:`.vision`); ``None`` for a text model.
    """

    model: Any
    tokenizer: Any
    is_seq2seq: bool
    processor: Any = None


def load(name: str, settings: HuggingFaceSettings) -> LoadedModel:
    """Load ``name`` (an alias, a hub id or a local directory) as ``settings`` say."""
    started = time.perf_counter()
    source = resolve_alias(name) or ModelSource(path=name, gguf_file=settings.gguf_file)
    try:
        path, revision = _checkpoint_path(name, source, settings)
        from transformers import AutoConfig, AutoTokenizer

        options: dict[str, Any] = {
            "revision": revision,
            "local_files_only": settings.local_files_only,
            "trust_remote_code": settings.trust_remote_code,
        }
        config = AutoConfig.from_pretrained(path, **options)
        model_class, is_seq2seq = model_class_for(config, name)
        processor = _vision_processor(config, path, name, options)
        device = pick_device(settings.device)
        dtype = pick_dtype(settings.dtype, device)
        placement = {"device_map": settings.device_map} if settings.device_map is not None else {}
        model = model_class.from_pretrained(path, config=config, dtype=dtype, **placement, **options)
        if settings.device_map is None:
            model.to(device)
        model.eval()
        if processor is None:
            tokenizer = AutoTokenizer.from_pretrained(path, **options)
        else:
            tokenizer = processor.tokenizer
    except LLMClientError:
        raise
    except ImportError as exc:
        raise ModelLoadError(
            f"cannot load {name!r}: {exc}. Install the local-model extra: {INSTALL_HINT}"
        ) from exc
    except (OSError, ValueError, KeyError, RuntimeError, TypeError) as exc:
        raise ModelLoadError(f"cannot load {name!r}: {exc}. {_load_hint(source, settings)}") from exc
    logger.info(
        "loaded %s (%s) on %s as %s in %.1f s",
        name,
        type(model).__name__,
        model.device,
        str(model.dtype).removeprefix("torch."),
        time.perf_counter() - started,
    )
    return LoadedModel(model=model, tokenizer=tokenizer, is_seq2seq=is_seq2seq, processor=processor)


def model_class_for(config: Any, name: str) -> tuple[Any, bool]:
    """The auto class that can generate with ``config``'s model, and whether it is encoder-decoder.

    Decoder-only models load with ``AutoModelForCausalLM``, encoder-decoder ones with
    ``AutoModelForSeq2SeqLM``, image-text-to-text (vision-language) ones with
    ``AutoModelForImageTextToText`` (:mod:`.vision`). Encoder-only models (BERT and kin) are
    refused: several of them have a causal-LM head class too, but one that only works as a decoder,
    which they were not trained as.
    """
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText, AutoModelForSeq2SeqLM
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
        MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES,
    )

    from llmclient.backends.huggingface.vision import is_vision_config

    model_type = getattr(config, "model_type", "")
    if is_vision_config(config):
        return AutoModelForImageTextToText, bool(getattr(config, "is_encoder_decoder", False))
    if (
        getattr(config, "is_encoder_decoder", False)
        and model_type in MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES
    ):
        return AutoModelForSeq2SeqLM, True
    encoder_only = model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES and not getattr(
        config, "is_decoder", False
    )
    if model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and not encoder_only:
        return AutoModelForCausalLM, False
    kind = "an encoder-only model" if encoder_only else f"a {model_type or 'model'} model"
    raise ModelLoadError(
        f"{name!r} is {kind} ({model_type}); it cannot generate text. Use a decoder-only "
        f"(causal LM, e.g. Llama, Qwen, SmolLM2) or encoder-decoder (T5, BART) model"
    )


def _vision_processor(config: Any, path: str, name: str, options: dict[str, Any]) -> Any:
    """The processor of a vision-language model (:func:`.vision.load_processor`); ``None`` for text."""
    from llmclient.backends.huggingface import vision

    return vision.load_processor(path, name, options) if vision.is_vision_config(config) else None


def pick_device(setting: str) -> torch.device:
    """The device ``setting`` names; ``auto`` is cuda, then mps, then cpu."""
    if setting != "auto":
        try:
            return torch.device(setting)
        except RuntimeError as exc:
            raise ConfigError(
                f"device = {setting!r}: not a torch device. Use auto, cpu, cuda, cuda:1 or mps"
            ) from exc
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def pick_dtype(
    setting: str, device: torch.device, capabilities: Mapping[str, Any] | None = None
) -> torch.dtype:
    """The dtype ``setting`` names. ``auto``: on a GPU, bfloat16 where it has it, else float16; on a
    CPU, bfloat16 where the CPU computes it natively (:func:`cpu_computes_bf16`), else float32.

    On such a CPU a batch of 16 on smollm2 runs 2.8-3.0x faster in bfloat16, the example pipeline
    2.3-3.1x, with the same or nearly the same greedy replies (docs/benchmarks.md); ``dtype =
    "float32"`` keeps full precision. ``capabilities`` stands in for the CPU's flags (tests simulate
    a CPU without them).
    """
    if setting != "auto":
        try:
            return _DTYPES[setting.lower()]
        except KeyError:
            raise ConfigError(f"dtype = {setting!r}: unknown. Use auto, {', '.join(_DTYPES)}") from None
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "mps":
        return torch.float16
    return torch.bfloat16 if cpu_computes_bf16(capabilities) else torch.float32


def cpu_computes_bf16(capabilities: Mapping[str, Any] | None = None) -> bool:
    """Whether this CPU has bfloat16 instructions (AMX-BF16 or AVX512-BF16), from torch's view of it.

    Not ``torch.ops.mkldnn._is_mkldnn_bf16_supported()``: that is true on any AVX-512 CPU, where
    oneDNN emulates bfloat16, slower than float32. Where torch has no ``torch.cpu.get_capabilities``
    (older versions) the flags come from ``/proc/cpuinfo``; without either the answer is no.
    """
    if capabilities is None:
        get = getattr(torch.cpu, "get_capabilities", None)
        capabilities = get() if get is not None else _proc_cpu_flags()
    return any(capabilities.get(flag) for flag in _NATIVE_BF16_FLAGS)


def _proc_cpu_flags() -> dict[str, bool]:
    """The flags of the first CPU in ``/proc/cpuinfo`` (empty where there is no such file)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {}
    line = next((line for line in text.splitlines() if line.startswith("flags")), "")
    return dict.fromkeys(line.partition(":")[2].split(), True)


def context_window(config: Any) -> int | None:
    """The model's window in tokens from its config, or ``None`` where the config sets none (T5)."""
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    for attribute in _WINDOW_ATTRIBUTES:
        value = getattr(text_config, attribute, None)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def _checkpoint_path(name: str, source: ModelSource, settings: HuggingFaceSettings) -> tuple[str, str | None]:
    """The local directory or hub id to load, and the revision that applies to it.

    A GGUF source is converted once into a cached checkpoint, whose directory is returned. A hub id
    asked for while the Hub is offline (``HF_HUB_OFFLINE``, or its host unreachable) loads from its
    cached snapshot, or fails at once when it has none, instead of after half a minute of retries.
    """
    path = source.path
    if _looks_like_path(path):
        local = Path(path).expanduser()
        if not local.exists():
            raise ModelLoadError(
                f"cannot load {name!r}: {str(local)!r} does not exist. Give an existing model directory "
                f"or a hub id such as 'HuggingFaceTB/SmolLM2-135M-Instruct'"
            )
        path = str(local)
    elif source.gguf_file is None and not settings.local_files_only:
        from llmclient.backends.huggingface import hub

        reason = hub.offline_reason()
        if reason is not None:
            snapshot = hub.cached_snapshot(path, settings.revision)
            if snapshot is None:
                raise hub.offline_error(name, reason)
            logger.info("the Hub is offline (%s); loading %s from the cache, %s", reason, name, snapshot)
            return str(snapshot), None
    if source.gguf_file is None:
        return path, settings.revision
    gguf_path = _gguf_path(path, source.gguf_file, settings)
    target = gguf.checkpoint_dir(gguf_path, gguf.cache_root(settings.cache_dir), source.content_key)
    if gguf.is_complete(target):
        logger.info("loading %s from its converted copy %s", source.gguf_file, target)
    else:
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
        model_class, _ = model_class_for(config, name)
        gguf.convert(str(gguf_path.parent), gguf_path.name, target, model_class)
    return str(target), None


def _gguf_path(path: str, gguf_file: str, settings: HuggingFaceSettings) -> Path:
    """The GGUF file on disk: inside a local directory, or fetched from (or found in the cache of) the hub."""
    local = Path(path) / gguf_file
    if Path(path).is_dir():
        if not local.is_file():
            raise ModelLoadError(f"cannot load {path!r}: it has no GGUF file {gguf_file!r}")
        return local
    from huggingface_hub import hf_hub_download

    return Path(
        hf_hub_download(
            path, gguf_file, revision=settings.revision, local_files_only=settings.local_files_only
        )
    )


def _looks_like_path(path: str) -> bool:
    return path.startswith(("/", ".", "~")) or Path(path).exists() or path.count("/") > 1


def _load_hint(source: ModelSource, settings: HuggingFaceSettings) -> str:
    if Path(source.path).expanduser().is_dir():
        return "The directory must hold config.json, the weights and the tokenizer files"
    hint = (
        "Check the model id and revision, and that the Hugging Face Hub is reachable; "
        "set local_files_only = true to use only what is already downloaded"
    )
    if not settings.trust_remote_code:
        hint += "; a model that ships its own code needs trust_remote_code = true"
    return hint
