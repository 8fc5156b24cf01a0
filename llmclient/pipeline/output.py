"""The output of a run, before any request: checked writable, and locked against a second writer.

A run pays for every reply it sends, so what would stop it from saving them is found first: an
output path that is a directory, a folder it cannot write, a full disk, a file-size limit
(``ulimit -f``) already reached. Then the output is locked for the whole run with an advisory lock
(``fcntl.flock``) on a sidecar file, ``<output>.lock``: a second run on the same output refuses at
once, naming the holder's pid, instead of doing every row again and cutting the lines the first
one writes. The lock is released when the run ends or its process dies (the kernel drops it), so a
killed run never leaves a stale lock; the empty ``.lock`` file stays and is harmless.
"""

from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path
from types import TracebackType

from llmclient.errors import InvalidRequestError, LLMClientError


class OutputError(InvalidRequestError):
    """The results file cannot be used: not writable, a directory, or locked by another run.

    Raised before the first request, so nothing was paid for.

    Attributes:
        path: the output path.
        holder_pid: the pid of the run holding the lock, where that is the problem and it is known.
    """

    def __init__(self, message: str, path: Path, *, holder_pid: int | None = None) -> None:
        super().__init__(message)
        self.path = path
        self.holder_pid = holder_pid


class ResultsWriteError(LLMClientError):
    """Writing a result line failed in the middle of a run (disk full, file-size limit, I/O error).

    The run stops at once rather than paying for replies it cannot keep. Lines already written are
    kept whole; a rerun answers the rows that were not saved.

    Attributes:
        path: the output path.
        unsaved: answered rows whose line could not be written.
    """

    def __init__(self, path: Path, error: OSError, unsaved: int) -> None:
        super().__init__(
            f"cannot write to the results file {str(path)!r}: {error.strerror or error}; the run stopped, "
            f"{unsaved} answered row(s) could not be saved (lines already written are kept; free space or "
            f"raise the limit, then rerun to answer the rest)"
        )
        self.path = path
        self.unsaved = unsaved


def check_writable(path: Path, *, create: bool = True) -> None:
    """Raise :class:`OutputError` with the reason and the fix if result lines cannot be appended to ``path``.

    Opens the file for appending (creating it, and its folder, if needed), and checks there is room:
    free disk space and the process's file-size limit. With ``create=False`` (a dry run, which
    writes nothing) only checks that ``path`` is not a directory.
    """
    if path.is_dir():
        raise OutputError(
            f"the output {str(path)!r} is a directory; give a file path, "
            f"e.g. {str(path / 'results.jsonl')!r}",
            path,
        )
    if not create:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    except OSError as error:
        raise OutputError(
            f"cannot write the output {str(path)!r}: {error.strerror or error}; pick a file in a folder "
            f"you can write to, or fix its permissions",
            path,
        ) from error
    try:
        size = os.fstat(fd).st_size
        if _free_bytes(fd) == 0:
            raise OutputError(
                f"no space left on the disk holding {str(path)!r}; free some, or write the output elsewhere",
                path,
            )
        limit = _file_size_limit()
        if limit is not None and size >= limit:
            raise OutputError(
                f"the output {str(path)!r} already holds {size} bytes, the file-size limit of this process "
                f"(ulimit -f) is {limit}; raise the limit or write to a new output file",
                path,
            )
    finally:
        os.close(fd)


def _free_bytes(fd: int) -> int | None:
    try:
        stats = os.fstatvfs(fd)
    except (OSError, AttributeError):
        return None
    return stats.f_bavail * stats.f_frsize


def _file_size_limit() -> int | None:
    try:
        import resource
    except ImportError:  # Windows
        return None
    soft, _ = resource.getrlimit(resource.RLIMIT_FSIZE)
    return None if soft == resource.RLIM_INFINITY else soft


class OutputLock:
    """An exclusive advisory lock on ``<output>.lock``, held for a whole run.

    ``with OutputLock(path):`` raises :class:`OutputError` naming the holder's pid when another
    process holds it. Where ``fcntl`` does not exist (Windows) no lock is taken.
    """

    def __init__(self, output: Path) -> None:
        self.path = output.with_name(output.name + ".lock")
        self._output = output
        self._fd: int | None = None

    def __enter__(self) -> OutputLock:
        try:
            import fcntl
        except ImportError:  # Windows: no advisory locks; one writer is the user's to ensure
            return self
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as error:
            raise OutputError(
                f"cannot create the lock file {str(self.path)!r} next to the output: "
                f"{error.strerror or error}; write the output to a folder you can write to",
                self._output,
            ) from error
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            holder = _read_pid(fd)
            os.close(fd)
            if error.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise OutputError(
                    f"cannot lock {str(self.path)!r}: {error.strerror or error}", self._output
                ) from error
            who = f"pid {holder}" if holder is not None else "another process"
            raise OutputError(
                f"another run ({who}) is writing {str(self._output)!r}; wait for it to finish, stop it, "
                f"or write to another output file",
                self._output,
                holder_pid=holder,
            ) from error
        with contextlib.suppress(OSError):  # the pid is for the message of a second run only
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the lock
            self._fd = None


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None
