"""Loading a local model and its tokenizer: where from, which class, which device and dtype.

Every failure is mapped here, once, into :class:`~llmclient.errors.ModelLoadError` (or
:class:`~llmclient.errors.ConfigError` for a bad setting) with the fix in the message.
"""

from __future__ import annotations

import logging
import time
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
    """

    model: Any
    tokenizer: Any
    is_seq2seq: bool


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
        device = pick_device(settings.device)
        dtype = pick_dtype(settings.dtype, device)
        placement = {"device_map": settings.device_map} if settings.device_map is not None else {}
        model = model_class.from_pretrained(path, config=config, dtype=dtype, **placement, **options)
        if settings.device_map is None:
            model.to(device)
        model.eval()
        tokenizer = AutoTokenizer.from_pretrained(path, **options)
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
    return LoadedModel(model=model, tokenizer=tokenizer, is_seq2seq=is_seq2seq)


def model_class_for(config: Any, name: str) -> tuple[Any, bool]:
    """The auto class that can generate with ``config``'s model, and whether it is encoder-decoder.

    Decoder-only models load with ``AutoModelForCausalLM``, encoder-decoder ones with
    ``AutoModelForSeq2SeqLM``. Encoder-only models (BERT and kin) are refused: several of them have a
    causal-LM head class too, but one that only works as a decoder, which they were not trained as.
    """
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
        MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES,
    )

    model_type = getattr(config, "model_type", "")
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


def pick_dtype(setting: str, device: torch.device) -> torch.dtype:
    """The dtype ``setting`` names; ``auto``: bfloat16 on GPUs with it, else float16; float32 on CPU."""
    if setting != "auto":
        try:
            return _DTYPES[setting.lower()]
        except KeyError:
            raise ConfigError(f"dtype = {setting!r}: unknown. Use auto, {', '.join(_DTYPES)}") from None
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "mps":
        return torch.float16
    return torch.float32


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

    A GGUF source is converted once into a cached checkpoint, whose directory is returned.
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
