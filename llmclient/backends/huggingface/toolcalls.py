"""Tool calling on a local model: tools into the prompt, a grammar for the calls, calls out of the reply.

One :class:`ToolKit` per engine decides, once, how this model is given tools:

- its chat template reads ``tools`` (found from the template's undeclared variables): the template
  renders them (``apply_chat_template(tools=...)``), and calls are read by the tokenizer's own
  response parser where it has one (``tokenizer.parse_response``), else by the profile the template's
  text points to (or the ``tool_profile`` setting);
- otherwise a :class:`~llmclient.tools.profiles.ToolProfile` (the ``tool_profile`` setting, or
  ``smollm2`` for the built-in alias) presents the tools in a system turn and writes history calls
  in the model's format;
- neither: :class:`~llmclient.errors.UnsupportedFeatureError` naming the ``tool_profile`` setting.
  Tools are never dropped silently.

:meth:`ToolKit.plan` turns a request into a :class:`ToolPlan`: the request as the template is given
it, the grammar that constrains the reply (``tool_choice="required"`` or a tool's name: calls only,
arguments held to each tool's schema; ``"auto"``: free text until the call tag, calls after it), and
:meth:`ToolPlan.parse`, which reads the calls out of the reply's tokens, decoded with special tokens
kept (some models' call tags are special tokens) and the turn-end tokens stripped here. The rules
that do not depend on this backend (which profile, the history rewritten, the calls read from text)
live in :mod:`llmclient.tools.templates`, shared with the ``vllm-engine`` backend.
"""

from __future__ import annotations

import copy
import hashlib
import threading
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from llmclient.backends.huggingface.grammars import Grammar
from llmclient.errors import UnsupportedFeatureError
from llmclient.tools.calls import ToolCall
from llmclient.tools.profiles import ToolProfile
from llmclient.tools.specs import Tool
from llmclient.tools.templates import (
    choose_profile,
    default_profile,
    missing_profile,
    read_reply,
    reads_tools,
    response_parser,
    rewrite,
    strip_ends,
    tool_use,
    turn_ends,
)
from llmclient.types import ChatRequest


@dataclass(frozen=True)
class ToolPlan:
    """How one request's tools are prompted, constrained and read back.

    Attributes:
        request: the request as the prompt builder is given it (history rewritten by the profile
            where the template does not read tools).
        prompts: the prompt builder that renders it (the engine's, with the tools bound where the
            template reads them).
        profile: the call syntax the grammar and the fallback parser use.
        grammar: what constrains the reply, or ``None`` (``tool_choice="none"``).
        parser: the tokenizer, where its ``parse_response`` reads calls; else ``None``.
        end_texts: turn-end tokens stripped from the decoded reply.
        active: whether calls are read from the reply at all (not under ``tool_choice="none"``).
    """

    request: ChatRequest
    prompts: Any
    profile: ToolProfile
    grammar: Grammar | None
    parser: Any
    end_texts: tuple[str, ...]
    active: bool

    def parse(
        self, tokenizer: Any, ids: Sequence[int], stops: Sequence[str]
    ) -> tuple[str, list[ToolCall], bool]:
        """The text outside the calls, the calls, and whether a stop string cut the reply."""
        raw: str = tokenizer.decode(list(ids), skip_special_tokens=False)
        return read_reply(
            self.strip(raw), profile=self.profile, parser=self.parser, active=self.active, stops=stops
        )

    def strip(self, text: str) -> str:
        """``text`` with the turn-end and padding tokens taken out."""
        return strip_ends(text, self.end_texts)


class ToolKit:
    """How one model is given tools and how its calls are read (see the module's docstring).

    Args:
        tokenizer: the model's tokenizer.
        template: the chat template in use (the configured one, or the tokenizer's).
        model_name: the model's name, for messages.
        profile: the ``tool_profile`` setting, or ``None``.
        default_profile: the profile the model gets without one (``smollm2`` for the built-in alias).
    """

    def __init__(
        self,
        tokenizer: Any,
        template: str | None,
        *,
        model_name: str,
        profile: str | None,
        default_profile: str | None = None,
    ) -> None:
        self._tokenizer = tokenizer
        self._model_name = model_name
        self.reads_tools = reads_tools(template)
        self.profile = choose_profile(
            template, reads=self.reads_tools, configured=profile, default=default_profile
        )
        self._parser = response_parser(tokenizer)
        self._lock = threading.Lock()
        self._grammars: dict[str, Grammar] = {}
        self._ends = turn_ends(tokenizer)

    def plan(self, request: ChatRequest, prompts: Any) -> ToolPlan | None:
        """The plan for ``request``; ``None`` when it offers no tools and its history has no calls.

        Raises :class:`UnsupportedFeatureError` when the model has neither a tools-aware template
        nor a profile, or when ``response_format`` is asked for with tools.
        """
        use = tool_use(request)
        if use is None:
            return None
        profile = self._profile()
        shown = use.shown
        if self.reads_tools:
            bound = copy.copy(prompts)
            bound._tools = [tool.to_dict() for tool in shown] or None
            prepared, builder = request, bound
        else:
            prepared, builder = (
                replace(request, messages=rewrite(request.messages, shown, profile)),
                prompts,
            )
        grammar = self._grammar(use.grammar(profile), use.called) if use.active else None
        return ToolPlan(prepared, builder, profile, grammar, self._parser, self._ends, use.active)

    def _profile(self) -> ToolProfile:
        if self.profile is None:
            raise missing_profile(self._model_name, self.reads_tools)
        return self.profile

    def _grammar(self, text: str, tools: Sequence[Tool]) -> Grammar:
        """The grammar ``text`` of calls to ``tools``, compiled and checked once per tools and mode."""
        digest = "tools:" + hashlib.sha256(text.encode()).hexdigest()
        with self._lock:
            known = self._grammars.get(digest)
        if known is not None:
            return known
        names = ", ".join(t.name for t in tools)
        if not getattr(self._tokenizer, "is_fast", False):
            raise UnsupportedFeatureError(
                f"constrained tool calls need a fast (Rust) tokenizer, and this model's is "
                f"{type(self._tokenizer).__name__}; pass tool_choice='none' or load the model with its "
                f"tokenizer.json"
            )
        from llguidance import LLMatcher

        compiled = LLMatcher.grammar_from_lark(text)
        failed, messages = LLMatcher.validate_grammar_with_warnings(compiled, None)
        if failed or messages:
            reason = messages[0] if messages else "the grammar does not compile"
            raise UnsupportedFeatureError(
                f"the schemas of tools {names} cannot be constrained on a local model: {reason}. Simplify "
                f"the schema (see docs/structured.md for what llguidance supports)"
            )
        grammar = Grammar(digest, compiled, f"tool calls to {names}")
        with self._lock:
            return self._grammars.setdefault(digest, grammar)


def tool_kit(tokenizer: Any, configured: str | None, model_name: str, profile: str | None) -> ToolKit:
    """The :class:`ToolKit` of a loaded model: its template (``configured`` or the tokenizer's), the
    ``tool_profile`` setting, and ``smollm2`` by default for the built-in alias and SmolLM2's template.
    """
    found = configured or getattr(tokenizer, "chat_template", None)
    template = found if isinstance(found, str) else None
    return ToolKit(
        tokenizer,
        template,
        model_name=model_name,
        profile=profile,
        default_profile=default_profile(model_name, template),
    )
