"""WrapperBackend forwards every hook to the backend it wraps, built on first use."""

from __future__ import annotations

from typing import Any

import pytest

import llmclient
from llmclient import ChatRequest, GenerationParams, WrapperBackend
from llmclient.testing import FunctionBackend


class Keyed(FunctionBackend):
    @property
    def credentials(self) -> tuple[str, ...]:
        return ("sk-wrapped-secret-123",)


def echo(messages: Any, params: GenerationParams) -> str:
    return f"{messages[-1].text}/{params.max_new_tokens}"


def test_the_inner_backend_is_built_on_first_use_only() -> None:
    built: list[FunctionBackend] = []

    def build() -> FunctionBackend:
        built.append(FunctionBackend(echo, defaults=GenerationParams(max_new_tokens=7)))
        return built[-1]

    wrapper = WrapperBackend(build, model="m", name="wrapped")
    assert wrapper.inner_built is None and built == []
    assert wrapper.chat("hi").text == "hi/7"  # the inner backend's own defaults apply
    assert wrapper.chat("hi", max_new_tokens=3).text == "hi/3"  # under the call's values
    assert len(built) == 1 and wrapper.inner_built is built[0]


async def test_every_call_style_reaches_the_inner_backend() -> None:
    inner = FunctionBackend(echo)
    async with WrapperBackend(inner) as wrapper:
        assert (await wrapper.achat("a", max_new_tokens=1)).text == "a/1"
        assert "".join([d.text async for d in wrapper.astream("b", max_new_tokens=2)]) == "b/2"
        assert [r.text for r in await wrapper.achat_many(["c"], max_new_tokens=3)] == ["c/3"]
    assert len(inner.requests) == 3


def test_closing_the_wrapper_closes_the_inner_backend_and_credentials_come_from_it() -> None:
    inner = Keyed(echo)
    wrapper = WrapperBackend(inner)
    assert wrapper.credentials == ("sk-wrapped-secret-123",)
    wrapper.close()
    with pytest.raises(llmclient.BackendUnavailableError, match="closed"):
        inner.chat("x")


def test_a_wrapper_of_nothing_says_so() -> None:
    with pytest.raises(llmclient.InvalidRequestError, match="wraps no backend"):
        WrapperBackend(None, model="m").chat("x")


def test_for_inner_keeps_the_call_values_over_the_inner_defaults() -> None:
    inner = FunctionBackend(echo, defaults=GenerationParams(max_new_tokens=9, temperature=0))
    wrapper = WrapperBackend(inner)
    request = wrapper.prepare("x", {"temperature": 0.5})
    merged: ChatRequest = wrapper.for_inner(request)
    assert (merged.params.max_new_tokens, merged.params.temperature) == (9, 0.5)
