"""Generation parameters: one meaning on every backend, checked once, merged over defaults."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any, TypedDict

from llmclient._settings import suggest
from llmclient.errors import InvalidRequestError
from llmclient.logprobs import MAX_TOP_LOGPROBS
from llmclient.structured import OutputFormat, output_format
from llmclient.tools.specs import Tool, check_tool_choice, to_tools, tool_choice


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
