"""What the command line reads from files and flags: templates, few-shot examples, schemas, choices."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, cast

from llmclient.errors import InvalidRequestError
from llmclient.logprobs import check_candidates
from llmclient.structured import Choice, OutputFormat, output_format


def read_text(path: Path | None, what: str) -> str | None:
    """The text of ``path`` (a template, a system prompt), or a usage error naming ``what``."""
    if path is None:
        return None
    try:
        return path.read_text(encoding="utf-8")
    except OSError as error:
        raise InvalidRequestError(f"cannot read the {what} file {str(path)!r}: {error.strerror}") from error
    except UnicodeDecodeError as error:
        raise InvalidRequestError(
            f"the {what} file {str(path)!r} is not UTF-8 text (byte 0x{error.object[error.start]:02x} at "
            f"offset {error.start}); save it as UTF-8"
        ) from error


def _json_text(text: str, path: Path | None, what: str, shape: type, wanted: str) -> Any:
    """The JSON value of the ``what`` file's ``text``, which must be a ``shape`` (``wanted`` says
    what it must be, for the message).
    """
    try:
        value = json.loads(text)
    except ValueError as error:
        raise InvalidRequestError(
            f"the {what} file {str(path)!r} is not valid JSON ({error}); it must be {wanted}"
        ) from error
    if not isinstance(value, shape):
        raise InvalidRequestError(
            f"the {what} file {str(path)!r} holds a JSON {type(value).__name__}; it must be {wanted}"
        )
    return value


def check_input(source: str) -> None:
    """Check the dataset before any model loads: it exists, is a file we can read, has a known
    format, its first row parses, and it has one; a usage error saying which, and the fix, if not.
    """
    from llmclient.pipeline.rows import read_rows

    path = Path(source)
    if path.is_dir():
        raise InvalidRequestError(f"input {source!r} is a folder; give a .jsonl, .csv or .parquet file")
    rows = read_rows(path)  # a missing file or an unknown extension is refused here
    try:
        first = next(iter(rows), None)
    except (OSError, ValueError) as error:  # unreadable; pyarrow's errors are ValueErrors
        detail = getattr(error, "strerror", None) or error
        raise InvalidRequestError(f"cannot read the input file {source!r}: {detail}") from error
    finally:
        close = getattr(rows, "close", None)
        if close is not None:
            close()
    if first is None:
        raise InvalidRequestError(f"no rows in {source}: the file holds no data rows (is it the right file?)")


def read_few_shot(path: Path | None) -> list[Any]:
    """The few-shot examples in ``path`` (a JSON list of messages), or a usage error saying why not."""
    text = read_text(path, "few-shot")
    if not text:
        return []
    example = '[{"role": "user", "content": "..."}, {"role": "assistant", "content": "..."}]'
    return cast(list[Any], _json_text(text, path, "few-shot", list, f"a list of messages like {example}"))


def read_choices(choices: str | None) -> tuple[str, ...] | None:
    """The labels of ``--choices a,b,c``, checked before any backend is loaded."""
    if choices is None:
        return None
    options = [option.strip() for option in choices.split(",")]
    if not all(options):
        raise InvalidRequestError(
            f"--choices takes comma-separated labels, none of them empty, got {choices!r} "
            f"(e.g. --choices positive,negative,mixed)"
        )
    return check_candidates(Choice(options).options)


def read_response_format(schema: Path | None) -> OutputFormat | None:
    """What ``--schema FILE`` asks every reply to be, checked before any backend is loaded: a file
    that is missing, not JSON or not a JSON Schema is a usage error naming it.
    """
    text = read_text(schema, "schema")
    if text is None:
        return None
    example = '{"type": "object", "properties": {...}, "required": [...]}'
    value = _json_text(text, schema, "schema", dict, f"a JSON Schema object like {example}")
    try:
        return output_format(value)
    except InvalidRequestError as error:
        raise InvalidRequestError(f"the schema file {str(schema)!r}: {error}") from error


def call_options(args: argparse.Namespace) -> dict[str, Any]:
    """The generation parameters of ``-p``, with the reply's format of ``--schema``."""
    options = dict(args.params)
    given = args.response_format is not None or args.choices is not None
    if given and options.get("response_format") is not None:
        raise InvalidRequestError(
            "-p response_format=... and --schema/--choices are both given; give the reply's format once"
        )
    if args.response_format is not None:
        options["response_format"] = args.response_format
    return options
