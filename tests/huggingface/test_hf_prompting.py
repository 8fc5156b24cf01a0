"""Prompts are the chat template's text, tokenised once; windows are enforced before the model runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from llmclient import ChatTemplateError, ConfigError, ContextWindowExceededError, Message
from llmclient.backends.huggingface import HuggingFaceBackend

pytest.importorskip("torch")

NO_SYSTEM_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'system' %}"
    "{{ raise_exception('System role not supported') }}{% endif %}"
    "<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
"""A template that refuses system messages, as Gemma's first one did."""

CONVERSATION = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "What is the capital of France?"},
]


def template_ids(tokenizer: Any, conversation: list[dict[str, str]]) -> list[int]:
    encoded = tokenizer.apply_chat_template(
        conversation, add_generation_prompt=True, tokenize=True, return_dict=True
    )
    ids: list[int] = encoded["input_ids"]
    return ids


def test_the_prompt_is_apply_chat_template_tokenised_once_with_one_bos(llama_backend: Any) -> None:
    tokenizer = llama_backend.tokenizer
    expected = template_ids(tokenizer, CONVERSATION)
    reply = llama_backend.chat(CONVERSATION, max_new_tokens=1)
    assert reply.usage.prompt_tokens == len(expected)
    text = llama_backend.render_prompt(CONVERSATION)
    assert tokenizer.encode(text, add_special_tokens=False) == expected
    assert expected.count(tokenizer.bos_token_id) == 1
    # tokenising the text plainly would put a second BOS in front of the template's own
    assert tokenizer(text)["input_ids"][:2] == [tokenizer.bos_token_id] * 2


def test_render_prompt_is_the_exact_text_the_model_sees(llama_backend: Any) -> None:
    text = llama_backend.render_prompt(CONVERSATION)
    assert text == (
        "<s><|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
    )


def test_count_tokens_counts_the_prompt(llama_backend: Any) -> None:
    expected = template_ids(llama_backend.tokenizer, CONVERSATION)
    assert llama_backend.count_tokens(CONVERSATION) == len(expected)
    reply = llama_backend.chat(CONVERSATION, max_new_tokens=2, temperature=0)
    assert reply.usage.prompt_tokens == len(expected)


def test_messages_objects_and_developer_role_render_like_dicts(llama_backend: Any) -> None:
    as_objects = [
        Message(role="developer", content="You are a helpful assistant."),
        Message(
            role="user",
            content=[
                {"type": "text", "text": "What is the capital"},
                {"type": "text", "text": "of France?"},
            ],
        ),
    ]
    assert llama_backend.render_prompt(as_objects) == llama_backend.render_prompt(CONVERSATION)


def test_text_parts_of_one_message_are_joined_by_one_space(llama_backend: Any) -> None:
    # issue 12 item 24: the prompt read "Name threecolours."; transformers serve joins with a space
    parts = [{"type": "text", "text": "Name three"}, {"type": "text", "text": "colours."}]
    text = llama_backend.render_prompt([{"role": "user", "content": parts}])
    assert "<|im_start|>user\nName three colours.<|im_end|>" in text
    assert text == llama_backend.render_prompt("Name three colours.")


def test_a_model_without_a_chat_template_names_the_fix(tiny_models: dict[str, Path]) -> None:
    backend = HuggingFaceBackend(str(tiny_models["gpt2"]), device="cpu")
    try:
        with pytest.raises(ChatTemplateError, match="has no chat template") as info:
            backend.chat("Hello", max_new_tokens=2)
        assert "chat_template" in str(info.value)
        assert ".jinja" in str(info.value)
    finally:
        backend.close()


def test_a_chat_template_can_come_from_a_file(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    template = tmp_path / "plain.jinja"
    template.write_text("{% for m in messages %}{{ m['content'] }}\n{% endfor %}", encoding="utf-8")
    backend = HuggingFaceBackend(str(tiny_models["gpt2"]), device="cpu", chat_template=str(template))
    try:
        assert backend.render_prompt("Hello there") == "Hello there\n"
        assert backend.chat("Hello there", max_new_tokens=3, temperature=0).usage.completion_tokens == 3
    finally:
        backend.close()


def test_a_chat_template_that_is_neither_text_nor_a_file_is_a_config_error(
    tiny_models: dict[str, Path],
) -> None:
    with pytest.raises(ConfigError, match=r"chat_template = 'no/such/file\.jinja'"):
        HuggingFaceBackend(str(tiny_models["gpt2"]), chat_template="no/such/file.jinja", load="eager")


def test_a_template_that_rejects_the_system_role_says_how_to_merge(tiny_models: dict[str, Path]) -> None:
    backend = HuggingFaceBackend(str(tiny_models["llama"]), device="cpu", chat_template=NO_SYSTEM_TEMPLATE)
    try:
        with pytest.raises(ChatTemplateError, match="rejects the system role") as info:
            backend.chat(CONVERSATION, max_new_tokens=2)
        assert 'system_role = "merge"' in str(info.value)
        assert "System role not supported" in str(info.value)
        # a conversation without a system message is fine
        assert backend.chat(CONVERSATION[1:], max_new_tokens=2).usage.completion_tokens == 2
    finally:
        backend.close()


def test_merge_puts_the_system_text_in_front_of_the_first_user_turn(tiny_models: dict[str, Path]) -> None:
    backend = HuggingFaceBackend(
        str(tiny_models["llama"]), device="cpu", chat_template=NO_SYSTEM_TEMPLATE, system_role="merge"
    )
    try:
        conversation = [
            *CONVERSATION,
            {"role": "assistant", "content": "Paris."},
            {"role": "user", "content": "And of Japan?"},
        ]
        assert backend.render_prompt(conversation) == (
            "<s><|im_start|>user\nYou are a helpful assistant.\n\nWhat is the capital of France?<|im_end|>\n"
            "<|im_start|>assistant\nParis.<|im_end|>\n<|im_start|>user\nAnd of Japan?<|im_end|>\n"
            "<|im_start|>assistant\n"
        )
    finally:
        backend.close()


# -- the context window --------------------------------------------------------------------------


def long_conversation(turns: int) -> list[dict[str, str]]:
    conversation = [{"role": "system", "content": "Be brief."}]
    for i in range(turns):
        conversation.append({"role": "user", "content": f"Question {i}?"})
        conversation.append({"role": "assistant", "content": f"Paris {i}."})
    conversation.append({"role": "user", "content": "Hello there"})
    return conversation


@pytest.fixture(scope="module")
def small_window(tiny_models: dict[str, Path]) -> Any:
    backend = HuggingFaceBackend(str(tiny_models["small_window"]), device="cpu")
    yield backend
    backend.close()


@pytest.fixture(scope="module")
def small_window_truncating(tiny_models: dict[str, Path]) -> Any:
    backend = HuggingFaceBackend(str(tiny_models["small_window"]), device="cpu", context_policy="truncate")
    yield backend
    backend.close()


def test_the_window_comes_from_the_model_config(small_window: Any, llama_backend: Any) -> None:
    assert (small_window.context_window, llama_backend.context_window) == (64, 512)


def test_over_the_window_is_an_error_with_both_numbers_and_the_window(small_window: Any) -> None:
    conversation = long_conversation(6)
    prompt_tokens = small_window.count_tokens(conversation)
    assert prompt_tokens > 40
    with pytest.raises(ContextWindowExceededError) as info:
        small_window.chat(conversation, max_new_tokens=30)
    error = info.value
    assert (error.prompt_tokens, error.max_new_tokens, error.context_window) == (prompt_tokens, 30, 64)
    assert f"prompt of {prompt_tokens} tokens + max_new_tokens 30" in str(error)
    assert "context window of 64 tokens" in str(error)
    assert 'context_policy = "truncate"' in str(error)


def test_exactly_filling_the_window_is_allowed(small_window: Any) -> None:
    prompt_tokens = small_window.count_tokens("Hello")
    reply = small_window.chat("Hello", max_new_tokens=64 - prompt_tokens, temperature=0)
    assert reply.usage.prompt_tokens + reply.usage.completion_tokens <= 64


def test_a_configured_window_overrides_the_model_config(tiny_models: dict[str, Path]) -> None:
    backend = HuggingFaceBackend(str(tiny_models["llama"]), device="cpu", context_window=20)
    try:
        with pytest.raises(ContextWindowExceededError, match="context window of 20 tokens"):
            backend.chat("Hello there", max_new_tokens=16)
    finally:
        backend.close()


def test_truncate_drops_the_oldest_turns_and_keeps_the_system_message(small_window_truncating: Any) -> None:
    conversation = long_conversation(3)
    needed = small_window_truncating.count_tokens([conversation[0], conversation[-1]])
    max_new_tokens = 64 - needed - 2  # room for the system message and the last turn, not one more turn
    text = small_window_truncating.render_prompt(conversation, max_new_tokens=max_new_tokens)
    ids = small_window_truncating.tokenizer.encode(text, add_special_tokens=False)
    assert len(ids) <= 64 - max_new_tokens
    assert text == small_window_truncating.render_prompt(
        [conversation[0], conversation[-1]], max_new_tokens=1
    )
    reply = small_window_truncating.chat(conversation, max_new_tokens=max_new_tokens, temperature=0)
    assert reply.usage.prompt_tokens == len(ids)
    assert reply.usage.prompt_tokens + reply.usage.completion_tokens <= 64


def test_truncate_keeps_the_newest_turns_that_fit_opening_with_a_user_turn(
    small_window_truncating: Any,
) -> None:
    conversation = long_conversation(3)
    kept = [conversation[0], *conversation[-3:]]  # system, the last question and answer, the new question
    max_new_tokens = 64 - small_window_truncating.count_tokens(kept)
    assert small_window_truncating.render_prompt(conversation, max_new_tokens=max_new_tokens) == (
        small_window_truncating.render_prompt(kept, max_new_tokens=1)
    )


def test_truncate_cuts_the_last_message_from_the_left(small_window_truncating: Any) -> None:
    message = " ".join(f"word{i}" for i in range(60))
    text = small_window_truncating.render_prompt(
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": message}], max_new_tokens=16
    )
    assert len(small_window_truncating.tokenizer.encode(text, add_special_tokens=False)) <= 64 - 16
    assert text.startswith("<s><|im_start|>system\nBe brief.")
    assert "word59<|im_end|>\n<|im_start|>assistant\n" in text
    assert "word0 " not in text


def test_truncate_cannot_make_room_for_more_new_tokens_than_the_window(small_window_truncating: Any) -> None:
    with pytest.raises(ContextWindowExceededError) as info:
        small_window_truncating.chat("Hello", max_new_tokens=64)
    assert info.value.context_window == 64


def test_a_seq2seq_window_bounds_only_the_prompt(tiny_models: dict[str, Path]) -> None:
    backend = HuggingFaceBackend(str(tiny_models["t5"]), device="cpu", context_window=24)
    try:
        assert backend.chat("Hello", max_new_tokens=30, temperature=0).usage.completion_tokens <= 30
        with pytest.raises(ContextWindowExceededError):
            backend.chat(" ".join(["Hello there"] * 20), max_new_tokens=2)
    finally:
        backend.close()
