"""The file under a cassette: YAML in and out, atomic writes, a lock, and a merge on every save.

Files are written whole, to a temporary file renamed over the old one, so a crash while saving leaves
the old cassette intact; saves take a lock on the cassette's folder and merge with what other
recorders saved meanwhile, so threads, tasks and processes can record into one cassette. A new file
gets the permissions the umask allows (an existing one keeps its own). A string YAML cannot hold (one
with a lone UTF-16 surrogate, what JavaScript writes when it cuts an emoji in half) is written as
``!json`` and its JSON string literal, which reads back as the same string. Chat
cassettes (:mod:`llmclient.testing.cassettes.chat`) and HTTP cassettes
(:mod:`llmclient.testing.cassettes.vcr`) both keep their file through :class:`CassetteFile`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

import yaml

from llmclient.errors import CassetteError
from llmclient.testing.cassettes.matching import canonical_json

try:
    _BaseDumper: Any = yaml.CSafeDumper
    _Loader: Any = yaml.CSafeLoader
except AttributeError:  # pragma: no cover - PyYAML built without libyaml
    _BaseDumper = yaml.SafeDumper
    _Loader = yaml.SafeLoader


_SURROGATE = re.compile("[\ud800-\udfff]")
JSON_TAG = "!json"
"""The tag of a string written as its JSON literal: how a cassette holds a lone UTF-16 surrogate."""


FileState = Literal["absent", "empty", "loaded"]
"""What a cassette file was when loaded: missing, holding no YAML document, or holding one."""


def _represent_str(dumper: Any, data: str) -> Any:
    if _SURROGATE.search(data):
        # YAML (and UTF-8) cannot hold a lone surrogate, not even escaped; JSON's \uXXXX can.
        literal = _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", json.dumps(data, ensure_ascii=False))
        return dumper.represent_scalar(JSON_TAG, literal, style="'")
    # Multi-line text (replies, SSE bodies) as literal blocks: readable, and diffs show the lines.
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style="|" if "\n" in data else None)


def _construct_json(loader: Any, node: Any) -> str:
    literal = loader.construct_scalar(node)
    try:
        value = json.loads(literal)
    except ValueError as exc:
        value = exc
    if not isinstance(value, str):
        raise yaml.constructor.ConstructorError(
            None, None, f"{JSON_TAG} needs a JSON string literal, got {literal!r}", node.start_mark
        )
    return value


_Dumper: Any = type("CassetteDumper", (_BaseDumper,), {})
_Dumper.add_representer(str, _represent_str)
_Loader = type("CassetteLoader", (_Loader,), {})
_Loader.add_constructor(JSON_TAG, _construct_json)


def dump_yaml(document: Mapping[str, Any]) -> str:
    """``document`` as cassette YAML: keys in their given order, multi-line strings as blocks."""
    text: str = yaml.dump(
        document, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100, default_flow_style=False
    )
    return text


def fingerprint(item: Any) -> str:
    """A digest of a whole recorded item, to recognise it in the file again."""
    return hashlib.sha256(canonical_json(item).encode("utf-8", "surrogatepass")).hexdigest()


def atomic_write(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` whole: see :func:`atomic_write_bytes`."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file renamed over it: readers and crashes see
    either the old file whole or the new one whole. A new file gets the permissions the umask allows
    (the temporary file is created with them); an existing one keeps its own.
    """
    try:
        kept: int | None = path.stat().st_mode & 0o777
    except FileNotFoundError:
        kept = None
    fd, temporary = _create_temporary(path)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if kept is not None:
            os.chmod(temporary, kept)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def _create_temporary(path: Path) -> tuple[int, str]:
    """A new hidden file beside ``path``, open for writing, created with mode 0666 less the umask
    (``tempfile.mkstemp`` would make it 0600, and a chmod after it would have to guess the umask).
    """
    while True:
        temporary = str(path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp"))
        try:
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
            return os.open(temporary, flags, 0o666), temporary
        except FileExistsError:  # pragma: no cover - a 32-bit name collision
            continue


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock for saving ``path``, across threads and processes.

    On POSIX the lock is taken on the cassette's folder, so no lock file is left beside the cassette.
    """
    if sys.platform == "win32":  # pragma: no cover - exercised on Windows only
        import msvcrt

        lock_path = path.with_name(f".{path.name}.lock")
        with open(lock_path, "a+b") as handle:
            msvcrt.locking(handle.fileno(), msvcrt.LK_LOCK, 1)
            try:
                yield
            finally:
                handle.seek(0)
                msvcrt.locking(handle.fileno(), msvcrt.LK_UNLCK, 1)
        return
    import fcntl

    fd = os.open(path.parent, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield
            with contextlib.suppress(OSError):
                os.fsync(fd)  # make the rename itself durable
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def load_yaml(path: Path) -> Any:
    """The parsed YAML of ``path``, or ``None`` when it does not exist."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    try:
        return yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as exc:
        raise CassetteError(f"cassette {path} is not valid YAML: {exc}") from exc


class CassetteFile:
    """The file under a cassette: items loaded once, new items merged in on save.

    ``read`` turns the parsed document into its list of items (raising :class:`CassetteError` when
    it is malformed); ``document`` builds the document to write from a list of items.
    """

    def __init__(
        self,
        path: Path,
        *,
        read: Callable[[Any, Path], list[dict[str, Any]]],
        document: Callable[[list[dict[str, Any]]], dict[str, Any]],
    ) -> None:
        self.path = path
        self._read = read
        self._document = document
        self._lock = threading.Lock()
        self._unsaved: list[dict[str, Any]] = []
        self._dropped: set[str] = set()
        self._dirty = False
        data = load_yaml(path)
        self.state: FileState = "loaded" if data is not None else "empty" if path.exists() else "absent"
        """What the file was when loaded; an empty one records as a missing one does."""
        self.existed = data is not None
        self.items: list[dict[str, Any]] = read(data, path) if data is not None else []
        """The items the file held when it was loaded."""

    def add(self, item: dict[str, Any]) -> None:
        """Queue ``item`` for the next save."""
        with self._lock:
            self._unsaved.append(item)
            self._dirty = True

    def start_over(self) -> None:
        """Drop the loaded items from the file at the next save (record mode ``all``)."""
        with self._lock:
            self._dropped = {fingerprint(item) for item in self.items}
            self._dirty = True

    def save(self) -> None:
        """Write the file: what it holds now (less dropped items) plus the queued items.

        The file is re-read under the lock, so items that other recorders saved meanwhile are kept.
        Nothing is written when nothing changed.
        """
        with self._lock:
            if not self._dirty:
                return
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with _file_lock(self.path):
                data = load_yaml(self.path)
                current = self._read(data, self.path) if data is not None else []
                kept = [item for item in current if fingerprint(item) not in self._dropped]
                atomic_write(self.path, dump_yaml(self._document(kept + self._unsaved)))
            self._unsaved = []
            self._dirty = False
