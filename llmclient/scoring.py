"""Candidate scoring: how likely the model finds each of a few given replies, on every backend.

:class:`Scoring` is the scoring half of :class:`~llmclient.backend.ChatBackend` (its base class), kept
here so the backend module stays about chat. The public methods (``score``, ``choose``,
``score_many``, ``choose_many`` and their async twins) are written once: they check the messages,
the candidates and the options, trace the call (``score`` spans), ask the backend's hook for each
candidate's total logprob, and turn those into :class:`~llmclient.logprobs.CandidateScore` s the
same way everywhere (:func:`~llmclient.logprobs.scores`: normalised once, then a softmax).

A backend that can score implements ``_score`` (and ``_ascore`` where it has a better async path);
``_ascore_many`` and ``_score_many`` have defaults that run those with bounded concurrency, and a
backend that batches overrides them. A backend that cannot score keeps the default ``_score``, which
raises :class:`~llmclient.errors.UnsupportedFeatureError` saying why.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, overload

from typing_extensions import Unpack

from llmclient import tracing
from llmclient._bridge import call_in_thread
from llmclient.errors import LLMClientError, UnsupportedFeatureError
from llmclient.logprobs import (
    CandidateScore,
    Normalize,
    RawScore,
    ScoreOptions,
    best,
    check_candidates,
    scores,
)
from llmclient.types import ChatRequest, GenerationOptions, Messages

if TYPE_CHECKING:
    from llmclient._bridge import LoopThread

Scored = list[RawScore] | LLMClientError
"""One conversation's result in a batch hook: a raw score per candidate, or the typed error it raised."""


class Scoring:
    """Scoring candidate replies: the public methods, written once, and the hooks a backend implements."""

    if TYPE_CHECKING:  # provided by ChatBackend
        name: str
        _loop_thread: LoopThread

        def prepare(self, messages: Messages, options: Mapping[str, Any]) -> ChatRequest:
            """The checked request (:meth:`ChatBackend.prepare <llmclient.backend.ChatBackend.prepare>`)."""
            ...

        def _prepare_many(
            self, conversations: Iterable[Messages], options: Mapping[str, Any]
        ) -> list[ChatRequest]: ...

    # -- the hooks ---------------------------------------------------------------------------

    def _score(
        self, request: ChatRequest, candidates: Sequence[str], options: ScoreOptions
    ) -> list[RawScore]:
        """Each candidate's total logprob as the reply to ``request``, its token count, and whether it
        is exact; by default this backend cannot score.
        """
        raise UnsupportedFeatureError(
            f"{type(self).__name__} ({self.name!r}) cannot score candidates: it does not give the "
            f"model's token probabilities. Score on a local model or a vLLM server, or ask for a "
            f"constrained reply with response_format=Choice([...])"
        )

    async def _ascore(
        self, request: ChatRequest, candidates: Sequence[str], options: ScoreOptions
    ) -> list[RawScore]:
        """``_score`` from async code; by default ``_score`` on a worker thread."""
        return await call_in_thread(self._score, request, candidates, options)

    async def _ascore_many(
        self,
        requests: Sequence[ChatRequest],
        candidates: Sequence[str],
        options: ScoreOptions,
        concurrency: int,
    ) -> list[Scored]:
        """Score the candidates after each request, in input order, each item its raw scores or the
        typed error it raised; by default ``_ascore`` with at most ``concurrency`` in flight.
        """
        gate = asyncio.Semaphore(concurrency)

        async def one(request: ChatRequest) -> Scored:
            async with gate:
                try:
                    return await self._ascore(request, candidates, options)
                except LLMClientError as exc:
                    return exc

        return list(await asyncio.gather(*(one(r) for r in requests)))

    def _score_many(
        self,
        requests: Sequence[ChatRequest],
        candidates: Sequence[str],
        options: ScoreOptions,
        concurrency: int,
    ) -> list[Scored]:
        """:meth:`_ascore_many` for sync callers; by default run on the backend's private loop thread
        (a backend whose batches run on a thread of its own hands them over directly instead).
        """
        return self._loop_thread.run(self._ascore_many(requests, candidates, options, concurrency))

    # -- one conversation ------------------------------------------------------------------

    def score(
        self,
        messages: Messages,
        candidates: Sequence[str],
        *,
        end_of_turn: bool = True,
        normalize: Normalize = "sum",
        **options: Unpack[GenerationOptions],
    ) -> list[CandidateScore]:
        """How likely the model finds each candidate as its whole reply to ``messages``, in the order given.

        ``end_of_turn=True`` scores each candidate followed by the chat template's end of turn ("this
        and nothing else"); ``normalize`` compares candidates by total logprob (``"sum"``), per token
        (``"mean"``) or per byte (``"per_byte"``). Each score's ``probability`` is its share among the
        candidates. Raises :class:`~llmclient.errors.UnsupportedFeatureError` where the backend cannot
        score these candidates, saying why; never a guess.
        """
        request, texts, how = self._scoring_call(messages, candidates, end_of_turn, normalize, options)
        with tracing.call(self, request, operation="score"):  # type: ignore[arg-type]
            return scores(texts, self._score(request, texts, how), how.normalize, self.name)

    async def ascore(
        self,
        messages: Messages,
        candidates: Sequence[str],
        *,
        end_of_turn: bool = True,
        normalize: Normalize = "sum",
        **options: Unpack[GenerationOptions],
    ) -> list[CandidateScore]:
        """Async :meth:`score`."""
        request, texts, how = self._scoring_call(messages, candidates, end_of_turn, normalize, options)
        with tracing.call(self, request, operation="score"):  # type: ignore[arg-type]
            return scores(texts, await self._ascore(request, texts, how), how.normalize, self.name)

    def choose(
        self,
        messages: Messages,
        candidates: Sequence[str],
        *,
        end_of_turn: bool = True,
        normalize: Normalize = "sum",
        **options: Unpack[GenerationOptions],
    ) -> CandidateScore:
        """The most probable candidate (:meth:`score`'s highest; the first given among equals)."""
        return best(self.score(messages, candidates, end_of_turn=end_of_turn, normalize=normalize, **options))

    async def achoose(
        self,
        messages: Messages,
        candidates: Sequence[str],
        *,
        end_of_turn: bool = True,
        normalize: Normalize = "sum",
        **options: Unpack[GenerationOptions],
    ) -> CandidateScore:
        """Async :meth:`choose`."""
        scored = await self.ascore(
            messages, candidates, end_of_turn=end_of_turn, normalize=normalize, **options
        )
        return best(scored)

    # -- many conversations ----------------------------------------------------------------

    @overload
    def score_many(
        self,
        conversations: Iterable[Messages],
        candidates: Sequence[str],
        *,
        end_of_turn: bool = True,
        normalize: Normalize = "sum",
        concurrency: int | None = None,
        return_exceptions: Literal[False] = False,
        **options: Unpack[GenerationOptions],
    ) -> list[list[CandidateScore]]: ...

    @overload
    def score_many(
        self,
        conversations: Iterable[Messages],
        candidates: Sequence[str],
        *,
        end_of_turn: bool = True,
        normalize: Normalize = "sum",
        concurrency: int | None = None,
        return_exceptions: Literal[True],
        **options: Unpack[GenerationOptions],
    ) -> list[list[CandidateScore] | LLMClientError]: ...

    def score_many(
        self,
        conversations: Iterable[Messages],
        candidates: Sequence[str],
        *,
        end_of_turn: bool = True,
        normalize: Normalize = "sum",
        concurrency: int | None = None,
        return_exceptions: bool = False,
        **options: Unpack[GenerationOptions],
    ) -> list[list[CandidateScore]] | list[list[CandidateScore] | LLMClientError]:
        """:meth:`score` the same candidates after each conversation; results in input order.

        A local model batches them; a remote backend keeps up to ``concurrency`` conversations in
        flight (default 16). With ``return_exceptions=True`` a failed item holds its
        :class:`~llmclient.errors.LLMClientError` instead of the first failure raising.
        """
        requests, texts, how = self._scoring_batch(conversations, candidates, end_of_turn, normalize, options)
        with _Traced(self, requests) as traced:
            raw = self._score_many(requests, texts, how, _concurrency(concurrency))
            return _settled(traced.done([self._scored(texts, r, how) for r in raw]), return_exceptions)

    @overload
    async def ascore_many(
        self,
        conversations: Iterable[Messages],
        candidates: Sequence[str],
        *,
        end_of_turn: bool = True,
        normalize: Normalize = "sum",
        concurrency: int | None = None,
        return_exceptions: Literal[False] = False,
        **options: Unpack[GenerationOptions],
    ) -> list[list[CandidateScore]]: ...

    @overload
    async def ascore_many(
        self,
        conversations: Iterable[Messages],
        candidates: Sequence[str],
        *,
        end_of_turn: bool = True,
        normalize: Normalize = "sum",
        concurrency: int | None = None,
        return_exceptions: Literal[True],
        **options: Unpack[GenerationOptions],
    ) -> list[list[CandidateScore] | LLMClientError]: ...

    async def ascore_many(
        self,
        conversations: Iterable[Messages],
        candidates: Sequence[str],
        *,
        end_of_turn: bool = True,
        normalize: Normalize = "sum",
        concurrency: int | None = None,
        return_exceptions: bool = False,
        **options: Unpack[GenerationOptions],
    ) -> list[list[CandidateScore]] | list[list[CandidateScore] | LLMClientError]:
        """Async :meth:`score_many`."""
        requests, texts, how = self._scoring_batch(conversations, candidates, end_of_turn, normalize, options)
        with _Traced(self, requests) as traced:
            raw = await self._ascore_many(requests, texts, how, _concurrency(concurrency))
            return _settled(traced.done([self._scored(texts, r, how) for r in raw]), return_exceptions)

    def choose_many(
        self,
        conversations: Iterable[Messages],
        candidates: Sequence[str],
        *,
        end_of_turn: bool = True,
        normalize: Normalize = "sum",
        concurrency: int | None = None,
        **options: Unpack[GenerationOptions],
    ) -> list[CandidateScore]:
        """The most probable candidate after each conversation (:meth:`score_many`, best of each);
        the first failure raises.
        """
        found = self.score_many(
            conversations,
            candidates,
            end_of_turn=end_of_turn,
            normalize=normalize,
            concurrency=concurrency,
            **options,
        )
        return [best(item) for item in found]

    async def achoose_many(
        self,
        conversations: Iterable[Messages],
        candidates: Sequence[str],
        *,
        end_of_turn: bool = True,
        normalize: Normalize = "sum",
        concurrency: int | None = None,
        **options: Unpack[GenerationOptions],
    ) -> list[CandidateScore]:
        """Async :meth:`choose_many`."""
        found = await self.ascore_many(
            conversations,
            candidates,
            end_of_turn=end_of_turn,
            normalize=normalize,
            concurrency=concurrency,
            **options,
        )
        return [best(item) for item in found]

    # -- shared steps ----------------------------------------------------------------------

    def _scoring_call(
        self,
        messages: Messages,
        candidates: Sequence[str],
        end_of_turn: bool,
        normalize: Normalize,
        options: Mapping[str, Any],
    ) -> tuple[ChatRequest, tuple[str, ...], ScoreOptions]:
        """The checked request, candidates and scoring options of one call."""
        how = ScoreOptions(end_of_turn=end_of_turn, normalize=normalize)
        return self.prepare(messages, options), check_candidates(candidates), how

    def _scoring_batch(
        self,
        conversations: Iterable[Messages],
        candidates: Sequence[str],
        end_of_turn: bool,
        normalize: Normalize,
        options: Mapping[str, Any],
    ) -> tuple[list[ChatRequest], tuple[str, ...], ScoreOptions]:
        """The checked requests, candidates and scoring options of a batch."""
        how = ScoreOptions(end_of_turn=end_of_turn, normalize=normalize)
        return self._prepare_many(conversations, options), check_candidates(candidates), how

    def _scored(
        self, texts: Sequence[str], raw: Scored, how: ScoreOptions
    ) -> list[CandidateScore] | LLMClientError:
        """One batch item's scores, or its error (one the scores themselves raise included)."""
        if isinstance(raw, LLMClientError):
            return raw
        try:
            return scores(texts, raw, how.normalize, self.name)
        except LLMClientError as exc:
            return exc


class _Traced:
    """The ``score`` spans of a batch: one per conversation, ended with its error or none."""

    def __init__(self, backend: Scoring, requests: Sequence[ChatRequest]) -> None:
        enabled = tracing.enabled()
        self.calls = [
            tracing.call(backend, r, operation="score", current=False)  # type: ignore[arg-type]
            for r in requests
            if enabled
        ]

    def __enter__(self) -> _Traced:
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        for call in self.calls:
            call.end(exc)

    def done(self, results: list[Any]) -> list[Any]:
        """End each conversation's span with its error, if it failed; returns ``results``."""
        for call, result in zip(self.calls, results, strict=False):
            call.end(result if isinstance(result, LLMClientError) else None)
        return results


def _settled(results: list[Any], return_exceptions: bool) -> list[Any]:
    from llmclient.backend import _settled as settled  # the one rule, where chat_many has it

    return settled(results, return_exceptions)


def _concurrency(value: int | None) -> int:
    from llmclient.backend import _concurrency as checked  # the one check, where chat_many has it

    return checked(value)
