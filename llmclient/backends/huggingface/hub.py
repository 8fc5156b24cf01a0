"""The Hugging Face Hub seen from a machine that may be offline: is it reachable, what is cached.

Asked for a hub id it cannot reach, huggingface_hub retries for about half a minute before
transformers gives up. We ask first: with ``HF_HUB_OFFLINE`` set or the Hub's host unreachable, a
model in the local cache loads from its cached snapshot without a request, and one that is not
there fails at once with :class:`~llmclient.errors.ModelLoadError`, naming close aliases and cached
models.
"""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path
from urllib.parse import urlsplit

from llmclient._settings import suggest
from llmclient.backends.huggingface.smollm2 import ALIAS
from llmclient.errors import ModelLoadError

PROBE_SECONDS = 2.0
"""How long the reachability probe waits for the Hub's host (name lookup and TCP connect)."""
_OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")


def offline_reason() -> str | None:
    """Why the Hub cannot be asked (an ``*_OFFLINE`` variable, or its host unreachable), or ``None``."""
    for variable in _OFFLINE_VARIABLES:
        if os.environ.get(variable, "").strip().lower() in ("1", "true", "yes", "on"):
            return f"{variable}={os.environ[variable]}"
    from huggingface_hub import constants

    host = urlsplit(constants.ENDPOINT).hostname or "huggingface.co"
    port = urlsplit(constants.ENDPOINT).port or 443
    return None if _reachable(host, port) else f"{host} cannot be reached"


def _reachable(host: str, port: int) -> bool:
    """Whether ``host`` may be reachable: ``False`` only when the name lookup or the TCP connection
    failed within :data:`PROBE_SECONDS` (no network fails at once). A slow answer counts as reachable,
    so a slow network is never taken for none. The lookup cannot be timed out by ``socket`` itself,
    so the probe runs on a thread of its own.
    """
    result: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection((host, port), timeout=PROBE_SECONDS):
                result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=probe, name="llmclient-hub-probe", daemon=True)
    thread.start()
    thread.join(PROBE_SECONDS)
    return not result or result[0]


def cached_snapshot(repo_id: str, revision: str | None) -> Path | None:
    """The cached snapshot folder of ``repo_id`` at ``revision`` when it holds a ``config.json``."""
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(repo_id, "config.json", revision=revision)
    except ValueError:  # not a valid repo id: it cannot be cached either
        return None
    return Path(found).parent if isinstance(found, str) else None


def offline_error(name: str, reason: str) -> ModelLoadError:
    """The error for hub id ``name`` asked for while the Hub is offline and it is not cached."""
    close = suggest(name, [ALIAS, *_cached_models()]).removeprefix("; d")
    return ModelLoadError(
        f"cannot load {name!r}: the Hugging Face Hub is offline ({reason}) and {name!r} is not in the "
        f"local cache. {'D' + close + ' ' if close else ''}Use the built-in 'smollm2', a local model "
        f"folder, or a model downloaded before (huggingface-cli download <id> while online)"
    )


def _cached_models() -> list[str]:
    """Model repo ids in the local Hugging Face cache (none when there is no cache)."""
    from huggingface_hub import constants

    root = Path(constants.HF_HUB_CACHE)
    if not root.is_dir():
        return []
    return [
        p.name[len("models--") :].replace("--", "/") for p in root.iterdir() if p.name.startswith("models--")
    ]
