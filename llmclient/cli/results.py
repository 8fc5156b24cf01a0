"""``llmclient results FILE``: a results file read back as a person reads it, one record per row.

Rows are appended to the results file as they finish (that is what makes a run crash-safe), so the
file is in completion order; :func:`llmclient.pipeline.read_results` gives the rows back in input
order, one record each, and this command prints them.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

_WIDTH = 100


def results_command(args: argparse.Namespace) -> int:
    """``llmclient results FILE``: every row's record, in input order (``--json``: one JSON line each)."""
    from llmclient.pipeline import read_results

    for record in read_results(Path(args.file)):  # a missing file or a folder is a usage error, said there
        print(json.dumps(record, ensure_ascii=False) if args.json else shown_record(record))
    return 0


def shown_record(record: Mapping[str, Any]) -> str:
    """One row's record as readable lines: the row and its status, its input, then the reply
    (the parsed value where there is one) or the error.
    """
    status = record.get("status", "?")
    head = f"row {record.get('row_id')!r}: {status}"
    latency = record.get("latency")
    if isinstance(latency, (int, float)):
        head += f" in {latency:.2f}s"
    lines = [head]
    fields = record.get("input")
    if isinstance(fields, Mapping) and fields:
        lines.append("  input: " + _cut(", ".join(f"{k}={_scalar(v)}" for k, v in fields.items())))
    error = record.get("error")
    if status != "ok" and isinstance(error, Mapping):
        lines.append(f"  error: {error.get('type')}: {error.get('message')}")
    parsed = record.get("parsed")
    if parsed is not None and not isinstance(parsed, str):
        lines.append("  parsed: " + json.dumps(parsed, ensure_ascii=False))
    text = record.get("text")
    if text:
        lines.append("  reply: " + str(text).strip().replace("\n", "\n         "))
    return "\n".join(lines)


def _scalar(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)


def _cut(text: str) -> str:
    return text if len(text) <= _WIDTH else text[: _WIDTH - 3] + "..."
