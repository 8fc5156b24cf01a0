"""ChatBackend's shared behaviour, through a small backend that implements only ``_chat``.

The base class is what is under test: validation, defaults, timing, the sync/async bridges,
``chat_many`` ordering, concurrency and error collection, and closing.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

from llmclient import (
    BackendUnavailableError,
    ChatBackend,
    ChatRequest,
    ChatResponse,
    GenerationParams,
    InvalidRequestError,
    LLMClientError,
    RateLimitError,
    StreamDelta,
    ToolCall,
    Usage,
)

FAIL = "please fail"
"""A user message the test backend answers with a typed error."""
TOOL = "use a tool"
"""A user message the test backend answers with a tool call."""
WEATHER_CALL = {
    "id": "call_1",
    "type": "function",
    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
}


class ReverseBackend(ChatBackend):
    """Reverses the last user message and counts its words, like a very small model."""

    type_name = "reverse"

    def __init__(self, **kwargs: object) -> None:
        super().__init__(model="reverse-1", **kwargs)  # type: ignore[arg-type]
        self.requests: list[ChatRequest] = []
        self.chat_threads: list[int] = []
        self.closed = 0

    def _chat(self, request: ChatRequest) -> ChatResponse:
        self.requests.append(request)
        self.chat_threads.append(threading.get_ident())
        prompt = [m for m in request.messages if m.role == "user"][-1].text
        if prompt == FAIL:
            raise RateLimitError("slow down", retry_after=1.5, status_code=429)
        if prompt == TOOL:
            return ChatResponse(
                text="", finish_reason="tool_calls", model=self.model, tool_calls=[WEATHER_CALL]
            )
        words = len(prompt.split())
        limit = request.params.max_new_tokens
        text = prompt[::-1] if limit is None else prompt[::-1][:limit]
        return ChatResponse(
            text=text,
            finish_reason="stop" if limit is None or limit >= len(prompt) else "length",
            usage=Usage(prompt_tokens=words, completion_tokens=len(text)),
            model=self.model,
            latency=99.0,  # the base class replaces this with the measured time
            backend="wrong",  # ... and this with the backend's name
            details={"words": words},
        )

    def _close(self) -> None:
        self.closed += 1


@pytest.fixture
def backend() -> Iterator[ReverseBackend]:
    with ReverseBackend() as b:
        yield b


# -- chat ---------------------------------------------------------------------------------------


def test_chat_runs_the_backends_work(backend: ReverseBackend) -> None:
    reply = backend.chat([{"role": "system", "content": "ignored"}, {"role": "user", "content": "one two"}])
    assert reply.text == "owt eno"
    assert reply.finish_reason == "stop"
    assert reply.usage == Usage(prompt_tokens=2, completion_tokens=7)
    assert reply.details == {"words": 2}
    assert reply.model == "reverse-1"


def test_chat_sets_the_measured_latency_and_the_backend_name() -> None:
    class Slow(ReverseBackend):
        def _chat(self, request: ChatRequest) -> ChatResponse:
            time.sleep(0.02)
            return super()._chat(request)

    with Slow(name="my-reverse") as slow:
        reply = slow.chat("abc")
    assert 0.02 <= reply.latency < 5
    assert reply.backend == "my-reverse"


def test_the_backend_name_falls_back_to_its_type(backend: ReverseBackend) -> None:
    assert backend.name == "reverse"
    assert backend.chat("x").backend == "reverse"
    assert repr(backend) == "ReverseBackend(name='reverse', model='reverse-1')"


def test_chat_checks_messages_before_calling_the_backend(backend: ReverseBackend) -> None:
    with pytest.raises(InvalidRequestError, match=r"messages\[0\].*did you mean 'assistant'"):
        backend.chat([{"role": "assitant", "content": "x"}])
    assert backend.requests == []


def test_chat_checks_options_before_calling_the_backend(backend: ReverseBackend) -> None:
    with pytest.raises(InvalidRequestError, match="temperature must be >= 0, got -1"):
        backend.chat("x", temperature=-1)
    with pytest.raises(InvalidRequestError, match="did you mean 'temperature'"):
        backend.chat("x", temprature=1)  # type: ignore[call-arg]
    assert backend.requests == []


def test_typed_errors_from_the_backend_reach_the_caller(backend: ReverseBackend) -> None:
    with pytest.raises(RateLimitError) as info:
        backend.chat(FAIL)
    assert info.value.retry_after == 1.5
    assert info.value.status_code == 429


def test_the_backend_defaults_apply_and_calls_override_them() -> None:
    with ReverseBackend(defaults=GenerationParams(max_new_tokens=3, temperature=0, extra={"a": 1})) as b:
        assert b.chat("abcdef").text == "fed"
        assert b.requests[-1].params == GenerationParams(max_new_tokens=3, temperature=0, extra={"a": 1})
        reply = b.chat("abcdef", max_tokens=5, extra={"b": 2})
        assert (reply.text, reply.finish_reason) == ("fedcb", "length")
        assert b.requests[-1].params == GenerationParams(
            max_new_tokens=5, temperature=0, extra={"a": 1, "b": 2}
        )
        b.chat("x")
        assert b.requests[-1].params.max_new_tokens == 3  # one call's options do not stick


def test_prepare_normalises_messages_and_merges_params(backend: ReverseBackend) -> None:
    request = backend.prepare("hi", {"seed": 3})
    assert [m.to_dict() for m in request.messages] == [{"role": "user", "content": "hi"}]
    assert request.params == GenerationParams(seed=3)


def test_render_prompt_shows_the_messages_as_json(backend: ReverseBackend) -> None:
    assert backend.render_prompt("hi") == '[\n  {\n    "role": "user",\n    "content": "hi"\n  }\n]'


def test_count_tokens_without_a_tokenizer_says_so(backend: ReverseBackend) -> None:
    assert backend.can_count_tokens is False
    with pytest.raises(NotImplementedError, match="no local tokenizer for 'reverse-1'"):
        backend.count_tokens("hi")


# -- achat --------------------------------------------------------------------------------------


async def test_achat_gives_the_same_reply_as_chat(backend: ReverseBackend) -> None:
    reply = await backend.achat("one two three", max_new_tokens=4)
    assert reply.text == "eerh"
    assert reply.finish_reason == "length"
    assert reply.backend == "reverse"
    assert reply.latency != 99.0


async def test_achat_runs_the_sync_backend_on_a_worker_thread(backend: ReverseBackend) -> None:
    await backend.achat("x")
    assert backend.chat_threads == [backend.chat_threads[0]]
    assert backend.chat_threads[0] != threading.get_ident()


async def test_achat_calls_run_concurrently_on_threads() -> None:
    barrier = threading.Barrier(2, timeout=5)

    class Meeting(ReverseBackend):
        def _chat(self, request: ChatRequest) -> ChatResponse:
            barrier.wait()  # breaks (raising) unless both calls are in flight at once
            return super()._chat(request)

    with Meeting() as b:
        replies = await asyncio.gather(b.achat("ab"), b.achat("cd"))
    assert [r.text for r in replies] == ["ba", "dc"]


async def test_achat_raises_the_backends_typed_error(backend: ReverseBackend) -> None:
    with pytest.raises(RateLimitError, match="slow down"):
        await backend.achat(FAIL)


async def test_achat_checks_messages_first(backend: ReverseBackend) -> None:
    with pytest.raises(InvalidRequestError, match="messages is empty"):
        await backend.achat([])


# -- stream -------------------------------------------------------------------------------------


def test_the_default_stream_yields_the_whole_reply(backend: ReverseBackend) -> None:
    with backend.stream("one two", max_new_tokens=5) as stream:
        deltas = list(stream)
    assert len(deltas) == 1
    assert deltas[0].text == "owt e"
    assert deltas[0].finish_reason == "length"
    assert deltas[0].usage == Usage(prompt_tokens=2, completion_tokens=5)


def test_the_default_stream_final_is_the_reply(backend: ReverseBackend) -> None:
    expected = backend.chat("one two")
    final = backend.stream("one two").final()
    assert (final.text, final.finish_reason, final.usage, final.model, final.backend) == (
        expected.text,
        expected.finish_reason,
        expected.usage,
        expected.model,
        expected.backend,
    )
    assert final.details == {"words": 2}


def test_the_default_stream_keeps_the_replys_tool_calls(backend: ReverseBackend) -> None:
    final = backend.stream(TOOL).final()
    assert final.finish_reason == "tool_calls"
    assert final.tool_calls == [ToolCall.from_dict(WEATHER_CALL)]


def test_the_default_stream_raises_the_backends_error_while_iterating(backend: ReverseBackend) -> None:
    stream = backend.stream(FAIL)  # nothing runs until the stream is read
    assert backend.requests == []
    with pytest.raises(RateLimitError):
        stream.final()


def test_stream_checks_messages_when_called(backend: ReverseBackend) -> None:
    with pytest.raises(InvalidRequestError, match="unknown key"):
        backend.stream([{"role": "user", "content": "x", "contents": "y"}])


# -- astream ------------------------------------------------------------------------------------


async def test_the_default_astream_yields_the_whole_reply(backend: ReverseBackend) -> None:
    deltas = [d async for d in backend.astream("one two")]
    assert [d.text for d in deltas] == ["owt eno"]
    final = await backend.astream("one two").final()
    assert (final.text, final.finish_reason, final.backend) == ("owt eno", "stop", "reverse")


class CountingStreamBackend(ReverseBackend):
    """Streams one character at a time, forever if asked, and records when the stream is closed."""

    def __init__(self) -> None:
        super().__init__()
        self.produced = 0
        self.stream_closed = threading.Event()
        self.stream_threads: list[int] = []

    def _stream(self, request: ChatRequest) -> Iterator[StreamDelta]:
        self.stream_threads.append(threading.get_ident())
        text = request.messages[-1].text
        try:
            if text == FAIL:
                yield StreamDelta(text="partial ")
                raise BackendUnavailableError("connection cut mid-stream")
            if text == "forever":
                while True:
                    self.produced += 1
                    yield StreamDelta(text=".")
                    time.sleep(0.001)
            for char in text:
                self.produced += 1
                yield StreamDelta(text=char)
            yield StreamDelta(finish_reason="stop", usage=Usage(1, len(text)))
        finally:
            self.stream_closed.set()


async def test_astream_pumps_the_sync_stream_from_a_worker_thread() -> None:
    with CountingStreamBackend() as b:
        stream = b.astream("abc")
        texts = [d.text async for d in stream]
        assert texts == ["a", "b", "c", ""]
        assert b.stream_threads[0] != threading.get_ident()
        assert b.stream_closed.is_set()
        final = await b.astream("abc").final()
    assert (final.text, final.finish_reason, final.usage) == ("abc", "stop", Usage(1, 3))


async def test_an_error_inside_the_sync_stream_reaches_the_async_consumer() -> None:
    with CountingStreamBackend() as b:
        received: list[str] = []
        with pytest.raises(BackendUnavailableError, match="connection cut mid-stream"):
            async for delta in b.astream(FAIL):
                received.append(delta.text)
    assert received == ["partial "]
    assert b.stream_closed.is_set()


async def test_breaking_out_of_astream_early_closes_the_sync_stream() -> None:
    with CountingStreamBackend() as b:
        async with b.astream("forever") as stream:
            async for _ in stream:
                break
        assert b.stream_closed.is_set()  # the generator's finally ran: the "model" is released
        produced = b.produced
        await asyncio.sleep(0.02)
        assert b.produced == produced  # and it stopped producing


async def test_aclose_on_astream_closes_the_sync_stream() -> None:
    with CountingStreamBackend() as b:
        stream = b.astream("forever")
        first = await stream.__anext__()
        assert first.text == "."
        await asyncio.wait_for(stream.aclose(), timeout=5)
        assert b.stream_closed.is_set()


def test_closing_a_sync_stream_early_closes_the_backend_stream() -> None:
    with CountingStreamBackend() as b:
        with b.stream("forever") as stream:
            for _ in stream:
                break
        assert b.stream_closed.is_set()
        assert stream.text == "."


# -- chat_many ----------------------------------------------------------------------------------


class ManyBackend(ReverseBackend):
    """Answers with an async ``_achat`` where later items finish first; counts requests in flight."""

    def __init__(self, *, delay: float = 0.005) -> None:
        super().__init__()
        self.delay = delay
        self.in_flight = 0
        self.max_in_flight = 0
        self.loop_threads: list[threading.Thread] = []
        self.finished: list[str] = []

    async def _achat(self, request: ChatRequest) -> ChatResponse:
        self.loop_threads.append(threading.current_thread())
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            prompt = request.messages[-1].text
            index = int(prompt) if prompt.isdigit() else 0
            await asyncio.sleep(self.delay * (20 - index))  # the first items take the longest
            self.finished.append(prompt)
            return self._chat(request)
        finally:
            self.in_flight -= 1


def test_chat_many_returns_results_in_input_order_when_items_finish_out_of_order() -> None:
    prompts = [str(i) for i in range(10, 20)]
    with ManyBackend() as b:
        replies = b.chat_many(prompts)
    assert b.finished != prompts  # they did finish out of order ...
    assert [r.text for r in replies] == [p[::-1] for p in prompts]  # ... and came back in order
    assert all(r.backend == "reverse" for r in replies)


def test_chat_many_keeps_at_most_concurrency_requests_in_flight() -> None:
    with ManyBackend(delay=0.001) as b:
        replies = b.chat_many([str(i % 20) for i in range(25)], concurrency=4)
    assert len(replies) == 25
    assert b.max_in_flight == 4


def test_chat_many_defaults_to_sixteen_in_flight() -> None:
    with ManyBackend(delay=0.001) as b:
        b.chat_many(["1"] * 40)
    assert b.max_in_flight == 16


def test_chat_many_with_the_default_thread_bridge_respects_concurrency() -> None:
    lock = threading.Lock()
    in_flight = max_in_flight = 0
    pair = threading.Barrier(2, timeout=5)  # breaks unless two calls are in flight together

    class Counting(ReverseBackend):
        def _chat(self, request: ChatRequest) -> ChatResponse:
            nonlocal in_flight, max_in_flight
            with lock:
                in_flight += 1
                max_in_flight = max(max_in_flight, in_flight)
            pair.wait()
            time.sleep(0.005)
            with lock:
                in_flight -= 1
            return super()._chat(request)

    with Counting() as b:
        replies = b.chat_many(["ab", "cd", "ef", "gh", "ij", "kl"], concurrency=2)
    assert [r.text for r in replies] == ["ba", "dc", "fe", "hg", "ji", "lk"]
    assert max_in_flight == 2


def test_chat_many_raises_the_first_error_by_default(backend: ReverseBackend) -> None:
    with pytest.raises(RateLimitError, match="slow down"):
        backend.chat_many(["ok", FAIL, "fine"])


def test_chat_many_raises_the_first_failure_in_input_order_once_every_item_has_settled() -> None:
    class TwoFailures(ManyBackend):
        async def _achat(self, request: ChatRequest) -> ChatResponse:
            prompt = request.messages[-1].text
            if prompt == "late":
                await asyncio.sleep(0.2)
                raise BackendUnavailableError("late failure")
            if prompt == "early":
                raise RateLimitError("early failure")
            return await super()._achat(request)

    with TwoFailures() as b, pytest.raises(BackendUnavailableError, match="late failure"):
        b.chat_many(["late", "19", "early"])


def test_chat_many_returns_per_item_errors_when_asked(backend: ReverseBackend) -> None:
    results = backend.chat_many(["ab", FAIL, "cd"], return_exceptions=True)
    assert isinstance(results[0], ChatResponse) and results[0].text == "ba"
    assert isinstance(results[1], RateLimitError) and results[1].retry_after == 1.5
    assert isinstance(results[2], ChatResponse) and results[2].text == "dc"


def test_chat_many_does_not_collect_errors_that_are_not_llmclient_errors() -> None:
    class Buggy(ReverseBackend):
        def _chat(self, request: ChatRequest) -> ChatResponse:
            raise ZeroDivisionError("a bug, not a backend failure")

    with Buggy() as b, pytest.raises(ZeroDivisionError):
        b.chat_many(["x"], return_exceptions=True)


@pytest.mark.parametrize("concurrency", [0, -1, 1.5, True])
def test_chat_many_rejects_a_bad_concurrency(backend: ReverseBackend, concurrency: object) -> None:
    with pytest.raises(
        InvalidRequestError, match=re.escape(f"concurrency must be an integer >= 1, got {concurrency!r}")
    ):
        backend.chat_many(["x"], concurrency=concurrency)  # type: ignore[call-overload]
    assert backend.requests == []


def test_chat_many_checks_every_conversation_before_sending_any(backend: ReverseBackend) -> None:
    with pytest.raises(InvalidRequestError, match=r"messages\[0\] has role 'bot'"):
        backend.chat_many(["ok", [{"role": "bot", "content": "x"}]])
    assert backend.requests == []


def test_chat_many_applies_options_to_every_item(backend: ReverseBackend) -> None:
    replies = backend.chat_many(["abcdef", "ghijkl"], max_new_tokens=2)
    assert [r.text for r in replies] == ["fe", "lk"]


def test_chat_many_of_nothing_is_an_empty_list(backend: ReverseBackend) -> None:
    assert backend.chat_many([]) == []


async def test_achat_many_returns_in_order_with_errors_collected() -> None:
    with ManyBackend() as b:
        results = await b.achat_many(["10", FAIL, "19"], return_exceptions=True, concurrency=2)
        assert b.loop_threads[0] is threading.current_thread()  # runs on the caller's loop
    assert isinstance(results[0], ChatResponse) and results[0].text == "01"
    assert isinstance(results[1], RateLimitError)
    assert isinstance(results[2], ChatResponse) and results[2].text == "91"
    assert b.max_in_flight <= 2


async def test_achat_many_raises_the_first_error_by_default(backend: ReverseBackend) -> None:
    with pytest.raises(LLMClientError):
        await backend.achat_many(["a", FAIL])


async def test_achat_many_rejects_concurrency_zero(backend: ReverseBackend) -> None:
    with pytest.raises(InvalidRequestError, match="concurrency"):
        await backend.achat_many(["a"], concurrency=0)


def test_chat_many_works_when_called_from_inside_a_running_event_loop(backend: ReverseBackend) -> None:
    async def main() -> list[str]:
        return [r.text for r in backend.chat_many(["ab", "cd"])]

    assert asyncio.run(main()) == ["ba", "dc"]


# -- the private loop thread and closing --------------------------------------------------------


def test_chat_many_twice_reuses_the_backends_loop_thread() -> None:
    with ManyBackend(delay=0) as b:
        b.chat_many(["1", "2"])
        b.chat_many(["3"])
        threads = set(b.loop_threads)
        assert len(threads) == 1
        (loop_thread,) = threads
        assert loop_thread is not threading.current_thread()
        assert loop_thread.daemon
        assert loop_thread.is_alive()
    assert not loop_thread.is_alive()  # leaving the with block closed the backend and its loop


def test_close_stops_the_loop_thread_and_a_later_call_is_refused() -> None:
    b = ManyBackend(delay=0)
    b.chat_many(["1"])
    first = b.loop_threads[-1]
    b.close()
    assert not first.is_alive()
    with pytest.raises(BackendUnavailableError, match="the backend was closed"):
        b.chat_many(["2"])
    assert b.loop_threads == [first]


def test_the_context_manager_calls_close_hook_once() -> None:
    with ReverseBackend() as b:
        assert b.closed == 0
    assert b.closed == 1


def test_the_context_manager_closes_on_error_too() -> None:
    with pytest.raises(RateLimitError), ReverseBackend() as b:
        b.chat(FAIL)
    assert b.closed == 1


def test_close_without_any_call_is_fine() -> None:
    b = ReverseBackend()
    b.close()
    b.close()  # twice is safe
    assert b.closed == 2


async def test_the_async_context_manager_calls_the_close_hook() -> None:
    async with ManyBackend(delay=0) as b:
        b.chat_many(["1"])  # starts the private loop thread
        loop_thread = b.loop_threads[-1]
    assert b.closed == 1
    assert not loop_thread.is_alive()


async def test_aclose_runs_the_async_close_hook() -> None:
    class AsyncClosing(ReverseBackend):
        def __init__(self) -> None:
            super().__init__()
            self.async_closed = False

        async def _aclose(self) -> None:
            await asyncio.sleep(0)
            self.async_closed = True

    b = AsyncClosing()
    await b.aclose()
    assert b.async_closed and b.closed == 0


def test_a_backend_must_implement_chat() -> None:
    class Nothing(ChatBackend):
        pass

    with pytest.raises(TypeError, match="_chat"):
        Nothing(model="m")  # type: ignore[abstract]


def _texts(replies: Sequence[ChatResponse | LLMClientError]) -> list[str]:
    return [r.text if isinstance(r, ChatResponse) else type(r).__name__ for r in replies]


def test_chat_many_with_errors_keeps_positions_for_many_items(backend: ReverseBackend) -> None:
    prompts = [FAIL if i % 3 == 0 else f"p{i}" for i in range(12)]
    results = backend.chat_many(prompts, return_exceptions=True, concurrency=5)
    assert _texts(results) == ["RateLimitError" if p == FAIL else p[::-1] for p in prompts]


@pytest.mark.parametrize("one", ["one prompt", {"role": "user", "content": "hi"}])
def test_chat_many_refuses_one_conversation_not_iterating_it(backend: ReverseBackend, one: Any) -> None:
    with pytest.raises(InvalidRequestError, match=r"list of conversations.*use chat\(\)"):
        backend.chat_many(one)


async def test_achat_many_refuses_one_prompt_string(backend: ReverseBackend) -> None:
    with pytest.raises(InvalidRequestError, match="list of conversations"):
        await backend.achat_many("one prompt")


def test_calls_after_close_say_the_backend_was_closed_and_are_not_retryable() -> None:
    backend = ReverseBackend()
    backend.close()
    for call in (lambda: backend.chat("ab"), lambda: backend.stream("ab"), lambda: backend.chat_many(["ab"])):
        with pytest.raises(BackendUnavailableError, match="the backend was closed") as caught:
            call()
        assert caught.value.retryable is False


async def test_async_calls_after_aclose_say_the_backend_was_closed() -> None:
    backend = ReverseBackend()
    await backend.aclose()
    with pytest.raises(BackendUnavailableError, match="the backend was closed"):
        await backend.achat("ab")
