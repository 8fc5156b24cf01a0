"""Tools on a model whose prompt llmclient renders itself: shown to it, and read back out of its reply.

The local backend (``hf``) and the in-process vLLM backend (``vllm-engine``) both render the chat
template themselves and get plain text back, so both need the same rules, kept here (plain Python:
no torch, no vLLM):

- whether the chat template reads ``tools`` (:func:`reads_tools`); if it does, it is given the tools
  and the history as transformers templates expect them (:func:`tool_history`);
- otherwise a :class:`~llmclient.tools.profiles.ToolProfile` shows them (:func:`choose_profile`,
  :func:`rewrite`): the tools in a system turn, past calls written in the model's own syntax;
- which tools a request shows and whether calls are read back at all (:func:`tool_use`);
- the calls in a reply (:func:`read_reply`): by the tokenizer's own response parser where it has one,
  else by the profile; and, for streams, where a call may begin in text still coming (:func:`call_start`).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from llmclient.errors import UnsupportedFeatureError
from llmclient.messages import Message
from llmclient.stops import find_stop
from llmclient.tools.calls import ToolCall
from llmclient.tools.profiles import PROFILES, ToolProfile, guess_profile
from llmclient.tools.specs import Tool
from llmclient.types import ChatRequest, StreamDelta

SMOLLM2_MARK = "You are a helpful AI assistant named SmolLM"
"""Text of SmolLM2's own chat template: a model with it gets the ``smollm2`` profile by default."""

TURN_END_TOKENS = ("<|im_end|>", "<|eot_id|>", "<|eom_id|>", "<|end|>", "<end_of_turn>", "<|endoftext|>")
"""Special tokens that end a turn in the common templates: stripped from a reply decoded with its
special tokens kept."""


def reads_tools(template: str | None) -> bool:
    """Whether a chat ``template`` reads the ``tools`` variable (parsed with jinja2, not searched)."""
    if not template:
        return False
    import jinja2
    from jinja2 import meta

    try:
        parsed = jinja2.Environment().parse(template)
    except jinja2.TemplateSyntaxError:
        return "tools" in template
    return "tools" in meta.find_undeclared_variables(parsed)


def tool_history(conversation: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Template dicts with tool use as transformers templates expect it: an assistant's calls with
    ``arguments`` as a dict, and each tool result with the ``name`` of the call it answers.
    """
    names: dict[str, str] = {}
    out: list[dict[str, Any]] = []
    for message in conversation:
        calls = message.get("tool_calls")
        if calls:
            message = {**message, "tool_calls": [_template_call(c) for c in calls]}
            names.update({c["id"]: c["function"]["name"] for c in message["tool_calls"] if c.get("id")})
        elif message.get("role") == "tool" and "name" not in message:
            name = names.get(message.get("tool_call_id") or "")
            if name:
                message = {**message, "name": name}
        out.append(message)
    return out


def _template_call(call: Mapping[str, Any]) -> dict[str, Any]:
    function = call.get("function", {})
    arguments = function.get("arguments")
    if isinstance(arguments, str):
        with contextlib.suppress(ValueError):  # not JSON: the template gets the text as it is
            arguments = json.loads(arguments) if arguments.strip() else {}
    return {**call, "function": {**function, "arguments": arguments}}


def default_profile(model_name: str, template: str | None) -> str | None:
    """The profile a model gets without a ``tool_profile`` setting: ``smollm2`` for the built-in alias
    and for SmolLM2's own template (trained on tool calls, its template never reads ``tools``).
    """
    return "smollm2" if model_name.lower() == "smollm2" or SMOLLM2_MARK in (template or "") else None


def choose_profile(
    template: str | None, *, reads: bool, configured: str | None, default: str | None
) -> ToolProfile | None:
    """The profile of a model: the ``configured`` one; else, where the template does not read tools,
    the ``default``; else the one the template's text points to. ``None`` where none applies.
    """
    chosen = configured or (None if reads else default)
    if chosen:
        return PROFILES[chosen]
    return guess_profile(template or "") if reads else None


def missing_profile(model_name: str, reads: bool) -> UnsupportedFeatureError:
    """The error for a model given tools that has no profile: what to set."""
    names = ", ".join(sorted(PROFILES))
    how = (
        "its chat template reads tools, but how it writes calls is not clear from the template"
        if reads
        else "its chat template does not read tools"
    )
    return UnsupportedFeatureError(
        f"model {model_name!r} cannot be given tools: {how}, and it has no tool prompt profile. "
        f"Set tool_profile in the backend config (one of {names}) to the format the model was trained "
        f"on, or set chat_template to a template that reads tools"
    )


@dataclass(frozen=True)
class ToolUse:
    """What a request does with tools.

    Attributes:
        shown: the tools the prompt presents (none under ``tool_choice="none"``).
        active: whether calls are read from the reply (tools offered, ``tool_choice`` not ``"none"``).
        choice: ``tool_choice``: ``"auto"``, ``"required"``, ``"none"`` or a tool's name.
        parallel: ``parallel_tool_calls`` as the call set it (``None``: unset).
    """

    shown: tuple[Tool, ...]
    active: bool
    choice: str
    parallel: bool | None = None

    @property
    def called(self) -> list[Tool]:
        """The tools a reply may call: the one named by ``tool_choice``, else every tool shown."""
        if self.choice in ("auto", "required"):
            return list(self.shown)
        return [t for t in self.shown if t.name == self.choice]

    def grammar(self, profile: ToolProfile) -> str:
        """The lark grammar (llguidance's dialect) that holds a reply to calls of :attr:`called`.

        ``"required"`` or a named tool: calls only, and one call unless ``parallel_tool_calls=True``
        (a small model held to the call syntax would otherwise repeat the call until
        ``max_new_tokens``; a named tool: always one). ``"auto"``: free text until the call tag, calls
        after it, several unless ``parallel_tool_calls=False``.
        """
        auto = self.choice == "auto"
        parallel = self.parallel is not False if auto else bool(self.parallel)
        return profile.grammar(
            self.called, required=not auto, parallel=parallel and self.choice in ("auto", "required")
        )


def tool_use(request: ChatRequest, *, backend: str = "a local model") -> ToolUse | None:
    """How ``request`` uses tools; ``None`` when it offers none and its history has no calls.

    Raises :class:`UnsupportedFeatureError` when ``response_format`` is asked for with tools: the
    reply cannot be held to both.
    """
    params = request.params
    tools = tuple(params.tools or ())
    history = any(m.tool_calls or m.role == "tool" for m in request.messages)
    if not tools and not history:
        return None
    choice = params.tool_choice or "auto"
    active = bool(tools) and choice != "none"
    if active and params.response_format is not None:
        raise UnsupportedFeatureError(
            f"{backend} cannot constrain a reply to both tools and a response_format: pass one of them "
            f"(or tool_choice='none')"
        )
    return ToolUse(tools if choice != "none" else (), active, choice, params.parallel_tool_calls)


def rewrite(messages: Sequence[Message], tools: Sequence[Tool], profile: ToolProfile) -> tuple[Message, ...]:
    """The history in the profile's format: tools in the system turn, calls as text, results in the
    profile's role (for a template that does not read tools).
    """
    out: list[Message] = []
    for message in messages:
        if message.tool_calls:
            written = profile.write(message.tool_calls)
            content = f"{message.text}\n{written}" if message.text else written
            out.append(Message(role="assistant", content=content))
        elif message.role == "tool":
            text = profile.result_text.replace("{content}", message.text)
            out.append(Message(role=profile.result_role, content=text))  # type: ignore[arg-type]
        else:
            out.append(message)
    if tools:
        system = profile.system_text([tool.to_dict() for tool in tools])
        if out and out[0].role in ("system", "developer"):
            system = f"{system}\n\n{out[0].text}" if out[0].text else system
            out = out[1:]
        out.insert(0, Message(role="system", content=system))
    return tuple(out)


def turn_ends(tokenizer: Any) -> tuple[str, ...]:
    """The tokenizer's end-of-sequence, padding and turn-end tokens: what a reply decoded with its
    special tokens kept is stripped of.
    """
    specials = getattr(tokenizer, "all_special_tokens", []) or []
    named = {getattr(tokenizer, "eos_token", None), getattr(tokenizer, "pad_token", None)}
    ends = {t for t in specials if t in named or t in TURN_END_TOKENS}
    return tuple(sorted(t for t in ends if t))


def strip_ends(text: str, ends: Sequence[str]) -> str:
    """``text`` with the turn-end and padding tokens ``ends`` taken out."""
    for end in ends:
        text = text.replace(end, "")
    return text


def read_reply(
    text: str, *, profile: ToolProfile, parser: Any, active: bool, stops: Sequence[str] = ()
) -> tuple[str, list[ToolCall], bool]:
    """The text outside the calls, the calls (ids empty), and whether a stop string cut the reply.

    ``text`` is the reply decoded with special tokens kept and the turn ends stripped. ``parser`` is
    the tokenizer where its ``parse_response`` reads calls (tried first), else ``None``; what it
    cannot read, the profile reads. Inactive (``tool_choice="none"``): no calls are read.
    """
    cut = find_stop(text, stops) if stops else None
    if cut is not None:
        text = text[:cut]
    if not active:
        return text, [], cut is not None
    if parser is not None:
        parsed = _native(parser, text)
        if parsed is not None:
            return parsed[0], parsed[1], cut is not None
    outside, calls = profile.parse(text)
    return outside, calls, cut is not None


def response_parser(tokenizer: Any) -> Any:
    """The tokenizer, where it has a response parser (``parse_response``) for calls; else ``None``."""
    return tokenizer if getattr(tokenizer, "response_template", None) else None


def _native(parser: Any, text: str) -> tuple[str, list[ToolCall]] | None:
    try:
        message = parser.parse_response(text)
    except Exception:  # a parser that cannot read this reply: the profile reads it
        return None
    if not isinstance(message, Mapping):
        return None
    calls = [_native_call(c) for c in message.get("tool_calls") or ()]
    return str(message.get("content") or ""), [c for c in calls if c is not None]


def _native_call(call: Any) -> ToolCall | None:
    if not isinstance(call, Mapping):
        return None
    try:
        return replace(ToolCall.from_dict(call), id="")
    except Exception:
        return None


def call_start(text: str, profile: ToolProfile) -> int:
    """Where a call may begin in streamed ``text``: text from there on is held back (trailing space
    too, which the reply's text drops before a call). A profile whose calls are bare JSON holds back
    a reply that opens with ``{``; a tagged one holds back from its tag, or from a tag's beginning
    at the end of the text.
    """
    tag = profile.open
    if not tag:
        return 0 if not text.strip() or text.lstrip().startswith(("{", "<|python_tag|>")) else len(text)
    found = text.find(tag)
    if found >= 0:
        return len(text[:found].rstrip())
    partial = next((n for n in range(min(len(tag) - 1, len(text)), 0, -1) if tag.startswith(text[-n:])), 0)
    return len(text[: len(text) - partial].rstrip())


def with_calls(delta: StreamDelta, calls: Sequence[ToolCall]) -> StreamDelta:
    """The last delta of a stream whose reply called tools: the calls as the index-keyed fragments a
    remote backend streams (``details["tool_calls"]``), finish reason ``"tool_calls"``; so one
    accumulator (:class:`~llmclient.tools.fragments.CallFragments`) reads every backend's calls.
    """
    if not calls:
        return delta
    fragments = [{"index": i, **call.to_dict()} for i, call in enumerate(calls)]
    return replace(delta, finish_reason="tool_calls", details={**delta.details, "tool_calls": fragments})
