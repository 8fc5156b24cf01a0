"""What identifies a row of a run, so a rerun knows what is done: the run fingerprint and row keys."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict
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
        fields = ", ".join(sorted(row)) or "none"
        super().__init__(
            f"row {index} has no id field {field!r} (row fields: {fields}); give every row that field, "
            f"or pick one every row has with --id-field / id_field= (leave it out to key rows by content)"
        )
        self.field = field
        self.index = index


def run_fingerprint(prompt: PromptTemplate, params: GenerationParams, model: str) -> str:
    """A digest of everything that shapes each row's prompt and reply: template, parameters, model."""
    payload = {
        "prompt": prompt.fingerprint(),
        "params": {k: v for k, v in asdict(params).items() if v is not None and v != {}},
        "model": model,
    }
    return _digest(payload)


def row_key(identity: Any, fingerprint: str) -> str:
    """The resume key of a row: what the row is (its id, or its fields) under one run fingerprint."""
    return _digest({"row": identity, "run": fingerprint})


def identify(index: int, row: Mapping[str, Any], id_field: str | None, fingerprint: str) -> tuple[Any, str]:
    """The row's id (its ``id_field`` value, else its index) and its resume key.

    A row without ``id_field`` raises :class:`MissingIdFieldError`.
    """
    if id_field is None:
        return index, row_key(row, fingerprint)
    if id_field not in row:
        raise MissingIdFieldError(id_field, index, row)
    row_id = row[id_field]
    return row_id, row_key({id_field: row_id}, fingerprint)


def _digest(payload: Any) -> str:
    canonical = json.dumps(payload, sort_keys=True, ensure_ascii=False, default=str, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:24]
