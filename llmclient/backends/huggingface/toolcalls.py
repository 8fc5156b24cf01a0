"""Tool calling on a local model: tools into the prompt, a grammar for the calls, calls out of the reply.

One :class:`ToolKit` per engine decides, once, how this model is given tools:

- its chat template reads ``tools`` (found from the template's undeclared variables): the template
  renders them (``apply_chat_template(tools=...)``), and calls are read by the tokenizer's own
  response parser where it has one (``tokenizer.parse_response``), else by the profile the template's
  text points to (or the ``tool_profile`` setting);
- otherwise a :class:`~.toolprofiles.ToolProfile` (the ``tool_profile`` setting, or ``smollm2`` for the
  built-in alias) presents the tools in a system turn and writes history calls in the model's format;
- neither: :class:`~llmclient.errors.UnsupportedFeatureError` naming the ``tool_profile`` setting.
  Tools are never dropped silently.

:meth:`ToolKit.plan` turns a request into a :class:`ToolPlan`: the request as the template is given
it, the grammar that constrains the reply (``tool_choice="required"`` or a tool's name: calls only,
arguments held to each tool's schema; ``"auto"``: free text until the call tag, calls after it), and
:meth:`ToolPlan.parse`, which reads the calls out of the reply's tokens, decoded with special tokens
kept (some models' call tags are special tokens) and the turn-end tokens stripped here.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from llmclient.backends.huggingface.grammars import Grammar
from llmclient.backends.huggingface.toolprofiles import PROFILES, ToolProfile, guess_profile
from llmclient.errors import UnsupportedFeatureError
from llmclient.messages import Message
from llmclient.stops import find_stop
from llmclient.tools.calls import ToolCall
from llmclient.tools.specs import Tool
from llmclient.types import ChatRequest


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
        text = self.strip(raw)
        cut = find_stop(text, stops) if stops else None
        if cut is not None:
            text = text[:cut]
        if not self.active:
            return text, [], cut is not None
        if self.parser is not None:
            parsed = self._native(text)
            if parsed is not None:
                return parsed[0], parsed[1], cut is not None
        outside, calls = self.profile.parse(text)
        return outside, calls, cut is not None

    def strip(self, text: str) -> str:
        """``text`` with the turn-end and padding tokens taken out."""
        for end in self.end_texts:
            text = text.replace(end, "")
        return text

    def _native(self, text: str) -> tuple[str, list[ToolCall]] | None:
        try:
            message = self.parser.parse_response(text)
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
        chosen = profile or (None if self.reads_tools else default_profile)
        self.profile = (
            PROFILES[chosen] if chosen else guess_profile(template or "") if self.reads_tools else None
        )
        self._parser = tokenizer if getattr(tokenizer, "response_template", None) else None
        self._lock = threading.Lock()
        self._grammars: dict[str, Grammar] = {}
        specials = getattr(tokenizer, "all_special_tokens", []) or []
        eos = getattr(tokenizer, "eos_token", None)
        ends = {t for t in specials if t in {eos, getattr(tokenizer, "pad_token", None)} or _is_turn_end(t)}
        self._ends = tuple(sorted(t for t in ends if t))

    def plan(self, request: ChatRequest, prompts: Any) -> ToolPlan | None:
        """The plan for ``request``; ``None`` when it offers no tools and its history has no calls.

        Raises :class:`UnsupportedFeatureError` when the model has neither a tools-aware template
        nor a profile, or when ``response_format`` is asked for with tools.
        """
        params = request.params
        tools = params.tools or ()
        history = any(m.tool_calls or m.role == "tool" for m in request.messages)
        if not tools and not history:
            return None
        profile = self._profile()
        choice = params.tool_choice or "auto"
        active = bool(tools) and choice != "none"
        if active and params.response_format is not None:
            raise UnsupportedFeatureError(
                "a local model cannot constrain a reply to both tools and a response_format: pass "
                "one of them (or tool_choice='none')"
            )
        shown = tools if choice != "none" else ()
        if self.reads_tools:
            bound = copy.copy(prompts)
            bound._tools = [tool.to_dict() for tool in shown] or None
            prepared, builder = request, bound
        else:
            prepared, builder = (
                replace(request, messages=self._rewrite(request.messages, shown, profile)),
                prompts,
            )
        grammar = None
        if active:
            chosen = (
                [t for t in tools if t.name == choice] if choice not in ("auto", "required") else list(tools)
            )
            # A forced call is one call unless parallel_tool_calls=True: a small model held to the call
            # syntax would otherwise repeat the call until max_new_tokens (a named tool: always one).
            parallel = (
                params.parallel_tool_calls if choice != "auto" else params.parallel_tool_calls is not False
            )
            grammar = self._grammar(
                profile,
                chosen,
                required=choice != "auto",
                parallel=bool(parallel) and choice in ("auto", "required"),
            )
        return ToolPlan(prepared, builder, profile, grammar, self._parser, self._ends, active)

    def _profile(self) -> ToolProfile:
        if self.profile is not None:
            return self.profile
        names = ", ".join(sorted(PROFILES))
        how = (
            "its chat template reads tools, but how it writes calls is not clear from the template"
            if self.reads_tools
            else "its chat template does not read tools"
        )
        raise UnsupportedFeatureError(
            f"model {self._model_name!r} cannot be given tools: {how}, and it has no tool prompt profile. "
            f"Set tool_profile in the backend config (one of {names}) to the format the model was trained "
            f"on, or set chat_template to a template that reads tools"
        )

    def _rewrite(
        self, messages: Sequence[Message], tools: Sequence[Tool], profile: ToolProfile
    ) -> tuple[Message, ...]:
        """The history in the profile's format: tools in the system turn, calls as text, results in
        the profile's role.
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

    def _grammar(
        self, profile: ToolProfile, tools: Sequence[Tool], *, required: bool, parallel: bool
    ) -> Grammar:
        """The grammar of calls to ``tools``, compiled and checked once per tools and mode."""
        text = profile.grammar(tools, required=required, parallel=parallel)
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


def _is_turn_end(token: str) -> bool:
    return token in ("<|im_end|>", "<|eot_id|>", "<|eom_id|>", "<|end|>", "<end_of_turn>", "<|endoftext|>")


SMOLLM2_MARK = "You are a helpful AI assistant named SmolLM"
"""Text of SmolLM2's own chat template: a model with it gets the ``smollm2`` profile by default."""


def tool_kit(tokenizer: Any, configured: str | None, model_name: str, profile: str | None) -> ToolKit:
    """The :class:`ToolKit` of a loaded model: its template (``configured`` or the tokenizer's), the
    ``tool_profile`` setting, and ``smollm2`` by default for the built-in alias and SmolLM2's template.
    """
    template = configured or getattr(tokenizer, "chat_template", None)
    smollm2 = model_name.lower() == "smollm2" or SMOLLM2_MARK in (template or "")
    return ToolKit(
        tokenizer,
        template if isinstance(template, str) else None,
        model_name=model_name,
        profile=profile,
        default_profile="smollm2" if smollm2 else None,
    )
