"""Tool calls on the ``vllm-engine`` backend: tools into the prompt, calls out of the reply, with
llmclient's own rules (:mod:`llmclient.tools.templates`), as on the local backend.

vLLM's offline API renders tools (``LLM.chat(tools=...)``) but does not read calls back, so:

- a chat template that reads ``tools`` is given them (and the history as transformers templates
  expect it); another model is shown them by its :class:`~llmclient.tools.profiles.ToolProfile`
  (the ``tool_profile`` setting, ``smollm2`` for the built-in alias), as a system turn;
- the reply is decoded with its special tokens kept (some models' call tags are special tokens),
  the turn ends stripped, and its calls read by the tokenizer's response parser or the profile;
- a stream shows text up to where a call may begin, and the calls in its last delta;
- with vLLM's ``guidance`` structured-output backend (``engine_args = { structured_outputs_config
  = { backend = "guidance" } }``) calls are constrained by the same grammar as on the local backend
  (arguments held to each tool's schema); without it, ``tool_choice="auto"`` is read but not
  constrained, and ``"required"`` or a named tool is refused, naming that setting.

Pure Python: nothing here imports vLLM.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Any

from llmclient.backends.vllm_engine.convert import conversation
from llmclient.errors import UnsupportedFeatureError
from llmclient.tools.profiles import ToolProfile
from llmclient.tools.templates import (
    call_start,
    choose_profile,
    default_profile,
    missing_profile,
    read_reply,
    reads_tools,
    response_parser,
    rewrite,
    strip_ends,
    tool_history,
    tool_use,
    turn_ends,
    with_calls,
)
from llmclient.types import ChatRequest, ChatResponse, StreamDelta


@dataclass(frozen=True)
class ToolReading:
    """How a reply's calls are read: the call syntax, the tokenizer's parser, the turn ends."""

    profile: ToolProfile
    parser: Any
    ends: tuple[str, ...]
    active: bool

    def reply(self, reply: ChatResponse) -> ChatResponse:
        """``reply`` with its calls read out of its text (ids left for the backend to give)."""
        text, calls, _ = read_reply(
            strip_ends(reply.text, self.ends), profile=self.profile, parser=self.parser, active=self.active
        )
        return replace(reply, text=text, tool_calls=calls)


class ToolDeltas:
    """A stream's deltas with tools: text as it comes, held back where a call may begin; the calls,
    read from the whole reply as ``chat`` reads them, in the last delta.
    """

    def __init__(self, reading: ToolReading) -> None:
        self._reading = reading
        self._raw = ""
        self._shown = ""

    def feed(self, delta: StreamDelta) -> StreamDelta:
        """``delta`` with the text that may now be shown (all of it, and the calls, when it is the last)."""
        reading = self._reading
        self._raw += delta.text
        text = strip_ends(self._raw, reading.ends)
        if delta.finish_reason is None:
            end = call_start(text, reading.profile) if reading.active else len(text)
            piece = text[len(self._shown) : end] if end > len(self._shown) else ""
            self._shown += piece
            return replace(delta, text=piece)
        outside, calls, _ = read_reply(
            text, profile=reading.profile, parser=reading.parser, active=reading.active
        )
        rest = outside[len(self._shown) :] if outside.startswith(self._shown) else ""
        return with_calls(replace(delta, text=rest), calls)


@dataclass(frozen=True)
class PreparedTools:
    """One request's tools, ready for ``LLM.chat``.

    Attributes:
        conversation: the messages as ``LLM.chat`` takes them (rewritten by the profile where the
            template does not read tools).
        tools: the ``tools`` argument of ``LLM.chat`` (where the template reads them), else ``None``.
        reading: how the reply's calls are read; ``None`` under ``tool_choice="none"``.
        grammar: the lark grammar that constrains the reply (``guidance`` backend only), or ``None``.
    """

    conversation: list[dict[str, Any]]
    tools: list[dict[str, Any]] | None
    reading: ToolReading | None
    grammar: str | None


class ToolSetup:
    """How one engine's model is given tools and how its calls are read.

    Args:
        tokenizer: the engine's tokenizer.
        template: the chat template in use (the ``chat_template`` setting, or the tokenizer's).
        model_name: the model's name, for messages and the default profile.
        configured: the ``tool_profile`` setting.
        guidance: whether the engine's structured-output backend is ``guidance`` (calls constrained).
    """

    def __init__(
        self, tokenizer: Any, template: str | None, *, model_name: str, configured: str | None, guidance: bool
    ) -> None:
        self.model_name = model_name
        self.reads = reads_tools(template)
        default = default_profile(model_name, template)
        self.profile = choose_profile(template, reads=self.reads, configured=configured, default=default)
        self.parser = response_parser(tokenizer)
        self.ends = turn_ends(tokenizer)
        self.guidance = guidance

    def prepare(self, request: ChatRequest) -> PreparedTools | None:
        """``request``'s tools for ``LLM.chat``; ``None`` when it offers none and its history has no
        calls. Refused (:class:`UnsupportedFeatureError`, saying what to set) for a model without a
        tools-aware template or a profile, tools with a ``response_format``, and a forced call
        without the ``guidance`` backend.
        """
        use = tool_use(request, backend="the vllm-engine backend")
        if use is None:
            return None
        if self.profile is None:
            raise missing_profile(self.model_name, self.reads)
        profile = self.profile
        if use.active and use.choice != "auto" and not self.guidance:
            raise UnsupportedFeatureError(
                f"tool_choice={use.choice!r} needs the reply held to tool calls, which the vllm-engine "
                f"backend does through vLLM's guidance grammars: set engine_args = "
                f'{{ structured_outputs_config = {{ backend = "guidance" }} }}, or use tool_choice="auto"'
            )
        if self.reads:
            turns = tool_history(conversation(request.messages))
            tools = [tool.to_dict() for tool in use.shown] or None
        else:
            turns, tools = conversation(rewrite(request.messages, use.shown, profile)), None
        reading = ToolReading(profile, self.parser, self.ends, use.active) if use.active else None
        grammar = use.grammar(profile) if use.active and self.guidance else None
        return PreparedTools(turns, tools, reading, grammar)


def tools_key(tools: list[dict[str, Any]] | None) -> str:
    """A key that is equal for equal ``tools`` arguments: conversations that share one share a call."""
    return "" if tools is None else json.dumps(tools, sort_keys=True)
