"""Replaying a chat cassette: :class:`CassetteBackend`, the base of the replay and recording backends,
and :class:`ReplayBackend`, which answers from the cassette alone.

Both are :class:`~llmclient.backend.WrapperBackend` s: a replay wraps no backend, a recording wraps the
one it records from (:mod:`llmclient.testing.recording`). :class:`CassetteBackend` replays what the
cassette holds in every call style (``chat``, ``achat``, ``stream``, ``astream``, ``chat_many``,
``achat_many``); what a request with no recorded reply does is the subclass's: a replay raises
:class:`~llmclient.errors.CassetteError` showing the closest recorded request and what differs.
Replay needs no model, no network and no key, and imports neither torch, transformers nor an HTTP
stack.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import replace
from typing import Any

from llmclient.backend import ChatBackend, Messages
from llmclient.errors import CassetteError, InvalidRequestError, LLMClientError
from llmclient.stream import StreamAccumulator
from llmclient.testing.cassettes.chat import Cassette
from llmclient.testing.cassettes.entries import (
    Interaction,
    deltas_from_dicts,
    error_from_dict,
    normalise_request,
    response_from_dict,
)
from llmclient.testing.cassettes.modes import RecordMode, record_hint
from llmclient.types import ChatRequest, ChatResponse, GenerationParams, StreamDelta
from llmclient.wrapper import WrapperBackend

CassetteLike = Cassette | str | os.PathLike[str]
"""A :class:`Cassette`, or the path of its file."""

Miss = tuple[int, dict[str, Any]]
"""A request of a batch with no recorded reply: its position in the batch and its normalised form."""


def _only(values: Iterable[Any]) -> str | None:
    """The one distinct non-empty string among ``values``, or ``None``."""
    found = {v for v in values if isinstance(v, str) and v}
    return found.pop() if len(found) == 1 else None


class CassetteBackend(WrapperBackend):
    """Replays what a cassette holds; a subclass says what a request with no recorded reply does
    (the ``_missed_*`` hooks; by default it raises the miss error).

    ``backend_type`` and ``model`` are part of each request's key; left ``None`` they match whatever
    was recorded. ``name`` defaults to the backend name the replies were recorded under.
    """

    def __init__(
        self,
        cassette: CassetteLike,
        inner: ChatBackend | Callable[[], ChatBackend] | None,
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
            inner,
            model=model or _only(i.request.get("model") for i in recorded) or "",
            name=name or _only((i.response or {}).get("backend") for i in recorded) or self.type_name,
            defaults=defaults,
        )

    @property
    def context_window(self) -> int | None:
        """The wrapped backend's window where it is built already; a replay never builds it to ask."""
        built = self.inner_built
        return None if built is None else built.context_window

    def count_tokens(self, messages: Messages) -> int:
        """Not recorded: a replaying backend has no tokenizer, so this raises ``NotImplementedError``."""
        return ChatBackend.count_tokens(self, messages)

    # -- finding what was recorded -----------------------------------------------------------------

    def _find(self, request: ChatRequest, *, stream: bool) -> tuple[dict[str, Any], Interaction | None]:
        """The normalised request, and its recorded interaction where one replays."""
        wanted = normalise_request(request, backend=self.backend_type, model=self._model_key, stream=stream)
        if not self._replays():
            return wanted, None
        return wanted, self.cassette.find(wanted, also_ignore=self._wildcards)

    def _replays(self) -> bool:
        """Whether recorded replies are replayed at all (not when re-recording everything)."""
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

    # -- what a miss does: raise (a recording backend records instead) -------------------------------

    def _missed_chat(self, request: ChatRequest, wanted: dict[str, Any]) -> ChatResponse:
        raise self._miss(wanted)

    async def _missed_achat(self, request: ChatRequest, wanted: dict[str, Any]) -> ChatResponse:
        raise self._miss(wanted)

    def _missed_stream(self, request: ChatRequest, wanted: dict[str, Any]) -> Iterator[StreamDelta]:
        raise self._miss(wanted)

    def _missed_astream(self, request: ChatRequest, wanted: dict[str, Any]) -> AsyncIterator[StreamDelta]:
        raise self._miss(wanted)

    async def _missed_many(
        self, requests: Sequence[ChatRequest], misses: Sequence[Miss], concurrency: int
    ) -> list[ChatResponse | LLMClientError]:
        """The answers to a batch's ``misses``, in their order; here each one's miss error."""
        return [self._miss(wanted) for _, wanted in misses]

    # -- the hooks ---------------------------------------------------------------------------------

    def _chat(self, request: ChatRequest) -> ChatResponse:
        wanted, found = self._find(request, stream=False)
        return self._missed_chat(request, wanted) if found is None else self._reply_of(found)

    async def _achat(self, request: ChatRequest) -> ChatResponse:
        wanted, found = self._find(request, stream=False)  # no I/O: no worker thread
        return await self._missed_achat(request, wanted) if found is None else self._reply_of(found)

    def _stream(self, request: ChatRequest) -> Iterator[StreamDelta]:
        wanted, found = self._find(request, stream=True)
        if found is None:
            yield from self._missed_stream(request, wanted)
        else:
            yield from self._deltas_of(found)

    async def _astream(self, request: ChatRequest) -> AsyncIterator[StreamDelta]:
        wanted, found = self._find(request, stream=True)
        if found is None:
            async for delta in self._missed_astream(request, wanted):
                yield delta
        else:
            for delta in self._deltas_of(found):
                yield delta

    async def _achat_many(
        self, requests: Sequence[ChatRequest], concurrency: int
    ) -> list[ChatResponse | LLMClientError]:
        """Replays what is recorded; the misses go, all at once, to :meth:`_missed_many`."""
        results: list[ChatResponse | LLMClientError | None] = [None] * len(requests)
        misses: list[Miss] = []
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
        if misses:
            answers = await self._missed_many(requests, misses, concurrency)
            for (position, _), answer in zip(misses, answers, strict=True):
                results[position] = answer
        return [r for r in results if r is not None]


class ReplayBackend(CassetteBackend):
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
        super().__init__(cassette, None, backend_type=backend_type, model=model, name=name, defaults=defaults)
