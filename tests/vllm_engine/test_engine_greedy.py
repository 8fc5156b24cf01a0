"""The vllm-engine backend on a real vLLM engine, against ``hf:smollm2`` on the same prompts.

Greedy decoding in float32 gives the same tokens on both (the oracle is the local backend, itself
checked against raw ``generate``); structured output goes through vLLM's own grammar engine.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from engine_support import VLLM_WARNINGS

import llmclient
from llmclient.backends.vllm_engine import VLLMEngineBackend
from llmclient.errors import ContextWindowExceededError

pytestmark = VLLM_WARNINGS

PROMPTS = ["What is the capital of France?", "Name a colour.", "Count to three.", "What is 2+2?"]


def test_greedy_replies_equal_the_local_backends(
    vllm_backend: VLLMEngineBackend, smollm2_float32: Any
) -> None:
    ours = vllm_backend.chat_many(PROMPTS, max_new_tokens=24, temperature=0)
    theirs = smollm2_float32.chat_many(PROMPTS, max_new_tokens=24, temperature=0)
    assert [r.text for r in ours] == [r.text for r in theirs]
    assert [r.finish_reason for r in ours] == [r.finish_reason for r in theirs]
    assert [r.usage for r in ours] == [r.usage for r in theirs]
    assert all(r.backend == "vllm-engine" and r.model == "smollm2" and r.latency > 0 for r in ours)
    assert vllm_backend.render_prompt(PROMPTS[0]) == smollm2_float32.render_prompt(PROMPTS[0])
    assert vllm_backend.count_tokens(PROMPTS[0]) == smollm2_float32.count_tokens(PROMPTS[0])


def test_stop_strings_end_the_reply_as_on_the_local_backend(
    vllm_backend: VLLMEngineBackend, smollm2_float32: Any
) -> None:
    prompt = "Count from 1 to 10, separated by commas."
    ours = vllm_backend.chat(prompt, stop=["5"], max_new_tokens=40, temperature=0)
    theirs = smollm2_float32.chat(prompt, stop=["5"], max_new_tokens=40, temperature=0)
    assert ours.text == theirs.text and "5" not in ours.text and ours.finish_reason == "stop"


def test_chat_many_is_one_llm_chat_call(
    vllm_backend: VLLMEngineBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    llm = vllm_backend.llm
    calls: list[int] = []
    real = llm.chat

    def counted(conversations: Any, sampling: Any, **kwargs: Any) -> Any:
        calls.append(len(conversations))
        return real(conversations, sampling, **kwargs)

    monkeypatch.setattr(llm, "chat", counted)
    replies = vllm_backend.chat_many(PROMPTS, max_new_tokens=8, temperature=0)
    assert calls == [len(PROMPTS)] and len(replies) == len(PROMPTS)


async def test_concurrent_calls_keep_their_own_parameters(vllm_backend: VLLMEngineBackend) -> None:
    short, long = await asyncio.gather(
        vllm_backend.achat(PROMPTS[0], max_new_tokens=2, temperature=0),
        vllm_backend.achat(PROMPTS[0], max_new_tokens=32, temperature=0),
    )
    assert short.finish_reason == "length" and short.usage is not None and short.usage.completion_tokens == 2
    assert long.text.startswith(short.text) and long.finish_reason == "stop"
    replies = await vllm_backend.achat_many(PROMPTS[:2], max_new_tokens=24, temperature=0)
    assert [r.text for r in replies] == [
        r.text for r in vllm_backend.chat_many(PROMPTS[:2], max_new_tokens=24, temperature=0)
    ]


def test_a_seed_makes_sampling_reproducible(vllm_backend: VLLMEngineBackend) -> None:
    first, second = (
        vllm_backend.chat("Tell me a story.", temperature=1.0, seed=7, max_new_tokens=16) for _ in range(2)
    )
    assert first.text == second.text


def test_streams_give_the_chat_reply(vllm_backend: VLLMEngineBackend) -> None:
    reply = vllm_backend.chat(PROMPTS[0], max_new_tokens=32, temperature=0, top_logprobs=2)
    with vllm_backend.stream(PROMPTS[0], max_new_tokens=32, temperature=0, top_logprobs=2) as stream:
        deltas = list(stream)
        final = stream.final()
    assert len([d for d in deltas if d.text]) > 1
    assert (
        final.text == reply.text and final.finish_reason == reply.finish_reason and final.usage == reply.usage
    )
    assert [t.token for t in final.logprobs] == [t.token for t in reply.logprobs]


async def test_async_streams_and_early_close(vllm_backend: VLLMEngineBackend) -> None:
    text = "".join([d.text async for d in vllm_backend.astream(PROMPTS[1], max_new_tokens=24, temperature=0)])
    assert text == vllm_backend.chat(PROMPTS[1], max_new_tokens=24, temperature=0).text
    stream = vllm_backend.stream("Tell me a long story.", max_new_tokens=200, temperature=0)
    next(iter(stream))
    stream.close()  # aborts the request; the engine goes on serving
    assert vllm_backend.chat(PROMPTS[3], max_new_tokens=24, temperature=0).text


def test_logprobs_cover_every_token(vllm_backend: VLLMEngineBackend) -> None:
    reply = vllm_backend.chat("Say hi.", max_new_tokens=6, temperature=0, top_logprobs=3)
    assert reply.usage is not None and len(reply.logprobs) == reply.usage.completion_tokens
    assert "".join(t.token for t in reply.logprobs) == reply.text or reply.finish_reason == "stop"
    for entry in reply.logprobs:  # greedy: the chosen token is the most likely one
        assert len(entry.top) == 3 and entry.top[0] == (entry.token, entry.logprob)
    assert vllm_backend.chat("Say hi.", max_new_tokens=2, temperature=0).logprobs == []


def test_structured_output_through_vllms_grammars(vllm_backend: VLLMEngineBackend) -> None:
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
        "required": ["name", "age"],
    }
    person = vllm_backend.chat(
        "Give a person as JSON.", response_format=schema, max_new_tokens=64, temperature=0
    )
    assert set(person.parsed) == {"name", "age"} and isinstance(person.parsed["age"], int)
    choice = vllm_backend.chat(
        "Is the sky blue?", response_format=llmclient.Choice(["yes", "no"]), temperature=0
    )
    assert choice.parsed in ("yes", "no")
    number = vllm_backend.chat("Pick a number.", response_format=llmclient.Regex(r"[0-9]{3}"), temperature=0)
    assert len(number.parsed) == 3 and number.parsed.isdigit()
    many = vllm_backend.chat_many(
        ["Is fire hot?", "Is ice hot?"], response_format=llmclient.Choice(["yes", "no"])
    )
    assert all(r.parsed in ("yes", "no") for r in many)


def test_a_prompt_over_the_window_fails_alone(vllm_backend: VLLMEngineBackend) -> None:
    too_long = "word " * 3000
    with pytest.raises(ContextWindowExceededError):
        vllm_backend.chat(too_long, max_new_tokens=4)
    results = vllm_backend.chat_many(
        [PROMPTS[0], too_long], max_new_tokens=8, temperature=0, return_exceptions=True
    )
    assert isinstance(results[1], ContextWindowExceededError)
    assert not isinstance(results[0], Exception) and results[0].text


def test_an_existing_llm_is_used_and_left_running(vllm_backend: VLLMEngineBackend) -> None:
    borrowed = VLLMEngineBackend.from_llm(vllm_backend.llm, model_name="borrowed")
    reply = borrowed.chat(PROMPTS[0], max_new_tokens=16, temperature=0)
    assert (
        reply.model == "borrowed"
        and reply.text == vllm_backend.chat(PROMPTS[0], max_new_tokens=16, temperature=0).text
    )
    assert borrowed.context_window == vllm_backend.context_window == 2048
    borrowed.close()
    assert vllm_backend.chat(PROMPTS[2], max_new_tokens=8, temperature=0).text
