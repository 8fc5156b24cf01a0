"""What identifies a row of a run, so a rerun knows what is done: the run fingerprint and row keys."""

from __future__ import annotations

import datetime
import hashlib
import json
import math
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from llmclient.errors import InvalidRequestError
from llmclient.pipeline.prompt import PromptTemplate
from llmclient.types import GenerationParams


class MissingIdFieldError(InvalidRequestError):
    """A row lacks the field named as its id (``id_field=`` / ``--id-field``), so it cannot be resumed.

    Attributes:
        field: the id field asked for.
        index: the row's position in the input, from 0.
    """

    def __init__(self, field: str, index: int, row: Mapping[str, Any]) -> None:
        fields = ", ".join(sorted(map(str, row))) or "none"
        what = f"has a null id field {field!r}" if field in row else f"has no id field {field!r}"
        super().__init__(
            f"row {index} {what} (row fields: {fields}); give every row that field, "
            f"or pick one every row has with --id-field / id_field= (leave it out to key rows by content)"
        )
        self.field = field
        self.index = index


def json_value(value: Any) -> Any:
    """A value ``json.dumps`` cannot write, as a string: what result lines and row keys both use.

    Dates and times in ISO 8601, ``Decimal`` as its digits, bytes as UTF-8 text (undecodable bytes
    as backslash escapes), anything else as ``str()``.
    """
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).decode("utf-8", "backslashreplace")
    return str(value)


def canonical_id(value: Any) -> Any:
    """An id as one value whatever JSON type an export gave it: ``7``, ``7.0`` and ``"7"`` are ``"7"``."""
    if isinstance(value, bool) or not isinstance(value, (int, float, Decimal)):
        return value
    if not math.isfinite(value):  # nan, inf, Decimal('Infinity')
        return str(value)
    if value == int(value):
        return str(int(value))
    return str(value.normalize()) if isinstance(value, Decimal) else repr(value)


def run_fingerprint(
    prompt: PromptTemplate,
    params: GenerationParams,
    model: str,
    *,
    backend_type: str = "",
    endpoint: str | None = None,
    choices: tuple[str, ...] | None = None,
) -> str:
    """A digest of everything that shapes each row's prompt and reply.

    The template, the effective generation parameters (the backend's configured defaults with the
    run's over them), the model, the backend type and its endpoint (a remote backend's base URL,
    never a key), and the labels a scoring run scores: a change to any of them is new work, never
    mistaken for done.
    """
    payload: dict[str, Any] = {
        "prompt": prompt.fingerprint(),
        "params": params.to_dict(),
        "model": model,
        "backend": backend_type,
        "endpoint": endpoint,
    }
    if choices is not None:  # only scoring runs: the keys of every other run stay as they were
        payload["choices"] = list(choices)
    return _digest(payload)


def row_key(identity: Any, fingerprint: str) -> str:
    """The resume key of a row: what the row is (its id, or its fields) under one run fingerprint."""
    return _digest({"row": identity, "run": fingerprint})


def identify(index: int, row: Mapping[str, Any], id_field: str | None, fingerprint: str) -> tuple[Any, str]:
    """The row's id (its ``id_field`` value, else its index) and its resume key.

    A row without ``id_field`` (or with it null) raises :class:`MissingIdFieldError`.
    """
    if id_field is None:
        return index, row_key(row, fingerprint)
    if row.get(id_field) is None:
        raise MissingIdFieldError(id_field, index, row)
    row_id = row[id_field]
    return row_id, row_key({id_field: canonical_id(row_id)}, fingerprint)


def _digest(payload: Any) -> str:
    canonical = json.dumps(
        payload, sort_keys=True, ensure_ascii=False, default=json_value, separators=(",", ":")
    )
    # surrogatepass: a lone UTF-16 surrogate in a row (valid JSON) still has a key
    return hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()[:24]
