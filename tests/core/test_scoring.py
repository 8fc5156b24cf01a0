"""Token logprobs as values, and candidate scoring as the base class does it for every backend.

The backend is a real :class:`~llmclient.testing.FunctionBackend` with a scorer (the hook's raw
logprobs are given, so what the base class makes of them is known exactly); the remote backend's
scoring is tested against the loopback server in tests/openai/test_scoring_remote.py.
"""

from __future__ import annotations

import asyncio
import math
from typing import Any

import pytest

import llmclient
from llmclient import CandidateScore, ChatResponse, StreamDelta, TokenLogprob
from llmclient.errors import InvalidRequestError, LLMClientError, RateLimitError, UnsupportedFeatureError
from llmclient.logprobs import RawScore
from llmclient.stream import StreamAccumulator
from llmclient.testing import FunctionBackend
from llmclient.types import GenerationParams, Message

LOGPROBS = {"positive": math.log(0.6), "negative": math.log(0.3), "neutral": math.log(0.1)}


def scorer(messages: list[Message], candidates: tuple[str, ...]) -> list[float]:
    return [LOGPROBS[c] for c in candidates]


def backend(**kwargs: Any) -> FunctionBackend:
    return FunctionBackend(lambda m, p: "unused", scorer=kwargs.pop("scorer", scorer), **kwargs)


# -- parameters ---------------------------------------------------------------------------------


def test_logprobs_parameters_are_checked_merged_and_recorded() -> None:
    params = GenerationParams.from_options({"logprobs": True, "top_logprobs": 5})
    assert params.wants_logprobs and params.to_dict() == {"logprobs": True, "top_logprobs": 5}
    assert GenerationParams.from_options({"top_logprobs": 3}).wants_logprobs  # asks for them too
    assert not GenerationParams.from_options({"logprobs": False, "top_logprobs": 3}).wants_logprobs
    assert not GenerationParams().wants_logprobs
    assert GenerationParams(logprobs=True).merged(GenerationParams(logprobs=False)).logprobs is False
    for bad, message in (
        ({"logprobs": "yes"}, "logprobs must be True or False"),
        ({"top_logprobs": 21}, "top_logprobs must be <= 20"),
        ({"top_logprobs": -1}, "top_logprobs must be >= 0"),
        ({"top_logprob": 2}, "did you mean 'top_logprobs'"),
    ):
        with pytest.raises(InvalidRequestError, match=message):
            GenerationParams.from_options(bad)


def test_a_token_logprob_reads_and_writes_openais_shape() -> None:
    entry = {
        "token": " I",
        "logprob": -0.5,
        "bytes": [32, 73],
        "top_logprobs": [{"token": " I", "logprob": -0.5}],
    }
    token = TokenLogprob.from_dict(entry)
    assert token == TokenLogprob(" I", -0.5, b" I", [(" I", -0.5)])
    assert token.to_dict() == {**entry, "top_logprobs": [{"token": " I", "logprob": -0.5}]}
    assert token.probability == pytest.approx(math.exp(-0.5))
    assert TokenLogprob.from_dict({"token": "x", "logprob": 0.0, "bytes": None}).bytes is None


def test_stream_deltas_carry_their_tokens_and_final_joins_them() -> None:
    first, second = TokenLogprob("Hel", -0.1), TokenLogprob("lo", -0.2)
    joined = StreamAccumulator(model="m", backend="b")
    for delta in (StreamDelta(text="Hel", logprobs=[first]), StreamDelta(text="lo", logprobs=[second])):
        joined.add(delta)
    joined.add(StreamDelta(finish_reason="stop"))
    assert joined.response().logprobs == [first, second]
    reply = ChatResponse(text="Hello", logprobs=[first, second])
    assert reply.as_delta().logprobs == [first, second]  # a reply as one delta keeps them
    assert ChatResponse(text="x").logprobs == []


def test_a_function_backends_stream_of_deltas_with_logprobs_joins_them() -> None:
    pieces = [StreamDelta(text="a", logprobs=[TokenLogprob("a", -1.0)]), StreamDelta(text="b")]
    with FunctionBackend(lambda m, p: pieces) as fb:
        assert [t.token for t in fb.chat("x").logprobs] == ["a"]
        assert [t.token for t in fb.stream("x").final().logprobs] == ["a"]


# -- scoring ------------------------------------------------------------------------------------


def test_score_gives_each_candidate_its_logprob_and_share_in_the_order_given() -> None:
    scored = backend().score("How was it?", ["negative", "positive", "neutral"])
    assert [s.text for s in scored] == ["negative", "positive", "neutral"]
    assert [s.probability for s in scored] == pytest.approx([0.3, 0.6, 0.1])
    assert scored[1] == CandidateScore("positive", LOGPROBS["positive"], 1, pytest.approx(0.6), True)
    assert sum(s.probability for s in scored) == pytest.approx(1.0)


def test_choose_is_the_highest_and_the_first_among_equals() -> None:
    assert backend().choose("?", ["neutral", "positive"]).text == "positive"
    even = backend(scorer=lambda m, c: [-1.0, -1.0])
    assert even.choose("?", ["b", "a"]).text == "b"


def test_normalize_divides_by_tokens_or_bytes_before_the_softmax() -> None:
    raw = {"ok": RawScore(-2.0, 1, True), "very good": RawScore(-3.0, 3, True)}
    fb = backend(scorer=lambda m, c: [raw[t] for t in c])
    total = fb.score("?", ["ok", "very good"])
    assert [s.probability for s in total] == pytest.approx([1 / (1 + math.exp(-1)), 1 / (1 + math.e)])
    mean = fb.score("?", ["ok", "very good"], normalize="mean")  # -2 per token against -1
    assert mean[1].probability == pytest.approx(1 / (1 + math.exp(-1)))
    assert mean[1].logprob == -3.0 and mean[1].tokens == 3  # the total is kept
    per_byte = fb.score("?", ["ok", "very good"], normalize="per_byte")  # -1 per byte against -1/3
    assert per_byte[1].probability == pytest.approx(1 / (1 + math.exp(-2 / 3)))


def test_per_byte_needs_whole_logprobs_and_no_reading_is_refused() -> None:
    first_tokens = backend(scorer=lambda m, c: [RawScore(-0.1, 1, False), RawScore(-math.inf, 0, False)])
    scored = first_tokens.score("?", ["yes", "no"])
    assert [(s.probability, s.exact) for s in scored] == [(1.0, False), (0.0, False)]
    with pytest.raises(UnsupportedFeatureError, match="read only the candidates' first tokens"):
        first_tokens.score("?", ["yes", "no"], normalize="per_byte")
    nothing = backend(scorer=lambda m, c: [RawScore(-math.inf, 0, False)] * len(c))
    with pytest.raises(UnsupportedFeatureError, match="found none of the candidates"):
        nothing.score("?", ["yes", "no"])


@pytest.mark.parametrize(
    ("candidates", "options", "message"),
    [
        ("yes", {}, "one string 'yes'"),
        (["yes"], {}, "at least two candidates"),
        (["yes", ""], {}, "non-empty string"),
        (["yes", "yes"], {}, "'yes' is given twice"),
        (["yes", "no"], {"normalize": "max"}, "normalize must be one of"),
        (["yes", "no"], {"end_of_turn": "yes"}, "end_of_turn must be True or False"),
        (["yes", "no"], {"temprature": 0}, "did you mean 'temperature'"),
    ],
)
def test_bad_candidates_and_options_are_refused_before_scoring(candidates, options, message) -> None:
    fb = backend()
    with pytest.raises(InvalidRequestError, match=message):
        fb.score("?", candidates, **options)
    assert fb.scored == []


def test_the_hook_gets_the_checked_request_and_options() -> None:
    fb = backend(defaults=GenerationParams(seed=7))
    fb.score(
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "?"}],
        ["positive", "negative"],
    )
    request, texts, options = fb.scored[0]
    assert [m.role for m in request.messages] == ["system", "user"] and request.params.seed == 7
    assert texts == ("positive", "negative") and (options.end_of_turn, options.normalize) == (True, "sum")
    fb.score("?", ["positive", "negative"], end_of_turn=False, normalize="mean")
    assert (fb.scored[1][2].end_of_turn, fb.scored[1][2].normalize) == (False, "mean")


def test_a_backend_that_cannot_score_says_why_and_names_the_fix() -> None:
    with FunctionBackend(lambda m, p: "x") as fb:
        with pytest.raises(UnsupportedFeatureError, match="cannot score candidates") as caught:
            fb.score("?", ["a", "b"])
        assert "response_format=Choice" in str(caught.value)
        with pytest.raises(UnsupportedFeatureError):
            asyncio.run(fb.achoose("?", ["a", "b"]))


def test_the_async_twins_give_what_the_sync_methods_give() -> None:
    fb = backend()
    candidates = ["positive", "negative"]
    assert asyncio.run(fb.ascore("?", candidates)) == fb.score("?", candidates)
    assert asyncio.run(fb.achoose("?", candidates)) == fb.choose("?", candidates)
    assert asyncio.run(fb.ascore_many(["a", "b"], candidates)) == fb.score_many(["a", "b"], candidates)
    assert asyncio.run(fb.achoose_many(["a", "b"], candidates)) == fb.choose_many(["a", "b"], candidates)


@pytest.mark.parametrize("style", ["sync", "async"])
def test_many_conversations_keep_their_order_and_errors_per_item(style: str) -> None:
    def by_prompt(messages: list[Message], candidates: tuple[str, ...]) -> list[float]:
        text = messages[-1].text
        if text == "bad":
            raise RateLimitError("slow down")
        return [0.0 if c == text else -5.0 for c in candidates]

    fb = backend(scorer=by_prompt)
    conversations = ["yes", "bad", "no"]

    def run(method: str, **options: Any) -> Any:
        if style == "sync":
            return getattr(fb, method)(conversations, ["yes", "no"], **options)
        return asyncio.run(getattr(fb, "a" + method)(conversations, ["yes", "no"], **options))

    found = run("score_many", return_exceptions=True, concurrency=2)
    assert [found[0][0].text, found[2][1].text] == ["yes", "no"]
    assert isinstance(found[1], RateLimitError)
    with pytest.raises(RateLimitError):
        run("score_many")
    with pytest.raises(RateLimitError):
        run("choose_many")
    conversations.remove("bad")
    assert [c.text for c in run("choose_many")] == ["yes", "no"]
    with pytest.raises(InvalidRequestError, match="concurrency must be an integer >= 1"):
        run("score_many", concurrency=0)


def test_an_error_the_scores_raise_is_that_items_error() -> None:
    fb = backend(scorer=lambda m, c: [RawScore(-math.inf, 0, False)] * len(c))
    (found,) = fb.score_many(["a"], ["x", "y"], return_exceptions=True)
    assert isinstance(found, UnsupportedFeatureError) and isinstance(found, LLMClientError)


def test_each_score_is_a_score_span(telemetry) -> None:
    fb = backend(model="tiny")
    fb.score("?", ["positive", "negative"])
    fb.score_many(["a", "b"], ["positive", "negative"])
    with pytest.raises(UnsupportedFeatureError):
        FunctionBackend(lambda m, p: "x", model="tiny").score("?", ["a", "b"])
    spans = telemetry.spans()
    assert [s.name for s in spans] == ["score tiny"] * 4
    assert {s.attributes["gen_ai.operation.name"] for s in spans} == {"score"}
    assert spans[-1].attributes["error.type"] == "UnsupportedFeatureError"


def test_the_new_names_are_exported() -> None:
    assert llmclient.TokenLogprob is TokenLogprob and llmclient.CandidateScore is CandidateScore
