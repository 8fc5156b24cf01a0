"""The value types every backend speaks: messages, generation parameters, replies and stream deltas.

Plain OpenAI-shaped dicts are accepted wherever messages are taken, so code that already builds
``[{"role": "user", "content": "..."}]`` works unchanged; :class:`Message` is the typed form.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any, Literal, TypedDict, cast, get_args

from llmclient._settings import suggest
from llmclient.errors import InvalidRequestError
from llmclient.logprobs import MAX_TOP_LOGPROBS
from llmclient.logprobs import TokenLogprob as TokenLogprob  # one of the reply's types
from llmclient.structured import OutputFormat, output_format
from llmclient.tools.calls import ToolCall
from llmclient.tools.specs import Tool, check_tool_choice, to_tools, tool_choice

Role = Literal["system", "user", "assistant", "tool", "developer"]
"""Who speaks a message; ``developer`` is OpenAI's newer name for ``system``."""

FinishReason = Literal["stop", "length", "tool_calls", "content_filter"]
"""Why generation ended, normalised across backends."""

TEXT_PART_SEPARATOR = " "
"""What joins the text parts of one message where it is flattened to text (:attr:`Message.text`)."""

_ROLES: frozenset[str] = frozenset(get_args(Role))
_FINISH_REASONS: frozenset[str] = frozenset(get_args(FinishReason))


@dataclass(frozen=True, slots=True)
class Message:
    """One turn of a conversation.

    ``content`` is a string, or a list of OpenAI content parts (``{"type": "text", ...}``) for
    multimodal input. ``tool_calls`` (an assistant's calls, as :class:`~llmclient.tools.ToolCall`; dicts
    in the OpenAI shape are read into them) and ``tool_call_id`` (what a tool result answers) carry tool
    use; ``reply.message`` and :func:`llmclient.tool_result` build them.
    """

    role: Role
    content: str | list[dict[str, Any]] | None = ""
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The OpenAI wire form of this message, leaving out fields that are not set."""
        out: dict[str, Any] = {"role": self.role, "content": self.content}
        if self.name is not None:
            out["name"] = self.name
        if self.tool_calls is not None:
            out["tool_calls"] = [ToolCall.from_dict(c).to_dict() for c in self.tool_calls]
        if self.tool_call_id is not None:
            out["tool_call_id"] = self.tool_call_id
        return out

    @property
    def text(self) -> str:
        """The text of the message: its content, or the text parts of multimodal content joined by
        one space (other parts left out).

        This is the one rule wherever llmclient flattens a message to text (the local backend's
        prompts, their truncation), and the one ``transformers serve`` applies, so
        ``"Name three"`` + ``"colours."`` reads ``"Name three colours."`` on every backend.
        """
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        texts = (str(p.get("text", "")) for p in self.content if p.get("type") == "text")
        return TEXT_PART_SEPARATOR.join(texts)


MessageLike = Message | Mapping[str, Any]
"""A :class:`Message` or an OpenAI-shaped dict such as ``{"role": "user", "content": "Hi"}``."""

Messages = str | Iterable[MessageLike]
"""A conversation: a list of messages (dicts or :class:`Message`), or one user prompt as a string."""

_MESSAGE_KEYS = frozenset(f.name for f in fields(Message))


def to_message(item: MessageLike, index: int = 0) -> Message:
    """Check one message and return it as a :class:`Message`.

    Raises :class:`InvalidRequestError` naming the message's position and what is wrong with it.
    """
    if isinstance(item, Message):
        if item.tool_calls and not all(isinstance(c, ToolCall) for c in item.tool_calls):
            item = replace(item, tool_calls=_tool_calls(item.tool_calls, index))
        _refuse_lone_surrogates(item, index)
        return item
    if not isinstance(item, Mapping):
        raise InvalidRequestError(
            f"messages[{index}] must be a dict like {{'role': 'user', 'content': '...'}} or a Message, "
            f"got {type(item).__name__}"
        )
    role = item.get("role")
    if not isinstance(role, str) or role not in _ROLES:
        hint = suggest(str(role), _ROLES)
        raise InvalidRequestError(
            f"messages[{index}] has role {role!r}; expected one of {sorted(_ROLES)}{hint}"
        )
    unknown = set(item) - _MESSAGE_KEYS
    if unknown:
        raise InvalidRequestError(
            f"messages[{index}] has unknown key(s) {sorted(unknown)}; allowed: {sorted(_MESSAGE_KEYS)}"
        )
    content = item.get("content", "")
    if content is not None and not isinstance(content, (str, list)):
        raise InvalidRequestError(
            f"messages[{index}].content must be a string or a list of content parts, "
            f"got {type(content).__name__}"
        )
    for part_index, part in enumerate(content if isinstance(content, list) else ()):
        if not isinstance(part, Mapping) or not isinstance(part.get("type"), str):
            raise InvalidRequestError(
                f"messages[{index}].content[{part_index}] must be a content part like "
                f"{{'type': 'text', 'text': '...'}}, got {part!r}"
            )
    for key in ("name", "tool_call_id"):
        if item.get(key) is not None and not isinstance(item[key], str):
            raise InvalidRequestError(f"messages[{index}].{key} must be a string, got {item[key]!r}")
    tool_calls = item.get("tool_calls")
    message = Message(
        role=cast(Role, role),
        content=content,
        name=item.get("name"),
        tool_calls=None if tool_calls is None else _tool_calls(tool_calls, index),
        tool_call_id=item.get("tool_call_id"),
    )
    _refuse_lone_surrogates(message, index)
    return message


def _tool_calls(calls: Any, index: int) -> list[ToolCall]:
    """A message's ``tool_calls`` as :class:`ToolCall` objects; an error naming the one at fault."""
    if not isinstance(calls, list):
        raise InvalidRequestError(
            f"messages[{index}].tool_calls must be a list of tool calls in the OpenAI shape, got {calls!r}"
        )
    return [ToolCall.from_dict(c, f"messages[{index}].tool_calls[{i}]") for i, c in enumerate(calls)]


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def _refuse_lone_surrogates(message: Message, index: int) -> None:
    """Refuse a lone UTF-16 surrogate (left where JavaScript cut an emoji): valid JSON, never sendable."""
    content = message.content
    parts = [
        (f"content[{i}].text", p.get("text")) for i, p in enumerate(content or ()) if isinstance(p, dict)
    ]
    texts: list[tuple[str, Any]] = [("content", content), *parts, ("name", message.name)]
    for where, text in texts:
        found = _LONE_SURROGATE.search(text) if isinstance(text, str) else None
        if found:
            raise InvalidRequestError(
                f"messages[{index}].{where} holds a lone UTF-16 surrogate (\\u{ord(found.group()):04x}) at "
                f"character {found.start()}, which is not text and cannot be sent; it usually comes from "
                f"text cut in the middle of an emoji: remove it or repair the text"
            )


def to_messages(messages: str | Iterable[MessageLike]) -> list[Message]:
    """Normalise a conversation; a bare string is taken as one user message."""
    if isinstance(messages, str):
        return [to_message(Message(role="user", content=messages))]
    out = [to_message(m, i) for i, m in enumerate(messages)]
    if not out:
        raise InvalidRequestError("messages is empty; pass at least one message")
    return out


class GenerationOptions(TypedDict, total=False):
    """Keyword arguments every ``chat``-like method accepts; see :class:`GenerationParams`."""

    max_new_tokens: int | None
    max_tokens: int | None
    temperature: float | None
    top_p: float | None
    top_k: int | None
    stop: str | Sequence[str] | None
    seed: int | None
    response_format: Any
    logprobs: bool | None
    top_logprobs: int | None
    tools: Sequence[Any] | None
    tool_choice: str | Mapping[str, Any] | None
    parallel_tool_calls: bool | None
    extra: Mapping[str, Any] | None


@dataclass(frozen=True, slots=True)
class GenerationParams:
    """How to generate: one meaning on every backend.

    ``None`` means "not set": the backend's configured default applies, then the backend's own.

    Attributes:
        max_new_tokens: tokens to generate beyond the prompt (never a total length).
        temperature: 0 means greedy and deterministic; above 0 samples.
        top_p: nucleus sampling mass, in (0, 1]; only used when sampling.
        top_k: sample from the k most likely tokens; only used when sampling.
        stop: strings that end the reply; they are not included in it.
        seed: makes sampling reproducible where the backend supports it.
        response_format: what the reply must be: a pydantic model class, a JSON Schema dict,
            ``llmclient.JSON``, ``llmclient.Choice([...])`` or ``llmclient.Regex(...)``, held as an
            :class:`~llmclient.structured.OutputFormat`; ``reply.parsed`` holds the checked value.
        logprobs: return each generated token's logprob in ``reply.logprobs`` (streamed too).
        top_logprobs: with them, the 0 to 20 most likely alternatives per token; a value above 0
            asks for ``logprobs`` too, unless ``logprobs=False``.
        tools: tools the model may call: Python functions, JSON Schema tool dicts in the OpenAI shape
            or pydantic models, held as :class:`~llmclient.tools.Tool` objects; ``reply.tool_calls``
            holds the calls, their arguments checked against each tool's schema.
        tool_choice: ``"auto"`` (the model decides), ``"none"``, ``"required"`` (some call), or a
            tool's name (that tool).
        parallel_tool_calls: whether the model may make several calls in one reply.
        extra: backend-specific fields passed through untouched (request body keys for remote
            backends, ``generate`` keyword arguments for local ones).
    """

    max_new_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    stop: tuple[str, ...] | None = None
    seed: int | None = None
    response_format: OutputFormat | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None
    tools: tuple[Tool, ...] | None = None
    tool_choice: str | None = None
    parallel_tool_calls: bool | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_options(
        cls, options: Mapping[str, Any], *, source: str = "generation parameter"
    ) -> GenerationParams:
        """Build validated parameters from keyword options or a config table.

        ``max_tokens`` is accepted as the OpenAI name of ``max_new_tokens``. ``source`` names where
        the options came from, for error messages.
        """
        values = dict(options)
        if "max_tokens" in values:
            alias = values.pop("max_tokens")
            if alias is not None:
                if values.get("max_new_tokens") is not None:
                    raise InvalidRequestError(
                        f"{source}: both max_tokens and max_new_tokens are set; use max_new_tokens only"
                    )
                values["max_new_tokens"] = alias
        for name in values:
            if name not in _PARAM_NAMES:
                raise InvalidRequestError(f"unknown {source} {name!r}{_param_hint(name)}")
        if "stop" in values:
            values["stop"] = _check_stop(values["stop"])
        if values.get("response_format") is not None:
            values["response_format"] = output_format(values["response_format"])
        if "tools" in values:
            values["tools"] = to_tools(values["tools"])
        if "tool_choice" in values:
            values["tool_choice"] = tool_choice(values["tool_choice"])
        extra = values.get("extra")
        if extra is None:
            values.pop("extra", None)
        elif not isinstance(extra, Mapping):
            raise InvalidRequestError(f"extra must be a dict of backend-specific fields, got {extra!r}")
        params = cls(**values)
        params.validate()
        return params

    def validate(self) -> None:
        """Raise :class:`InvalidRequestError` naming the first value out of range."""
        _check_int("max_new_tokens", self.max_new_tokens, minimum=1)
        _check_int("top_k", self.top_k, minimum=1)
        _check_int("seed", self.seed, minimum=None)
        _check_number("temperature", self.temperature, low=0.0, high=None, low_open=False)
        _check_number("top_p", self.top_p, low=0.0, high=1.0, low_open=True)
        if self.logprobs is not None and not isinstance(self.logprobs, bool):
            raise InvalidRequestError(f"logprobs must be True or False, got {self.logprobs!r}")
        _check_int("top_logprobs", self.top_logprobs, minimum=0)
        if self.top_logprobs is not None and self.top_logprobs > MAX_TOP_LOGPROBS:
            raise InvalidRequestError(
                f"top_logprobs must be <= {MAX_TOP_LOGPROBS} (the most alternatives per token a call "
                f"returns), got {self.top_logprobs!r}"
            )
        if self.parallel_tool_calls is not None and not isinstance(self.parallel_tool_calls, bool):
            raise InvalidRequestError(
                f"parallel_tool_calls must be True or False, got {self.parallel_tool_calls!r}"
            )
        if self.tools is not None:  # without tools, a named choice may still meet the defaults' tools
            check_tool_choice(self.tool_choice, self.tools)

    def merged(self, override: GenerationParams) -> GenerationParams:
        """These parameters with every value set in ``override`` taking precedence."""
        changes: dict[str, Any] = {
            f.name: getattr(override, f.name)
            for f in fields(self)
            if f.name != "extra" and getattr(override, f.name) is not None
        }
        if override.extra:
            changes["extra"] = {**self.extra, **override.extra}
        if not changes:
            return self
        merged = replace(self, **changes)
        if "tools" in changes or "tool_choice" in changes:
            check_tool_choice(merged.tool_choice, merged.tools)
        return merged

    def to_dict(self) -> dict[str, Any]:
        """The parameters that are set, as plain JSON: what cassettes and resume keys record."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None or (f.name == "extra" and not value):
                continue
            if isinstance(value, OutputFormat):
                value = value.to_dict()
            elif f.name == "tools":
                value = [tool.to_dict() for tool in value]
            elif isinstance(value, tuple):
                value = list(value)
            elif f.name == "extra":
                value = dict(value)
            out[f.name] = value
        return out

    @property
    def greedy(self) -> bool:
        """True when generation is deterministic: temperature is 0."""
        return self.temperature == 0

    @property
    def wants_logprobs(self) -> bool:
        """Whether replies carry token logprobs: ``logprobs=True``, or ``top_logprobs`` above 0 with
        ``logprobs`` not set to ``False``.
        """
        return self.logprobs is True or (self.logprobs is None and bool(self.top_logprobs))


_PARAM_NAMES = frozenset(f.name for f in fields(GenerationParams))
_PARAM_HINTS = {
    "max_length": "; llmclient counts only new tokens: use max_new_tokens",
    "max_completion_tokens": "; use max_new_tokens (sent as max_tokens / max_completion_tokens)",
    "do_sample": "; set temperature=0 for greedy decoding or temperature>0 to sample",
    "stop_sequences": "; use stop",
}


def _param_hint(name: str) -> str:
    if name in _PARAM_HINTS:
        return _PARAM_HINTS[name]
    suggestion = suggest(name, _PARAM_NAMES)
    if suggestion:
        return suggestion
    return "; backend-specific fields go in extra={...}"


def _check_int(name: str, value: object, *, minimum: int | None) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidRequestError(f"{name} must be an integer, got {value!r}")
    if minimum is not None and value < minimum:
        raise InvalidRequestError(f"{name} must be >= {minimum}, got {value!r}")


def _check_number(name: str, value: object, *, low: float, high: float | None, low_open: bool) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise InvalidRequestError(f"{name} must be a number, got {value!r}")
    too_low = value <= low if low_open else value < low
    if too_low or (high is not None and value > high):
        bounds = f"in {'(' if low_open else '['}{low:g}, {high:g}]" if high is not None else f">= {low:g}"
        raise InvalidRequestError(f"{name} must be {bounds}, got {value!r}")


def _check_stop(value: object) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = (value,)
    if not isinstance(value, Sequence) or not all(isinstance(s, str) and s for s in value):
        raise InvalidRequestError(f"stop must be a non-empty string or a list of them, got {value!r}")
    return tuple(value)


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
