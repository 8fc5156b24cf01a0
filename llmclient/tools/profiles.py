"""Tool prompt profiles: how a local model that was trained on tool calls is shown tools and writes calls.

A model whose chat template reads ``tools`` is given them by its template. Many are not: the
embedded SmolLM2 was trained on tool calls, yet its template never reads ``tools``, so a prompt
rendered with them would be the same as one without. A :class:`ToolProfile` is the data that fills
the gap: the system text that presents the tools, the tags a call is written between, and the keys
of a call's JSON. It also says how calls are read back out of a reply (:meth:`ToolProfile.parse`)
and, for constrained decoding, the lark grammar of its call syntax (:meth:`ToolProfile.grammar`).

Profiles shipped: ``smollm2`` (its trained format: ``<tools>[...]</tools>`` in the system turn and
``<tool_call>[{"name": ..., "arguments": {...}}]</tool_call>`` answers), ``hermes`` (Hermes and
Qwen2.5: one ``<tool_call>{...}</tool_call>`` per call) and ``llama3`` (Llama 3.1/3.2 JSON calls:
the reply is ``{"name": ..., "parameters": {...}}``). This module is plain Python, shared by the
local (``hf``) and in-process vLLM (``vllm-engine``) backends: settings check profile names without
importing torch.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from llmclient.tools.calls import ToolCall

JSON_LAYOUT: dict[str, Any] = {"whitespace_flexible": False, "key_separator": ": ", "item_separator": ", "}
"""How constrained arguments are laid out: one line, as ``json.dumps`` writes them."""


@dataclass(frozen=True)
class ToolProfile:
    """How one family of models is shown tools and writes calls.

    Attributes:
        name: what the ``tool_profile`` setting calls it.
        system: the system text presenting the tools; ``{tools}`` is replaced by the tools as JSON
            (one OpenAI-shaped ``function`` dict each, in a list).
        open: the text that opens a call (``<tool_call>``); empty where a call is bare JSON.
        close: the text that closes it.
        as_list: whether one tag holds a JSON list of calls (SmolLM2) instead of one call per tag.
        separator: what goes between two tagged calls (one call per tag), or two calls of a list.
        arguments_key: the key of a call's arguments (``arguments``; Llama writes ``parameters``).
        result_role: the role tool results are given to the template in.
        result_text: how a result's content is written; ``{content}`` is replaced by it.
        pad: what a call is written with inside its tags (Hermes puts it on a line of its own).
    """

    name: str
    system: str
    open: str
    close: str
    as_list: bool = False
    separator: str = "\n"
    arguments_key: str = "arguments"
    result_role: str = "tool"
    result_text: str = "{content}"
    pad: str = ""

    def system_text(self, tools: Sequence[Mapping[str, Any]]) -> str:
        """The system text presenting ``tools`` (OpenAI-shaped tool dicts)."""
        functions = [tool.get("function", tool) for tool in tools]
        return self.system.replace("{tools}", json.dumps(functions, ensure_ascii=False))

    def write(self, calls: Sequence[ToolCall]) -> str:
        """``calls`` as this profile writes them in an assistant turn of the history."""
        bodies = [self._body(call.name, _arguments(call)) for call in calls]
        if self.as_list:
            return f"{self.open}[{', '.join(bodies)}]{self.close}"
        return self.separator.join(f"{self.open}{self.pad}{body}{self.pad}{self.close}" for body in bodies)

    def _body(self, name: str, arguments: Any) -> str:
        return json.dumps({"name": name, self.arguments_key: arguments}, ensure_ascii=False)

    def parse(self, text: str) -> tuple[str, list[ToolCall]]:
        """The text outside the calls, and the calls, of a reply (ids left empty).

        What does not read as a call (a tag around something that is not JSON, say) stays in the
        text, so nothing the model wrote is lost.
        """
        if not self.open:
            return self._parse_bare(text)
        calls: list[ToolCall] = []
        kept: list[str] = []
        pattern = re.compile(re.escape(self.open) + r"(.*?)(?:" + re.escape(self.close) + r"|\Z)", re.S)
        position = 0
        for match in pattern.finditer(text):
            found = self._calls(match.group(1))
            if found is None:
                continue
            kept.append(text[position : match.start()])
            calls.extend(found)
            position = match.end()
        kept.append(text[position:])
        return "".join(kept).strip() if calls else text, calls

    def _parse_bare(self, text: str) -> tuple[str, list[ToolCall]]:
        stripped = text.strip().removeprefix("<|python_tag|>").strip()
        if not stripped.startswith("{"):
            return text, []
        found = self._calls(stripped)
        return (text, []) if found is None else ("", found)

    def _calls(self, inner: str) -> list[ToolCall] | None:
        try:
            value = json.loads(inner.strip())
        except ValueError:
            return None
        items = value if isinstance(value, list) else [value]
        calls: list[ToolCall] = []
        for item in items:
            call = self.read_call(item)
            if call is None:
                return None
            calls.append(call)
        return calls

    def read_call(self, item: Any) -> ToolCall | None:
        """One call from its JSON (``{"name": ..., "arguments": {...}}``); ``None`` when it is none."""
        if not isinstance(item, Mapping) or not isinstance(item.get("name"), str):
            return None
        arguments = item.get(self.arguments_key, item.get("arguments", item.get("parameters", {})))
        text = arguments if isinstance(arguments, str) else json.dumps(arguments, ensure_ascii=False)
        return ToolCall(id="", name=item["name"], arguments=text)

    def grammar(self, tools: Sequence[Any], *, required: bool, parallel: bool) -> str:
        """The lark grammar of this profile's calls to ``tools`` (:class:`~llmclient.tools.Tool`),
        each call's arguments constrained to its tool's schema.

        ``required``: the reply is calls only. Otherwise the model writes free text, and once it
        writes the opening tag, what follows must be calls (a bare-JSON profile: a reply that starts
        with ``{`` must be a call).
        """
        from llmclient.backends.huggingface.grammars import closed

        rules = []
        for i, tool in enumerate(tools):
            schema = {**closed(tool.parameters), "x-guidance": JSON_LAYOUT}
            head = json.dumps(f'{{"name": {json.dumps(tool.name)}, "{self.arguments_key}": ')
            rules.append(f'call{i}: {head} %json {json.dumps(schema)} "}}"')
        lines = [f"call: {' | '.join(f'call{i}' for i in range(len(tools)))}", *rules]
        more = parallel and (self.as_list or bool(self.open))
        if self.as_list:
            items = f"call ({json.dumps(self.separator)} call)*" if more else "call"
            lines.append(f'calls: "[" {items} "]" {json.dumps(self.close)}')
        elif self.open:
            pad = f"{json.dumps(self.pad)} " if self.pad else ""
            tagged = f"{pad}call {pad}{json.dumps(self.close)}"
            again = f" ({json.dumps(self.separator + self.open)} {tagged})*" if more else ""
            lines.append(f"calls: {tagged}{again}")
        else:
            lines.append("calls: call")
        if required:
            start = f"start: {json.dumps(self.open)} calls" if self.open else "start: calls"
        elif self.open:
            start = (
                f"start: TEXT | head calls\nTEXT: /(?s:.*)/\nhead[stop={json.dumps(self.open)}]: /(?s:.*)/"
            )
        else:
            start = "start: TEXT | calls\nTEXT: /(?s:.*)/ & ~/(?s:\\s*\\{.*)/"
        return "\n".join([start, *lines])


def _arguments(call: ToolCall) -> Any:
    try:
        return json.loads(call.arguments) if call.arguments.strip() else {}
    except ValueError:
        return call.arguments


_SMOLLM2_SYSTEM = (
    "You are an expert in composing functions. You are given a question and a set of possible functions.\n"
    "Based on the question, you will need to make one or more function/tool calls to achieve the purpose.\n"
    "If none of the functions can be used, point it out and refuse to answer.\n"
    "If the given question lacks the parameters required by the function, also point it out.\n\n"
    "You have access to the following tools:\n<tools>{tools}</tools>\n\n"
    "The output MUST strictly adhere to the following format, and NO other text MUST be included.\n"
    "The example format is as follows. Please make sure the parameter type is correct. If no function "
    "call is needed, please make the tool calls an empty list '[]'.\n"
    '<tool_call>[\n{"name": "func_name1", "arguments": {"argument1": "value1", "argument2": "value2"}},\n'
    "... (more tool calls as required)\n]</tool_call>"
)
_HERMES_SYSTEM = (
    "You are a function calling AI model. You are provided with function signatures within <tools></tools> "
    "XML tags. You may call one or more functions to assist with the user query. Don't make assumptions "
    "about what values to plug into functions. Here are the available tools: <tools>{tools}</tools>\n"
    "For each function call, return a json object with function name and arguments within "
    "<tool_call></tool_call> XML tags as follows:\n"
    '<tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>'
)
_LLAMA3_SYSTEM = (
    "You have access to the following functions. To call a function, respond with a JSON object of the "
    'form {"name": function name, "parameters": dictionary of argument name and its value}. Do not use '
    "variables. Answer in plain text when no function is needed.\n\n{tools}"
)

PROFILES: dict[str, ToolProfile] = {
    "smollm2": ToolProfile(
        "smollm2", _SMOLLM2_SYSTEM, "<tool_call>", "</tool_call>", as_list=True, separator=", "
    ),
    "hermes": ToolProfile(
        "hermes",
        _HERMES_SYSTEM,
        "<tool_call>",
        "</tool_call>",
        pad="\n",
        result_role="user",
        result_text="<tool_response>\n{content}\n</tool_response>",
    ),
    "llama3": ToolProfile(
        "llama3", _LLAMA3_SYSTEM, "", "", arguments_key="parameters", result_role="ipython"
    ),
}
"""The profiles shipped, by the name the ``tool_profile`` setting gives."""
PROFILES["qwen2.5"] = PROFILES["hermes"]


def guess_profile(template: str) -> ToolProfile | None:
    """The profile whose calls a tools-aware ``template`` writes, read from its text; ``None`` if unclear."""
    if "<tool_call>" in template:
        return PROFILES["hermes"]
    if "<|python_tag|>" in template or '"parameters"' in template or "ipython" in template:
        return PROFILES["llama3"]
    return None
