"""The value types every backend speaks: messages, generation parameters, replies and stream deltas.

Messages live in :mod:`llmclient.messages` and parameters in :mod:`llmclient.params`; this module
defines the replies and gathers every value type under one name, ``llmclient.types``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from llmclient.logprobs import TokenLogprob as TokenLogprob  # one of the reply's types
from llmclient.messages import TEXT_PART_SEPARATOR as TEXT_PART_SEPARATOR
from llmclient.messages import Message as Message
from llmclient.messages import MessageLike as MessageLike
from llmclient.messages import Messages as Messages
from llmclient.messages import Role as Role
from llmclient.messages import to_message as to_message
from llmclient.messages import to_messages as to_messages
from llmclient.params import GenerationOptions as GenerationOptions
from llmclient.params import GenerationParams as GenerationParams
from llmclient.tools.calls import ToolCall

FinishReason = Literal["stop", "length", "tool_calls", "content_filter"]
"""Why generation ended, normalised across backends."""

_FINISH_REASONS: frozenset[str] = frozenset(get_args(FinishReason))


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts of one exchange, and what it cost where that is known.

    Attributes:
        prompt_tokens: tokens sent.
        completion_tokens: tokens generated.
        cost: what the exchange cost, in the provider's unit (OpenRouter's is US dollars);
            ``None`` when unknown (local models, providers that report none, unless priced).
        cost_source: where ``cost`` came from: ``"provider"`` (the reply said so) or ``"config"``
            (the backend's ``prices`` setting); ``None`` with no cost.
    """

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float | None = None
    cost_source: Literal["provider", "config"] | None = None

    @property
    def total_tokens(self) -> int:
        """Prompt plus completion tokens."""
        return self.prompt_tokens + self.completion_tokens

    def to_dict(self) -> dict[str, Any]:
        """The usage as OpenAI reports it, with ``cost`` and ``cost_source`` where the cost is known."""
        out: dict[str, Any] = {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
        }
        if self.cost is not None:
            out["cost"] = self.cost
            out["cost_source"] = self.cost_source
        return out


def normalise_finish_reason(reason: str | None) -> FinishReason | None:
    """Map a provider's finish reason onto :data:`FinishReason`.

    Legacy and vendor names (``max_tokens``, ``function_call``, ``eos``, ``end_turn``) are folded in;
    anything unknown is kept out (``None``) so the raw value stays only in ``details``.
    """
    if reason is None:
        return None
    if reason in _FINISH_REASONS:
        return reason  # type: ignore[return-value]
    return _FINISH_ALIASES.get(reason)


_FINISH_ALIASES: dict[str, FinishReason] = {
    "max_tokens": "length",
    "model_length": "length",
    "function_call": "tool_calls",
    "tool_use": "tool_calls",
    "eos": "stop",
    "eos_token": "stop",
    "end_turn": "stop",
    "stop_sequence": "stop",
    "content_filtered": "content_filter",
}


@dataclass(frozen=True, slots=True)
class ChatResponse:
    """One complete reply.

    Attributes:
        text: the reply's text (reasoning, where a model gives it, is in ``details["reasoning"]``).
        finish_reason: why generation ended, normalised; the provider's own word is in
            ``details["native_finish_reason"]`` when it differs.
        usage: token counts, or ``None`` where the backend did not report them.
        model: the model that answered, as the backend names it.
        backend: the configured backend name (or type) that produced the reply.
        latency: seconds from sending the request to the complete reply.
        tool_calls: the tools the model asked to call (:class:`~llmclient.tools.ToolCall`); empty when
            it answered in text. ``message`` is the assistant message that carries them into history.
        parsed: the checked value when the call gave ``response_format`` (a pydantic model instance,
            a dict, or the chosen string); ``None`` otherwise.
        details: provider facts that are not normalised (id, provider, cost, reasoning, ...).
        logprobs: one :class:`TokenLogprob` per generated token when the call asked for
            ``logprobs``; empty otherwise, or where the model or provider returned none.
    """

    text: str
    finish_reason: FinishReason | None = None
    usage: Usage | None = None
    model: str = ""
    backend: str = ""
    latency: float = 0.0
    tool_calls: list[ToolCall] = field(default_factory=list)
    details: Mapping[str, Any] = field(default_factory=dict)
    parsed: Any = None
    logprobs: list[TokenLogprob] = field(default_factory=list)

    def __post_init__(self) -> None:
        calls = self.tool_calls
        if calls is None or not all(isinstance(c, ToolCall) for c in calls):  # None, or dicts given
            read = [ToolCall.from_dict(c, f"tool_calls[{i}]") for i, c in enumerate(calls or ())]
            object.__setattr__(self, "tool_calls", read)

    @property
    def message(self) -> Message:
        """The assistant message to append to the conversation: the text, and the calls if any."""
        calls = list(self.tool_calls)
        content = self.text if self.text or not calls else None
        return Message(role="assistant", content=content, tool_calls=calls or None)

    def as_delta(self) -> StreamDelta:
        """The whole reply as one stream delta: what a backend that cannot stream yields.

        The model and any tool calls travel in ``details``, where a stream carries them (calls as
        index-keyed fragments), so joining the one delta gives this reply back.
        """
        details = {**self.details, "model": self.model}
        if self.tool_calls:
            details["tool_calls"] = [{"index": i, **c.to_dict()} for i, c in enumerate(self.tool_calls)]
        return StreamDelta(
            text=self.text,
            finish_reason=self.finish_reason,
            usage=self.usage,
            details=details,
            logprobs=self.logprobs,
        )


@dataclass(frozen=True, slots=True)
class StreamDelta:
    """One piece of a streamed reply.

    Text arrives in ``text``; the last deltas carry ``finish_reason`` and ``usage``.
    ``details`` holds what is not normalised (reasoning text, provider, and tool-call fragments in
    ``details["tool_calls"]``: the OpenAI chunk shape, keyed by ``index``, which every backend yields
    and :mod:`llmclient.tools.fragments` merges);
    ``logprobs`` the entries of this delta's tokens, where the call asked for them.
    """

    text: str = ""
    finish_reason: FinishReason | None = None
    usage: Usage | None = None
    details: Mapping[str, Any] = field(default_factory=dict)
    logprobs: list[TokenLogprob] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """A checked request as a backend receives it: normalised messages and merged parameters."""

    messages: tuple[Message, ...]
    params: GenerationParams
