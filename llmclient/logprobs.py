"""The model's probabilities as values: token logprobs, candidate scores, and the arithmetic of scoring.

A leaf module (it imports only :mod:`llmclient.errors`), so :mod:`llmclient.types` can hold
:class:`TokenLogprob` on every reply and :mod:`llmclient.scoring` can turn what a backend measured
(:class:`RawScore`) into :class:`CandidateScore` s the same way for every backend: normalised once,
and ``probability`` a softmax over the candidates.
"""

from __future__ import annotations

import builtins
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple, get_args

from llmclient.errors import InvalidRequestError, UnsupportedFeatureError

Normalize = Literal["sum", "mean", "per_byte"]
"""How a candidate's logprob is compared with the others': its total (``sum``, "the probability of
exactly this text"), per token (``mean``), or per UTF-8 byte of its text (``per_byte``, fair between
candidates that tokenise into different numbers of tokens)."""

_NORMALIZE: frozenset[str] = frozenset(get_args(Normalize))

MAX_TOP_LOGPROBS = 20
"""The most alternatives per token a call may ask for (OpenAI's limit, and vLLM's default one)."""


@dataclass(frozen=True, slots=True)
class TokenLogprob:
    """One generated token and how likely the model found it.

    Attributes:
        token: the token's text.
        logprob: its natural-log probability (0 is certain).
        bytes: the token's UTF-8 bytes, where the backend gave them (a token may hold part of a
            character; join the bytes of consecutive tokens to decode it).
        top: the most likely tokens at this position, as ``(token, logprob)``, most likely first
            (as many as ``top_logprobs`` asked for; empty when none were asked).
    """

    token: str
    logprob: float
    bytes: builtins.bytes | None = None
    top: list[tuple[str, float]] = field(default_factory=list)

    @property
    def probability(self) -> float:
        """``exp(logprob)``: the token's probability."""
        return math.exp(self.logprob)

    def to_dict(self) -> dict[str, Any]:
        """The entry in OpenAI's shape (``bytes`` as a list of integers, ``top_logprobs``)."""
        return {
            "token": self.token,
            "logprob": self.logprob,
            "bytes": None if self.bytes is None else list(self.bytes),
            "top_logprobs": [{"token": t, "logprob": lp} for t, lp in self.top],
        }

    @classmethod
    def from_dict(cls, data: Any) -> TokenLogprob:
        """Read one entry of OpenAI's ``logprobs.content`` (or of :meth:`to_dict`).

        Raises ``TypeError``, ``KeyError`` or ``ValueError`` for an entry that is not of that shape.
        """
        raw = data.get("bytes")
        top = data.get("top_logprobs") or []
        return cls(
            token=str(data["token"]),
            logprob=float(data["logprob"]),
            bytes=None if raw is None else builtins.bytes(raw),
            top=[(str(t["token"]), float(t["logprob"])) for t in top],
        )


@dataclass(frozen=True, slots=True)
class CandidateScore:
    """How likely the model finds one candidate as its whole reply.

    Attributes:
        text: the candidate.
        logprob: its total logprob (the sum over its tokens; with ``exact=False``, the first token's).
        tokens: how many tokens the logprob covers (0 where the candidate was not among the tokens read).
        probability: its share among the candidates: a softmax over their (normalised) logprobs, so
            the probabilities of one call sum to 1.
        exact: whether ``logprob`` covers the whole candidate (a local model, a vLLM server); ``False``
            where only its first token could be read (other hosted APIs).
    """

    text: str
    logprob: float
    tokens: int
    probability: float
    exact: bool

    def to_dict(self) -> dict[str, Any]:
        """The score as plain JSON (``-Infinity`` for a candidate that was not read stays a float)."""
        return {
            "text": self.text,
            "logprob": self.logprob,
            "tokens": self.tokens,
            "probability": self.probability,
            "exact": self.exact,
        }


class RawScore(NamedTuple):
    """What a backend's ``_score`` hook measures for one candidate, before the base class normalises it."""

    logprob: float
    """The candidate's total logprob (``-inf`` where it was not among the tokens read)."""
    tokens: int
    """How many tokens ``logprob`` covers."""
    exact: bool
    """Whether ``logprob`` covers the whole candidate."""


@dataclass(frozen=True, slots=True)
class ScoreOptions:
    """How to score, as a backend's ``_score`` hook receives it.

    Attributes:
        end_of_turn: score each candidate followed by the chat template's end-of-turn token
            ("this and nothing else"); ``False`` scores it as a prefix of the reply.
        normalize: how the base class compares candidates (:data:`Normalize`); hooks may ignore it.
    """

    end_of_turn: bool = True
    normalize: Normalize = "sum"

    def __post_init__(self) -> None:
        if self.normalize not in _NORMALIZE:
            raise InvalidRequestError(
                f"normalize must be one of {sorted(_NORMALIZE)}, got {self.normalize!r}"
            )
        if not isinstance(self.end_of_turn, bool):
            raise InvalidRequestError(f"end_of_turn must be True or False, got {self.end_of_turn!r}")


def check_candidates(candidates: Iterable[str]) -> tuple[str, ...]:
    """The candidates as a tuple, checked: at least two distinct non-empty strings.

    Raises :class:`InvalidRequestError` naming what is wrong (one string given instead of a list,
    an empty candidate, a repeated one).
    """
    if isinstance(candidates, (str, builtins.bytes)):
        raise InvalidRequestError(
            f"candidates must be a list of strings, got one string {candidates!r}: pass [{candidates!r}, ...]"
        )
    out = tuple(candidates)
    bad = [c for c in out if not isinstance(c, str) or not c]
    if bad:
        raise InvalidRequestError(f"every candidate must be a non-empty string, got {bad[0]!r}")
    if len(out) < 2:
        raise InvalidRequestError(f"score at least two candidates, got {list(out)!r}")
    if len(set(out)) != len(out):
        repeated = next(c for c in out if out.count(c) > 1)
        raise InvalidRequestError(f"candidates must differ; {repeated!r} is given twice")
    return out


def scores(
    candidates: Sequence[str], raw: Sequence[RawScore], normalize: Normalize, backend: str
) -> list[CandidateScore]:
    """The candidates' scores from what a backend measured: normalised once, then a softmax.

    ``per_byte`` needs each candidate's whole logprob, so it is refused (an
    :class:`UnsupportedFeatureError` naming ``backend``) where only first tokens were read; so is a
    reading where no candidate was found at all.
    """
    if len(raw) != len(candidates):
        raise InvalidRequestError(
            f"{backend} scored {len(raw)} candidates of {len(candidates)}; a scoring hook returns one each"
        )
    if normalize == "per_byte" and not all(r.exact for r in raw):
        raise UnsupportedFeatureError(
            f"normalize='per_byte' needs each candidate's whole logprob, and {backend} read only the "
            f"candidates' first tokens (exact=False); use normalize='sum' (or 'mean', the same for one token)"
        )
    values = [_normalised(text, r, normalize) for text, r in zip(candidates, raw, strict=True)]
    top = max(values)
    if top == -math.inf:
        raise UnsupportedFeatureError(
            f"{backend} found none of the candidates {list(candidates)!r} among the tokens it could read, "
            f"so none can be given a probability"
        )
    weights = [math.exp(v - top) for v in values]
    total = sum(weights)
    return [
        CandidateScore(text=text, logprob=r.logprob, tokens=r.tokens, probability=w / total, exact=r.exact)
        for text, r, w in zip(candidates, raw, weights, strict=True)
    ]


def _normalised(text: str, raw: RawScore, normalize: Normalize) -> float:
    if normalize == "mean" and raw.tokens > 0:
        return raw.logprob / raw.tokens
    if normalize == "per_byte":
        return raw.logprob / len(text.encode("utf-8"))
    return raw.logprob


def best(scored: Sequence[CandidateScore]) -> CandidateScore:
    """The most probable candidate; the first given among equals."""
    return max(scored, key=lambda s: s.probability)
