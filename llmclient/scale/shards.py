"""The output of a run on many processes: a folder of JSON Lines shards, one per writer.

Each writer (an actor, or the driver for rows that fail before any request) appends to a shard of
its own, ``part-<host>-<pid>-<random>.jsonl``, in the same line format as
:class:`~llmclient.pipeline.ResultsFile`, and holds an advisory lock on it (``<shard>.lock``,
:class:`~llmclient.pipeline.output.OutputLock`) for as long as it lives. So no two processes ever
append to one file, a writer killed mid-line leaves at most one partial last line in its own shard,
and a rerun reads (and repairs) a shard only once its writer is gone.

A rerun reads the done and failed keys of every shard, one line at a time, with the results file's
own rules (:meth:`~llmclient.pipeline.ResultsFile.scan`), merged as if the shards were one file.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from llmclient.pipeline.output import OutputError, OutputLock
from llmclient.pipeline.results import Finished, ResultsFile

SHARD_PATTERN = "part-*.jsonl"
"""The names of the shards in an output folder."""

_BUSY = (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES)
"""What ``flock`` fails with when another process holds the lock."""


def check_folder(folder: str | os.PathLike[str]) -> Path:
    """``folder`` as a path, created if needed; :class:`OutputError` when it is a file or cannot be made."""
    path = Path(folder)
    if path.exists() and not path.is_dir():
        raise OutputError(
            f"the output {str(path)!r} is a file; the ray engine writes a folder of shards, so give a folder "
            f"path, e.g. {str(path.with_suffix(''))!r}",
            path,
        )
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OutputError(
            f"cannot create the output folder {str(path)!r}: {error.strerror or error}; pick a folder you "
            f"can write to",
            path,
        ) from error
    return path


def new_shard_path(folder: Path) -> Path:
    """A shard name no other writer has: the host, the process and a random part."""
    host = socket.gethostname().split(".")[0] or "host"
    return folder / f"part-{host}-{os.getpid()}-{uuid.uuid4().hex[:8]}.jsonl"


class Shard(ResultsFile):
    """One writer's shard: a results file created and locked as soon as the writer starts.

    The lock is taken at once (not at the first line), so a rerun waits for every live writer of an
    earlier run, even one that has written nothing yet; it is released when the writer closes the
    shard or its process dies.
    """

    def __init__(self, path: Path, *, fsync: bool = False) -> None:
        super().__init__(path, fsync=fsync)
        self._lock = OutputLock(path)
        self._lock.__enter__()
        self.open()

    def close(self) -> None:
        """Close the file and release the lock; a shard that got no line is removed with its lock file."""
        super().close()
        with contextlib.suppress(OSError):
            if self.path.stat().st_size == 0:
                _discard(self.path)
        self._lock.__exit__(None, None, None)


def scan_folder(folder: Path, *, repair: bool = True, wait: float = 60.0) -> Finished:
    """The done and failed keys of every shard in ``folder``, read one line at a time.

    Each shard is read under its lock, so a shard still being written (a writer of a killed run that
    Ray has not stopped yet) is waited for, up to ``wait`` seconds, then refused with
    :class:`OutputError`. With ``repair``, a partial last line is cut off (as the results file does)
    and an empty shard left by a writer that got no rows is removed.
    """
    finished = Finished()
    for path in sorted(folder.glob(SHARD_PATTERN)):
        with _locked(path, wait) if repair else contextlib.nullcontext():
            if repair and path.stat().st_size == 0:
                _discard(path)
                continue
            found = ResultsFile(path).scan(repair=repair)
        finished.merge(found)  # an ok line in any shard makes the row done, as in one file
    return finished


def read_results(folder: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    """Every result line of every shard in ``folder``, shard by shard, in the order each was written.

    A partial last line (a writer killed mid-write, not yet cut off by a rerun) is left out.
    """
    for path in sorted(Path(folder).glob(SHARD_PATTERN)):
        with path.open("rb") as handle:
            for line in handle:
                if line.endswith(b"\n") and line.strip() and b"\0" not in line:
                    yield json.loads(line)


def _discard(path: Path) -> None:
    """Remove an empty shard and its lock file (by its writer, or by a rerun holding its lock)."""
    path.unlink()
    with contextlib.suppress(OSError):
        path.with_name(path.name + ".lock").unlink()


@contextlib.contextmanager
def _locked(path: Path, wait: float) -> Iterator[None]:
    """Hold ``path``'s shard lock, waiting up to ``wait`` seconds for its writer to end."""
    deadline = time.monotonic() + wait
    while True:
        lock = OutputLock(path)
        try:
            lock.__enter__()
            break
        except OutputError as error:
            cause = error.__cause__
            busy = isinstance(cause, OSError) and cause.errno in _BUSY
            if not busy or time.monotonic() > deadline:
                raise
        time.sleep(0.2)
    try:
        yield
    finally:
        lock.__exit__(None, None, None)
