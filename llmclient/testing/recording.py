"""Record a backend's replies once, replay them forever: :class:`RecordingBackend`, and
:func:`cassette`, which puts a backend behind a cassette file in one call.

A :class:`RecordingBackend` is the sibling of :class:`~llmclient.testing.replay.ReplayBackend` on
:class:`~llmclient.testing.replay.CassetteBackend`: it replays what the cassette holds and, where the
record mode allows, sends the rest to the backend it wraps and records what comes back. A replayed
:class:`~llmclient.types.ChatResponse` equals the one recorded in every field but ``latency`` (the
time the replay took); a replayed stream yields the recorded deltas. Requests the inner backend
refused (:class:`~llmclient.errors.InvalidRequestError` and its subclasses: a prompt over the context
window, a bad parameter) are recorded and raised again on replay; other failures (rate limits,
outages) are never recorded. A stream closed before its end is not recorded. The wrapped backend's
:attr:`~llmclient.backend.ChatBackend.credentials` are scrubbed from everything recorded, by value.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from dataclasses import replace
from typing import Any

from llmclient import __version__
from llmclient.backend import ChatBackend
from llmclient.cost import priced, priced_usage
from llmclient.errors import ConfigError, InvalidRequestError, LLMClientError
from llmclient.testing.cassettes.chat import Cassette
from llmclient.testing.cassettes.entries import (
    Interaction,
    deltas_to_dicts,
    error_to_dict,
    normalise_request,
    response_to_dict,
)
from llmclient.testing.cassettes.modes import RecordMode, check_mode, may_record
from llmclient.testing.real_backends import building_real_backend
from llmclient.testing.replay import CassetteBackend, CassetteLike, Miss, ReplayBackend
from llmclient.types import ChatRequest, ChatResponse, GenerationParams, StreamDelta

BackendSource = ChatBackend | Callable[[], ChatBackend]
"""A backend, or a function that builds one: called only when a reply must be recorded, so replay
never loads the model."""


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _guarded(build: Callable[[], ChatBackend]) -> Callable[[], ChatBackend]:
    """``build``, run where :func:`~llmclient.testing.block_real_backends` lets real backends through."""

    def built() -> ChatBackend:
        with building_real_backend():
            return build()

    return built


class RecordingBackend(CassetteBackend):
    """Wraps a real backend: replays what the cassette holds and records what it does not, as the
    record ``mode`` says (:data:`~llmclient.testing.cassettes.modes.RecordMode`; default
    ``new_episodes``).

    ``inner`` is a backend or a function that builds one; a function is called only when a reply must
    be recorded, so a replay that finds everything never loads the model. The key's backend type,
    model, the name and the defaults come from ``inner`` when it is a backend; pass them for a
    function, or the key matches whatever backend type and model were recorded. The inner backend's
    credentials are scrubbed from the cassette by value (:meth:`Cassette.add_secrets`), whatever their
    shape: a key echoed in an error message never reaches the file. Closing this backend saves the
    cassette and closes the inner backend.
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
        source = inner if isinstance(inner, ChatBackend) else _guarded(inner)
        super().__init__(
            cassette, source, backend_type=backend_type, model=model, name=name, defaults=defaults
        )
        if self.mode == "all":
            self.cassette.start_over()
        if isinstance(inner, ChatBackend):
            self.cassette.add_secrets(inner.credentials)

    def _replays(self) -> bool:
        return self.mode != "all"

    def _recorder(self, wanted: dict[str, Any]) -> ChatBackend:
        """The inner backend to record with (built on first use), or the miss error if the mode
        does not record.
        """
        if not may_record(self.mode, self.cassette.existed):
            raise self._miss(wanted, self.mode)
        inner = self.inner()
        self.cassette.add_secrets(inner.credentials)  # before anything it answers is recorded
        return inner

    def _record(
        self,
        request: ChatRequest,
        *,
        stream: bool,
        reply: ChatResponse | None = None,
        deltas: Sequence[StreamDelta] | None = None,
        error: InvalidRequestError | None = None,
    ) -> None:
        inner = self.inner()
        if reply is not None:  # what the reply cost, by the inner backend's prices, is recorded with it
            reply = priced(reply, inner.prices)
        if deltas is not None:
            deltas = [replace(d, usage=priced_usage(d.usage, inner.prices)) if d.usage else d for d in deltas]
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

    def _missed_chat(self, request: ChatRequest, wanted: dict[str, Any]) -> ChatResponse:
        inner = self._recorder(wanted)
        try:
            reply = inner._chat(self.for_inner(request))
        except InvalidRequestError as exc:
            self._record(request, stream=False, error=exc)
            raise
        self._record(request, stream=False, reply=reply)
        return reply

    async def _missed_achat(self, request: ChatRequest, wanted: dict[str, Any]) -> ChatResponse:
        inner = self._recorder(wanted)
        try:
            reply = await inner._achat(self.for_inner(request))
        except InvalidRequestError as exc:
            self._record(request, stream=False, error=exc)
            raise
        self._record(request, stream=False, reply=reply)
        return reply

    def _missed_stream(self, request: ChatRequest, wanted: dict[str, Any]) -> Iterator[StreamDelta]:
        source = self._recorder(wanted)._stream(self.for_inner(request))
        deltas: list[StreamDelta] = []
        try:
            for delta in source:
                deltas.append(delta)
                yield delta
        except InvalidRequestError as exc:
            if not deltas:
                self._record(request, stream=True, error=exc)
            raise
        finally:  # also on an early close: the inner stream stops, and nothing is recorded
            close = getattr(source, "close", None)
            if close is not None:
                close()
        self._record(request, stream=True, deltas=deltas)

    async def _missed_astream(
        self, request: ChatRequest, wanted: dict[str, Any]
    ) -> AsyncIterator[StreamDelta]:
        source = self._recorder(wanted)._astream(self.for_inner(request))
        deltas: list[StreamDelta] = []
        try:
            async for delta in source:
                deltas.append(delta)
                yield delta
        except InvalidRequestError as exc:
            if not deltas:
                self._record(request, stream=True, error=exc)
            raise
        finally:
            aclose = getattr(source, "aclose", None)
            if aclose is not None:
                await aclose()
        self._record(request, stream=True, deltas=deltas)

    async def _missed_many(
        self, requests: Sequence[ChatRequest], misses: Sequence[Miss], concurrency: int
    ) -> list[ChatResponse | LLMClientError]:
        """Sends every miss to the inner backend's own batch call at once (a local model batches
        them), recording each reply.
        """
        if not may_record(self.mode, self.cassette.existed):
            return [self._miss(wanted, self.mode) for _, wanted in misses]
        inner = self._recorder(misses[0][1])
        sent = [self.for_inner(requests[position]) for position, _ in misses]
        answers = await inner._achat_many(sent, concurrency)
        out: list[ChatResponse | LLMClientError] = []
        for (position, _), answer in zip(misses, answers, strict=True):
            if isinstance(answer, ChatResponse):
                self._record(requests[position], stream=False, reply=answer)
                answer = replace(answer, backend=self.name)
            elif isinstance(answer, InvalidRequestError):
                self._record(requests[position], stream=False, error=answer)
            out.append(answer)
        return out

    def _close(self) -> None:
        try:
            self.cassette.save()
        finally:
            super()._close()

    async def _aclose(self) -> None:
        try:
            self.cassette.save()
        finally:
            await super()._aclose()


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
) -> CassetteBackend:
    """``backend`` behind the cassette at ``path``: a :class:`RecordingBackend` in ``mode``, or with no
    backend a :class:`~llmclient.testing.replay.ReplayBackend`.

    Use it as a context manager: closing it saves what was recorded::

        with cassette("tests/cassettes/summary.yaml", lambda: llmclient.load("local")) as backend:
            assert summarise(backend, text) == expected

    ``ignore`` names request fields left out of matching (``"seed"``, ``"params.extra.user"``);
    ``secrets`` are strings scrubbed from the file besides API-key-looking ones. ``backend_type``,
    ``model`` and ``name`` are as for :class:`RecordingBackend` and
    :class:`~llmclient.testing.replay.ReplayBackend`.
    """
    mode = check_mode(mode)
    tape = Cassette(path, ignore=ignore, secrets=secrets)
    if backend is not None:
        return RecordingBackend(backend, tape, mode=mode, backend_type=backend_type, model=model, name=name)
    if mode in ("new_episodes", "all"):
        raise ConfigError(f"record mode {mode!r} records replies: pass the backend to record them from")
    return ReplayBackend(tape, backend_type=backend_type, model=model, name=name)
