"""Tool-call streams that break: cut in the middle of a call's arguments, or ended by the token limit.
The caller gets a typed error, never a half call passed off as whole.
"""

from __future__ import annotations

import pytest

from llmclient.backends.openai import OpenAICompatibleBackend
from llmclient.errors import BackendUnavailableError
from llmclient.retry import RetryPolicy
from llmclient.testing.server import LoopbackServer, Quirks, Reply, sse_reply, tool_call, tool_call_chunks
from llmclient.tools import ToolCallError

CALLS = [tool_call("lookup", {"city": "Oslo", "country": "Norway"}, id="call_1")]
TOOL = {"name": "lookup", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}


def backend_for(server: LoopbackServer) -> OpenAICompatibleBackend:
    return OpenAICompatibleBackend(
        model="m", base_url=server.base_url, api_key="sk-test-1234567890", retry=RetryPolicy(max_attempts=2)
    )


def test_a_stream_cut_in_the_middle_of_the_arguments_is_a_typed_error_not_a_call() -> None:
    whole = sse_reply(tool_call_chunks(CALLS, quirks=Quirks(pieces=4)))
    assert whole.chunks is not None
    cut = Reply(headers=whole.headers, chunks=whole.chunks, reset_after_chunks=3)  # role + 2 fragments
    with LoopbackServer(lambda request: cut) as server, backend_for(server) as backend:
        stream = backend.stream("Where?", tools=[TOOL])
        with pytest.raises(BackendUnavailableError):
            stream.final()
        assert len(server.requests) == 1  # deltas were yielded: never silently restarted


def test_a_stream_ended_by_the_token_limit_mid_arguments_says_to_raise_it() -> None:
    chunks = tool_call_chunks(CALLS, quirks=Quirks(pieces=4, finish_reason="length"))
    del chunks[-4:-2]  # the last argument pieces never came
    server = LoopbackServer(lambda request: sse_reply(chunks))
    with server, backend_for(server) as backend, pytest.raises(ToolCallError, match="raise it") as info:
        backend.stream("Where?", tools=[TOOL]).final()
    assert info.value.finish_reason == "length" and info.value.reply.tool_calls[0].id == "call_1"
