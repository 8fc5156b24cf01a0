"""Record and replay raw HTTP exchanges in VCR.py's cassette format, at the httpx2 transport seam.

:class:`CassetteTransport` is one object that serves both sync and async requests, so it plugs into
:class:`~llmclient.backends.openai_compat.OpenAICompatibleBackend` as ``transport=``, into an
``httpx2.Client``/``httpx2.AsyncClient``, or into the openai SDK's ``http_client``. Cassettes that
VCR.py (or pytest-recording, or vcrpy-based suites) recorded replay through it unchanged, and what it
records, VCR.py can read::

    interactions:
    - request:
        body: '{"model":"gpt-4o-mini","messages":[...]}'
        headers:
          authorization:
          - '**scrubbed**'
        method: POST
        uri: https://api.openai.com/v1/chat/completions
      response:
        body:
          string: '{"id":"chatcmpl-...","choices":[...]}'
        headers:
          content-type:
          - application/json
        status:
          code: 200
          message: OK
    version: 1

Requests match as VCR.py matches them by default (method, scheme, host, port, path and query), each
recorded interaction playing once, in order; with ``allow_playback_repeats`` the last matching one
then repeats (the one repeat rule of :mod:`llmclient.testing.cassettes.index`, which chat cassettes
follow too; VCR.py itself repeats the first). Compressed replies are recorded decoded (as VCR.py's
``decode_compressed_response``), so bodies stay readable. Before anything is written, the values of
credential headers (``Authorization``, ``api-key``, cookies, any name made of a credential word) and
credential query parameters (``?api-key=``, ``?key=``, ...), a URL's password and API-key-looking
strings are scrubbed; each credential sent is scrubbed wherever else it appears, as are the
``secrets`` given and those a backend registers with :meth:`CassetteTransport.add_secrets`. Large
``data:`` URLs in request bodies (images) are kept in blob files beside the cassette, the body holding
a reference by content hash (:mod:`llmclient.testing.cassettes.blobs`), and requests match after the
same replacement.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2

from llmclient.errors import CassetteError, ConfigError
from llmclient.testing.cassettes.blobs import BlobStore
from llmclient.testing.cassettes.exchanges import (
    as_bytes,
    exchanges_document,
    header_lists,
    read_exchanges,
    request_view,
    text_or_bytes,
)
from llmclient.testing.cassettes.files import CassetteFile
from llmclient.testing.cassettes.index import ReplayIndex, miss_report
from llmclient.testing.cassettes.matching import canonical_json, differences
from llmclient.testing.cassettes.modes import RecordMode, check_mode, may_record, record_hint
from llmclient.testing.cassettes.scrubbing import SCRUBBED, Scrubber, is_secret_header

MATCHERS = ("method", "scheme", "host", "port", "path", "query", "uri", "body")
"""Request properties a cassette can match on (VCR.py's names)."""

DEFAULT_MATCH_ON = ("method", "scheme", "host", "port", "path", "query")
"""VCR.py's default matching."""

_RECOMPUTED_HEADERS = frozenset({"content-length", "transfer-encoding"})


@dataclass(frozen=True)
class _Exchange:
    """One recorded exchange as the file holds it, and its request's value for every matcher."""

    item: dict[str, Any]
    view: dict[str, Any]


class CassetteTransport(httpx2.BaseTransport, httpx2.AsyncBaseTransport):
    """An httpx2 transport, sync and async, that replays HTTP exchanges from a VCR-format cassette and
    records new ones, as the record ``mode`` says (:data:`~llmclient.testing.cassettes.modes.RecordMode`).

    Args:
        path: the cassette file (YAML); it need not exist yet.
        mode: ``none`` (the default) replays only; a request with no recorded exchange raises
            :class:`~llmclient.errors.CassetteError` naming the closest one and what differs.
        match_on: which request properties must agree (:data:`MATCHERS`); VCR.py's default.
        allow_playback_repeats: replay the last matching exchange again once every matching one has
            played.
        transport: the sync transport that records reach (default: an ``httpx2.HTTPTransport`` the
            cassette builds and closes). A transport passed in stays yours to close.
        async_transport: the async one (default: an ``httpx2.AsyncHTTPTransport`` per recorded
            request: recording is rare, and nothing is left open to close from sync code).
        secret_headers: more header names whose values are scrubbed.
        secrets: strings scrubbed wherever they appear, besides API-key-looking ones (a backend's
            credentials; see :meth:`add_secrets`). Those shorter than 8 characters are left alone.

    The cassette is saved when the transport is closed (an httpx2 client or the backend closes it),
    or by :meth:`save`.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        mode: RecordMode = "none",
        match_on: Sequence[str] = DEFAULT_MATCH_ON,
        allow_playback_repeats: bool = False,
        transport: httpx2.BaseTransport | None = None,
        async_transport: httpx2.AsyncBaseTransport | None = None,
        secret_headers: Iterable[str] = (),
        secrets: Iterable[str] = (),
    ) -> None:
        unknown = [m for m in match_on if m not in MATCHERS]
        if unknown or not match_on:
            raise ConfigError(f"match_on {list(match_on)!r}: use a non-empty list of {', '.join(MATCHERS)}")
        self.path = Path(path)
        self.mode = check_mode(mode)
        self.match_on = tuple(match_on)
        self._secret_headers = frozenset(h.lower() for h in secret_headers)
        self._scrubber = Scrubber(secrets)
        self.blobs = BlobStore(self.path)
        """The blob files large data URLs in request bodies (images) are kept in, beside the YAML."""
        self._file = CassetteFile(self.path, read=read_exchanges, document=exchanges_document)
        self._index: ReplayIndex[_Exchange] = ReplayIndex(
            (_Exchange(item, self._recorded_view(item)) for item in self._file.items),
            repeats=allow_playback_repeats,
        )
        if self.mode == "all":
            self._file.start_over()
            self._index.drop_loaded()
        self._lock = threading.Lock()
        self._transport = transport
        self._async_transport = async_transport
        self._owned: httpx2.HTTPTransport | None = None

    # -- matching ---------------------------------------------------------------------------------

    def _recorded_view(self, item: Mapping[str, Any]) -> dict[str, Any]:
        request = item["request"]
        return request_view(
            request["method"],
            self._scrubber.uri(request["uri"]),
            as_bytes(self._scrubber.value(self.blobs.refer(request.get("body")))),
        )

    def _live_view(self, request: httpx2.Request, body: bytes) -> dict[str, Any]:
        self._learn(request.headers.raw)
        text = text_or_bytes(body)
        scrubbed = (
            self._scrubber.text(self.blobs.refer_text(text)).encode("utf-8")
            if isinstance(text, str)
            else text
        )
        return request_view(request.method, self._scrubber.uri(str(request.url)), scrubbed)

    def add_secrets(self, secrets: Iterable[str]) -> None:
        """Scrub ``secrets`` from everything recorded from now on, wherever they appear and whatever
        their shape (those shorter than 8 characters excepted).

        A backend given this transport registers its credentials here
        (:attr:`~llmclient.backend.ChatBackend.credentials`): keys sent in a header of any name, in a
        query parameter, or echoed by the server in an error message.
        """
        self._scrubber.learn_all(secrets)

    def _learn(self, headers: Iterable[tuple[bytes, bytes]]) -> None:
        """Take the secrets in secret headers, so they are scrubbed wherever else they appear."""
        for name, value in headers:
            if is_secret_header(name.decode("latin-1"), self._secret_headers):
                text = value.decode("latin-1")
                self._scrubber.learn(text)
                self._scrubber.learn(text.partition(" ")[2])  # the token of "Bearer <token>"

    def _key(self, view: Mapping[str, Any]) -> str:
        """What two requests must share to match: their values for every matcher of ``match_on``."""
        return canonical_json([view[m] for m in self.match_on])

    def _key_of(self, exchange: _Exchange) -> str:
        return self._key(exchange.view)

    def _find(self, wanted: Mapping[str, Any]) -> dict[str, Any] | None:
        if self.mode == "all":
            return None
        found = self._index.find(self._key(wanted), self._key_of)
        return None if found is None else found.item

    def _miss(self, wanted: Mapping[str, Any]) -> CassetteError:
        def diff(exchange: _Exchange) -> list[str]:
            return [d for m in self.match_on for d in differences(exchange.view[m], wanted[m], m)]

        closest = self._index.closest(
            self._key(wanted),
            self._key_of,
            lambda exchange: sum(exchange.view[m] != wanted[m] for m in self.match_on),
        )
        return CassetteError(
            miss_report(
                [
                    f"no recorded HTTP exchange in cassette {self.path} for {wanted['method']} "
                    f"{wanted['uri']} (matching on {', '.join(self.match_on)})"
                ],
                closest,
                noun="exchange",
                total=len(self._index.entries),
                file_state=self._file.state,
                differences=diff,
                repeats_option="allow_playback_repeats=True",
                tail=[record_hint(self.mode, self._file.existed)],
            )
        )

    # -- replaying and recording --------------------------------------------------------------------

    def _replay(self, item: Mapping[str, Any], request: httpx2.Request) -> httpx2.Response:
        recorded = item["response"]
        body = recorded["body"].get("string")
        headers = [
            (name, value)
            for name, values in (recorded.get("headers") or {}).items()
            for value in (values if isinstance(values, list) else [values])
            # the length is recomputed; a body stored as text was stored decoded
            if name.lower() not in _RECOMPUTED_HEADERS
            and not (name.lower() == "content-encoding" and isinstance(body, str))
        ]
        status = recorded["status"]
        extensions: dict[str, Any] = {"http_version": b"HTTP/1.1"}
        if status.get("message"):
            extensions["reason_phrase"] = str(status["message"]).encode("ascii", "replace")
        return httpx2.Response(
            int(status["code"]),
            headers=headers,
            content=as_bytes(body),
            request=request,
            extensions=extensions,
        )

    def _recorder_allowed(self, wanted: Mapping[str, Any]) -> None:
        if not may_record(self.mode, self._file.existed):
            raise self._miss(wanted)

    def _scrubbed_headers(self, raw: Iterable[tuple[bytes, bytes]]) -> dict[str, list[str]]:
        return {
            name: [
                SCRUBBED if is_secret_header(name, self._secret_headers) else self._scrubber.text(v)
                for v in values
            ]
            for name, values in header_lists(raw).items()
        }

    def _record(self, request: httpx2.Request, body: bytes, response: httpx2.Response) -> httpx2.Response:
        """Keep the exchange (scrubbed) and return the response, decoded, for the caller to read."""
        content = response.content
        headers = [
            (name, str(len(content)).encode() if name.lower() == b"content-length" else value)
            for name, value in response.headers.raw
            if name.lower() != b"content-encoding"  # the body is kept decoded
        ]
        request_body = self.blobs.refer(text_or_bytes(body), keep=True)
        response_body = text_or_bytes(content)
        item: dict[str, Any] = {
            "request": {
                "body": self._scrubber.value(request_body) if request_body else None,
                "headers": self._scrubbed_headers(request.headers.raw),
                "method": request.method,
                "uri": self._scrubber.uri(str(request.url)),
            },
            "response": {
                "body": {"string": self._scrubber.value(response_body)},
                "headers": self._scrubbed_headers(headers),
                "status": {"code": response.status_code, "message": response.reason_phrase},
            },
        }
        self._index.add(_Exchange(item, self._recorded_view(item)))
        self._file.add(item)
        return httpx2.Response(
            response.status_code,
            headers=headers,
            content=content,
            request=request,
            extensions={"http_version": b"HTTP/1.1", "reason_phrase": response.reason_phrase.encode()},
        )

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        """Replay the recorded response to ``request``, or record one from the real server."""
        body = request.read()
        wanted = self._live_view(request, body)
        found = self._find(wanted)
        if found is not None:
            return self._replay(found, request)
        self._recorder_allowed(wanted)
        with self._lock:
            if self._transport is None:
                self._owned = self._transport = httpx2.HTTPTransport()
            transport = self._transport
        response = transport.handle_request(request)
        try:
            response.read()
        finally:
            response.close()
        return self._record(request, body, response)

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        """Async :meth:`handle_request`."""
        body = await request.aread()
        wanted = self._live_view(request, body)
        found = self._find(wanted)
        if found is not None:
            return self._replay(found, request)
        self._recorder_allowed(wanted)
        if self._async_transport is not None:
            response = await self._async_transport.handle_async_request(request)
            return self._record(request, body, await _read(response))
        # A transport per recorded request: nothing async is left to close from sync code later.
        transport = httpx2.AsyncHTTPTransport()
        try:
            response = await transport.handle_async_request(request)
            return self._record(request, body, await _read(response))
        finally:
            await transport.aclose()

    # -- the rest ---------------------------------------------------------------------------------

    def unused(self) -> list[dict[str, Any]]:
        """The interactions loaded from the file that no request has replayed."""
        return [exchange.item for exchange in self._index.unused()]

    def save(self) -> None:
        """Write what was recorded (merged with the file as it is now), its blob files first; nothing if
        nothing changed.
        """
        self.blobs.save()
        self._file.save()

    def close(self) -> None:
        """Save the cassette and close the transport the cassette built."""
        try:
            self.save()
        finally:
            if self._owned is not None:
                self._owned.close()

    async def aclose(self) -> None:
        """Async :meth:`close`."""
        self.close()


async def _read(response: httpx2.Response) -> httpx2.Response:
    """``response`` with its body read and its connection released."""
    try:
        await response.aread()
    finally:
        await response.aclose()
    return response
