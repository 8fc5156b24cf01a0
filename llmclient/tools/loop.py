"""The small loop users expect: call the model, run the tools it asks for, send the results, repeat.

:func:`run_tools` and :func:`arun_tools` share every rule: the calls of one turn run concurrently
(threads for sync functions, tasks for ``async`` ones); a function that raises, or a call the model
got wrong (an unknown tool, arguments that do not fit the schema), becomes an error result the model
sees, not a crash; a tool given without a Python function ends the run, its call returned for the
caller to handle; a ``tool_choice`` that forces a call (``"required"`` or a name) holds for the first
round only, so the model can answer once it has what it needs.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import json
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from llmclient.errors import InvalidRequestError
from llmclient.tools.calls import ToolCall, ToolCallError
from llmclient.tools.specs import Tool, to_tools

if TYPE_CHECKING:
    from llmclient.backend import ChatBackend
    from llmclient.types import ChatResponse, Message, Messages

ERROR_PREFIX = "Error: "
"""How a failed call's result begins, so the model can tell a failure from a value."""


def tool_result(call: ToolCall, value: Any) -> Message:
    """The tool message that answers ``call`` with ``value``: a string as it is, anything else as
    JSON (pydantic models and dataclasses as their fields).
    """
    from llmclient.types import Message

    content = value if isinstance(value, str) else _json(value)
    return Message(role="tool", content=content, tool_call_id=call.id)


@dataclass(frozen=True)
class ToolRun:
    """What :func:`run_tools` ends with.

    Attributes:
        reply: the last reply: the model's answer in text, or, when the run stopped first (``rounds``
            reached ``max_rounds``, or a call to a tool without a function), the reply with calls.
        messages: the whole conversation: the messages given, each reply's ``message`` and every
            tool result, ready to continue.
        rounds: the model calls made.
    """

    reply: ChatResponse
    messages: list[Message]
    rounds: int

    @property
    def text(self) -> str:
        """The last reply's text."""
        return self.reply.text

    @property
    def done(self) -> bool:
        """Whether the model answered without asking for more calls."""
        return not self.reply.tool_calls


class _Run:
    """One run's state: the conversation, the tools, the options of each round."""

    def __init__(self, messages: Messages, tools: Any, max_rounds: int, options: dict[str, Any]) -> None:
        from llmclient.types import to_messages

        if isinstance(max_rounds, bool) or not isinstance(max_rounds, int) or max_rounds < 1:
            raise InvalidRequestError(f"max_rounds must be an integer >= 1, got {max_rounds!r}")
        self.tools: tuple[Tool, ...] = to_tools(tools) or ()
        if not self.tools:
            raise InvalidRequestError("run_tools needs at least one tool")
        self.by_name = {tool.name: tool for tool in self.tools}
        self.messages = to_messages(messages)
        self.max_rounds = max_rounds
        self.options = options

    def request(self, round_number: int) -> dict[str, Any]:
        """The keyword arguments of one model call."""
        options = dict(self.options, tools=self.tools)
        if round_number > 1 and options.get("tool_choice") not in (None, "auto", "none"):
            options["tool_choice"] = "auto"  # forced once: the model may answer now
        return options

    def take(self, reply: ChatResponse) -> bool:
        """Append ``reply``; whether the run goes on (calls to run, each tool with a function)."""
        self.messages.append(reply.message)
        return bool(reply.tool_calls) and all(
            self.by_name[c.name].function is not None for c in reply.tool_calls if c.name in self.by_name
        )

    def prepared(self, call: ToolCall) -> tuple[Callable[..., Any], dict[str, Any]] | str:
        """The function and arguments for ``call``, or the error text the model is sent instead."""
        tool = self.by_name.get(call.name)
        if tool is None or tool.function is None:
            names = ", ".join(repr(n) for n in self.by_name)
            return f"{ERROR_PREFIX}there is no tool named {call.name!r}; the tools: {names}"
        try:
            args = dataclasses.replace(call, tool=tool).args
        except ToolCallError as exc:
            return f"{ERROR_PREFIX}{exc.message}; call the tool again with arguments that fit its schema"
        return tool.function, args


def _reply_of(error: ToolCallError) -> ChatResponse:
    """The reply a :class:`ToolCallError` carries: its bad calls are answered with errors."""
    if error.reply is None:
        raise error
    reply: ChatResponse = error.reply
    return reply


def run_tools(
    backend: ChatBackend, messages: Messages, tools: Sequence[Any], *, max_rounds: int = 8, **options: Any
) -> ToolRun:
    """Answer ``messages`` with ``tools``: call the model, run the functions it asks for, send back the
    results, and repeat until it answers in text or ``max_rounds`` model calls are made.

    ``tools`` are as ``tools=`` takes them (functions, tool dicts, pydantic models); ``options`` are
    the generation options of every call. Returns a :class:`ToolRun` (the last reply, the whole
    conversation, the rounds).
    """
    run = _Run(messages, tools, max_rounds, options)
    for round_number in range(1, max_rounds + 1):
        try:
            reply = backend.chat(run.messages, **run.request(round_number))
        except ToolCallError as exc:
            reply = _reply_of(exc)
        if not run.take(reply):
            return ToolRun(reply, run.messages, round_number)
        calls = reply.tool_calls
        if len(calls) == 1:
            run.messages.append(_outcome(run, calls[0]))
        else:
            with ThreadPoolExecutor(max_workers=len(calls), thread_name_prefix="llmclient-tool") as pool:
                run.messages.extend(pool.map(lambda call: _outcome(run, call), calls))
    return ToolRun(reply, run.messages, max_rounds)


async def arun_tools(
    backend: ChatBackend, messages: Messages, tools: Sequence[Any], *, max_rounds: int = 8, **options: Any
) -> ToolRun:
    """Async :func:`run_tools`: ``async`` functions are awaited, sync ones run in worker threads, and
    the calls of one turn run concurrently.
    """
    run = _Run(messages, tools, max_rounds, options)
    for round_number in range(1, max_rounds + 1):
        try:
            reply = await backend.achat(run.messages, **run.request(round_number))
        except ToolCallError as exc:
            reply = _reply_of(exc)
        if not run.take(reply):
            return ToolRun(reply, run.messages, round_number)
        run.messages.extend(await asyncio.gather(*(_aoutcome(run, call) for call in reply.tool_calls)))
    return ToolRun(reply, run.messages, max_rounds)


def _outcome(run: _Run, call: ToolCall) -> Message:
    """Run ``call`` from sync code (an ``async`` function on an event loop of its own)."""
    prepared = run.prepared(call)
    if isinstance(prepared, str):
        return tool_result(call, prepared)
    function, args = prepared
    try:
        value = function(**args)
        if inspect.isawaitable(value):
            value = asyncio.run(_awaited(value))
    except Exception as exc:  # the model sees what went wrong, and may try again
        return tool_result(call, _failure(exc))
    return tool_result(call, value)


async def _aoutcome(run: _Run, call: ToolCall) -> Message:
    """Run ``call`` from async code (a sync function in a worker thread)."""
    prepared = run.prepared(call)
    if isinstance(prepared, str):
        return tool_result(call, prepared)
    function, args = prepared
    try:
        if inspect.iscoroutinefunction(function):
            value = await function(**args)
        else:
            value = await asyncio.to_thread(function, **args)
            if inspect.isawaitable(value):
                value = await value
    except Exception as exc:  # the model sees what went wrong, and may try again
        return tool_result(call, _failure(exc))
    return tool_result(call, value)


async def _awaited(value: Any) -> Any:
    return await value


def _failure(exc: Exception) -> str:
    return f"{ERROR_PREFIX}{type(exc).__name__}: {exc}"


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=_plain)


def _plain(value: Any) -> Any:
    """A JSON form for what ``json`` cannot write: pydantic models, dataclasses, sets; else ``str``."""
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return str(value)
