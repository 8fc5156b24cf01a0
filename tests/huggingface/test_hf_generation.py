"""Generation parameters keep one meaning, checked against transformers' own ``generate``."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from llmclient import BackendUnavailableError, InvalidRequestError, ProviderError
from llmclient.backends.huggingface import DEFAULT_MAX_NEW_TOKENS, HuggingFaceBackend

torch = pytest.importorskip("torch")

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
CONVERSATIONS = [
    [{"role": "user", "content": "Hello there"}],
    [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "Le café est très chaud, déjà prêt à boire. Once upon a time."},
    ],
    [{"role": "user", "content": "東京は日本の首都です。"}],
    QUESTION,
]


def spy_generate(backend: HuggingFaceBackend, monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Record the keyword arguments of every ``generate`` call the backend makes."""
    model = backend.hf_model
    calls: list[dict[str, Any]] = []
    real = model.generate

    def generate(**kwargs: Any) -> Any:
        calls.append(kwargs)
        return real(**kwargs)

    monkeypatch.setattr(model, "generate", generate)
    return calls


@pytest.mark.parametrize("index", range(len(CONVERSATIONS)))
def test_greedy_reply_is_generate_token_for_token(llama_backend: Any, hf_oracle: Any, index: int) -> None:
    messages = CONVERSATIONS[index]
    expected = hf_oracle(llama_backend, messages, max_new_tokens=24)
    reply = llama_backend.chat(messages, max_new_tokens=24, temperature=0)
    assert reply.text == llama_backend.tokenizer.decode(expected, skip_special_tokens=True)
    assert reply.usage.completion_tokens == len(expected)
    assert reply.usage.prompt_tokens == llama_backend.count_tokens(messages)
    ended = expected[-1] == llama_backend.tokenizer.eos_token_id
    assert reply.finish_reason == ("stop" if ended else "length")
    assert reply.model == str(Path(llama_backend.model))


def test_greedy_passes_max_new_tokens_and_no_sampling_parameter(
    llama_backend: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = spy_generate(llama_backend, monkeypatch)
    llama_backend.chat(QUESTION, max_new_tokens=5, temperature=0, top_p=0.5, top_k=3)
    (kwargs,) = calls
    assert kwargs["max_new_tokens"] == 5
    assert kwargs["do_sample"] is False
    assert not {"max_length", "temperature", "top_p", "top_k"} & set(kwargs)


def test_max_new_tokens_defaults_to_256(llama_backend: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = spy_generate(llama_backend, monkeypatch)
    reply = llama_backend.chat(QUESTION, temperature=0)
    assert DEFAULT_MAX_NEW_TOKENS == 256
    assert calls[0]["max_new_tokens"] == 256
    assert reply.usage.completion_tokens <= 256


def test_sampling_passes_its_parameters_and_a_seed_reproduces_it(
    llama_backend: Any, hf_oracle: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = spy_generate(llama_backend, monkeypatch)
    first = llama_backend.chat(QUESTION, max_new_tokens=16, temperature=1.3, top_p=0.9, top_k=40, seed=7)
    again = llama_backend.chat(QUESTION, max_new_tokens=16, temperature=1.3, top_p=0.9, top_k=40, seed=7)
    other = llama_backend.chat(QUESTION, max_new_tokens=16, temperature=1.3, top_p=0.9, top_k=40, seed=8)
    assert first.text == again.text != other.text
    assert {k: calls[0][k] for k in ("do_sample", "temperature", "top_p", "top_k")} == {
        "do_sample": True,
        "temperature": 1.3,
        "top_p": 0.9,
        "top_k": 40,
    }
    monkeypatch.undo()
    torch.manual_seed(7)
    expected = hf_oracle(
        llama_backend, QUESTION, max_new_tokens=16, do_sample=True, temperature=1.3, top_p=0.9, top_k=40
    )
    assert first.text == llama_backend.tokenizer.decode(expected, skip_special_tokens=True)


def test_a_seed_leaves_the_callers_random_state_alone(llama_backend: Any) -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    llama_backend.chat(QUESTION, max_new_tokens=4, temperature=1.0, seed=5)
    assert torch.equal(torch.rand(3), expected)


def test_unset_top_k_samples_from_the_whole_distribution(
    llama_backend: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # transformers' global default is top_k=50; an OpenAI-compatible server applies no top-k cut.
    calls = spy_generate(llama_backend, monkeypatch)
    llama_backend.chat(QUESTION, max_new_tokens=3, temperature=0.7)
    assert (calls[0]["top_k"], calls[0]["top_p"]) == (0, 1.0)


def test_a_stop_string_ends_the_reply_and_is_cut_from_it(llama_backend: Any, hf_oracle: Any) -> None:
    full = llama_backend.chat(QUESTION, max_new_tokens=30, temperature=0).text
    stop = full[10:13]
    assert stop and full.find(stop) >= 1
    reply = llama_backend.chat(QUESTION, max_new_tokens=30, temperature=0, stop=[stop, "never appears"])
    assert reply.text == full[: full.find(stop)]
    assert reply.finish_reason == "stop"
    assert reply.usage.completion_tokens < 30


def test_finish_reason_is_length_when_max_new_tokens_is_reached(llama_backend: Any) -> None:
    reply = llama_backend.chat(QUESTION, max_new_tokens=7, temperature=0)
    assert (reply.finish_reason, reply.usage.completion_tokens) == ("length", 7)


def test_every_end_of_sequence_id_of_the_generation_config_ends_the_reply(
    tiny_models: dict[str, Path], hf_oracle: Any
) -> None:
    backend = HuggingFaceBackend(str(tiny_models["llama"]), device="cpu")
    try:
        free = hf_oracle(backend, QUESTION, max_new_tokens=12)
        first_new = next(i for i in range(1, len(free)) if free[i] not in free[:i])
        config = backend.hf_model.generation_config
        config.eos_token_id = [backend.tokenizer.eos_token_id, free[first_new]]
        reply = backend.chat(QUESTION, max_new_tokens=12, temperature=0)
        assert reply.finish_reason == "stop"
        assert reply.usage.completion_tokens == first_new + 1  # the end token was generated: it counts
        assert reply.text == backend.tokenizer.decode(free[:first_new], skip_special_tokens=True)
    finally:
        backend.close()


def test_extra_goes_to_generate(llama_backend: Any, hf_oracle: Any) -> None:
    expected = hf_oracle(llama_backend, QUESTION, max_new_tokens=16, repetition_penalty=1.5)
    reply = llama_backend.chat(QUESTION, max_new_tokens=16, temperature=0, extra={"repetition_penalty": 1.5})
    assert reply.text == llama_backend.tokenizer.decode(expected, skip_special_tokens=True)


def test_extra_may_not_override_what_llmclient_sets(llama_backend: Any) -> None:
    with pytest.raises(InvalidRequestError, match=r"extra may not set \['max_length'\].*max_new_tokens"):
        llama_backend.chat(QUESTION, extra={"max_length": 10})


def test_an_argument_generate_refuses_is_an_invalid_request(llama_backend: Any) -> None:
    with pytest.raises(InvalidRequestError, match="generate\\(\\) refused the request"):
        llama_backend.chat(QUESTION, max_new_tokens=2, extra={"no_such_generate_argument": 1})


def test_a_model_without_a_pad_token_generates_with_a_correct_mask(
    tiny_models: dict[str, Path], hf_oracle: Any
) -> None:
    backend = HuggingFaceBackend(
        str(tiny_models["gpt2"]), device="cpu", chat_template="{{ messages[-1]['content'] }}"
    )
    try:
        assert backend.tokenizer.pad_token_id is None
        prompts = ["Hello there", "What is the capital of France? One two three four five."]
        batched = backend.chat_many(prompts, max_new_tokens=10, temperature=0)
        for prompt, reply in zip(prompts, batched, strict=True):
            expected = hf_oracle(backend, prompt, max_new_tokens=10)
            assert reply.text == backend.tokenizer.decode(expected, skip_special_tokens=True)
    finally:
        backend.close()


def test_out_of_memory_names_the_batch_that_failed(
    llama_backend: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    def generate(**kwargs: Any) -> Any:
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(llama_backend.hf_model, "generate", generate)
    with pytest.raises(
        BackendUnavailableError, match=r"out of memory .* batch of 3 conversation\(s\)"
    ) as info:
        llama_backend.chat_many(["a", "b", "c"], max_new_tokens=4)
    assert "batch_token_budget" in str(info.value)
    assert isinstance(info.value.__cause__, torch.OutOfMemoryError)


def test_an_unexpected_failure_inside_generate_is_a_typed_error(
    llama_backend: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    def generate(**kwargs: Any) -> Any:
        raise RuntimeError("CUBLAS_STATUS_EXECUTION_FAILED")

    monkeypatch.setattr(llama_backend.hf_model, "generate", generate)
    with pytest.raises(
        ProviderError, match="generation failed: RuntimeError: CUBLAS_STATUS_EXECUTION_FAILED"
    ):
        llama_backend.chat(QUESTION, max_new_tokens=4)


def test_threads_share_one_backend_safely(llama_backend: Any) -> None:
    prompts = [f"Hello there {i}" for i in range(6)]
    expected = {p: llama_backend.chat(p, max_new_tokens=8, temperature=0).text for p in prompts}
    got: dict[str, str] = {}
    errors: list[BaseException] = []

    def ask(prompt: str) -> None:
        try:
            got[prompt] = llama_backend.chat(prompt, max_new_tokens=8, temperature=0).text
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=ask, args=(p,)) for p in prompts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert got == expected
