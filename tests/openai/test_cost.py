"""What a remote reply cost: the provider's ``usage.cost`` where it reports one, else the backend's
``prices`` setting; streamed and not, single and batched, over the real loopback server.
"""

from __future__ import annotations

import pytest
from remote_support import Caller, Script

from llmclient.errors import ConfigError
from llmclient.testing.server import OpenAIHandler
from llmclient.testing.server.replies import completion, completion_chunks, json_reply, sse_reply

PRICES = {"input_per_million": 2.0, "output_per_million": 10.0}


def test_config_prices_give_a_cost_where_the_provider_reports_none(serve, make_backend, call: Caller) -> None:
    server = serve(OpenAIHandler("one two three", prompt_tokens=1000))
    backend = make_backend(server, prices=PRICES)
    usage = call.chat(backend).usage
    assert usage is not None and usage.cost_source == "config"
    assert usage.cost == pytest.approx((1000 * 2.0 + 3 * 10.0) / 1e6)
    _, streamed = call.stream(backend)
    assert streamed.usage is not None and streamed.usage.cost == pytest.approx(usage.cost)
    assert streamed.usage.cost_source == "config"


def test_chat_many_items_are_priced(serve, make_backend) -> None:
    backend = make_backend(serve(OpenAIHandler("a b", prompt_tokens=10)), prices=PRICES)
    replies = backend.chat_many(["x", "y"])
    assert [r.usage.cost for r in replies if r.usage] == [pytest.approx((10 * 2 + 2 * 10) / 1e6)] * 2


def test_the_providers_cost_wins_over_config_prices(serve, make_backend, call: Caller) -> None:
    body = completion("Hi", usage={"prompt_tokens": 3, "completion_tokens": 1, "cost": 0.5})
    chunks = completion_chunks("Hi")
    chunks[-1]["usage"]["cost"] = 0.5
    server = serve(Script([json_reply(body), sse_reply(chunks)]))
    backend = make_backend(server, prices=PRICES)
    usage = call.chat(backend).usage
    assert usage is not None and (usage.cost, usage.cost_source) == (0.5, "provider")
    _, streamed = call.stream(backend)
    assert streamed.usage is not None and (streamed.usage.cost, streamed.usage.cost_source) == (
        0.5,
        "provider",
    )


def test_without_prices_or_a_provider_cost_the_cost_is_unknown(serve, make_backend) -> None:
    usage = make_backend(serve(OpenAIHandler("hi"))).chat("x").usage
    assert usage is not None and usage.cost is None and usage.cost_source is None
    assert "cost" not in usage.to_dict()


@pytest.mark.parametrize(
    ("prices", "named"),
    [
        ({"input_per_million": -1, "output_per_million": 1}, "prices.input_per_million"),
        ({"output_per_million": 1}, "prices.output_per_million"),
        ({"input_per_million": "cheap", "output_per_million": 1}, "prices.input_per_million"),
        ({"input_per_milion": 1, "output_per_million": 1}, "did you mean 'input_per_million'"),
    ],
)
def test_bad_prices_are_refused_naming_the_key(serve, make_backend, prices, named: str) -> None:
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
        make_backend(serve(OpenAIHandler("hi")), prices=prices)


def test_prices_are_read_from_a_config_table(built) -> None:
    backend = built({"type": "vllm", "model": "m", "base_url": "http://127.0.0.1:9/v1", "prices": PRICES})
    assert backend.prices is not None and backend.prices.output_per_million == 10.0
