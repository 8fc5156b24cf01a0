"""GGUF weights, converted once into a transformers checkpoint kept in the user's cache.

transformers loads a GGUF file by dequantising every tensor, which takes tens of seconds on a small
CPU. We do that once, save the result as an ordinary checkpoint (safetensors, config, tokenizer) and
load that afterwards in about a second. A GGUF-loaded model refuses ``save_pretrained``, so the copy
is built from its config without the quantization entry and given the loaded state dict.

The copy is written to a temporary directory beside its final place and renamed into place, so a
crash or a second process racing this one never leaves a half-written checkpoint.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import hashlib
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

CONVERT_MB_PER_SECOND = 5.0
"""How fast dequantising a GGUF file goes on a small CPU, for the estimate said before converting."""
CACHE_ENV = "LLMCLIENT_CACHE"
"""Environment variable naming llmclient's cache directory."""

logger = logging.getLogger("llmclient")


def cache_root(configured: str | None = None) -> Path:
    """The cache directory: ``configured``, else ``$LLMCLIENT_CACHE``, else
    ``$XDG_CACHE_HOME/llmclient``, else ``~/.cache/llmclient``.
    """
    if configured:
        return Path(configured).expanduser()
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "llmclient"


def checkpoint_dir(gguf_path: Path, root: Path, content_key: str | None = None) -> Path:
    """Where the converted copy of ``gguf_path`` lives under ``root``.

    The name carries a fingerprint of the file: ``content_key`` where the caller knows one (a recorded
    sha256), else the file's path, size and modification time, so a changed file gets a new copy.
    """
    if content_key is None:
        stat = gguf_path.stat()
        content_key = f"{gguf_path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"
    digest = hashlib.sha256(content_key.encode()).hexdigest()[:16]
    return root / "gguf" / f"{gguf_path.stem}-{digest}"


def is_complete(directory: Path) -> bool:
    """Whether ``directory`` holds a finished checkpoint (only finished ones are ever renamed in)."""
    return (directory / "config.json").is_file()


@contextlib.contextmanager
def atomic_directory(target: Path) -> Iterator[Path]:
    """Yield a fresh temporary directory; on success rename it to ``target``, on failure delete it.

    If another process finished ``target`` first, its copy is kept and ours is discarded.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        yield scratch
        try:
            os.rename(scratch, target)
        except OSError:
            if not is_complete(target):
                raise
            logger.info("another process converted %s first; using its copy", target)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def convert(directory: str, gguf_file: str, target: Path, model_class: Any) -> None:
    """Dequantise ``directory/gguf_file`` with transformers and save it as a checkpoint at ``target``.

    It says so on stderr in one line, with about how long it takes, since it happens once and takes
    far longer than a later load; transformers' progress bars are kept off meanwhile.
    """
    import torch
    from transformers import AutoTokenizer

    started = time.perf_counter()
    print(
        f"llmclient: converting {gguf_file} into a transformers checkpoint, once: about "
        f"{estimated_seconds(Path(directory) / gguf_file)} s; later loads read {target} and take seconds",
        file=sys.stderr,
        flush=True,
    )
    with atomic_directory(target) as scratch, _quiet_progress():
        tokenizer = AutoTokenizer.from_pretrained(directory, gguf_file=gguf_file)
        tokenizer.save_pretrained(scratch)
        loaded = model_class.from_pretrained(directory, gguf_file=gguf_file, dtype=torch.float32)
        config = copy.deepcopy(loaded.config)
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        with torch.device("meta"):
            plain = model_class.from_config(config, dtype=torch.float32)
        plain.load_state_dict(loaded.state_dict(), assign=True, strict=True)
        plain.tie_weights()
        plain.generation_config = loaded.generation_config
        plain.save_pretrained(scratch)
    logger.info("converted %s in %.1f s; cached at %s", gguf_file, time.perf_counter() - started, target)


def estimated_seconds(gguf_path: Path) -> int:
    """About how long converting ``gguf_path`` takes on a small CPU, rounded to 10 s: dequantising
    runs at about :data:`CONVERT_MB_PER_SECOND` (the 98 MB SmolLM2 file took 20 s on 2 cores).
    """
    megabytes = gguf_path.stat().st_size / 1e6 if gguf_path.is_file() else 100.0
    return max(10, round(megabytes / CONVERT_MB_PER_SECOND / 10) * 10)


@contextlib.contextmanager
def _quiet_progress() -> Iterator[None]:
    """No progress bars from transformers while converting: the line printed before says what happens."""
    import importlib

    from transformers.utils import logging as hf_logging

    gguf_utils: Any = importlib.import_module("transformers.modeling_gguf_pytorch_utils")
    enabled = hf_logging.is_progress_bar_enabled()
    bar = getattr(gguf_utils, "tqdm", None)  # GGUF reading uses tqdm directly, not transformers' switch
    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    if bar is not None:
        gguf_utils.tqdm = functools.partial(bar, disable=True)
    try:
        yield
    finally:
        if bar is not None:
            gguf_utils.tqdm = bar
        if enabled:
            hf_logging.enable_progress_bar()  # type: ignore[no-untyped-call]
