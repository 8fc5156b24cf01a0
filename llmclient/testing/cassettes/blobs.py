"""Large ``data:`` URLs kept out of a cassette's YAML: stored once beside it, named by content hash.

A recorded image test sends the image as a base64 ``data:`` URL in every request; written inline, a
cassette would hold megabytes of base64, once per interaction. Both cassette levels (chat and VCR)
replace each ``data:`` URL of at least :data:`BLOB_MIN_CHARS` characters in a recorded request by a
reference, ``blob:<sha256>.<ext>``, where ``<sha256>`` is the SHA-256 of the decoded bytes, and store
those bytes once in ``<cassette>.blobs/<sha256>.<ext>`` (a plain file: an image opens as one)::

    content:
    - type: image_url
      image_url:
        url: blob:9f2c...e1.png
        detail: auto

Requests are matched after the same replacement, so a replay matches on the hash of the image sent
(a changed image is a miss, and the miss report shows the two hashes), without reading the blob
files. Cassettes recorded before blobs existed, with data URLs inline, still load and match: their
URLs are replaced in memory the same way.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from llmclient.testing.cassettes.files import atomic_write_bytes

BLOB_MIN_CHARS = 4096
"""The shortest ``data:`` URL moved out of the YAML into a blob file (4 KiB): smaller ones stay inline."""

BLOB_PREFIX = "blob:"
"""How a reference to a blob file starts, in place of the ``data:`` URL it stands for."""

_DATA_URL = re.compile(r"data:([A-Za-z0-9.+-]+/[A-Za-z0-9.+-]+)((?:;[A-Za-z0-9.+-]+=[^;,\"\\\s]*)*);base64,")
_BASE64_RUN = re.compile(r"[A-Za-z0-9+/]*={0,2}")
_REFERENCE = re.compile(r"blob:([0-9a-f]{64})\.([a-z0-9]+)")

_EXTENSIONS: dict[str, str] = {
    "image/png": "png",
    "image/jpeg": "jpg",
    "image/gif": "gif",
    "image/webp": "webp",
    "image/bmp": "bmp",
    "image/tiff": "tiff",
    "image/avif": "avif",
    "image/heic": "heic",
    "application/pdf": "pdf",
    "audio/wav": "wav",
    "audio/mpeg": "mp3",
}
"""File extensions of blob files by MIME type (a fixed table, so references are the same on every
machine); other types are stored as ``.bin``."""


def blobs_folder(cassette: Path) -> Path:
    """Where the blobs of ``cassette`` live: ``<cassette>.blobs/`` beside it."""
    return cassette.with_name(cassette.name + ".blobs")


class BlobStore:
    """The blob files of one cassette: references made from data URLs, and the files to write.

    :meth:`refer` replaces large data URLs by references; with ``keep=True`` (a request being
    recorded) it also queues their bytes, written by :meth:`save` before the cassette's YAML so the
    YAML never names a missing file. Safe to share between threads.
    """

    def __init__(self, cassette: Path) -> None:
        self.folder = blobs_folder(cassette)
        self._pending: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def refer(self, value: Any, *, keep: bool = False) -> Any:
        """A copy of a JSON-shaped ``value`` (or text) with every large data URL replaced by a reference."""
        if isinstance(value, str):
            return self.refer_text(value, keep=keep) if "data:" in value else value
        if isinstance(value, Mapping):
            return {k: self.refer(v, keep=keep) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self.refer(v, keep=keep) for v in value]
        return value

    def refer_text(self, text: str, *, keep: bool = False) -> str:
        """``text`` (a string value, or a whole JSON body) with its large data URLs replaced by references."""
        pieces: list[str] = []
        position = 0
        for head in _DATA_URL.finditer(text):
            if head.start() < position:
                continue
            run = _BASE64_RUN.match(text, head.end())
            end = run.end() if run else head.end()
            if end - head.start() < BLOB_MIN_CHARS:
                continue
            reference = self._reference(head.group(1).lower(), text[head.end() : end], keep)
            if reference is None:
                continue
            pieces += [text[position : head.start()], reference]
            position = end
        return "".join(pieces) + text[position:] if pieces else text

    def _reference(self, mime: str, payload: str, keep: bool) -> str | None:
        """The reference for one data URL's base64 ``payload``, queueing its bytes where ``keep``."""
        try:
            data = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            return None  # not valid base64: left inline, exactly as it was sent
        name = f"{hashlib.sha256(data).hexdigest()}.{_EXTENSIONS.get(mime, 'bin')}"
        if keep:
            with self._lock:
                self._pending[name] = data
        return BLOB_PREFIX + name

    def save(self) -> None:
        """Write the queued blob files that are not on disk yet (each whole, through a renamed temporary)."""
        with self._lock:
            pending, self._pending = self._pending, {}
        for name, data in pending.items():
            path = self.folder / name
            if not path.exists():
                self.folder.mkdir(parents=True, exist_ok=True)
                atomic_write_bytes(path, data)


def references(value: Any) -> list[str]:
    """The blob file names a recorded value (or text) refers to, in order of appearance."""
    if isinstance(value, str):
        return [f"{m.group(1)}.{m.group(2)}" for m in _REFERENCE.finditer(value)]
    if isinstance(value, Mapping):
        return [name for v in value.values() for name in references(v)]
    if isinstance(value, (list, tuple)):
        return [name for v in value for name in references(v)]
    return []
