"""The results file: one JSON line per finished row, appended as rows finish, read back to resume.

Each line is written with a single ``write`` on a file opened for appending, so a process killed at
any moment leaves at most one partial last line; the next run holding the output's lock cuts that
line off (and a power cut's tail of NUL bytes) before appending.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from itertools import repeat
from pathlib import Path
from typing import Any, BinaryIO

from llmclient.errors import InvalidRequestError
from llmclient.pipeline.keys import compact_key, json_value, key_text

DONE, FAILED, SEEN = 1, 2, 4
"""A row key's flags in :class:`Finished`: an ok line, an error line as its last word, seen in the input."""


class Finished:
    """Each row key's state, in one compact table: what the results file says, and what the input held.

    :meth:`ResultsFile.scan` fills in the file's word on each key (done, or failed as its last word);
    the run's plan then marks each key of its input as seen, with what tells a duplicate from an id
    conflict. A key is held as an int (:func:`~llmclient.pipeline.keys.compact_key`) and its state
    as one int, so a million-row resume holds a million small entries, not two sets and a dict of
    strings and tuples (about 115 bytes a row instead of 370).
    """

    def __init__(self) -> None:
        self._states: dict[Any, int] = {}

    def add(self, slot: Any, ok: bool) -> None:
        """Read a line of key ``slot``: an ok line makes it done for good, an error fails it if not done.

        ``slot`` is the compact key (:func:`~llmclient.pipeline.keys.compact_key`), as in every method.
        """
        state = self._states.get(slot, 0)
        self._states[slot] = (state & ~FAILED) | DONE if ok else state | (0 if state & DONE else FAILED)

    def add_done(self, slots: Iterable[int]) -> None:
        """Read ok lines of keys ``slots``, while the table holds only what the results file says (a scan):
        each is done, whatever lines came before.
        """
        self._states.update(dict.fromkeys(slots, DONE))

    def see(self, slot: Any, first: int) -> int:
        """Mark the key seen in the input, with ``first`` (what the plan keeps of its first row) unless
        it was seen before; returns its state before.
        """
        state = self._states.get(slot, 0)
        if not state & SEEN:
            self._states[slot] = state | SEEN | first
        return state

    def merge(self, other: Finished) -> None:
        """Add another results file's word (a shard's): done in either is done, else failed in either."""
        for slot, theirs in other._states.items():
            ours = self._states.get(slot, 0)
            done = (ours | theirs) & DONE
            self._states[slot] = done or (ours | theirs) & FAILED

    @property
    def done(self) -> set[str]:
        """Keys of rows with a successful line (built on each call: to inspect, not to look up each row)."""
        return self._keys(DONE)

    @property
    def failed(self) -> set[str]:
        """Keys of rows whose last line is an error (built on each call, as :attr:`done`)."""
        return self._keys(FAILED)

    def _keys(self, flag: int) -> set[str]:
        return {key_text(slot) for slot, state in self._states.items() if state & flag}


_FIRST = ("index", "key", "status")
"""The fields each line starts with: a rerun reads them from the first bytes instead of parsing the line."""
_HEAD_TEXT = rb'\{"index":(\d+),"key":"([0-9a-f]{24})","status":"(ok|error)"[,}]'
_HEAD = re.compile(_HEAD_TEXT)
_HEADS = re.compile(rb"\n" + _HEAD_TEXT)
"""A line's head after the newline before it: a block of whole lines is read with one regex search."""
_OK_HEADS = re.compile(rb'\n\{"index":\d+,"key":"([0-9a-f]{24})","status":"ok"[,}]')
"""The keys of ok lines' heads alone: a block of ok lines goes into the table in one update."""
_BLOCK = 1 << 18
"""Bytes a scan reads at a time."""


class ResultsFile:
    """Appends result records to a JSON Lines file and reads back what is finished."""

    def __init__(self, path: str | os.PathLike[str], *, fsync: bool = False) -> None:
        self.path = Path(path)
        self._fsync = fsync
        self._fd: int | None = None
        self.intact = 0
        """Bytes of whole result lines before any damaged tail, once :meth:`heads` has read them."""

    def scan(self, *, repair: bool = True) -> Finished:
        """Read the finished keys and, with ``repair``, cut off the damaged tail a crash left.

        The file is read a block of lines at a time, so memory holds the keys, never the file; a
        block whose every line is a result line as llmclient writes them is read with one regex
        search, and line by line from the first that is not (a million lines in under a second,
        docs/benchmarks.md). The damaged tail is a partial last line (a run killed mid-write) or,
        after a power cut, lines of NUL bytes where the disk never got the data, even ending in a
        newline. It is cut off only once every complete line before it has been read as a result
        line (a file that is not a results file is refused untouched), and only by the run holding
        the output's lock: a dry run, or any reader, passes ``repair=False`` and leaves the file as
        it is.
        """
        finished = Finished()
        if not self.path.exists():
            return finished
        with self.path.open("rb") as handle:
            offset = lines = 0
            for start, block, count in _blocks(handle, 0):
                if len(done := _OK_HEADS.findall(block)) == count:
                    finished.add_done(map(int, done, repeat(16)))
                elif len(heads := _HEADS.findall(block)) == count:
                    for _, key, status in heads:
                        finished.add(int(key, 16), status == b"ok")
                else:
                    break
                offset, lines = start + len(block) - 1, lines + count
            for _, _, key, ok in self.heads(handle, offset=offset, lines=lines):
                finished.add(key, ok)
            size = os.fstat(handle.fileno()).st_size
        if repair and self.intact < size:
            with self.path.open("r+b") as handle:
                handle.truncate(self.intact)
        return finished

    def heads(
        self, handle: BinaryIO, *, offset: int = 0, lines: int = 0
    ) -> Iterator[tuple[int, int | None, Any, bool]]:
        """Each whole result line of ``handle`` (this file, opened ``rb``): offset, row index, key, ok.

        The lines are read from byte ``offset``, the start of the line after the first ``lines``
        (whole result lines already read): blocks of lines as llmclient writes them with one regex
        search each, then line by line from the first block with any other line. The key is compact
        (:func:`~llmclient.pipeline.keys.compact_key`); the index is ``None`` on lines written
        before lines had one. Blank lines are passed over; the damaged tail (see :meth:`scan`) ends
        the lines, and once they are read :attr:`intact` holds the bytes before it. A line that is
        not a result line raises ``InvalidRequestError`` naming it.
        """
        self.intact = offset  # bytes of whole result lines before any damaged tail
        for start, block, count in _blocks(handle, offset):
            found = list(_HEADS.finditer(block))
            if len(found) != count:
                break  # read line by line from this block on
            for match in found:  # the block's offset, less the newline put before it, plus the match's
                yield start + match.start(), int(match[1]), int(match[2], 16), match[3] == b"ok"
            offset = self.intact = start + len(block) - 1
            lines += count
        handle.seek(offset)
        tail: int | None = None  # line number where a NUL-damaged stretch began
        for number, line in enumerate(handle, start=lines + 1):
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
            offset = self.intact
            self.intact += len(line)
            if line.strip():
                yield offset, *self._head(line, number)

    def _head(self, line: bytes, number: int) -> tuple[int | None, Any, bool]:
        """The line's index, compact key and whether it is ok: from its first bytes where it can."""
        match = _HEAD.match(line)
        if match is not None:
            return int(match[1]), int(match[2], 16), match[3] == b"ok"  # the compact key
        try:
            record = json.loads(line)
            key, ok, index = record["key"], record["status"] == "ok", record.get("index")
            if not isinstance(key, (str, int)):
                raise TypeError(f"its key is a {type(key).__name__}")
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise InvalidRequestError(
                f"{self.path}:{number} is not a llmclient result line ({exc}); "
                f"write to a new output file or remove that line"
            ) from exc
        return (index if type(index) is int else None), compact_key(key), ok

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


def _blocks(handle: BinaryIO, offset: int) -> Iterator[tuple[int, bytes, int]]:
    """Blocks of whole lines of ``handle`` from byte ``offset``: each one's offset, its bytes after a
    newline (so every line's head follows one, the first line's too), and its number of lines.

    They end at the first block with a NUL byte or without a whole line (a line longer than a
    block), or at the end; the caller reads line by line from where it stopped taking blocks. Only
    when every line of a block has the head llmclient writes does a regex search read it whole: one
    search a block instead of Python work a line.
    """
    handle.seek(offset)
    while block := handle.read(_BLOCK):
        block = b"\n" + memoryview(block)[: block.rfind(b"\n") + 1]  # one copy: the memory test's limit
        count = block.count(b"\n") - 1
        if not count or b"\0" in block:
            return
        yield offset, block, count
        offset += len(block) - 1
        handle.seek(offset)


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
    record = {**{name: record[name] for name in _FIRST if name in record}, **record}
    text = json.dumps(record, ensure_ascii=False, default=json_value, separators=(",", ":")) + "\n"
    try:
        return text.encode()
    except UnicodeEncodeError:  # a lone surrogate: \u escapes keep the line valid UTF-8 and JSON
        return (json.dumps(record, default=json_value, separators=(",", ":")) + "\n").encode()
