"""Tool calling, one shape on every backend.

Pass ``tools=`` (Python functions, JSON Schema tool dicts, pydantic models) and ``tool_choice=`` to any
call; the reply's ``tool_calls`` is a list of :class:`ToolCall`, and ``reply.message`` the assistant
message to append before the results (:func:`tool_result`). :func:`run_tools` runs the whole loop.

- :mod:`~llmclient.tools.calls`: :class:`ToolCall`, :class:`ToolCallError`, and the check every reply
  with calls passes in the base class (ids, finish reason, arguments against the tool's schema).
- :mod:`~llmclient.tools.specs`: :class:`Tool` and what ``tools=`` and ``tool_choice=`` accept.
- :mod:`~llmclient.tools.signatures`: a function's schema from its type hints and docstring.
- :mod:`~llmclient.tools.fragments`: streamed call fragments merged into calls, whatever the server.
- :mod:`~llmclient.tools.loop`: :func:`run_tools`, :func:`arun_tools`, :func:`tool_result`.

Nothing here imports a backend at import time (``llmclient.types`` imports this package).
"""

from llmclient.tools.calls import ToolCall, ToolCallError
from llmclient.tools.loop import ToolRun, arun_tools, run_tools, tool_result
from llmclient.tools.specs import TOOL_CHOICE_MODES, Tool, to_tool, to_tools

__all__ = [
    "TOOL_CHOICE_MODES",
    "Tool",
    "ToolCall",
    "ToolCallError",
    "ToolRun",
    "arun_tools",
    "run_tools",
    "to_tool",
    "to_tools",
    "tool_result",
]
