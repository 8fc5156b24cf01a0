"""Batched generation gives the same replies as one-by-one calls, in input order, at batch speed."""

from __future__ import annotations

import asyncio
import concurrent.futures
from pathlib import Path
from typing import Any

import pytest

from llmclient import ContextWindowExceededError
from llmclient.backends.huggingface import HuggingFaceBackend

pytest.importorskip("torch")

from llmclient.backends.huggingface.generation import Job, Sampling
from llmclient.backends.huggingface.prompting import Prompt
from llmclient.backends.huggingface.scheduler import plan_batches

PROMPTS = [
    "Hello there",
    "What is the capital of France? One two three four five six seven eight nine ten.",
    "東京は日本の首都です。",
    "Le café est très chaud.",
    "Once upon a time a small model learned to write short stories about the sea.",
    "Hi",
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Question?"}],
]


def spy_batches(backend: Any, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Record the size of every batch the backend generates."""
    generator = backend._engine.generator
    real = generator.run
    sizes: list[int] = []

    def run(jobs: Any, streamer: Any = None) -> Any:
        sizes.append(len(jobs))
        return real(jobs, streamer)

    monkeypatch.setattr(generator, "run", run)
    return sizes


def test_chat_many_is_token_for_token_the_one_by_one_replies(
    llama_backend: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    singles = [llama_backend.chat(p, max_new_tokens=24, temperature=0) for p in PROMPTS]
    sizes = spy_batches(llama_backend, monkeypatch)
    batched = llama_backend.chat_many(PROMPTS, max_new_tokens=24, temperature=0)
    assert sizes == [len(PROMPTS)]
    assert [(r.text, r.usage, r.finish_reason) for r in batched] == [
        (r.text, r.usage, r.finish_reason) for r in singles
    ]
    assert all(r.backend == llama_backend.name and r.latency > 0 for r in batched)


def test_rows_of_one_batch_keep_their_own_stop_strings(
    llama_backend: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    full = {p: llama_backend.chat(p, max_new_tokens=30, temperature=0).text for p in PROMPTS[:5]}
    prompts = [p for p, text in full.items() if len(text) >= 8][:3]
    assert len(prompts) == 3
    stops = [full[p][len(full[p]) // 2 :][:2] for p in prompts]
    singles = [
        llama_backend.chat(p, max_new_tokens=30, temperature=0, stop=s)
        for p, s in zip(prompts, stops, strict=True)
    ]
    assert all(r.finish_reason == "stop" for r in singles)
    # one chat_many call shares its options, so send them through achat, which batches them together
    sizes = spy_batches(llama_backend, monkeypatch)
    batched = asyncio.run(_gather(llama_backend, prompts, stops))
    assert sizes == [3]
    assert [(r.text, r.usage) for r in batched] == [(r.text, r.usage) for r in singles]


async def _gather(backend: Any, prompts: list[Any], stops: list[str]) -> list[Any]:
    return list(
        await asyncio.gather(
            *(
                backend.achat(p, max_new_tokens=30, temperature=0, stop=s)
                for p, s in zip(prompts, stops, strict=True)
            )
        )
    )


async def test_concurrent_achat_calls_are_batched_together(
    llama_backend: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    prompts = [f"Hello there {i}" for i in range(16)]
    singles = [llama_backend.chat(p, max_new_tokens=10, temperature=0).text for p in prompts]
    sizes = spy_batches(llama_backend, monkeypatch)
    replies = await asyncio.gather(
        *(llama_backend.achat(p, max_new_tokens=10, temperature=0) for p in prompts)
    )
    assert sizes == [16]
    assert [r.text for r in replies] == singles


async def test_a_cancelled_achat_does_not_disturb_the_others(llama_backend: Any) -> None:
    expected = llama_backend.chat("Hello there", max_new_tokens=8, temperature=0).text
    doomed = asyncio.ensure_future(llama_backend.achat("Hi", max_new_tokens=200, temperature=0))
    kept = asyncio.ensure_future(llama_backend.achat("Hello there", max_new_tokens=8, temperature=0))
    await asyncio.sleep(0)
    doomed.cancel()
    assert (await kept).text == expected
    with pytest.raises(asyncio.CancelledError):
        await doomed


def test_a_failing_conversation_is_reported_in_place(tiny_models: dict[str, Path]) -> None:
    backend = HuggingFaceBackend(str(tiny_models["small_window"]), device="cpu")
    try:
        conversations = ["Hi", " ".join(["Hello there"] * 30), "Hello"]
        replies = backend.chat_many(conversations, max_new_tokens=8, temperature=0, return_exceptions=True)
        assert isinstance(replies[1], ContextWindowExceededError)
        assert [r.text for r in (replies[0], replies[2])] == [
            backend.chat(c, max_new_tokens=8, temperature=0).text
            for c in (conversations[0], conversations[2])
        ]
        with pytest.raises(ContextWindowExceededError):
            backend.chat_many(conversations, max_new_tokens=8)
    finally:
        backend.close()


async def test_achat_many_reports_failures_in_place_even_when_all_fail(tiny_models: dict[str, Path]) -> None:
    backend = HuggingFaceBackend(str(tiny_models["small_window"]), device="cpu")
    try:
        too_long = " ".join(["Hello there"] * 30)
        replies = await backend.achat_many(["Hi", too_long], max_new_tokens=8, return_exceptions=True)
        assert isinstance(replies[1], ContextWindowExceededError) and replies[0].text
        failed = await backend.achat_many([too_long, too_long], max_new_tokens=8, return_exceptions=True)
        assert all(isinstance(r, ContextWindowExceededError) for r in failed)
    finally:
        await backend.aclose()


def test_concurrency_caps_the_rows_of_a_batch(llama_backend: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    sizes = spy_batches(llama_backend, monkeypatch)
    llama_backend.chat_many(PROMPTS, max_new_tokens=4, temperature=0, concurrency=3)
    assert sizes == [3, 3, 1]


def test_the_token_budget_splits_batches(
    tiny_models: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = HuggingFaceBackend(
        str(tiny_models["llama"]), device="cpu", batch_token_budget=120, load="eager"
    )
    try:
        sizes = spy_batches(backend, monkeypatch)
        replies = backend.chat_many(["Hi"] * 5, max_new_tokens=20, temperature=0)
        assert len({r.text for r in replies}) == 1
        longest = backend.count_tokens("Hi") + 20
        assert max(sizes) * longest <= 120 < (max(sizes) + 1) * longest
        assert sum(sizes) == 5
    finally:
        backend.close()


def test_a_seq2seq_batch_matches_single_calls(tiny_models: dict[str, Path]) -> None:
    backend = HuggingFaceBackend(str(tiny_models["t5"]), device="cpu")
    try:
        singles = [backend.chat(p, max_new_tokens=12, temperature=0) for p in PROMPTS[:4]]
        batched = backend.chat_many(PROMPTS[:4], max_new_tokens=12, temperature=0)
        assert [(r.text, r.usage) for r in batched] == [(r.text, r.usage) for r in singles]
    finally:
        backend.close()


def test_seeded_sampling_gives_the_same_reply_batched_or_not(llama_backend: Any) -> None:
    options: dict[str, Any] = {"max_new_tokens": 12, "temperature": 1.0, "seed": 3}
    single = llama_backend.chat("Hello there", **options)
    batched = llama_backend.chat_many(["Hello there", "Hi", "Hello there"], **options)
    assert batched[0].text == batched[2].text == single.text


# -- planning ------------------------------------------------------------------------------------


def job(length: int, *, new: int = 10, sampling: Sampling | None = None, max_rows: int = 1 << 30) -> Job:
    return Job(
        prompt=Prompt(text="", ids=[0] * length),
        max_new_tokens=new,
        sampling=sampling or Sampling(do_sample=False),
        max_rows=max_rows,
    )


def lengths(batches: list[list[Job]]) -> list[list[int]]:
    return [[len(j.prompt.ids) for j in batch] for batch in batches]


def test_plans_group_prompts_of_similar_length() -> None:
    jobs = [job(n) for n in (50, 400, 60, 390, 55, 380)]
    assert lengths(plan_batches(jobs, token_budget=3 * 410, max_rows=32)) == [[50, 55, 60], [380, 390, 400]]


def test_plans_respect_the_row_cap_and_each_jobs_own_cap() -> None:
    assert lengths(plan_batches([job(5) for _ in range(5)], token_budget=10_000, max_rows=2)) == [
        [5, 5],
        [5, 5],
        [5],
    ]
    capped = [job(5), job(5, max_rows=1), job(5)]
    assert [len(b) for b in plan_batches(capped, token_budget=10_000, max_rows=32)] == [1, 1, 1]


def test_a_job_over_the_budget_still_runs_alone() -> None:
    assert lengths(plan_batches([job(5), job(500)], token_budget=100, max_rows=32)) == [[5], [500]]


def test_only_jobs_with_the_same_sampling_share_a_batch() -> None:
    warm = Sampling(do_sample=True, temperature=0.7, top_p=1.0, top_k=0)
    seeded = Sampling(do_sample=True, temperature=0.7, top_p=1.0, top_k=0, seed=1)
    jobs = [job(5), job(5, sampling=warm), job(6), job(6, sampling=warm), job(5, sampling=seeded)]
    batches = plan_batches(jobs, token_budget=10_000, max_rows=32)
    assert sorted(len(b) for b in batches) == [1, 2, 2]
    assert all(len({j.batch_key for j in b}) == 1 for b in batches)


def test_chat_calls_from_several_threads_share_batches(
    llama_backend: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    prompts = [f"Hello there {i}" for i in range(6)]
    singles = [llama_backend.chat(p, max_new_tokens=40, temperature=0).text for p in prompts]
    sizes = spy_batches(llama_backend, monkeypatch)
    with concurrent.futures.ThreadPoolExecutor(max_workers=6) as pool:
        replies = list(pool.map(lambda p: llama_backend.chat(p, max_new_tokens=40, temperature=0), prompts))
    assert [r.text for r in replies] == singles
    assert sum(sizes) == 6
    assert len(sizes) < 6  # calls that waited together ran together
