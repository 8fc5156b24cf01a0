"""Candidate scoring on the remote backend, against real loopback servers.

Exact scoring (the ``vllm`` preset) runs against a small vLLM-shaped server: a ChatML template, one
token per character (the template's markers one token each), a deterministic "model" whose logprob
for each token is a function of the token and its position, and vLLM's wire: ``add_generation_prompt``,
``continue_final_message``, ``prompt_logprobs`` (each position's own token first, then a more likely
alternative). The oracle is that model's logprobs summed by hand over the candidate's tokens.

First-token scoring (every other provider) runs against a server answering the first token's
``top_logprobs``, as hosted APIs do.
"""

from __future__ import annotations

import math
import re
from typing import Any

import pytest
from remote_support import Caller

from llmclient.errors import UnsupportedFeatureError
from llmclient.testing.server import OpenAIHandler, Reply, Request, json_reply
from llmclient.testing.server.replies import completion

SPECIAL = re.compile(r"(<\|im_start\|>|<\|im_end\|>)")


def tokens_of(text: str) -> list[str]:
    """The toy tokenizer: the template's markers are one token each, every other character one token."""
    out: list[str] = []
    for part in SPECIAL.split(text):
        out.extend([part] if SPECIAL.fullmatch(part) else list(part))
    return out


def logprob_of(token: str, position: int) -> float:
    """The toy model: how likely ``token`` is at ``position`` (deterministic, always below 0)."""
    return -0.05 * (sum(map(ord, token)) % 17) - 0.001 * position - 0.01


def render(messages: list[dict[str, Any]], *, generation_prompt: bool, continue_final: bool) -> str:
    """The toy ChatML template, as vLLM applies it with its two flags."""
    turns = [f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages]
    if continue_final:
        turns[-1] = turns[-1][: -len("<|im_end|>\n")]
    return "".join(turns) + ("<|im_start|>assistant\n" if generation_prompt else "")


class VLLMServer:
    """Chat completions as vLLM answers them, with ``prompt_logprobs`` on request."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []

    def __call__(self, request: Request) -> Reply:
        body = request.json()
        self.bodies.append(body)
        continue_final = bool(body.get("continue_final_message", False))
        prompt = render(
            body["messages"],
            generation_prompt=bool(body.get("add_generation_prompt", True)) and not continue_final,
            continue_final=continue_final,
        )
        tokens = tokens_of(prompt)
        extra: dict[str, Any] = {}
        if body.get("prompt_logprobs") is not None:
            likelier = {"logprob": -0.001, "rank": 1, "decoded_token": "?"}  # listed after the own token
            extra["prompt_logprobs"] = [
                None,
                *(
                    {
                        str(1000 + i): {"logprob": logprob_of(t, i), "rank": 2, "decoded_token": t},
                        "7": likelier,
                    }
                    for i, t in enumerate(tokens)
                    if i > 0
                ),
            ]
        return json_reply(completion("x", finish_reason="length", prompt_tokens=len(tokens), **extra))


def expected(conversation: list[dict[str, Any]], candidate: str, end_of_turn: bool) -> tuple[float, int]:
    """The oracle: the toy model's logprobs of the candidate's tokens (and end of turn) after the prompt."""
    prompt = tokens_of(render(conversation, generation_prompt=True, continue_final=False))
    scored = list(candidate) + (["<|im_end|>"] if end_of_turn else [])
    return sum(logprob_of(t, len(prompt) + k) for k, t in enumerate(scored)), len(scored)


CONVERSATION = [
    {"role": "system", "content": "Classify the review."},
    {"role": "user", "content": "Great soup, slow service."},
]
LABELS = ["positive", "negative", "mixed"]


@pytest.mark.parametrize("end_of_turn", [True, False])
def test_vllm_scores_each_candidate_exactly_through_prompt_logprobs(
    serve, make_backend, call: Caller, end_of_turn: bool
) -> None:
    vllm = VLLMServer()
    backend = make_backend(serve(vllm), preset="vllm")
    if call.mode == "sync":
        scored = backend.score(CONVERSATION, LABELS, end_of_turn=end_of_turn)
    else:
        scored = call.runner.run(backend.ascore(CONVERSATION, LABELS, end_of_turn=end_of_turn))
    oracle = [expected(CONVERSATION, label, end_of_turn) for label in LABELS]
    assert [(s.logprob, s.tokens, s.exact) for s in scored] == [
        (pytest.approx(lp), n, True) for lp, n in oracle
    ]
    weights = [math.exp(lp) for lp, _ in oracle]
    assert [s.probability for s in scored] == pytest.approx([w / sum(weights) for w in weights])
    # the request shape: the prompt once, then each candidate as the open (and closed) final turn
    assert len(vllm.bodies) == 1 + len(LABELS) * (2 if end_of_turn else 1)
    prompt_only = [b for b in vllm.bodies if b["messages"] == CONVERSATION]
    assert len(prompt_only) == 1 and "prompt_logprobs" not in prompt_only[0]
    opened = [b for b in vllm.bodies if b.get("continue_final_message") is True]
    assert sorted(b["messages"][-1]["content"] for b in opened) == sorted(LABELS)
    for body in opened:
        assert body["messages"][-1]["role"] == "assistant" and body["add_generation_prompt"] is False
        assert (body["prompt_logprobs"], body["max_tokens"]) == (1, 1)
    closed = [b for b in vllm.bodies if b.get("continue_final_message") is False]
    assert len(closed) == (len(LABELS) if end_of_turn else 0)


def test_vllm_choose_many_and_normalisation(serve, make_backend) -> None:
    backend = make_backend(serve(VLLMServer()), preset="vllm")
    other = [{"role": "user", "content": "Awful."}]
    chosen = backend.choose_many([CONVERSATION, other], ["ok", "terrible"], normalize="mean")
    for conversation, found in zip([CONVERSATION, other], chosen, strict=True):
        means = {c: lp / n for c in ["ok", "terrible"] for lp, n in [expected(conversation, c, True)]}
        assert found.text == max(means, key=means.__getitem__) and found.exact


def test_the_scoring_setting_picks_the_way_whatever_the_provider(serve, make_backend) -> None:
    exact = make_backend(serve(VLLMServer()), scoring="prompt_logprobs")  # a vLLM behind a generic type
    assert all(s.exact for s in exact.score(CONVERSATION, LABELS))
    hosted = OpenAIHandler(text="positive")
    first = make_backend(serve(hosted), preset="vllm", scoring="first_token")
    assert [s.exact for s in first.score(CONVERSATION, LABELS)] == [False] * 3


def test_a_server_without_prompt_logprobs_is_refused_saying_so(serve, make_backend) -> None:
    backend = make_backend(serve(OpenAIHandler(text="x")), preset="vllm")
    with pytest.raises(UnsupportedFeatureError, match="returned no prompt_logprobs"):
        backend.score("Hi", ["yes", "no"])


# -- the first token (hosted APIs) ----------------------------------------------------------------


def first_token(top: list[tuple[str, float]], seen: list[dict[str, Any]] | None = None) -> Any:
    """A handler answering the first token's alternatives ``top`` (probabilities), as hosted APIs do."""

    def answer(request: Request) -> Reply:
        if seen is not None:
            seen.append(request.json())
        entries = [{"token": t, "logprob": math.log(p), "bytes": list(t.encode())} for t, p in top]
        logprobs = [{**entries[0], "top_logprobs": entries}]
        return json_reply(completion(top[0][0], finish_reason="length", logprobs=logprobs))

    return answer


def test_hosted_apis_read_the_candidates_first_tokens_in_one_call(serve, make_backend, call: Caller) -> None:
    seen: list[dict[str, Any]] = []
    top = [
        ("positive", 0.7),
        (" neutral", 0.1),
        ("Positive", 0.1),
        ("neg", 0.05),
        ("ne", 0.005),
        ("\n", 0.01),
    ]
    backend = make_backend(serve(first_token(top, seen)), preset="openai")
    labels = ["positive", "negative", "neutral"]
    if call.mode == "sync":
        scored = backend.score("Review: great", labels)
    else:
        scored = call.runner.run(backend.ascore("Review: great", labels))
    # leading whitespace ignored, case kept, 'ne' (both negative and neutral) under 1%: left out
    assert [s.probability for s in scored] == pytest.approx([0.7 / 0.85, 0.05 / 0.85, 0.1 / 0.85])
    assert [(s.tokens, s.exact) for s in scored] == [(1, False)] * 3
    assert scored[0].logprob == pytest.approx(math.log(0.7))
    (body,) = seen
    assert (body["max_completion_tokens"], body["logprobs"], body["top_logprobs"]) == (1, True, 20)


def test_two_tokens_of_one_candidate_add_up_and_a_missing_one_is_zero(serve, make_backend) -> None:
    backend = make_backend(serve(first_token([("pos", 0.4), ("positive", 0.2), ("maybe", 0.4)])))
    scored = backend.score("?", ["positive", "negative"])
    assert scored[0].logprob == pytest.approx(math.log(0.6))
    assert (scored[1].logprob, scored[1].tokens, scored[1].probability) == (-math.inf, 0, 0.0)


@pytest.mark.parametrize(
    ("labels", "clash"),
    [(["New York", "New Jersey"], "'New York' and 'New Jersey'"), (["no", "none"], "'no' and 'none'")],
)
def test_candidates_that_may_share_a_first_token_are_refused_before_sending(
    serve, make_backend, labels, clash
) -> None:
    seen: list[dict[str, Any]] = []
    backend = make_backend(serve(first_token([("x", 0.5)], seen)))
    with pytest.raises(UnsupportedFeatureError, match=clash) as caught:
        backend.score("?", labels)
    assert "vLLM" in str(caught.value) and seen == []


def test_a_likely_first_token_shared_by_two_candidates_is_refused(serve, make_backend) -> None:
    backend = make_backend(serve(first_token([("ne", 0.6), ("positive", 0.3)])))
    with pytest.raises(UnsupportedFeatureError, match=r"'ne' .* begins 'negative' and 'neutral'"):
        backend.score("?", ["positive", "negative", "neutral"])


def test_a_model_that_returns_no_logprobs_cannot_score(serve, make_backend) -> None:
    backend = make_backend(serve(OpenAIHandler(text="positive", logprobs=False)))
    with pytest.raises(UnsupportedFeatureError, match="does not return logprobs"):
        backend.choose("?", ["positive", "negative"])
