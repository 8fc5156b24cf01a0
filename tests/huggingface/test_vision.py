"""Local vision-language models: images reach the model through its processor, never dropped.

A tiny LLaVA (random weights: a 2-layer CLIP vision tower on 32x32 images, a 2-layer Llama) is built
here from configs, with a real ``LlavaProcessor`` (CLIP image processor, the tiny models' tokenizer
plus an ``<image>`` token, a chat template that reads content parts), saved and loaded from its
directory as a user's would be. Its replies are compared token for token with its own ``generate``
on what ``processor.apply_chat_template`` makes of the same conversation.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

import pytest

import llmclient
from llmclient.errors import UnsupportedFeatureError

pytest.importorskip("torch", reason="the local backend needs torch (pip install 'llmclient[hf]')")
pytest.importorskip("PIL", reason="images need Pillow (pip install 'llmclient[hf]')")

import numpy as np
import torch
from PIL import Image

from llmclient.backends.huggingface import HuggingFaceBackend

VISION_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|im_start|>{{ m['role'] }}\n{% for c in m['content'] %}"
    "{% if c['type'] == 'image' %}<image>{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}"
    "{% endfor %}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
"""ChatML over content parts, an ``<image>`` placeholder where each image goes (as LLaVA's templates)."""

NEW_TOKENS = 12


def picture(seed: int, size: tuple[int, int]) -> Any:
    """A random RGB image: different seeds give images the model tells apart."""
    pixels = np.random.RandomState(seed).randint(0, 256, (*size, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


VISION_TOWER = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "image_size": 32,
    "patch_size": 8,
}
"""A 2-layer vision tower on 32x32 images in 8x8 patches: 16 patches per image (or tile)."""


def tiny_tokenizer(tiny_models: dict[str, Path], specials: list[str]) -> Any:
    """The tiny models' ChatML tokenizer with a vision model's ``specials`` added."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_models["llama"])
    tokenizer.chat_template = None  # the processor's template reads parts
    tokenizer.add_special_tokens({"additional_special_tokens": specials})
    return tokenizer


def save(model: Any, processor: Any, path: Path) -> Path:
    """Save a built model and its processor where a user's checkpoint would be."""
    model.generation_config.eos_token_id = processor.tokenizer.eos_token_id
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def vlm_dir(
    tiny_models: dict[str, Path],
    tiny_llama_config: Callable[..., Any],
    tmp_path_factory: pytest.TempPathFactory,
) -> Path:
    """The tiny LLaVA's directory: config, weights, tokenizer, CLIP image processor, chat template."""
    from transformers import (
        CLIPImageProcessorPil,
        CLIPVisionConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    tokenizer = tiny_tokenizer(tiny_models, ["<image>"])
    processor = LlavaProcessor(
        image_processor=CLIPImageProcessorPil(
            size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
        ),
        tokenizer=tokenizer,
        patch_size=8,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=VISION_TEMPLATE,
    )
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(**VISION_TOWER, projection_dim=32),
        text_config=tiny_llama_config(tokenizer, window=2048),  # room for a tool profile's prompt
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        vision_feature_select_strategy="default",
        vision_feature_layer=-2,
    )
    torch.manual_seed(0)
    return save(
        LlavaForConditionalGeneration(config), processor, tmp_path_factory.mktemp("tiny-vlm") / "llava"
    )


@pytest.fixture(scope="module")
def idefics_dir(
    tiny_models: dict[str, Path],
    tiny_llama_config: Callable[..., Any],
    tmp_path_factory: pytest.TempPathFactory,
) -> Path:
    """A tiny Idefics3 (SmolVLM's architecture): an image is split into 32x32 tiles plus a global view,
    as many tiles as its shape needs, so two images in a batch have different numbers of tiles.
    """
    from transformers import (
        Idefics3Config,
        Idefics3ForConditionalGeneration,
        Idefics3ImageProcessorPil,
        Idefics3Processor,
        Idefics3VisionConfig,
    )

    grid = [f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7)]
    tokenizer = tiny_tokenizer(tiny_models, ["<global-img>", *grid])
    processor = Idefics3Processor(  # adds <image>, <fake_token_around_image> and <end_of_utterance>
        image_processor=Idefics3ImageProcessorPil(
            size={"longest_edge": 64}, max_image_size={"longest_edge": 32}, do_image_splitting=True
        ),
        tokenizer=tokenizer,
        image_seq_len=4,  # 16 patches, merged 2x2
        chat_template=VISION_TEMPLATE,
    )
    config = Idefics3Config(
        vision_config=Idefics3VisionConfig(**VISION_TOWER),
        text_config=tiny_llama_config(tokenizer),
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        scale_factor=2,
    )
    torch.manual_seed(0)
    return save(
        Idefics3ForConditionalGeneration(config), processor, tmp_path_factory.mktemp("tiny-vlm") / "idefics3"
    )


@pytest.fixture(scope="module")
def vlm(vlm_dir: Path) -> Iterator[HuggingFaceBackend]:
    """The tiny LLaVA behind a backend, loaded from its directory."""
    backend = HuggingFaceBackend(str(vlm_dir), device="cpu", dtype="float32", load="eager")
    yield backend
    backend.close()


def ask(text: str, *images: Any) -> list[dict[str, Any]]:
    """A user turn in the OpenAI shape: text, then each image as an ``image_url`` part."""
    return [{"role": "user", "content": [{"type": "text", "text": text}, *map(llmclient.image, images)]}]


def oracle(vlm: HuggingFaceBackend, vlm_dir: Path, text: str, *images: Any) -> list[int]:
    """The new token ids of the model's own greedy ``generate`` on what its processor makes of the turn."""
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(vlm_dir)
    parts = [{"type": "text", "text": text}, *({"type": "image", "image": im} for im in images)]
    encoded = processor.apply_chat_template(
        [{"role": "user", "content": parts}],
        add_generation_prompt=True,
        tokenize=True,
        return_dict=True,
        return_tensors="pt",
    )
    out = vlm.hf_model.generate(**encoded, max_new_tokens=NEW_TOKENS, do_sample=False)
    ids: list[int] = out[0, encoded["input_ids"].shape[1] :].tolist()
    return ids


def decoded(vlm: HuggingFaceBackend, ids: list[int]) -> str:
    text: str = vlm.tokenizer.decode(ids, skip_special_tokens=True)
    return text


def spy_generate(vlm: HuggingFaceBackend, monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Record the keyword arguments of the backend's ``generate`` calls."""
    calls: list[dict[str, Any]] = []
    real = vlm.hf_model.generate
    monkeypatch.setattr(vlm.hf_model, "generate", lambda **kwargs: calls.append(kwargs) or real(**kwargs))
    return calls


def test_a_vision_checkpoint_loads_as_image_text_to_text_with_its_processor(vlm: HuggingFaceBackend) -> None:
    assert type(vlm.hf_model).__name__ == "LlavaForConditionalGeneration"
    assert "<image>" in vlm.render_prompt(ask("What is this?", picture(0, (40, 50))))


def test_chat_with_an_image_is_generate_token_for_token(vlm: HuggingFaceBackend, vlm_dir: Path) -> None:
    image = picture(0, (40, 50))
    expected = oracle(vlm, vlm_dir, "What is this?", image)
    reply = vlm.chat(ask("What is this?", image), max_new_tokens=NEW_TOKENS, temperature=0)
    assert reply.text == decoded(vlm, expected)
    assert reply.usage.completion_tokens == len(expected)
    # the prompt's 16 image tokens (4x4 patches) are counted, not the one placeholder
    assert reply.usage.prompt_tokens == vlm.count_tokens(ask("What is this?", image))
    assert reply.usage.prompt_tokens >= 16 + len(vlm.tokenizer.encode("What is this?"))


def test_the_model_sees_the_image(vlm: HuggingFaceBackend) -> None:
    first = vlm.chat(ask("What is this?", picture(0, (40, 50))), max_new_tokens=NEW_TOKENS, temperature=0)
    second = vlm.chat(ask("What is this?", picture(1, (40, 50))), max_new_tokens=NEW_TOKENS, temperature=0)
    assert first.text != second.text


def test_a_stream_with_an_image_is_the_chat_reply(vlm: HuggingFaceBackend, vlm_dir: Path) -> None:
    image = picture(2, (24, 64))
    expected = decoded(vlm, oracle(vlm, vlm_dir, "Describe it.", image))
    with vlm.stream(ask("Describe it.", image), max_new_tokens=NEW_TOKENS, temperature=0) as stream:
        pieces = [delta.text for delta in stream]
    assert "".join(pieces) == expected


async def test_an_async_stream_with_an_image_is_the_chat_reply(
    vlm: HuggingFaceBackend, vlm_dir: Path
) -> None:
    image = picture(2, (24, 64))
    expected = decoded(vlm, oracle(vlm, vlm_dir, "Describe it.", image))
    pieces = [d.text async for d in vlm.astream(ask("Describe it.", image), max_new_tokens=NEW_TOKENS)]
    assert "".join(pieces) == expected


def test_chat_many_batches_two_images_in_one_generate_call(
    vlm: HuggingFaceBackend, vlm_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    turns = [("What is this?", picture(3, (40, 50))), ("Who drew this picture?", picture(4, (64, 20)))]
    expected = [decoded(vlm, oracle(vlm, vlm_dir, text, image)) for text, image in turns]
    calls = spy_generate(vlm, monkeypatch)
    replies = vlm.chat_many([ask(t, i) for t, i in turns], max_new_tokens=NEW_TOKENS, temperature=0)
    assert [r.text for r in replies] == expected
    (call,) = calls
    assert call["pixel_values"].shape[0] == 2
    assert call["input_ids"].shape[0] == 2


async def test_achat_many_batches_an_image_turn_with_a_text_turn(
    vlm: HuggingFaceBackend, vlm_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    image = picture(5, (32, 32))
    expected = [
        decoded(vlm, oracle(vlm, vlm_dir, "What is this?", image)),
        decoded(vlm, oracle(vlm, vlm_dir, "Hi")),
    ]
    calls = spy_generate(vlm, monkeypatch)
    replies = await vlm.achat_many([ask("What is this?", image), "Hi"], max_new_tokens=NEW_TOKENS)
    assert [r.text for r in replies] == expected
    (call,) = calls
    assert call["pixel_values"].shape[0] == 1


def test_two_images_in_one_message_reach_the_model_in_order(vlm: HuggingFaceBackend, vlm_dir: Path) -> None:
    a, b = picture(6, (40, 40)), picture(7, (40, 40))
    reply = vlm.chat(ask("Compare them.", a, b), max_new_tokens=NEW_TOKENS, temperature=0)
    assert reply.text == decoded(vlm, oracle(vlm, vlm_dir, "Compare them.", a, b))
    swapped = vlm.chat(ask("Compare them.", b, a), max_new_tokens=NEW_TOKENS, temperature=0)
    assert swapped.text == decoded(vlm, oracle(vlm, vlm_dir, "Compare them.", b, a))


def test_stop_strings_and_logprobs_work_with_an_image(vlm: HuggingFaceBackend) -> None:
    messages = ask("What is this?", picture(0, (40, 50)))
    full = vlm.chat(messages, max_new_tokens=NEW_TOKENS, temperature=0, logprobs=True)
    assert len(full.logprobs) == full.usage.completion_tokens
    stop = full.text[4:6]
    assert stop and full.text.find(stop) >= 1
    cut = vlm.chat(messages, max_new_tokens=NEW_TOKENS, temperature=0, stop=[stop])
    assert cut.text == full.text[: full.text.find(stop)]


def test_a_response_format_constrains_a_reply_about_an_image(vlm: HuggingFaceBackend) -> None:
    reply = vlm.chat(
        ask("Cat or dog?", picture(0, (40, 50))), response_format=llmclient.Choice(["cat", "dog"])
    )
    assert reply.parsed in ("cat", "dog")


def pick_colour(colour: Literal["red", "green", "blue"]) -> str:
    """Record the colour seen in the image.

    Args:
        colour: the main colour.
    """
    return colour


def test_a_forced_tool_call_about_an_image_follows_the_tool_profile(vlm_dir: Path) -> None:
    # the tiny template renders no tools: the hermes profile shows them, and its grammar holds the
    # forced call to the tool's schema, with the image in the prompt beside them
    with HuggingFaceBackend(str(vlm_dir), device="cpu", dtype="float32", tool_profile="hermes") as backend:
        turn = ask("Which colour is this?", picture(0, (40, 50)))
        prompt = backend.render_prompt(turn, tools=[pick_colour])
        assert "<image>" in prompt and "pick_colour" in prompt
        reply = backend.chat(turn, tools=[pick_colour], tool_choice="required", max_new_tokens=160)
        batched = backend.chat_many(
            [turn, turn], tools=[pick_colour], tool_choice="required", max_new_tokens=160
        )
    assert [call.name for call in reply.tool_calls] == ["pick_colour"]
    assert json.loads(reply.tool_calls[0].arguments)["colour"] in ("red", "green", "blue")
    calls = [(c.name, c.arguments) for c in reply.tool_calls]
    assert [[(c.name, c.arguments) for c in r.tool_calls] for r in batched] == [calls, calls]


def test_a_vision_model_wrapped_with_a_bare_tokenizer_is_refused(vlm: HuggingFaceBackend) -> None:
    with pytest.raises(llmclient.ModelLoadError, match="pass its processor"):
        HuggingFaceBackend.from_pretrained_objects(vlm.hf_model, vlm.tokenizer)


def test_truncation_drops_old_turns_and_cuts_text_but_keeps_the_last_images(vlm: HuggingFaceBackend) -> None:
    from transformers import AutoProcessor

    from llmclient.backends.huggingface import HuggingFaceSettings

    processor = AutoProcessor.from_pretrained(vlm.model)
    settings = HuggingFaceSettings(context_window=48, context_policy="truncate")
    small = HuggingFaceBackend.from_pretrained_objects(vlm.hf_model, processor, settings=settings)
    image = picture(0, (40, 50))
    long_text = "Once upon a time a small model learned to write short stories about the sea. " * 3
    history = [*ask("An old question", picture(1, (40, 50))), {"role": "assistant", "content": "An answer"}]
    messages = [*history, *ask(long_text, image)]
    prompt = small.render_prompt(messages, max_new_tokens=4)
    assert prompt.count("<image>") == 1 and "old question" not in prompt
    reply = small.chat(messages, max_new_tokens=4, temperature=0)
    assert reply.usage.prompt_tokens + 4 <= 48
    assert reply.usage.prompt_tokens > 16  # the image's tokens are still there
    small.close()


def test_scoring_after_an_image_is_refused(vlm: HuggingFaceBackend) -> None:
    with pytest.raises(UnsupportedFeatureError, match="scoring candidates after an image"):
        vlm.score(ask("Yes or no?", picture(0, (40, 50))), ["yes", "no"])


def test_a_text_only_model_refuses_an_image_naming_the_model(llama_backend: Any) -> None:
    messages = ask("What is this?", picture(0, (40, 50)))
    name = str(llama_backend.model)
    with pytest.raises(UnsupportedFeatureError, match="text-only model") as caught:
        llama_backend.chat(messages, max_new_tokens=4)
    assert name in str(caught.value)
    with pytest.raises(UnsupportedFeatureError, match="cannot see images"):
        llama_backend.stream(messages, max_new_tokens=4).final()
    with pytest.raises(UnsupportedFeatureError, match="cannot see images"):
        llama_backend.count_tokens(messages)
    (refused,) = llama_backend.chat_many([messages], max_new_tokens=4, return_exceptions=True)
    assert isinstance(refused, UnsupportedFeatureError)


def test_a_vision_checkpoint_without_its_processor_is_refused_with_the_fix(
    vlm_dir: Path, tmp_path: Path
) -> None:
    bare = tmp_path / "bare"
    bare.mkdir()
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"):
        (bare / name).symlink_to(vlm_dir / name)
    with pytest.raises(llmclient.ModelLoadError, match=r"processor cannot be loaded.*save_pretrained"):
        HuggingFaceBackend(str(bare), device="cpu", load="eager")


def test_a_batch_of_images_with_different_tile_counts_is_padded_by_the_processor(
    idefics_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = HuggingFaceBackend(str(idefics_dir), device="cpu", dtype="float32")
    turns = [("What is this?", picture(8, (40, 90))), ("Who drew this picture?", picture(9, (30, 30)))]
    expected = [decoded(backend, oracle(backend, idefics_dir, text, image)) for text, image in turns]
    calls = spy_generate(backend, monkeypatch)
    replies = backend.chat_many([ask(t, i) for t, i in turns], max_new_tokens=NEW_TOKENS, temperature=0)
    assert [r.text for r in replies] == expected
    (call,) = calls
    # the square image is upscaled to 2x2 tiles + its global view, the wide one to 2x1 + 1, padded to 5
    assert call["pixel_values"].shape[:2] == (2, 5)
    real_tiles = call["pixel_attention_mask"].flatten(2).any(dim=2).sum(dim=1)
    assert sorted(real_tiles.tolist()) == [3, 5]
    backend.close()


def test_an_image_the_template_does_not_place_is_refused_by_the_processor(vlm: HuggingFaceBackend) -> None:
    from transformers import AutoProcessor

    from llmclient.backends.huggingface import HuggingFaceSettings

    text_parts_only = VISION_TEMPLATE.replace("<image>", "")
    settings = HuggingFaceSettings(chat_template=text_parts_only)
    processor = AutoProcessor.from_pretrained(vlm.model)
    blind = HuggingFaceBackend.from_pretrained_objects(vlm.hf_model, processor, settings=settings)
    with pytest.raises(llmclient.InvalidRequestError, match=r"processor refused.*1 images"):
        blind.chat(ask("What is this?", picture(0, (40, 50))), max_new_tokens=4)
    blind.close()


def test_the_local_example_in_docs_images_runs(
    vlm: HuggingFaceBackend,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    page = (Path(__file__).resolve().parents[2] / "docs" / "images.md").read_text(encoding="utf-8")
    section = page.split("## Local vision models", 1)[1]
    example = re.findall(r"```python\n(.*?)```", section, re.DOTALL)[0]
    hub_load = 'llmclient.load("hf:HuggingFaceTB/SmolVLM-256M-Instruct")'
    assert hub_load in example
    example = example.replace(hub_load, f'llmclient.load("hf:{vlm.model}", device="cpu", dtype="float32")')
    monkeypatch.chdir(tmp_path)
    exec(compile(example, "docs/images.md", "exec"), {})
    question = [{"type": "text", "text": "What colour is this square?"}, llmclient.image("square.png")]
    answer = vlm.chat([{"role": "user", "content": question}], max_new_tokens=20, temperature=0).text
    swatches = [Image.new("RGB", (64, 48), colour) for colour in ("red", "navy")]
    batch = [vlm.chat(ask("Which colour?", s), max_new_tokens=20, temperature=0).text for s in swatches]
    assert capsys.readouterr().out == "".join(f"{text}\n" for text in [answer, answer, *batch])


def test_a_processor_without_a_pad_token_still_batches_and_is_left_as_it_was(vlm: HuggingFaceBackend) -> None:
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(vlm.model)
    processor.tokenizer.pad_token = None
    wrapped = HuggingFaceBackend.from_pretrained_objects(vlm.hf_model, processor)
    turns = [ask("What is this?", picture(3, (40, 50))), ask("Who drew this picture?", picture(4, (64, 20)))]
    replies = wrapped.chat_many(turns, max_new_tokens=NEW_TOKENS, temperature=0)
    assert [r.text for r in replies] == [r.text for r in vlm.chat_many(turns, max_new_tokens=NEW_TOKENS)]
    assert processor.tokenizer.pad_token is None
    wrapped.close()
