"""Record a backend's replies once, replay them forever: ``RecordingBackend``, ``ReplayBackend``, and
:func:`cassette`, which puts a backend behind a cassette file in one call.

Both backends are :class:`~llmclient.backend.ChatBackend` s, so a pipeline runs on them unchanged:
``chat``, ``achat``, ``stream``, ``astream``, ``chat_many`` and ``achat_many`` all replay. Replay needs
no model, no network and no key, and imports neither torch, transformers nor an HTTP stack.

A replayed :class:`~llmclient.types.ChatResponse` equals the one recorded in every field but
``latency`` (the time the replay took). A replayed stream yields the recorded deltas. Requests the
inner backend refused (:class:`~llmclient.errors.InvalidRequestError` and its subclasses: a prompt over
the context window, a bad parameter) are recorded and raised again on replay; other failures (rate
limits, outages) are never recorded. A stream closed before its end is not recorded.
"""

from __future__ import annotations

import datetime
import os
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import replace
from typing import Any

from llmclient import __version__
from llmclient.backend import ChatBackend
from llmclient.errors import CassetteError, ConfigError, InvalidRequestError, LLMClientError
from llmclient.stream import StreamAccumulator
from llmclient.testing.chat_cassette import Cassette
from llmclient.testing.chat_format import (
    Interaction,
    deltas_from_dicts,
    deltas_to_dicts,
    error_from_dict,
    error_to_dict,
    normalise_request,
    response_from_dict,
    response_to_dict,
)
from llmclient.testing.real_backends import building_real_backend
from llmclient.testing.record_modes import RecordMode, check_mode, may_record, record_hint
from llmclient.types import ChatRequest, ChatResponse, GenerationParams, StreamDelta

BackendSource = ChatBackend | Callable[[], ChatBackend]
"""A backend, or a function that builds one: called only when a reply must be recorded, so replay
never loads the model."""

CassetteLike = Cassette | str | os.PathLike[str]
"""A :class:`Cassette`, or the path of its file."""


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _only(values: Iterable[Any]) -> str | None:
    """The one distinct non-empty string among ``values``, or ``None``."""
    found = {v for v in values if isinstance(v, str) and v}
    return found.pop() if len(found) == 1 else None


# -- replay ------------------------------------------------------------------------------------------


class ReplayBackend(ChatBackend):
    """Answers from a cassette only: no model, no network. A request with no recorded reply raises
    :class:`~llmclient.errors.CassetteError` showing the closest recorded request and what differs.

    ``backend_type`` and ``model`` are part of each request's key; left ``None`` they match whatever
    was recorded. ``name`` defaults to the backend name the replies were recorded under, so replayed
    replies carry it as recorded.
    """

    type_name = "replay"

    def __init__(
        self,
        cassette: CassetteLike,
        *,
        backend_type: str | None = None,
        model: str | None = None,
        name: str | None = None,
        defaults: GenerationParams | None = None,
    ) -> None:
        self.cassette = cassette if isinstance(cassette, Cassette) else Cassette(cassette)
        self.backend_type = backend_type
        self._model_key = model
        self._wildcards = tuple(k for k, v in (("backend", backend_type), ("model", model)) if v is None)
        recorded = self.cassette.interactions
        super().__init__(
            model=model or _only(i.request.get("model") for i in recorded) or "",
            name=name or _only((i.response or {}).get("backend") for i in recorded) or self.type_name,
            defaults=defaults,
        )

    def _find(self, request: ChatRequest, *, stream: bool) -> tuple[dict[str, Any], Interaction | None]:
        """The normalised request, and its recorded interaction where one replays."""
        wanted = normalise_request(request, backend=self.backend_type, model=self._model_key, stream=stream)
        if not self._replays():
            return wanted, None
        return wanted, self.cassette.find(wanted, also_ignore=self._wildcards)

    def _replays(self) -> bool:
        return True

    def _miss(self, wanted: Mapping[str, Any], mode: RecordMode = "none") -> CassetteError:
        return self.cassette.miss_error(
            wanted, also_ignore=self._wildcards, hint=record_hint(mode, self.cassette.existed)
        )

    def _reply_of(self, found: Interaction) -> ChatResponse:
        """The recorded reply; a recorded stream is joined by the usual stream rules."""
        if found.error is not None:
            raise error_from_dict(found.error)
        if found.response is not None:
            return response_from_dict(found.response)
        joined = StreamAccumulator(model=self.model, backend=self.name)
        for delta in self._deltas_of(found):
            joined.add(delta)
        return replace(joined.response(), latency=0.0)

    def _deltas_of(self, found: Interaction) -> list[StreamDelta]:
        """The recorded deltas; a recorded complete reply is one delta, as a backend without streaming."""
        if found.error is not None:
            raise error_from_dict(found.error)
        if found.stream is not None:
            return deltas_from_dicts(found.stream)
        return [self._reply_of(found).as_delta()]

    def _chat(self, request: ChatRequest) -> ChatResponse:
        wanted, found = self._find(request, stream=False)
        if found is None:
            raise self._miss(wanted)
        return self._reply_of(found)

    async def _achat(self, request: ChatRequest) -> ChatResponse:
        return self._chat(request)  # no I/O: no worker thread

    def _stream(self, request: ChatRequest) -> Iterator[StreamDelta]:
        wanted, found = self._find(request, stream=True)
        if found is None:
            raise self._miss(wanted)
        yield from self._deltas_of(found)

    async def _astream(self, request: ChatRequest) -> AsyncIterator[StreamDelta]:
        for delta in self._stream(request):
            yield delta


# -- recording ---------------------------------------------------------------------------------------


class RecordingBackend(ReplayBackend):
    """Wraps a real backend: replays what the cassette holds and records what it does not, as the
    record ``mode`` says (:data:`~llmclient.testing.record_modes.RecordMode`; default ``new_episodes``).

    ``inner`` is a backend or a function that builds one; a function is called only when a reply must
    be recorded, so a replay that finds everything never loads the model. The key's backend type,
    model, the name and the defaults come from ``inner`` when it is a backend; pass them for a
    function, or the key matches whatever backend type and model were recorded. Closing this backend
    saves the cassette and closes the inner backend.
    """

    type_name = "recording"

    def __init__(
        self,
        inner: BackendSource,
        cassette: CassetteLike,
        *,
        mode: RecordMode = "new_episodes",
        backend_type: str | None = None,
        model: str | None = None,
        name: str | None = None,
        defaults: GenerationParams | None = None,
    ) -> None:
        self.mode = check_mode(mode)
        if isinstance(inner, ChatBackend):
            backend_type = backend_type or inner.type_name
            model = model or inner.model
            name = name or inner.name
            defaults = defaults or inner.defaults
            self._inner: ChatBackend | None = inner
        else:
            self._inner = None
        self._factory = inner
        self._build_lock = threading.Lock()
        super().__init__(cassette, backend_type=backend_type, model=model, name=name, defaults=defaults)
        if self.mode == "all":
            self.cassette.start_over()

    def _replays(self) -> bool:
        return self.mode != "all"

    def _recorder(self, wanted: Mapping[str, Any]) -> ChatBackend:
        """The inner backend to record with (built on first use), or the miss error if the mode
        does not record.
        """
        if not may_record(self.mode, self.cassette.existed):
            raise self._miss(wanted, self.mode)
        with self._build_lock:
            if self._inner is None:
                with building_real_backend():
                    self._inner = self._factory() if callable(self._factory) else self._factory
            return self._inner

    def _for(self, inner: ChatBackend, request: ChatRequest) -> ChatRequest:
        """``request`` as the inner backend expects it: with its own defaults under the call's values."""
        return replace(request, params=inner.defaults.merged(request.params))

    def _record(
        self,
        request: ChatRequest,
        inner: ChatBackend,
        *,
        stream: bool,
        reply: ChatResponse | None = None,
        deltas: Sequence[StreamDelta] | None = None,
        error: InvalidRequestError | None = None,
    ) -> None:
        self.cassette.record(
            Interaction(
                request=normalise_request(
                    request,
                    backend=self.backend_type or inner.type_name,
                    model=self._model_key or inner.model,
                    stream=stream,
                ),
                response=None if reply is None else response_to_dict(replace(reply, backend=self.name)),
                stream=None if deltas is None else deltas_to_dicts(deltas),
                error=None if error is None else error_to_dict(error),
                recorded_at=_now(),
                llmclient_version=__version__,
            )
        )

    def _chat(self, request: ChatRequest) -> ChatResponse:
        wanted, found = self._find(request, stream=False)
        if found is not None:
            return self._reply_of(found)
        inner = self._recorder(wanted)
        try:
            reply = inner._chat(self._for(inner, request))
        except InvalidRequestError as exc:
            self._record(request, inner, stream=False, error=exc)
            raise
        self._record(request, inner, stream=False, reply=reply)
        return reply

    async def _achat(self, request: ChatRequest) -> ChatResponse:
        wanted, found = self._find(request, stream=False)
        if found is not None:
            return self._reply_of(found)
        inner = self._recorder(wanted)
        try:
            reply = await inner._achat(self._for(inner, request))
        except InvalidRequestError as exc:
            self._record(request, inner, stream=False, error=exc)
            raise
        self._record(request, inner, stream=False, reply=reply)
        return reply

    def _stream(self, request: ChatRequest) -> Iterator[StreamDelta]:
        wanted, found = self._find(request, stream=True)
        if found is not None:
            yield from self._deltas_of(found)
            return
        inner = self._recorder(wanted)
        source = inner._stream(self._for(inner, request))
        deltas: list[StreamDelta] = []
        try:
            for delta in source:
                deltas.append(delta)
                yield delta
        except InvalidRequestError as exc:
            if not deltas:
                self._record(request, inner, stream=True, error=exc)
            raise
        finally:  # also on an early close: the inner stream stops, and nothing is recorded
            close = getattr(source, "close", None)
            if close is not None:
                close()
        self._record(request, inner, stream=True, deltas=deltas)

    async def _astream(self, request: ChatRequest) -> AsyncIterator[StreamDelta]:
        wanted, found = self._find(request, stream=True)
        if found is not None:
            for delta in self._deltas_of(found):
                yield delta
            return
        inner = self._recorder(wanted)
        source = inner._astream(self._for(inner, request))
        deltas: list[StreamDelta] = []
        try:
            async for delta in source:
                deltas.append(delta)
                yield delta
        except InvalidRequestError as exc:
            if not deltas:
                self._record(request, inner, stream=True, error=exc)
            raise
        finally:
            aclose = getattr(source, "aclose", None)
            if aclose is not None:
                await aclose()
        self._record(request, inner, stream=True, deltas=deltas)

    async def _achat_many(
        self, requests: Sequence[ChatRequest], concurrency: int
    ) -> list[ChatResponse | LLMClientError]:
        """Replays what is recorded, then sends all the rest to the inner backend's own batch call
        (a local model batches them), recording each reply.
        """
        results: list[ChatResponse | LLMClientError | None] = [None] * len(requests)
        misses: list[tuple[int, dict[str, Any]]] = []
        for position, request in enumerate(requests):
            started = time.perf_counter()
            wanted, found = self._find(request, stream=False)
            if found is None:
                misses.append((position, wanted))
                continue
            try:
                results[position] = self._finish(self._reply_of(found), started)
            except InvalidRequestError as exc:
                results[position] = exc
        if misses and not may_record(self.mode, self.cassette.existed):
            for position, wanted in misses:
                results[position] = self._miss(wanted, self.mode)
        elif misses:
            inner = self._recorder(misses[0][1])
            sent = [self._for(inner, requests[position]) for position, _ in misses]
            answers = await inner._achat_many(sent, concurrency)
            for (position, _), answer in zip(misses, answers, strict=True):
                if isinstance(answer, ChatResponse):
                    self._record(requests[position], inner, stream=False, reply=answer)
                    answer = replace(answer, backend=self.name)
                elif isinstance(answer, InvalidRequestError):
                    self._record(requests[position], inner, stream=False, error=answer)
                results[position] = answer
        return [r for r in results if r is not None]

    def _close(self) -> None:
        try:
            self.cassette.save()
        finally:
            if self._inner is not None:
                self._inner.close()

    async def _aclose(self) -> None:
        try:
            self.cassette.save()
        finally:
            if self._inner is not None:
                await self._inner.aclose()


def cassette(
    path: str | os.PathLike[str],
    backend: BackendSource | None = None,
    *,
    mode: RecordMode = "once",
    ignore: Iterable[str] = (),
    secrets: Iterable[str] = (),
    backend_type: str | None = None,
    model: str | None = None,
    name: str | None = None,
) -> ReplayBackend:
    """``backend`` behind the cassette at ``path``: a :class:`RecordingBackend` in ``mode``, or with no
    backend a :class:`ReplayBackend`.

    Use it as a context manager: closing it saves what was recorded::

        with cassette("tests/cassettes/summary.yaml", lambda: llmclient.load("local")) as backend:
            assert summarise(backend, text) == expected

    ``ignore`` names request fields left out of matching (``"seed"``, ``"params.extra.user"``);
    ``secrets`` are strings scrubbed from the file besides API-key-looking ones. ``backend_type``,
    ``model`` and ``name`` are as for :class:`RecordingBackend` and :class:`ReplayBackend`.
    """
    mode = check_mode(mode)
    tape = Cassette(path, ignore=ignore, secrets=secrets)
    if backend is not None:
        return RecordingBackend(backend, tape, mode=mode, backend_type=backend_type, model=model, name=name)
    if mode in ("new_episodes", "all"):
        raise ConfigError(f"record mode {mode!r} records replies: pass the backend to record them from")
    return ReplayBackend(tape, backend_type=backend_type, model=model, name=name)
