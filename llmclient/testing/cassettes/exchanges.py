"""The VCR.py cassette format: reading and checking its document, and the request properties that
:class:`~llmclient.testing.cassettes.vcr.CassetteTransport` matches on.

An interaction needs ``request.method``, ``request.uri``, ``response.status.code`` and
``response.body``; bodies are text when they are UTF-8 and bytes (``!!binary``) otherwise, and
headers map each name to the list of its values, as VCR.py writes them.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import httpx2

from llmclient.errors import CassetteError

_DEFAULT_PORTS = {"http": 80, "https": 443}


def read_exchanges(data: Any, path: Path) -> list[dict[str, Any]]:
    """The interactions of a parsed VCR cassette ``data`` read from ``path``; a :class:`CassetteError`
    naming the file, the interaction and what is wrong when one cannot replay.
    """
    if isinstance(data, Mapping) and "llmclient_cassette" in data:
        raise CassetteError(
            f"{path} is a chat cassette, not an HTTP-level (VCR) one: replay it with "
            f"llmclient.testing.ReplayBackend"
        )
    items = data.get("interactions") if isinstance(data, Mapping) else None
    if not isinstance(items, list):
        raise CassetteError(f"{path} is not a VCR cassette: it has no 'interactions' list")
    for index, item in enumerate(items):
        wrong = _what_is_wrong(item)
        if wrong:
            raise CassetteError(f"{path} interaction {index} is malformed: {'; '.join(wrong)}")
    return items


def _what_is_wrong(item: Any) -> list[str]:
    """What an interaction of a VCR cassette lacks for replay, in words; empty when it is sound."""
    if not isinstance(item, Mapping):
        return [f"it must be a mapping with 'request' and 'response', got {type(item).__name__}"]
    request, response = item.get("request"), item.get("response")
    wrong = [
        f"'{name}' must be a mapping"
        for name in ("request", "response")
        if not isinstance(item.get(name), Mapping)
    ]
    if isinstance(request, Mapping):
        wrong += [
            f"request.{key} must be a string"
            for key in ("method", "uri")
            if not isinstance(request.get(key), str)
        ]
    if isinstance(response, Mapping):
        status = response.get("status")
        code = status.get("code") if isinstance(status, Mapping) else None
        if not isinstance(code, int) or isinstance(code, bool):
            wrong.append(f"response.status.code must be a number, got {code!r}")
        if not isinstance(response.get("body"), Mapping):
            wrong.append("response.body must be a mapping (with 'string')")
    return wrong


def exchanges_document(items: list[dict[str, Any]]) -> dict[str, Any]:
    """The document a VCR cassette file holds, for its interactions ``items``."""
    return {"interactions": items, "version": 1}


def text_or_bytes(body: bytes) -> str | bytes:
    """A body as VCR.py stores it: text when it is UTF-8, else bytes (written as ``!!binary``)."""
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        return body


def as_bytes(body: Any) -> bytes:
    """A recorded body as the bytes sent or received."""
    if body is None:
        return b""
    return body if isinstance(body, bytes) else str(body).encode("utf-8")


def header_lists(raw: Iterable[tuple[bytes, bytes]]) -> dict[str, list[str]]:
    """Raw headers as VCR.py writes them: each name with the list of its values."""
    out: dict[str, list[str]] = {}
    for name, value in raw:
        out.setdefault(name.decode("latin-1"), []).append(value.decode("latin-1"))
    return out


def _body_key(body: bytes) -> Any:
    """What the ``body`` matcher compares: parsed JSON (so key order and spacing do not matter), or text."""
    try:
        return json.loads(body)
    except ValueError:
        return body.decode("utf-8", "replace")


def request_view(method: str, uri: str, body: bytes) -> dict[str, Any]:
    """A request's value for every matcher."""
    url = httpx2.URL(uri)
    return {
        "method": method.upper(),
        "scheme": url.scheme,
        "host": url.host,
        "port": url.port or _DEFAULT_PORTS.get(url.scheme),
        "path": url.path,
        "query": sorted(url.params.multi_items()),
        "uri": uri,
        "body": _body_key(body),
    }
