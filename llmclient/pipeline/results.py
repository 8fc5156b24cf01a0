"""The results file: one JSON line per finished row, appended as rows finish, read back to resume.

Each line is written with a single ``write`` on a file opened for appending, so a process killed at
any moment leaves at most one partial last line; the next run holding the output's lock cuts that
line off (and a power cut's tail of NUL bytes) before appending.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmclient.errors import InvalidRequestError
from llmclient.pipeline.keys import json_value


@dataclass
class Finished:
    """What an earlier run left in the results file."""

    done: set[str] = field(default_factory=set)
    """Keys of rows with a successful line."""
    failed: set[str] = field(default_factory=set)
    """Keys of rows whose last line is an error."""


class ResultsFile:
    """Appends result records to a JSON Lines file and reads back what is finished."""

    def __init__(self, path: str | os.PathLike[str], *, fsync: bool = False) -> None:
        self.path = Path(path)
        self._fsync = fsync
        self._fd: int | None = None

    def scan(self, *, repair: bool = True) -> Finished:
        """Read the finished keys and, with ``repair``, cut off the damaged tail a crash left.

        The file is read one line at a time, so memory holds the keys, never the file. The damaged
        tail is a partial last line (a run killed mid-write) or, after a power cut, lines of NUL
        bytes where the disk never got the data, even ending in a newline. It is cut off only once
        every complete line before it has been read as a result line (a file that is not a results
        file is refused untouched), and only by the run holding the output's lock: a dry run, or any
        reader, passes ``repair=False`` and leaves the file as it is.
        """
        finished = Finished()
        if not self.path.exists():
            return finished
        good = 0  # bytes of whole result lines before any damaged tail
        tail: int | None = None  # line number where a NUL-damaged stretch began
        with self.path.open("rb") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.endswith(b"\n"):
                    break  # the partial last line of a killed run
                if b"\0" in line or (tail is not None and not line.strip()):
                    tail = tail or number
                    continue
                if tail is not None:
                    raise InvalidRequestError(
                        f"{self.path}:{tail} holds NUL bytes but whole lines follow it (line {number}); "
                        f"remove the damaged lines, or write to a new output file"
                    )
                good += len(line)
                if line.strip():
                    self._read_line(line, number, finished)
            size = os.fstat(handle.fileno()).st_size
        if repair and good < size:
            with self.path.open("r+b") as handle:
                handle.truncate(good)
        return finished

    def _read_line(self, line: bytes, number: int, finished: Finished) -> None:
        try:
            record = json.loads(line)
            key = record["key"]
            ok = record["status"] == "ok"
        except (ValueError, KeyError, TypeError) as exc:
            raise InvalidRequestError(
                f"{self.path}:{number} is not a llmclient result line ({exc}); "
                f"write to a new output file or remove that line"
            ) from exc
        if ok:
            finished.done.add(key)
            finished.failed.discard(key)
        elif key not in finished.done:
            finished.failed.add(key)

    def open(self) -> None:
        """Open the file for appending, creating it; raises ``OSError`` where that is impossible."""
        if self._fd is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)

    def append(self, record: Mapping[str, Any]) -> None:
        """Write one record as one line, in one write, and hand it to the OS at once.

        Values JSON cannot hold (dates, ``Decimal``, bytes) are written as strings; text with a lone
        UTF-16 surrogate is written with JSON's escapes. A write that fails (``OSError``: disk full,
        file-size limit) leaves no partial line behind: the file is cut back to where it was.
        """
        self.open()
        assert self._fd is not None
        view = memoryview(_encode(record))
        start = os.lseek(self._fd, 0, os.SEEK_END)
        try:
            while view:
                view = view[os.write(self._fd, view) :]
            if self._fsync:
                os.fsync(self._fd)
        except OSError:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, start)
            raise

    def close(self) -> None:
        """Close the file."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def parsed_json(value: Any) -> Any:
    """A reply's ``parsed`` value as plain JSON, for a result line or the terminal.

    A pydantic model instance becomes its ``model_dump(mode="json")`` (dates as ISO strings, enums as
    their values); a dict, a list or the chosen string of a ``Choice`` is already JSON; ``None``
    (no ``response_format``) stays ``None``.
    """
    dump = getattr(value, "model_dump", None)
    if callable(dump) and not isinstance(value, type):
        return dump(mode="json")
    return value


def _encode(record: Mapping[str, Any]) -> bytes:
    text = json.dumps(record, ensure_ascii=False, default=json_value, separators=(",", ":")) + "\n"
    try:
        return text.encode()
    except UnicodeEncodeError:  # a lone surrogate: \u escapes keep the line valid UTF-8 and JSON
        return (json.dumps(record, default=json_value, separators=(",", ":")) + "\n").encode()
