"""run_tools and arun_tools: the loop, its rounds, failures the model sees, concurrency, where it stops."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from llmclient import ChatResponse, InvalidRequestError, Message, ToolRun, arun_tools, run_tools
from llmclient.testing import FunctionBackend
from llmclient.types import GenerationParams


def add(a: int, b: int) -> int:
    """Add two numbers.

    Args:
        a: the first.
        b: the second.
    """
    return a + b


def explode(reason: str) -> str:
    """Fail on purpose.

    Args:
        reason: why.
    """
    raise ValueError(f"no luck: {reason}")


def call(name: str, arguments: str, id: str = "") -> dict[str, Any]:
    return {"id": id, "function": {"name": name, "arguments": arguments}}


def calls(*items: dict[str, Any]) -> ChatResponse:
    return ChatResponse(text="", finish_reason="tool_calls", tool_calls=list(items))  # type: ignore[arg-type]


def model_that_adds(messages: list[Message], params: GenerationParams) -> ChatResponse | str:
    """Asks for add(2, 3) and explode(...), then answers with what the results say."""
    results = [m for m in messages if m.role == "tool"]
    if not results:
        return calls(call("add", '{"a": 2, "b": 3}'), call("explode", '{"reason": "test"}'))
    return "results: " + " | ".join(str(m.content) for m in results)


def test_two_rounds_run_the_function_and_a_failure_becomes_an_error_result() -> None:
    backend = FunctionBackend(model_that_adds)
    run = run_tools(backend, "What is 2 + 3?", [add, explode], temperature=0)
    assert isinstance(run, ToolRun) and run.rounds == 2 and run.done
    assert run.text == "results: 5 | Error: ValueError: no luck: test"
    assert [m.role for m in run.messages] == ["user", "assistant", "tool", "tool", "assistant"]
    assert [m.tool_call_id for m in run.messages[2:4]] == ["call_0", "call_1"]
    assert run.messages[1].tool_calls is not None and run.messages[1].tool_calls[0].id == "call_0"
    sent = backend.requests[-1]
    assert [t.name for t in sent.params.tools or ()] == ["add", "explode"] and sent.params.temperature == 0


async def _slow_add(a: int, b: int) -> int:
    await asyncio.sleep(0)
    return a + b


def test_arun_tools_runs_the_calls_of_one_turn_concurrently() -> None:
    started: list[str] = []
    both = asyncio.Event()

    async def wait_for(tag: str) -> str:
        """Wait until both calls have started.

        Args:
            tag: which call.
        """
        started.append(tag)
        if len(started) == 2:
            both.set()
        await asyncio.wait_for(both.wait(), 5)  # a sequential loop would time out here
        return tag

    def sync_tag(tag: str) -> str:
        """A plain function, run in a worker thread.

        Args:
            tag: which call.
        """
        return tag.upper()

    def model(messages: list[Message], params: GenerationParams) -> ChatResponse | str:
        if messages[-1].role == "tool":
            return ",".join(str(m.content) for m in messages if m.role == "tool")
        return calls(
            call("wait_for", '{"tag": "a"}', "x"),
            call("wait_for", '{"tag": "b"}', "y"),
            call("sync_tag", '{"tag": "c"}', "z"),
        )

    run = asyncio.run(arun_tools(FunctionBackend(model), "Go", [wait_for, sync_tag]))
    assert run.text == "a,b,C" and sorted(started) == ["a", "b"]


def test_run_tools_runs_the_calls_of_one_turn_in_threads_and_awaits_async_functions() -> None:
    barrier = threading.Barrier(2, timeout=5)

    def meet(tag: str) -> str:
        """Wait for the other call.

        Args:
            tag: which call.
        """
        barrier.wait()  # a sequential loop would break the barrier
        return tag

    async def later(tag: str) -> str:
        """Async, run on a loop of its own.

        Args:
            tag: which call.
        """
        await asyncio.sleep(0)
        return tag * 2

    def model(messages: list[Message], params: GenerationParams) -> ChatResponse | str:
        if messages[-1].role == "tool":
            return ",".join(str(m.content) for m in messages if m.role == "tool")
        return calls(
            call("meet", '{"tag": "a"}'), call("meet", '{"tag": "b"}'), call("later", '{"tag": "c"}')
        )

    assert run_tools(FunctionBackend(model), "Go", [meet, later]).text == "a,b,cc"


def test_arguments_that_do_not_fit_are_sent_back_and_the_model_may_retry() -> None:
    def model(messages: list[Message], params: GenerationParams) -> ChatResponse | str:
        answered = [m for m in messages if m.role == "tool"]
        if not answered:
            return calls(call("add", '{"a": "two", "b": 3}'), call("nope", "{}"))
        if len(answered) == 2:
            return calls(call("add", '{"a": 2, "b": 3}'))
        return f"sum: {answered[-1].content}"

    run = run_tools(FunctionBackend(model), "2 + 3?", [add])
    errors = [m.content for m in run.messages if m.role == "tool"][:2]
    assert "'two' is not of type 'integer'" in str(errors[0]) and str(errors[0]).startswith("Error: ")
    assert "no tool named 'nope'; the tools: 'add'" in str(errors[1])
    assert (run.text, run.rounds) == ("sum: 5", 3)


def test_max_rounds_ends_the_run_with_the_last_calls_answered() -> None:
    backend = FunctionBackend(lambda m, p: calls(call("add", '{"a": 1, "b": 1}')))
    run = run_tools(backend, "Loop", [add], max_rounds=2)
    assert (run.rounds, run.done) == (2, False)
    assert [m.role for m in run.messages] == ["user", "assistant", "tool", "assistant", "tool"]
    assert run.messages[1].tool_calls[0].id == "call_0" and run.messages[3].tool_calls[0].id == "call_1"  # type: ignore[index]


def test_a_tool_without_a_function_ends_the_run_with_its_call() -> None:
    schema_only = {
        "name": "submit",
        "parameters": {"type": "object", "properties": {"answer": {"type": "string"}}},
    }
    backend = FunctionBackend(lambda m, p: calls(call("submit", '{"answer": "42"}')))
    run = run_tools(backend, "Answer", [add, schema_only])
    assert (run.rounds, run.done) == (1, False)
    assert run.reply.tool_calls[0].args == {"answer": "42"}


def test_a_forced_tool_choice_holds_for_the_first_round_only() -> None:
    backend = FunctionBackend(model_that_adds)
    run_tools(backend, "Add", [add, explode], tool_choice="required")
    assert [r.params.tool_choice for r in backend.requests] == ["required", "auto"]


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        (([],), {}, "at least one tool"),
        (([add],), {"max_rounds": 0}, "max_rounds must be an integer >= 1"),
    ],
)
def test_bad_runs_are_refused_before_any_call(
    args: tuple[Any, ...], kwargs: dict[str, Any], message: str
) -> None:
    backend = FunctionBackend(lambda m, p: "never")
    with pytest.raises(InvalidRequestError, match=message):
        run_tools(backend, "Hi", *args, **kwargs)
    assert backend.requests == []
