"""Tools on the chat-completions wire: the body fields that offer them, the calls a reply holds.

``tools`` go out as OpenAI's tool dicts (:meth:`llmclient.tools.Tool.to_dict`), ``tool_choice`` as a
mode or ``{"type": "function", "function": {"name": ...}}``, ``parallel_tool_calls`` as given. A
non-streamed reply's ``message.tool_calls`` (or the legacy ``function_call``) are read into
:class:`~llmclient.tools.ToolCall` objects, arguments sent as an object written as JSON text; ids
left empty are filled in by the base class. Streamed fragments are not read here: they travel in
``details["tool_calls"]`` to the one merger of every backend (:mod:`llmclient.tools.fragments`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from llmclient.backends.openai.failures import malformed
from llmclient.errors import InvalidRequestError
from llmclient.tools.calls import ToolCall
from llmclient.tools.specs import TOOL_CHOICE_MODES
from llmclient.types import GenerationParams


def tools_fields(params: GenerationParams) -> dict[str, Any]:
    """The body fields of a request that offers tools (none without tools: servers refuse a
    ``tool_choice`` alone).
    """
    if not params.tools:
        return {}
    out: dict[str, Any] = {"tools": [tool.to_dict() for tool in params.tools]}
    choice = params.tool_choice
    if choice is not None:
        named = {"type": "function", "function": {"name": choice}}
        out["tool_choice"] = choice if choice in TOOL_CHOICE_MODES else named
    if params.parallel_tool_calls is not None:
        out["parallel_tool_calls"] = params.parallel_tool_calls
    return out


def reply_calls(
    message: Mapping[str, Any], raw: bytes, status: int, headers: Mapping[str, str]
) -> list[ToolCall]:
    """The calls of a reply's ``message``; a :class:`~llmclient.errors.MalformedResponseError` when
    they are not calls at all.
    """
    calls = message.get("tool_calls")
    legacy = message.get("function_call")
    if not calls and isinstance(legacy, Mapping):  # the API's older single call
        calls = [{"function": legacy}]
    if not calls:
        return []
    if isinstance(calls, Mapping):
        calls = [calls]
    try:
        return [ToolCall.from_dict(call, f"tool_calls[{i}]") for i, call in enumerate(calls)]
    except (InvalidRequestError, AttributeError, TypeError) as exc:
        raise malformed(f"the reply's tool_calls are malformed ({exc})", raw, status, headers) from exc
