"""Streams give the same reply as ``chat``, piece by piece, and stop cleanly."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from llmclient import ProviderError

pytest.importorskip("torch")

from llmclient.backends.huggingface.streaming import IncrementalDecoder, StreamText

PROMPTS = [
    "Hello there",
    "東京は日本の首都です。🙂",
    "Le café est très chaud, déjà prêt à boire.",
    "What is the capital of France? One two three four five six seven eight nine ten.",
]


def count_forward_calls(
    backend: Any, monkeypatch: pytest.MonkeyPatch, *, fail_at: int | None = None
) -> list[int]:
    """Count the model's forward passes; with ``fail_at``, make that pass raise."""
    model = backend.hf_model
    real = model.forward
    calls = [0]

    def forward(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        if calls[0] == fail_at:
            raise RuntimeError("device lost in the middle of generation")
        return real(*args, **kwargs)

    monkeypatch.setattr(model, "forward", forward)
    return calls


@pytest.mark.parametrize("prompt", PROMPTS)
def test_the_joined_stream_is_the_reply(llama_backend: Any, prompt: str) -> None:
    reply = llama_backend.chat(prompt, max_new_tokens=40, temperature=0)
    with llama_backend.stream(prompt, max_new_tokens=40, temperature=0) as stream:
        pieces = [delta.text for delta in stream]
        final = stream.final()
    assert "".join(pieces) == reply.text
    assert not any("\ufffd" in piece for piece in pieces[:-1]) or "\ufffd" in reply.text
    assert (final.text, final.finish_reason, final.usage) == (reply.text, reply.finish_reason, reply.usage)
    assert final.model == reply.model


def test_a_streamed_stop_string_is_never_shown(llama_backend: Any) -> None:
    full = llama_backend.chat(PROMPTS[0], max_new_tokens=40, temperature=0).text
    stop = full[12:15]
    expected = full[: full.find(stop)]
    pieces = [d.text for d in llama_backend.stream(PROMPTS[0], max_new_tokens=40, temperature=0, stop=stop)]
    assert "".join(pieces) == expected
    reply = llama_backend.chat(PROMPTS[0], max_new_tokens=40, temperature=0, stop=stop)
    assert reply.text == expected


async def test_the_async_stream_is_the_reply(llama_backend: Any) -> None:
    reply = llama_backend.chat(PROMPTS[1], max_new_tokens=30, temperature=0)
    stream = llama_backend.astream(PROMPTS[1], max_new_tokens=30, temperature=0)
    pieces = [delta.text async for delta in stream]
    final = await stream.final()
    assert "".join(pieces) == reply.text
    assert (final.finish_reason, final.usage) == (reply.finish_reason, reply.usage)


def test_the_last_delta_carries_finish_reason_and_usage(llama_backend: Any) -> None:
    deltas = list(llama_backend.stream("Hello there", max_new_tokens=5, temperature=0))
    assert all(d.finish_reason is None for d in deltas[:-1])
    assert deltas[-1].finish_reason == "length"
    assert deltas[-1].usage is not None and deltas[-1].usage.completion_tokens == 5


def test_closing_a_stream_early_stops_generation(llama_backend: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = count_forward_calls(llama_backend, monkeypatch)
    with llama_backend.stream("Hello there", max_new_tokens=200, temperature=0) as stream:
        for seen, _ in enumerate(stream, start=1):
            if seen == 3:
                break
    stopped_at = calls[0]
    assert stopped_at < 20
    time.sleep(0.2)
    assert calls[0] == stopped_at  # nothing runs on after close() returns
    # the model is free again
    assert llama_backend.chat("Hello", max_new_tokens=2).usage.completion_tokens <= 2


async def test_closing_an_async_stream_early_stops_generation(
    llama_backend: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = count_forward_calls(llama_backend, monkeypatch)
    async with llama_backend.astream("Hello there", max_new_tokens=200, temperature=0) as stream:
        async for _ in stream:
            break
    stopped_at = calls[0]
    assert stopped_at < 20
    await asyncio.sleep(0.2)
    assert calls[0] == stopped_at
    # the model is free for the next call
    reply = await asyncio.wait_for(llama_backend.achat("Hello", max_new_tokens=2), timeout=30)
    assert reply.usage.completion_tokens <= 2


def test_an_error_inside_generation_reaches_the_consumer(
    llama_backend: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    count_forward_calls(llama_backend, monkeypatch, fail_at=4)
    pieces: list[str] = []
    with pytest.raises(ProviderError, match="device lost in the middle of generation") as info:
        for delta in llama_backend.stream("Hello there", max_new_tokens=50, temperature=0):
            pieces.append(delta.text)
    assert isinstance(info.value.__cause__, RuntimeError)


async def test_an_error_inside_generation_reaches_the_async_consumer(
    llama_backend: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    count_forward_calls(llama_backend, monkeypatch, fail_at=2)
    with pytest.raises(ProviderError, match="device lost"):
        async for _ in llama_backend.astream("Hello there", max_new_tokens=50, temperature=0):
            pass


def test_incremental_decoding_never_splits_a_character(llama_backend: Any) -> None:
    tokenizer = llama_backend.tokenizer
    text = "東京は日本の首都です。🙂🚀 naïve façade, 5 €"
    ids = tokenizer.encode(text, add_special_tokens=False)
    assert any("\ufffd" in tokenizer.decode([i]) for i in ids)  # some tokens hold part of a character
    decoder = IncrementalDecoder(tokenizer)
    pieces = [decoder.add([i]) for i in ids]
    assert "".join(pieces) == text
    assert not any("\ufffd" in piece for piece in pieces)


@pytest.mark.parametrize(
    ("text", "stops", "shown"),
    [
        ("one two three four five six seven", ("six seven",), "one two three four five "),
        ("one two three four five six eight", ("six seven",), "one two three four five six eight"),
        ("one two six", ("six seven",), "one two "),  # "six" may still become the stop string
        ("one two", (), "one two"),
    ],
)
def test_stream_text_holds_back_what_may_be_a_stop_string(
    llama_backend: Any, text: str, stops: tuple[str, ...], shown: str
) -> None:
    tokenizer = llama_backend.tokenizer
    stream = StreamText(tokenizer, stops)
    pieces = [stream.feed([i]) for i in tokenizer.encode(text, add_special_tokens=False)]
    assert "".join(pieces) == shown


def test_closing_the_backend_stops_a_running_stream(tiny_models: Any) -> None:
    from llmclient.backends.huggingface import HuggingFaceBackend

    backend = HuggingFaceBackend(str(tiny_models["llama"]), device="cpu")
    stream = backend.stream("Hello there", max_new_tokens=400, temperature=0)
    next(stream)
    backend.close()
    final = stream.final()
    assert final.finish_reason == "length"
    assert final.usage is not None and final.usage.completion_tokens < 400
