"""Logprobs and candidate scoring on the chat-completions wire: the requests to send, the replies read.

Two ways to score, chosen by the provider (:attr:`Provider.scoring
<llmclient.backends.openai.providers.Provider.scoring>`) or the ``scoring`` setting:

- ``"prompt_logprobs"`` (vLLM; exact). The conversation is sent once as it is (its
  ``usage.prompt_tokens`` is the prompt's length with the generation prompt, ``N``), and once per
  candidate with the candidate as the final assistant message, ``continue_final_message: true``
  (the turn left open) and ``prompt_logprobs: 1``: the candidate's tokens are positions ``N`` to the
  end, and the first entry of each position's ``prompt_logprobs`` is the prompt's own token (vLLM
  lists it first, then the top alternatives). With ``end_of_turn``, the candidate is also sent with
  the turn closed (``continue_final_message: false``), and the one token after the candidate (the
  template's end of turn) is added. This is lm-evaluation-harness' rule: render prompt and
  candidate together, split at the prompt's length.
- ``"first_token"`` (every other API; ``exact=False``). A hosted API gives logprobs only for tokens
  it generates, so one call with ``max_tokens: 1, logprobs: true, top_logprobs: 20`` reads the
  model's 20 most likely first tokens. A token (leading whitespace ignored, case kept) counts for a
  candidate when it begins that candidate and no other; a candidate's logprob is the total of its
  tokens (``-inf``, probability 0, where none of the 20 begins it). This can only tell apart
  candidates that begin with different tokens, and tokens cannot be counted remotely, so the
  candidates are checked conservatively first: no candidate's first word may begin another's
  (``"no"`` and ``"none"``, ``"New York"`` and ``"New Jersey"`` are refused). A listed token that
  begins two candidates (``"ne"`` for ``"negative"`` and ``"neutral"``) with 1% probability or more
  is refused too; below that it is left out. Refusals are
  :class:`~llmclient.errors.UnsupportedFeatureError` s that say why; never a guess.

Pure functions over requests and replies, like ``wire``; :class:`MissingLogprobs` is the one warning
a backend gives when a provider returns no logprobs.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from llmclient.errors import UnsupportedFeatureError
from llmclient.logprobs import MAX_TOP_LOGPROBS, RawScore, ScoreOptions
from llmclient.types import ChatRequest, ChatResponse, GenerationParams, Message

logger = logging.getLogger("llmclient")

ScoringMode = Literal["first_token", "prompt_logprobs"]
"""How a provider scores candidates: see the module's description."""

AMBIGUOUS_LIMIT = 0.01
"""The probability at which a listed first token that begins two candidates refuses the reading."""


# -- first tokens (hosted APIs) ----------------------------------------------------------------------


def first_token_request(request: ChatRequest, candidates: Sequence[str], backend: str) -> ChatRequest:
    """The one request that reads the model's most likely first tokens; refused (with the reason)
    when the candidates may share their first token.
    """
    words = [(c, c.split(maxsplit=1)[0] if c.strip() else "") for c in candidates]
    for text, word in words:
        if not word:
            raise UnsupportedFeatureError(
                f"{backend} cannot score the blank candidate {text!r} by its first token"
            )
        clash = next((other for other, w in words if other != text and w.startswith(word)), None)
        if clash is not None:
            raise UnsupportedFeatureError(
                f"{backend} can read only the first token of a hosted model's reply, and candidates "
                f"{text!r} and {clash!r} may begin with the same token (the first word {word!r} begins "
                f"{clash!r}); reword them to begin differently, or score on a local model or a vLLM "
                f"server (preset 'vllm') for exact scores"
            )
    params = GenerationParams(
        max_new_tokens=1, logprobs=True, top_logprobs=MAX_TOP_LOGPROBS, extra=request.params.extra
    )
    return replace(request, params=params)


def read_first_tokens(reply: ChatResponse, candidates: Sequence[str], backend: str) -> list[RawScore]:
    """Each candidate's first-token logprob from the reply to :func:`first_token_request`."""
    if not reply.logprobs:
        raise UnsupportedFeatureError(
            f"{backend} asked {reply.model or 'the model'!r} for its first token's logprobs and got none: "
            f"this model or provider does not return logprobs, so candidates cannot be scored here"
        )
    entry = reply.logprobs[0]
    listed = dict(entry.top)
    listed.setdefault(entry.token, entry.logprob)
    found: dict[str, list[float]] = {}
    for token, logprob in listed.items():
        start = token.lstrip()
        owners = [c for c in candidates if start and c.lstrip().startswith(start)]
        if len(owners) == 1:
            found.setdefault(owners[0], []).append(logprob)
        elif len(owners) > 1 and math.exp(logprob) >= AMBIGUOUS_LIMIT:
            raise UnsupportedFeatureError(
                f"{backend}: the model's likely first token {token!r} (probability {math.exp(logprob):.2f}) "
                f"begins {owners[0]!r} and {owners[1]!r}, so its first token cannot tell them apart; "
                f"reword the candidates to begin differently, or score on a local model or a vLLM server"
            )
    return [
        RawScore(_logsumexp(found[c]), 1, False) if c in found else RawScore(-math.inf, 0, False)
        for c in candidates
    ]


def _logsumexp(values: list[float]) -> float:
    top = max(values)
    return top + math.log(sum(math.exp(v - top) for v in values))


# -- prompt logprobs (vLLM) ---------------------------------------------------------------------------


@dataclass(frozen=True)
class PromptLogprobPlan:
    """The requests that score candidates exactly on a vLLM server, and how to read their replies."""

    requests: list[ChatRequest]
    """The prompt alone, then per candidate the open turn and (with ``end_of_turn``) the closed one."""
    candidates: tuple[str, ...]
    end_of_turn: bool
    backend: str
    per_candidate: int = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "per_candidate", 2 if self.end_of_turn else 1)

    def read(self, replies: Sequence[ChatResponse]) -> list[RawScore]:
        """Each candidate's exact total logprob from the replies, in the order of :attr:`requests`."""
        prompt = _prompt_tokens(replies[0], self.backend)
        out = []
        for index, text in enumerate(self.candidates):
            first = 1 + index * self.per_candidate
            opened = replies[first]
            read = replies[first + 1] if self.end_of_turn else opened
            found = _positions(read, self.backend)
            end = _prompt_tokens(opened, self.backend)  # the candidate's end: the open turn's length
            if end <= prompt:
                raise UnsupportedFeatureError(
                    f"{self.backend}: the chat template renders the candidate {text!r} in no tokens after "
                    f"the generation prompt ({end} <= {prompt}), so prompt_logprobs cannot score it"
                )
            stop = end + 1 if self.end_of_turn else end
            positions = found[prompt:stop]
            if len(positions) != stop - prompt:
                raise UnsupportedFeatureError(
                    f"{self.backend}: the closed turn of {text!r} has no token after the candidate, so the "
                    f"template's end of turn cannot be scored; use end_of_turn=False"
                )
            out.append(RawScore(sum(positions), len(positions), True))
        return out


def prompt_logprob_plan(
    request: ChatRequest, candidates: Sequence[str], options: ScoreOptions, backend: str
) -> PromptLogprobPlan:
    """The requests of an exact scoring through vLLM's ``prompt_logprobs`` (see the module's description)."""
    extra = dict(request.params.extra)

    def sent(messages: tuple[Message, ...], **fields: Any) -> ChatRequest:
        return replace(
            request, messages=messages, params=GenerationParams(max_new_tokens=1, extra={**extra, **fields})
        )

    requests = [sent(request.messages)]
    for text in candidates:
        turn = (*request.messages, Message(role="assistant", content=text))
        shape = {"add_generation_prompt": False, "prompt_logprobs": 1}
        requests.append(sent(turn, continue_final_message=True, **shape))
        if options.end_of_turn:
            requests.append(sent(turn, continue_final_message=False, **shape))
    return PromptLogprobPlan(requests, tuple(candidates), options.end_of_turn, backend)


def _prompt_tokens(reply: ChatResponse, backend: str) -> int:
    if reply.usage is None or reply.usage.prompt_tokens < 1:
        raise UnsupportedFeatureError(
            f"{backend}: the server reported no prompt_tokens, which exact scoring needs to find candidates"
        )
    return reply.usage.prompt_tokens


def _positions(reply: ChatResponse, backend: str) -> list[float]:
    """The logprob of the prompt's own token at each position (the first position has none: 0)."""
    found = reply.details.get("prompt_logprobs")
    if not isinstance(found, list):
        raise UnsupportedFeatureError(
            f"{backend}: the server returned no prompt_logprobs, so it is not a vLLM server (or too old); "
            f'set scoring = "first_token" for a hosted API\'s first-token reading'
        )
    return [_own(position) for position in found]


def _own(position: Any) -> float:
    """The first entry of one position: vLLM lists the prompt's own token first."""
    if not isinstance(position, Mapping) or not position:
        return 0.0
    entry = next(iter(position.values()))
    return float(entry["logprob"] if isinstance(entry, Mapping) else entry)


# -- the warning when logprobs were asked for and none came ---------------------------------------


class MissingLogprobs:
    """Warns once per backend when a call asked for logprobs and the reply came without them."""

    def __init__(self, backend: str, model: str) -> None:
        self.backend = backend
        self.model = model
        self.warned = False

    def check(self, request: ChatRequest, *, text: bool, logprobs: bool) -> None:
        """Warn (the first time) when ``request`` wanted logprobs and a reply with text had none."""
        if self.warned or not request.params.wants_logprobs or not text or logprobs:
            return
        self.warned = True
        logger.warning(
            "%s: %r returned no logprobs though the call asked for them; reply.logprobs is empty "
            "(this model or provider does not give them; said once per backend)",
            self.backend,
            self.model,
        )

    def reply(self, request: ChatRequest, reply: ChatResponse) -> ChatResponse:
        """:meth:`check` a whole reply; returns it."""
        self.check(request, text=bool(reply.text), logprobs=bool(reply.logprobs))
        return reply
