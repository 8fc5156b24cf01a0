"""Cassettes: recorded model replies in a readable YAML file, found again by a stable key over the request.

A chat cassette holds one entry per interaction: the normalised request (backend type, model, whether
it streamed, the messages, the generation parameters that were set) and what came back (a reply, the
stream's deltas, or an error), with the llmclient version and the time it was recorded::

    llmclient_cassette: 1
    interactions:
    - request:
        backend: openai-compatible
        model: test-model
        stream: false
        messages:
        - role: user
          content: Capital of France?
        params:
          max_new_tokens: 16
          temperature: 0
      response:
        text: Paris.
        finish_reason: stop
        usage: {prompt_tokens: 12, completion_tokens: 2}
        model: test-model
        backend: remote
      recorded_at: '2025-06-01T12:00:00Z'
      llmclient_version: 0.1.0

The key of a request is the SHA-256 of its canonical JSON (sorted keys, integral floats written as
integers), less the fields a cassette is told to ignore. Entries with the same key replay in the order
they were recorded; once all have played, the last one repeats (``allow_repeats``).

Files are written whole, to a temporary file renamed over the old one, so a crash while saving leaves
the old cassette intact; saves take a lock on the cassette's folder and merge with what other
recorders saved meanwhile, so threads, tasks and processes can record into one cassette. The same
machinery, and the same secret scrubbing, serve the HTTP-level cassettes of :mod:`llmclient.testing.http`.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import re
import sys
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

import yaml  # type: ignore[import-untyped,unused-ignore]

from llmclient.errors import CassetteError, ConfigError

RecordMode = Literal["none", "once", "new_episodes", "all"]
"""What a cassette does with a request.

``none``: replay only; a request with no recorded reply is an error (the CI setting).
``once``: record into a cassette that does not exist yet; once it exists, behave as ``none``.
``new_episodes``: replay what is recorded, record what is not.
``all``: record every request afresh; the entries the file held before are dropped when it is saved.
"""

RECORD_MODES: tuple[RecordMode, ...] = get_args(RecordMode)

SCRUBBED = "**scrubbed**"
"""What a secret is replaced with in a cassette."""

SECRET_HEADERS = frozenset(
    {"authorization", "proxy-authorization", "api-key", "x-api-key", "cookie", "set-cookie"}
)
"""Headers whose values never reach a cassette (compared lower-cased)."""

KEY_PATTERNS: tuple[re.Pattern[str], ...] = (
    re.compile(r"\bsk-[A-Za-z0-9_\-]{16,}"),  # OpenAI, OpenRouter (sk-or-v1-...), Anthropic (sk-ant-...)
    re.compile(r"\bhf_[A-Za-z0-9]{30,}"),  # Hugging Face access tokens
    re.compile(r"\bAIza[0-9A-Za-z_\-]{35}"),  # Google API keys
)
"""API-key-looking strings scrubbed from every string that is recorded, wherever it appears."""

_MIN_SECRET_LENGTH = 8  # shorter "secrets" (a test key such as "test") would scrub ordinary words

try:
    _BaseDumper: Any = yaml.CSafeDumper
    _Loader: Any = yaml.CSafeLoader
except AttributeError:  # pragma: no cover - PyYAML built without libyaml
    _BaseDumper = yaml.SafeDumper
    _Loader = yaml.SafeLoader


def _represent_str(dumper: Any, data: str) -> Any:
    # Multi-line text (replies, SSE bodies) as literal blocks: readable, and diffs show the lines.
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style="|" if "\n" in data else None)


_Dumper: Any = type("CassetteDumper", (_BaseDumper,), {})
_Dumper.add_representer(str, _represent_str)


def dump_yaml(document: Mapping[str, Any]) -> str:
    """``document`` as cassette YAML: keys in their given order, multi-line strings as blocks."""
    text: str = yaml.dump(
        document, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100, default_flow_style=False
    )
    return text


def check_mode(mode: str) -> RecordMode:
    """``mode`` as a :data:`RecordMode`; a :class:`ConfigError` naming the choices if it is not one."""
    if mode not in RECORD_MODES:
        from llmclient.config import suggest

        raise ConfigError(
            f"unknown record mode {mode!r}{suggest(str(mode), RECORD_MODES)}; use one of {RECORD_MODES}"
        )
    return mode


def may_record(mode: RecordMode, existed: bool) -> bool:
    """Whether ``mode`` records a request that has no reply in a cassette that ``existed`` at load."""
    return mode in ("new_episodes", "all") or (mode == "once" and not existed)


def record_hint(mode: RecordMode, existed: bool) -> str:
    """How to get a missing reply recorded, for the error raised under ``mode``."""
    if mode == "once" and existed:
        return (
            "Mode 'once' records only into a cassette that does not exist yet: record the new request "
            "with mode 'new_episodes' (pytest: --llm-record-mode=new_episodes), or re-record the whole "
            "cassette with mode 'all'."
        )
    return (
        "Record it with mode 'once' or 'new_episodes' (pytest: --llm-record-mode=new_episodes), "
        "or re-record the whole cassette with mode 'all'."
    )


# -- secrets ----------------------------------------------------------------------------------------


class Scrubber:
    """Replaces secrets with :data:`SCRUBBED`: API-key-looking strings, and the literal secrets it knows.

    Literal secrets are given up front or learned while recording (the value of an ``Authorization``
    header, say), so a key echoed in a body is scrubbed even when it does not look like a key.
    """

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets: tuple[str, ...] = ()
        self._lock = threading.Lock()
        for secret in secrets:
            self.learn(secret)

    def learn(self, secret: str) -> None:
        """Scrub ``secret`` from now on (ignored when shorter than 8 characters)."""
        secret = secret.strip()
        if len(secret) < _MIN_SECRET_LENGTH or secret == SCRUBBED:
            return
        with self._lock:
            if secret not in self._secrets:  # longest first, so a secret containing another goes whole
                self._secrets = tuple(sorted({*self._secrets, secret}, key=len, reverse=True))

    def text(self, value: str) -> str:
        """``value`` with every secret replaced."""
        for secret in self._secrets:
            if secret in value:
                value = value.replace(secret, SCRUBBED)
        for pattern in KEY_PATTERNS:
            value = pattern.sub(SCRUBBED, value)
        return value

    def value(self, value: Any) -> Any:
        """A copy of a JSON-shaped ``value`` with every string in it scrubbed."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, Mapping):
            return {k: self.value(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self.value(v) for v in value]
        return value


# -- keys and differences ---------------------------------------------------------------------------


def _canonical(value: Any) -> Any:
    """Fresh JSON-shaped containers, with integral floats as integers (``temperature=0`` == ``0.0``)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, Mapping):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    return value


def _json_default(value: Any) -> Any:
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    return str(value)


def canonical_json(value: Any) -> str:
    """The canonical JSON text of ``value``: sorted keys, no spaces, integral floats as integers."""
    return json.dumps(
        _canonical(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=_json_default
    )


def without(request: Mapping[str, Any], ignore: Iterable[str]) -> dict[str, Any]:
    """A canonical copy of ``request`` less the ``ignore`` fields.

    A bare name (``"seed"``) drops that field at the top level and among ``params``; a dotted path
    (``"params.extra.user"``) drops exactly that field.
    """
    out: dict[str, Any] = _canonical(request)
    for name in ignore:
        parts = name.split(".")
        if len(parts) == 1:
            out.pop(name, None)
            params = out.get("params")
            if isinstance(params, dict):
                params.pop(name, None)
            continue
        node: Any = out
        for part in parts[:-1]:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(parts[-1], None)
    return out


def request_key(request: Mapping[str, Any], ignore: Iterable[str] = ()) -> str:
    """The stable matching key of a normalised request: SHA-256 of its canonical JSON, less ``ignore``."""
    return hashlib.sha256(canonical_json(without(request, ignore)).encode()).hexdigest()


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _show_strings(recorded: str, wanted: str) -> str:
    at = next(
        (i for i, (a, b) in enumerate(zip(recorded, wanted, strict=False)) if a != b),
        min(len(recorded), len(wanted)),
    )
    start = max(0, at - 20)

    def window(text: str) -> str:
        part = text[start : at + 40]
        return ("..." if start else "") + repr(part) + ("..." if at + 40 < len(text) else "")

    return f"recorded {window(recorded)}, got {window(wanted)} (they differ from character {at})"


def differences(recorded: Any, wanted: Any, path: str = "") -> list[str]:
    """Human lines naming each field where two canonical requests differ, e.g.
    ``params.seed: recorded 1, got 2``.
    """
    where = path or "request"
    if isinstance(recorded, dict) and isinstance(wanted, dict):
        out: list[str] = []
        for key in [*recorded, *(k for k in wanted if k not in recorded)]:
            sub = f"{path}.{key}" if path else key
            if key not in recorded:
                out.append(f"{sub}: not in the recorded request, got {_show(wanted[key])}")
            elif key not in wanted:
                out.append(f"{sub}: recorded {_show(recorded[key])}, not in this request")
            else:
                out.extend(differences(recorded[key], wanted[key], sub))
        return out
    if isinstance(recorded, list) and isinstance(wanted, list):
        out = []
        for index, (a, b) in enumerate(zip(recorded, wanted, strict=False)):
            out.extend(differences(a, b, f"{path}[{index}]"))
        if len(recorded) != len(wanted):
            out.append(f"{where}: recorded {len(recorded)} items, got {len(wanted)}")
        return out
    if recorded == wanted:
        return []
    if isinstance(recorded, str) and isinstance(wanted, str):
        return [f"{where}: {_show_strings(recorded, wanted)}"]
    return [f"{where}: recorded {_show(recorded)}, got {_show(wanted)}"]


# -- files: atomic, locked, merged ------------------------------------------------------------------


def fingerprint(item: Any) -> str:
    """A digest of a whole recorded item, to recognise it in the file again."""
    return hashlib.sha256(canonical_json(item).encode()).hexdigest()


def atomic_write(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file renamed over it: readers and crashes see
    either the old file whole or the new one whole.
    """
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o644
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


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


# -- chat cassettes ---------------------------------------------------------------------------------

_FORMAT_KEY = "llmclient_cassette"
_FORMAT_VERSION = 1
_OUTCOMES = ("response", "stream", "error")


@dataclass(frozen=True)
class Interaction:
    """One recorded exchange: the normalised request and exactly one of ``response`` (a complete
    reply), ``stream`` (the deltas of a streamed reply) or ``error`` (a refused request).
    """

    request: dict[str, Any]
    response: dict[str, Any] | None = None
    stream: list[dict[str, Any]] | None = None
    error: dict[str, Any] | None = None
    recorded_at: str = ""
    llmclient_version: str = ""

    def to_dict(self) -> dict[str, Any]:
        """The entry as it is written to the file."""
        out: dict[str, Any] = {"request": self.request}
        for name in _OUTCOMES:
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        out["recorded_at"] = self.recorded_at
        out["llmclient_version"] = self.llmclient_version
        return out

    @classmethod
    def from_dict(cls, data: Any, where: str) -> Interaction:
        """Read one entry; ``where`` names it in the :class:`CassetteError` raised when it is malformed."""
        if not isinstance(data, Mapping):
            raise CassetteError(f"{where} must be a mapping with 'request' and a reply, got {_show(data)}")
        request = data.get("request")
        if not isinstance(request, Mapping) or not isinstance(request.get("messages"), list):
            raise CassetteError(f"{where}: 'request' must be a mapping with a 'messages' list")
        present = [name for name in _OUTCOMES if data.get(name) is not None]
        if len(present) != 1:
            raise CassetteError(
                f"{where} must hold exactly one of {', '.join(_OUTCOMES)}; it has {present or 'none'}"
            )
        outcome = data[present[0]]
        expected = list if present[0] == "stream" else Mapping
        if not isinstance(outcome, expected) or (
            present[0] == "stream" and not all(isinstance(d, Mapping) for d in outcome)
        ):
            raise CassetteError(f"{where}: '{present[0]}' is malformed: {_show(outcome)}")
        return cls(
            request=dict(request),
            response=dict(data["response"]) if present[0] == "response" else None,
            stream=[dict(d) for d in data["stream"]] if present[0] == "stream" else None,
            error=dict(data["error"]) if present[0] == "error" else None,
            recorded_at=str(data.get("recorded_at", "")),
            llmclient_version=str(data.get("llmclient_version", "")),
        )


def _read_chat(data: Any, path: Path) -> list[dict[str, Any]]:
    if isinstance(data, Mapping) and _FORMAT_KEY not in data and "interactions" in data:
        raise CassetteError(
            f"{path} is an HTTP-level (VCR) cassette, not a chat cassette: replay it with "
            f"llmclient.testing.http.CassetteTransport"
        )
    if not isinstance(data, Mapping) or data.get(_FORMAT_KEY) != _FORMAT_VERSION:
        raise CassetteError(
            f"{path} is not an llmclient cassette (it needs '{_FORMAT_KEY}: {_FORMAT_VERSION}')"
        )
    items = data.get("interactions")
    if items is None:
        return []
    if not isinstance(items, list):
        raise CassetteError(f"{path}: 'interactions' must be a list")
    return items


def _chat_document(items: list[dict[str, Any]]) -> dict[str, Any]:
    return {_FORMAT_KEY: _FORMAT_VERSION, "interactions": items}


class Cassette:
    """A chat cassette: recorded interactions, found by the key of their normalised request.

    Safe to share between threads and tasks. Nothing is written until :meth:`save`.

    Args:
        path: the YAML file; it need not exist yet.
        ignore: request fields left out of matching, e.g. ``("seed",)`` or ``("params.extra.user",)``.
        secrets: strings scrubbed from everything recorded, besides API-key-looking ones.
        allow_repeats: replay the last matching entry again once all matching entries have played.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        ignore: Iterable[str] = (),
        secrets: Iterable[str] = (),
        allow_repeats: bool = True,
    ) -> None:
        self.path = Path(path)
        self.ignore: tuple[str, ...] = tuple(ignore)
        self.allow_repeats = allow_repeats
        self.scrubber = Scrubber(secrets)
        self._file = CassetteFile(self.path, read=_read_chat, document=_chat_document)
        self.interactions: list[Interaction] = [
            Interaction.from_dict(item, f"{self.path} interaction {index}")
            for index, item in enumerate(self._file.items)
        ]
        self._loaded = len(self.interactions)
        self._dropped = 0  # interactions [0, _dropped) no longer count (record mode "all")
        self._plays = [0] * self._loaded
        self._index: dict[tuple[str, ...], tuple[int, dict[str, list[int]]]] = {}
        self._lock = threading.Lock()

    @property
    def existed(self) -> bool:
        """Whether the file existed when the cassette was loaded."""
        return self._file.existed

    def __len__(self) -> int:
        return len(self.interactions) - self._dropped

    def _keys(self, ignore: tuple[str, ...]) -> dict[str, list[int]]:
        """Key -> positions of the live interactions, for this set of ignored fields (built as needed)."""
        done, keys = self._index.get(ignore, (self._dropped, {}))
        for position in range(max(done, self._dropped), len(self.interactions)):
            keys.setdefault(request_key(self.interactions[position].request, ignore), []).append(position)
        self._index[ignore] = (len(self.interactions), keys)
        return keys

    def find(self, request: Mapping[str, Any], *, also_ignore: Iterable[str] = ()) -> Interaction | None:
        """The next recorded interaction for ``request``, marked as played; ``None`` if there is none."""
        ignore = (*self.ignore, *also_ignore)
        key = request_key(self.scrubber.value(request), ignore)
        with self._lock:
            positions = self._keys(ignore).get(key, [])
            chosen = next((p for p in positions if self._plays[p] == 0), None)
            if chosen is None and positions and self.allow_repeats:
                chosen = positions[-1]
            if chosen is None:
                return None
            self._plays[chosen] += 1
            return self.interactions[chosen]

    def record(self, interaction: Interaction) -> Interaction:
        """Add ``interaction`` (scrubbed) for replay and for the next :meth:`save`; returns what was kept."""
        scrubbed = Interaction.from_dict(self.scrubber.value(interaction.to_dict()), "recorded interaction")
        with self._lock:
            self.interactions.append(scrubbed)
            self._plays.append(1)  # it answered the request that recorded it
            self._file.add(scrubbed.to_dict())
        return scrubbed

    def start_over(self) -> None:
        """Forget what the file held: it is neither replayed nor kept when the cassette is saved."""
        with self._lock:
            if self._dropped < self._loaded:
                self._dropped = self._loaded
                self._index.clear()
                self._file.start_over()

    def unused(self) -> list[Interaction]:
        """The interactions loaded from the file that no request has replayed."""
        with self._lock:
            return [self.interactions[p] for p in range(self._dropped, self._loaded) if self._plays[p] == 0]

    def miss_error(
        self, request: Mapping[str, Any], *, also_ignore: Iterable[str] = (), hint: str = ""
    ) -> CassetteError:
        """The error for a request with no recorded reply: the closest recorded request, and how."""
        ignore = (*self.ignore, *also_ignore)
        wanted = without(self.scrubber.value(request), ignore)
        lines = [f"no recorded reply in cassette {self.path} for this request:", *_summary(wanted)]
        with self._lock:
            live = list(enumerate(self.interactions))[self._dropped :]
        if not live:
            lines.append(
                "The cassette holds no interactions"
                + ("." if self.existed else " (the file does not exist).")
            )
        else:
            scored = [(len(differences(without(i.request, ignore), wanted)), p) for p, i in live]
            _, best = min(scored)
            diffs = differences(without(self.interactions[best].request, ignore), wanted)
            lines.append(
                f"The closest recorded request (interaction {best} of {len(self.interactions)}) differs in:"
            )
            lines.extend(f"  {line}" for line in diffs[:12])
            if len(diffs) > 12:
                lines.append(f"  ... and {len(diffs) - 12} more")
            if ignore:
                lines.append(f"(ignoring {', '.join(ignore)})")
        if hint:
            lines.append(hint)
        return CassetteError("\n".join(lines))

    def save(self) -> None:
        """Write what was recorded (merged with the file as it is now); nothing if nothing changed."""
        self._file.save()


def _summary(request: Mapping[str, Any]) -> list[str]:
    head = ", ".join(f"{k}: {request[k]}" for k in ("backend", "model", "stream") if k in request)
    lines = [f"  {head}"] if head else []
    messages = request.get("messages") or []
    if messages and isinstance(messages[-1], Mapping):
        last = messages[-1]
        lines.append(f"  last of {len(messages)} messages ({last.get('role')}): {_show(last.get('content'))}")
    if request.get("params"):
        lines.append(f"  params: {_show(request['params'])}")
    return lines
