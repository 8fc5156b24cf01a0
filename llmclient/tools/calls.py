"""Tool calls as replies carry them: :class:`ToolCall`, the error a bad call raises, and the check every
reply with calls passes in the base class (ids, finish reason, the tools offered).

A call is what the model asked for: an ``id`` that the tool's result answers to, the tool's ``name``,
and its ``arguments`` as the JSON text the model wrote. :func:`checked_calls` is the one place a reply's
calls are made whole, whichever backend produced them: ids filled in where the server sent none
(``call_<n>``, numbered through the conversation so they never repeat), ``finish_reason`` set to
``"tool_calls"`` where a server said ``"stop"``, and, when the request offered tools, each call
matched to its tool and its arguments checked against the tool's schema.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from llmclient.errors import InvalidRequestError, StructuredOutputError

if TYPE_CHECKING:
    from llmclient.tools.specs import Tool
    from llmclient.types import ChatRequest, ChatResponse

SYNTHETIC_ID = "call_{}"
"""The id a call gets where the server sent none or an empty one; ``{}`` is the call's position in the
conversation (0 for the first call of the first reply)."""


class ToolCallError(StructuredOutputError):
    """A tool call does not fit the tools offered: an unknown tool, or arguments that are not JSON or
    do not match the tool's schema.

    A :class:`~llmclient.errors.StructuredOutputError`: the reply is kept in ``reply`` (its calls with
    ids), so nothing paid for is lost and :func:`llmclient.run_tools` can tell the model what was wrong.

    Attributes:
        call: the first call at fault.
        tool: its tool's name.
        offered: the names of the tools the request offered.
    """

    def __init__(
        self,
        message: str,
        *,
        call: ToolCall | None = None,
        offered: Iterable[str] = (),
        errors: tuple[str, ...] = (),
        **kwargs: Any,
    ) -> None:
        super().__init__(message, text=call.arguments if call else "", errors=errors, **kwargs)
        self.call = call
        self.tool = call.name if call else ""
        self.offered = tuple(offered)


@dataclass(frozen=True, slots=True)
class ToolCall:
    """One tool call the model asked for.

    Attributes:
        id: what the tool's result answers to (``tool_result(call, ...)`` carries it back); never
            empty in a reply (``call_<n>`` where the server sent none).
        name: the tool's name.
        arguments: the arguments as the JSON text the model wrote (what history sends back).
        tool: the :class:`~llmclient.tools.specs.Tool` it calls, where the request offered it (not
            part of equality).
    """

    id: str
    name: str
    arguments: str = "{}"
    tool: Tool | None = field(default=None, compare=False, repr=False)

    @property
    def args(self) -> dict[str, Any]:
        """The arguments parsed: a dict, checked against the tool's schema where the tool is known.

        Raises :class:`ToolCallError` naming the tool when they are not a JSON object or do not match.
        """
        value = parse_arguments(self)
        if self.tool is not None:
            errors = self.tool.errors(value)
            if errors:
                raise ToolCallError(
                    f"the arguments of the call to tool {self.name!r} do not match its schema: "
                    f"{'; '.join(errors)} (arguments: {_shown(self.arguments)})",
                    call=self,
                    errors=errors,
                )
        return value

    def to_dict(self) -> dict[str, Any]:
        """The call in the OpenAI shape, as history and cassettes write it."""
        function = {"name": self.name, "arguments": self.arguments}
        return {"id": self.id, "type": "function", "function": function}

    @classmethod
    def from_dict(cls, data: Any, where: str = "tool call") -> ToolCall:
        """Read a call in the OpenAI shape (``{"id", "type", "function": {"name", "arguments"}}``) or
        flat (``{"id", "name", "arguments"}``); arguments given as a JSON object are written as text.

        Raises :class:`~llmclient.errors.InvalidRequestError` naming ``where`` when it is no call.
        """
        if isinstance(data, ToolCall):
            return data
        function = data.get("function") if isinstance(data, Mapping) else None
        body = function if isinstance(function, Mapping) else data
        name = body.get("name") if isinstance(body, Mapping) else None
        if not isinstance(name, str) or not name:
            raise InvalidRequestError(
                f"{where} must be a tool call like {{'id': 'call_1', 'type': 'function', "
                f"'function': {{'name': 'get_weather', 'arguments': '{{}}'}}}}, got {_shown(data)}"
            )
        call_id = data.get("id")
        return cls(id=call_id if isinstance(call_id, str) else "", name=name, arguments=arguments_text(body))


def arguments_text(body: Mapping[str, Any]) -> str:
    """A call's ``arguments`` as JSON text: as sent when text, encoded when a server sent an object."""
    value = body.get("arguments")
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


def parse_arguments(call: ToolCall) -> dict[str, Any]:
    """``call``'s arguments as a dict (empty text reads as no arguments); :class:`ToolCallError` when
    they are not a JSON object.
    """
    if not call.arguments.strip():
        return {}
    try:
        value = json.loads(call.arguments)
    except ValueError as exc:
        problem = f"invalid JSON: {exc}"
    else:
        if isinstance(value, dict):
            return value
        problem = f"a JSON {type(value).__name__}, not an object"
    raise ToolCallError(
        f"the arguments of the call to tool {call.name!r} are not a JSON object: {problem} "
        f"(arguments: {_shown(call.arguments)})",
        call=call,
        errors=(problem,),
    )


def checked_calls(reply: ChatResponse, request: ChatRequest) -> ChatResponse:
    """``reply`` with its calls made whole: ids where missing, finish reason ``"tool_calls"``, and each
    call matched to the tool it names and its arguments checked, when the request offered tools.

    Raises :class:`ToolCallError` (carrying the reply) for a call to a tool not offered, or with
    arguments that do not fit; ``errors`` lists every call at fault.
    """
    if not reply.tool_calls:
        return reply
    earlier = [c.id for m in request.messages for c in m.tool_calls or ()]
    calls = _with_ids(reply.tool_calls, earlier)
    changes: dict[str, Any] = {"tool_calls": calls}
    if reply.finish_reason in (None, "stop"):  # a server that said "stop" although it called tools
        changes["finish_reason"] = "tool_calls"
        if reply.finish_reason == "stop":
            changes["details"] = {"native_finish_reason": "stop", **reply.details}
    tools = request.params.tools
    if not tools:
        return replace(reply, **changes)
    by_name = {tool.name: tool for tool in tools}
    faults: list[tuple[ToolCall, ToolCallError]] = []
    for position, call in enumerate(calls):
        tool = by_name.get(call.name)
        if tool is None:
            names = ", ".join(repr(n) for n in by_name)
            fault = ToolCallError(
                f"the model called tool {call.name!r}, which was not offered; the tools offered: {names}",
                call=call,
                offered=by_name,
                errors=(f"unknown tool {call.name!r}",),
            )
            faults.append((call, fault))
            continue
        calls[position] = call = replace(call, tool=tool)
        try:
            _ = call.args  # parsed and checked against the tool's schema
        except ToolCallError as exc:
            faults.append((call, exc))
    reply = replace(reply, **changes)
    if faults:
        message = faults[0][1].message
        if reply.finish_reason == "length":
            message = (
                f"the reply was cut by max_new_tokens in the middle of a tool call: raise it ({message})"
            )
        error = ToolCallError(
            message,
            call=faults[0][0],
            offered=by_name,
            errors=tuple(f"{call.name} ({call.id}): {e}" for call, fault in faults for e in fault.errors),
            finish_reason=reply.finish_reason,
        )
        error.reply = reply
        raise error
    return reply


def _with_ids(calls: Iterable[ToolCall], earlier: list[str]) -> list[ToolCall]:
    """``calls`` with an id each, unique in the conversation: a missing, empty or repeated id becomes
    ``call_<n>``, ``n`` the call's position among all calls so far (skipping ids already used).
    """
    used = set(earlier)
    out: list[ToolCall] = []
    number = len(earlier)
    for call in calls:
        if not call.id or call.id in used:
            while SYNTHETIC_ID.format(number) in used:
                number += 1
            call = replace(call, id=SYNTHETIC_ID.format(number))
        used.add(call.id)
        out.append(call)
        number += 1
    return out


def shown_call(call: ToolCall) -> str:
    """``call`` as a person reads it: ``get_weather(city="Lisbon", unit="C")`` (its arguments text as
    sent, where they are not a JSON object).
    """
    try:
        args = json.loads(call.arguments) if call.arguments.strip() else {}
    except ValueError:
        args = None
    if not isinstance(args, dict):
        return f"{call.name}({call.arguments})"
    shown = ", ".join(f"{key}={json.dumps(value, ensure_ascii=False)}" for key, value in args.items())
    return f"{call.name}({shown})"


def _shown(value: Any) -> str:
    text = value if isinstance(value, str) else repr(value)
    return repr(text if len(text) <= 200 else text[:200] + "...")
