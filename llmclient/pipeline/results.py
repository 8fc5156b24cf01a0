"""The results file: one JSON line per finished row, appended as rows finish, read back to resume.

Each line is written with a single ``write`` on a file opened for appending, so a process killed at
any moment leaves at most one partial last line; the next run cuts that line off before appending.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmclient.errors import InvalidRequestError


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

    def scan(self) -> Finished:
        """Read the finished keys and repair a partial last line left by a killed run.

        The file is read one line at a time, so memory holds the keys, never the file. The partial
        line is cut off only once every complete line has been read as a result line: a file that
        is not a results file is refused untouched.
        """
        finished = Finished()
        if not self.path.exists():
            return finished
        complete = 0
        with self.path.open("rb") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.endswith(b"\n"):
                    break  # the partial last line of a killed run
                complete += len(line)
                if line.strip():
                    self._read_line(line, number, finished)
            size = os.fstat(handle.fileno()).st_size
        if complete < size:
            with self.path.open("r+b") as handle:
                handle.truncate(complete)
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

    def append(self, record: Mapping[str, Any]) -> None:
        """Write one record as one line, in one write, and hand it to the OS at once."""
        if self._fd is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        view = memoryview((json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n").encode())
        while view:
            view = view[os.write(self._fd, view) :]
        if self._fsync:
            os.fsync(self._fd)

    def close(self) -> None:
        """Close the file."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
