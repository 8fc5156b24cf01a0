"""Candidate scoring on a real vLLM engine through ``prompt_logprobs``, against ``hf:smollm2``.

Both backends turn a candidate into the same tokens (:mod:`llmclient.backends.candidates`); the
local backend's scores are themselves checked against full forward passes, so vLLM's must equal
them (float32 on both, to 1e-3 in total logprob).
"""

from __future__ import annotations

import asyncio
import math
from typing import Any

import pytest
from engine_support import VLLM_WARNINGS

from llmclient.backends.vllm_engine import VLLMEngineBackend
from llmclient.errors import ContextWindowExceededError

pytestmark = VLLM_WARNINGS

SYSTEM = {"role": "system", "content": "Answer with one word."}
CANDIDATES = ["Paris", "Lyon", "Paris, France", " Paris", "paris"]
FRANCE = [SYSTEM, {"role": "user", "content": "What is the capital of France?"}]
ENGLAND = [SYSTEM, {"role": "user", "content": "What is the capital of England?"}]


@pytest.mark.parametrize("end_of_turn", [True, False])
def test_scores_equal_the_local_backends(
    vllm_backend: VLLMEngineBackend, smollm2_float32: Any, end_of_turn: bool
) -> None:
    ours = vllm_backend.score(FRANCE, CANDIDATES, end_of_turn=end_of_turn)
    theirs = smollm2_float32.score(FRANCE, CANDIDATES, end_of_turn=end_of_turn)
    assert [s.text for s in ours] == CANDIDATES
    assert [s.tokens for s in ours] == [s.tokens for s in theirs]
    assert all(s.exact for s in ours)
    for mine, oracle in zip(ours, theirs, strict=True):
        assert math.isclose(mine.logprob, oracle.logprob, abs_tol=1e-3), (mine, oracle)


def test_choose_picks_the_right_answer_and_batches_are_one_generate_call(
    vllm_backend: VLLMEngineBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    best = vllm_backend.choose(FRANCE, ["Paris", "London", "Berlin"])
    assert best.text == "Paris" and best.probability > 0.5
    llm = vllm_backend.llm
    calls: list[int] = []
    real = llm.generate

    def counted(prompts: Any, sampling: Any, **kwargs: Any) -> Any:
        calls.append(len(prompts))
        return real(prompts, sampling, **kwargs)

    monkeypatch.setattr(llm, "generate", counted)
    found = vllm_backend.choose_many([FRANCE, ENGLAND], ["Paris", "London", "Berlin"])
    assert [s.text for s in found] == ["Paris", "London"] and calls == [6]


def test_async_scores_equal_the_sync_ones(vllm_backend: VLLMEngineBackend) -> None:
    async def both() -> tuple[Any, Any]:
        one = await vllm_backend.ascore(ENGLAND, CANDIDATES[:3])
        many = await vllm_backend.ascore_many([FRANCE, ENGLAND], CANDIDATES[:3])
        return one, many

    one, many = asyncio.run(both())
    assert [s.logprob for s in one] == [s.logprob for s in many[1]]
    assert [s.logprob for s in vllm_backend.score(FRANCE, CANDIDATES[:3])] == [s.logprob for s in many[0]]


def test_a_conversation_over_the_window_fails_alone(vllm_backend: VLLMEngineBackend) -> None:
    too_long = [{"role": "user", "content": "word " * 3000}]
    with pytest.raises(ContextWindowExceededError, match="max_model_len"):
        vllm_backend.score(too_long, ["yes", "no"])
    results = vllm_backend.score_many([FRANCE, too_long], ["Paris", "Lyon"], return_exceptions=True)
    assert isinstance(results[1], ContextWindowExceededError)
    assert not isinstance(results[0], Exception) and results[0][0].text == "Paris"
