"""Encoder-decoder models without a chat template (T5, FLAN-T5, BART) are given plain text.

They were trained on plain text in, text out, so a conversation of system and user messages becomes
their texts joined by blank lines, tokenised as in training (with the tokenizer's own ``</s>``);
decoder-only models without a template keep the clear ``ChatTemplateError``.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from llmclient import ChatTemplateError, ContextWindowExceededError
from llmclient.backends.huggingface import HuggingFaceBackend

pytest.importorskip("torch")


@pytest.fixture(scope="module")
def plain_t5_dir(tiny_models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny T5 without its chat template, its tokenizer closing every input with ``</s>`` as T5's does."""
    from tokenizers import processors
    from transformers import AutoTokenizer

    target = tmp_path_factory.mktemp("plain-t5") / "t5"
    shutil.copytree(tiny_models["t5"], target)
    tokenizer = AutoTokenizer.from_pretrained(target)
    eos = tokenizer.eos_token
    tokenizer.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single=f"$A {eos}", special_tokens=[(eos, tokenizer.eos_token_id)]
    )
    tokenizer.chat_template = None
    tokenizer.save_pretrained(target)
    (target / "chat_template.jinja").unlink(missing_ok=True)
    config_path = target / "tokenizer_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config.pop("chat_template", None)
    config_path.write_text(json.dumps(config), encoding="utf-8")
    return target


@pytest.fixture
def plain_t5(plain_t5_dir: Path) -> Iterator[HuggingFaceBackend]:
    backend = HuggingFaceBackend(str(plain_t5_dir), device="cpu")
    yield backend
    backend.close()


def generate_on(backend: HuggingFaceBackend, text: str, *, max_new_tokens: int) -> list[int]:
    """``model.generate`` on ``tokenizer(text)``, called by hand: how T5 is used without llmclient."""
    encoded = backend.tokenizer(text, return_tensors="pt")
    out = backend.hf_model.generate(**encoded, max_new_tokens=max_new_tokens, do_sample=False)
    ids: list[int] = out[0, 1:].tolist()  # after the decoder start token
    return ids


def test_a_conversation_becomes_the_plain_text_t5_was_trained_on(plain_t5: HuggingFaceBackend) -> None:
    conversation = [
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": "What is the capital of France?"},
        {
            "role": "user",
            "content": [{"type": "text", "text": "Name three"}, {"type": "text", "text": "cities."}],
        },
    ]
    text = "Answer briefly.\n\nWhat is the capital of France?\n\nName three cities."
    assert plain_t5.tokenizer.chat_template is None
    assert plain_t5.render_prompt(conversation) == text
    tokens = plain_t5.tokenizer(text)["input_ids"]
    assert tokens[-1] == plain_t5.tokenizer.eos_token_id  # the tokenizer's own </s>, as in training
    assert plain_t5.count_tokens(conversation) == len(tokens)

    reply = plain_t5.chat(conversation, max_new_tokens=12, temperature=0)
    expected = generate_on(plain_t5, text, max_new_tokens=12)
    assert reply.usage.prompt_tokens == len(tokens)
    assert reply.usage.completion_tokens == len(expected)
    ended = expected[-1] == plain_t5.tokenizer.eos_token_id
    assert reply.text == plain_t5.tokenizer.decode(
        expected[:-1] if ended else expected, skip_special_tokens=True
    )


def test_a_plain_prompt_is_the_users_text_alone_batched_and_streamed_alike(
    plain_t5: HuggingFaceBackend,
) -> None:
    prompts = ["Hello there", "What is the capital of France?"]
    assert plain_t5.render_prompt("Hello there") == "Hello there"
    developer = [{"role": "developer", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    assert plain_t5.render_prompt(developer) == "Be brief.\n\nHi"
    singles = [plain_t5.chat(p, max_new_tokens=8, temperature=0) for p in prompts]
    batched = plain_t5.chat_many(prompts, max_new_tokens=8, temperature=0)
    assert [(r.text, r.usage) for r in batched] == [(r.text, r.usage) for r in singles]
    assert plain_t5.stream(prompts[0], max_new_tokens=8, temperature=0).final().text == singles[0].text


def test_assistant_turns_have_no_plain_text_form_and_are_refused(plain_t5: HuggingFaceBackend) -> None:
    conversation = [
        {"role": "user", "content": "What is the capital of France?"},
        {"role": "assistant", "content": "Paris."},
        {"role": "user", "content": "And of Japan?"},
    ]
    with pytest.raises(ChatTemplateError, match="encoder-decoder model without a chat template") as info:
        plain_t5.chat(conversation, max_new_tokens=2)
    assert "assistant turns" in str(info.value)
    assert "chat_template" in str(info.value)


def test_a_plain_prompt_is_truncated_from_the_oldest_turn(plain_t5_dir: Path) -> None:
    backend = HuggingFaceBackend(
        str(plain_t5_dir), device="cpu", context_window=24, context_policy="truncate"
    )
    try:
        long = " ".join(["Hello there"] * 20)
        text = backend.render_prompt([{"role": "user", "content": long}, {"role": "user", "content": "Hi"}])
        assert text.endswith("Hi") and len(backend.tokenizer(text)["input_ids"]) <= 24
        strict = HuggingFaceBackend(str(plain_t5_dir), device="cpu", context_window=24)
        with pytest.raises(ContextWindowExceededError):
            strict.chat(long, max_new_tokens=2)
        strict.close()
    finally:
        backend.close()


def test_a_decoder_only_model_without_a_template_is_still_refused(tiny_models: dict[str, Path]) -> None:
    backend = HuggingFaceBackend(str(tiny_models["gpt2"]), device="cpu")
    try:
        with pytest.raises(ChatTemplateError, match="has no chat template"):
            backend.chat("Hello", max_new_tokens=2)
    finally:
        backend.close()
