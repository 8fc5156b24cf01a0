"""A loopback OpenAI-compatible HTTP server for tests and benchmarks, and the faults it can serve.

Typical use::

    from llmclient.testing.server import LoopbackServer, OpenAIHandler

    with LoopbackServer(OpenAIHandler(text="Hello there")) as server:
        client = openai.OpenAI(base_url=server.base_url, api_key="sk-test")
        client.chat.completions.create(model="m", messages=[...])
        assert server.requests[0].json()["model"] == "m"

- :mod:`~llmclient.testing.server.loopback`: :class:`LoopbackServer`, the server in a background thread.
- :mod:`~llmclient.testing.server.serving`: the HTTP on ``aiohttp.web``, connection counting, and the
  raw-socket faults (resets).
- :mod:`~llmclient.testing.server.exchange`: :class:`Request`, :class:`Reply`, :data:`Handler`.
- :mod:`~llmclient.testing.server.replies`: replies in the OpenAI API's shape and :class:`OpenAIHandler`.
- :mod:`~llmclient.testing.server.toolcalls`: tool-call replies, plain and streamed with real servers'
  quirks, and :class:`ToolCallHandler`.
- :mod:`~llmclient.testing.server.faults`: :class:`~llmclient.testing.server.faults.FaultHandler`,
  the faults real APIs produce.
- :mod:`~llmclient.testing.server.cli`: ``python -m llmclient.testing.server``, the server in its own
  process.

Importing this package imports aiohttp; the cassette layers (:mod:`llmclient.testing.cassettes`) never
import it.
"""

from llmclient.testing.server.cli import main
from llmclient.testing.server.exchange import Handler, Reply, Request
from llmclient.testing.server.loopback import LoopbackServer
from llmclient.testing.server.replies import (
    OpenAIHandler,
    completion,
    completion_chunks,
    error_reply,
    json_reply,
    sse_reply,
)
from llmclient.testing.server.toolcalls import (
    Quirks,
    ToolCallHandler,
    tool_call,
    tool_call_chunks,
    tool_call_completion,
)

__all__ = [
    "Handler",
    "LoopbackServer",
    "OpenAIHandler",
    "Quirks",
    "Reply",
    "Request",
    "ToolCallHandler",
    "completion",
    "completion_chunks",
    "error_reply",
    "json_reply",
    "main",
    "sse_reply",
    "tool_call",
    "tool_call_chunks",
    "tool_call_completion",
]
