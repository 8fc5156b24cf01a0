"""What identifies a row of a run, so a rerun knows what is done: the run fingerprint and row keys."""

from __future__ import annotations

import datetime
import functools
import hashlib
import json
import json.encoder
import math
from collections.abc import Mapping
from decimal import Decimal
from typing import Any, cast

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
    slot = _slot('{"row":' + canonical(identity) + _run_tail(fingerprint))
    return f"{slot:024x}"


class RowKeys:
    """The rows' ids and resume keys under one run: each row's ``(id, key)`` in a few hundred nanoseconds.

    The id is the row's ``id_field`` value, or its index without one. The key is :func:`row_key` of
    ``{id_field: canonical_id(id)}`` (of the whole row without ``id_field``), compact
    (:func:`compact_key`): a rerun of a million rows makes a million keys before it skips a row, so
    the text around an id is made once per run and an int or text id is written without the encoder.
    """

    def __init__(self, id_field: str | None, fingerprint: str) -> None:
        self.id_field = id_field
        self.fingerprint = fingerprint
        self._head = "" if id_field is None else '{"row":{' + canonical(id_field) + ":"
        self._run = _run_tail(fingerprint)
        self._tail = "}" + self._run  # after an id: the end of {id_field: id}, then the run's part

    def of(self, index: int, row: Mapping[str, Any]) -> tuple[Any, int]:
        """The row's id and compact key; a row without ``id_field`` (or with it null) raises
        :class:`MissingIdFieldError`.
        """
        id_field = self.id_field
        if id_field is None:
            return index, _slot('{"row":' + canonical(row) + self._run)
        row_id = row.get(id_field)
        kind = type(row_id)
        if kind is int:  # canonical_id's text of an int, quoted: digits need no escapes
            text = '"' + str(row_id) + '"'
        elif kind is str:
            text = _quoted(cast(str, row_id))
        elif row_id is None:
            raise MissingIdFieldError(id_field, index, row)
        else:
            text = canonical(canonical_id(row_id))
        return row_id, _slot(self._head + text + self._tail)


@functools.lru_cache(maxsize=16)
def _run_tail(fingerprint: str) -> str:
    """The end of a row key's canonical text, the same for every row of a run (so made once, not a
    million times).
    """
    return ',"run":' + canonical(fingerprint) + "}"


def fields_digest(row: Mapping[str, Any]) -> int:
    """A 64-bit digest of a row's fields, for telling rows that share an id apart within one run.

    Never written anywhere (Python's string hash differs between processes): a run keeps it, not the
    row, to see whether a later row with the same id holds the same fields.
    """
    return hash(canonical(row)) & _MASK64


def compact_key(key: Any) -> int | Any:
    """A row key as the int of its 24 hex digits (12 bytes instead of a 73-byte string), for tables in memory.

    Anything that is not such a key (a results file of an older or foreign format) is kept as it is.
    """
    if isinstance(key, str) and len(key) == 24:
        try:
            number = int(key, 16)
        except ValueError:
            return key
        if f"{number:024x}" == key:  # int() also takes upper case, "0x", "_" and spaces
            return number
    return key


def key_text(key: int | Any) -> Any:
    """The row key :func:`compact_key` made compact, as it is written in the results file."""
    return f"{key:024x}" if isinstance(key, int) else key


def canonical(value: Any) -> str:
    """``value`` as canonical JSON text: keys sorted, no spaces, text as itself, what keys are digests of."""
    return "".join(_encode(value, 0)) if _encode is not None else _CANONICAL.encode(value)


_CANONICAL = json.JSONEncoder(sort_keys=True, ensure_ascii=False, default=json_value, separators=(",", ":"))
_c_encoder = getattr(json.encoder, "c_make_encoder", None)
_encode = (  # the C encoder built once: json.dumps builds one per call, a few a row, a million rows a run
    _c_encoder(None, json_value, json.encoder.encode_basestring, None, ":", ",", True, False, True)
    if _c_encoder is not None
    else None
)
_MASK64 = (1 << 64) - 1
_quoted = json.encoder.encode_basestring  # a text as a JSON string, as the canonical encoder writes it


def _digest(payload: Any) -> str:
    return f"{_slot(canonical(payload)):024x}"


def _slot(canonical: str) -> int:
    """The compact key of a canonical text: the first 12 bytes of its SHA-256, as an int."""
    # surrogatepass: a lone UTF-16 surrogate in a row (valid JSON) still has a key
    return int.from_bytes(hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).digest()[:12], "big")
