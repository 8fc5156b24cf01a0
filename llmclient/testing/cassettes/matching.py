"""Matching: the stable key a recorded request is found by, and the differences that explain a miss.

The key of a request is the SHA-256 of its canonical JSON (sorted keys, no spaces, integral floats
written as integers), less the fields a cassette is told to ignore, so it is the same in every process
and on every machine. When nothing matches, :func:`differences` names each field where the closest
recorded request differs from the one made.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import Any


def _canonical(value: Any) -> Any:
    """Fresh JSON-shaped containers, with integral floats as integers (``temperature=0`` == ``0.0``)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, Mapping):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    return value


def _json_default(value: Any) -> Any:
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    return str(value)


def canonical_json(value: Any) -> str:
    """The canonical JSON text of ``value``: sorted keys, no spaces, integral floats as integers."""
    return json.dumps(
        _canonical(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=_json_default
    )


def without(request: Mapping[str, Any], ignore: Iterable[str]) -> dict[str, Any]:
    """A canonical copy of ``request`` less the ``ignore`` fields.

    A bare name (``"seed"``) drops that field at the top level and among ``params``; a dotted path
    (``"params.extra.user"``) drops exactly that field.
    """
    out: dict[str, Any] = _canonical(request)
    for name in ignore:
        parts = name.split(".")
        if len(parts) == 1:
            out.pop(name, None)
            params = out.get("params")
            if isinstance(params, dict):
                params.pop(name, None)
            continue
        node: Any = out
        for part in parts[:-1]:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(parts[-1], None)
    return out


def request_key(request: Mapping[str, Any], ignore: Iterable[str] = ()) -> str:
    """The stable matching key of a normalised request: SHA-256 of its canonical JSON, less ``ignore``."""
    text = canonical_json(without(request, ignore))
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()  # lone surrogates too


def short_repr(value: Any) -> str:
    """``repr(value)``, cut to 80 characters: for error messages that quote recorded values."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _show_strings(recorded: str, wanted: str) -> str:
    at = next(
        (i for i, (a, b) in enumerate(zip(recorded, wanted, strict=False)) if a != b),
        min(len(recorded), len(wanted)),
    )
    start = max(0, at - 20)

    def window(text: str) -> str:
        part = text[start : at + 40]
        return ("..." if start else "") + repr(part) + ("..." if at + 40 < len(text) else "")

    return f"recorded {window(recorded)}, got {window(wanted)} (they differ from character {at})"


def differences(recorded: Any, wanted: Any, path: str = "") -> list[str]:
    """Human lines naming each field where two canonical requests differ, e.g.
    ``params.seed: recorded 1, got 2``.
    """
    where = path or "request"
    if isinstance(recorded, dict) and isinstance(wanted, dict):
        out: list[str] = []
        for key in [*recorded, *(k for k in wanted if k not in recorded)]:
            sub = f"{path}.{key}" if path else key
            if key not in recorded:
                out.append(f"{sub}: not in the recorded request, got {short_repr(wanted[key])}")
            elif key not in wanted:
                out.append(f"{sub}: recorded {short_repr(recorded[key])}, not in this request")
            else:
                out.extend(differences(recorded[key], wanted[key], sub))
        return out
    if isinstance(recorded, list) and isinstance(wanted, list):
        out = []
        for index, (a, b) in enumerate(zip(recorded, wanted, strict=False)):
            out.extend(differences(a, b, f"{path}[{index}]"))
        if len(recorded) != len(wanted):
            out.append(f"{where}: recorded {len(recorded)} items, got {len(wanted)}")
        return out
    if recorded == wanted:
        return []
    if isinstance(recorded, str) and isinstance(wanted, str):
        return [f"{where}: {_show_strings(recorded, wanted)}"]
    return [f"{where}: recorded {short_repr(recorded)}, got {short_repr(wanted)}"]
