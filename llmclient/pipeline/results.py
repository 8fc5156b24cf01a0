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
    cut_bytes: int = 0
    """Bytes of a partial last line that was cut off (a run killed mid-write)."""


class ResultsFile:
    """Appends result records to a JSON Lines file and reads back what is finished."""

    def __init__(self, path: str | os.PathLike[str], *, fsync: bool = False) -> None:
        self.path = Path(path)
        self._fsync = fsync
        self._fd: int | None = None

    def scan(self) -> Finished:
        """Read the finished keys and repair a partial last line left by a killed run."""
        finished = Finished()
        if not self.path.exists():
            return finished
        with self.path.open("rb") as handle:
            data = handle.read()
        complete = data.rfind(b"\n") + 1
        if complete < len(data):
            finished.cut_bytes = len(data) - complete
            with self.path.open("r+b") as handle:
                handle.truncate(complete)
        for number, line in enumerate(data[:complete].splitlines(), start=1):
            if not line.strip():
                continue
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
        return finished

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
