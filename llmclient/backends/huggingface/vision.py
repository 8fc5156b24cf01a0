"""Local vision-language models: images in messages, through the model's processor.

A checkpoint whose config is an image-text-to-text model (LLaVA, SmolVLM/Idefics3, Qwen2-VL,
Gemma 3 and kin: its ``model_type`` is in transformers' image-text-to-text auto mapping) loads with
``AutoModelForImageTextToText`` and its ``AutoProcessor`` (:func:`load_processor`). Everything else
runs as for a text model: the same jobs, scheduler, parameters, streaming, batching, stop strings,
logprobs and grammars. Only two steps differ, each a subclass here:

- :class:`VisionPromptBuilder` renders a conversation through the processor's chat template, with
  each message's content as the parts such templates read (``{"type": "text", "text": ...}`` and
  ``{"type": "image"}``), and keeps the decoded images beside the text (:class:`VisionPrompt`). The
  prompt's ids are the processor's, with each image placeholder expanded to the image's tokens, so
  the context window, usage and batch planning count them.
- :class:`VisionGenerator` hands the texts and images of a batch to the processor in one call, which
  pads the ids (on the left) and the image tensors as it does for any batch; every tensor it returns
  (``pixel_values``, ``image_sizes``, ``pixel_attention_mask``, ``image_grid_thw``...) goes to
  ``generate``.

A text-only model given an image refuses it in :class:`~.prompting.PromptBuilder` (never a silent
drop); scoring candidates after an image is refused here (:func:`refuse_image_scoring`).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from llmclient.backends.huggingface.generation import Generator, Job
from llmclient.backends.huggingface.prompting import _SYSTEM_ROLES, Prompt, PromptBuilder
from llmclient.errors import InvalidRequestError, ModelLoadError
from llmclient.images import image_parts, image_scoring_refusal, open_image
from llmclient.messages import Message
from llmclient.tools.templates import tool_history


@dataclass(frozen=True)
class VisionPrompt(Prompt):
    """A rendered prompt with the images its placeholders stand for, in the order they appear.

    ``text`` holds the template's image placeholders (one per image, as the processor expects);
    ``ids`` are the processor's, with each placeholder expanded to the image's tokens.
    """

    images: tuple[Any, ...] = ()


def is_vision_config(config: Any) -> bool:
    """Whether ``config`` describes an image-text-to-text model (its type is in that auto mapping)."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

    return getattr(config, "model_type", "") in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES


def is_vision_processor(obj: Any) -> bool:
    """Whether ``obj`` is a processor that turns images into model inputs (not a bare tokenizer)."""
    return getattr(obj, "image_processor", None) is not None and getattr(obj, "tokenizer", None) is not None


def load_processor(path: str, name: str, options: Mapping[str, Any]) -> Any:
    """The processor of the vision model at ``path`` (``options``: revision, local_files_only...)."""
    from transformers import AutoProcessor

    fix = (
        "Save the model's processor beside it (processor.save_pretrained(path) writes "
        "processor_config.json or preprocessor_config.json and the chat template)"
    )
    try:
        processor = AutoProcessor.from_pretrained(path, **options)  # type: ignore[no-untyped-call]
    except OSError as exc:
        raise ModelLoadError(
            f"cannot load {name!r}: it is an image-text-to-text model and its processor cannot be "
            f"loaded: {str(exc).rstrip('.')}. {fix}"
        ) from exc
    if not is_vision_processor(processor):
        raise ModelLoadError(
            f"cannot load {name!r}: it is an image-text-to-text model, but it has no image processor "
            f"(AutoProcessor gave a {type(processor).__name__}). {fix}"
        )
    return processor


def check_processor(config: Any, processor: Any, name: str) -> None:
    """Refuse a vision-language model handed over with a bare tokenizer: its images would have no way in."""
    if processor is None and is_vision_config(config):
        raise ModelLoadError(
            f"{name!r} is an image-text-to-text model: pass its processor "
            f"(AutoProcessor.from_pretrained(...)) in place of the tokenizer"
        )


def refuse_image_scoring(prompt: Prompt, model_name: str) -> None:
    """Scoring runs the language model alone: a prompt with images cannot be scored, so it is refused."""
    if isinstance(prompt, VisionPrompt) and prompt.images:
        raise image_scoring_refusal(f"the local vision model {model_name!r}")


class VisionPromptBuilder(PromptBuilder):
    """Renders conversations with images through a vision model's processor.

    Args:
        processor: the model's processor (its tokenizer, image processor and chat template).
        **options: as for :class:`~.prompting.PromptBuilder` (a configured ``chat_template``
            replaces the processor's).
    """

    takes_images = True

    def __init__(self, processor: Any, **options: Any) -> None:
        super().__init__(processor.tokenizer, **options)
        self._processor = processor
        self._renderer = _PartsRenderer(processor)
        self.plain = False  # no plain-text form carries an image: without a template, refuse
        if not options.get("chat_template"):
            self._template = getattr(processor, "chat_template", None) or self._template

    def conversation(self, messages: Sequence[Message]) -> list[dict[str, Any]]:
        """Template dicts whose content is always a list of parts, images as ``{"type": "image"}``."""
        conversation = tool_history([_parts_dict(m) for m in messages])
        return _merge_system_parts(conversation) if self._system_role == "merge" else conversation

    def prompt(self, messages: Sequence[Message]) -> VisionPrompt:
        """Render ``messages``, decode their images, and take the ids the processor makes of both."""
        text = self.render(messages)
        images = tuple(open_image(part) for message in messages for part in image_parts(message))
        encoded = _process(self._processor, [text], [list(images)], batch=False)
        return VisionPrompt(text=text, ids=list(encoded["input_ids"][0]), images=images)

    def with_text(self, message: Message, text: str) -> Message:
        """``message`` with its text replaced by ``text`` and its images kept (truncation cuts text only)."""
        parts = image_parts(message)
        return replace(message, content=[*parts, {"type": "text", "text": text}] if parts else text)


class VisionGenerator(Generator):
    """A :class:`~.generation.Generator` whose batches go through the processor, images included.

    Args:
        model: the image-text-to-text model.
        processor: its processor.
    """

    def __init__(self, model: Any, processor: Any) -> None:
        super().__init__(model, processor.tokenizer)
        # Padding a batch switches the Rust tokenizer's padding on, and a plain encode on another
        # thread switches it off again; so batches use a tokenizer of their own (the worker's).
        self.processor = copy.copy(processor)
        self.processor.tokenizer = tokenizer = copy.deepcopy(processor.tokenizer)
        if tokenizer.pad_token_id is None and tokenizer.eos_token is not None:
            tokenizer.pad_token = tokenizer.eos_token  # any id pads: the attention mask hides it

    def inputs(self, jobs: Sequence[Job], pad_id: int) -> dict[str, Any]:
        """The processor's tensors for the batch: ids and mask padded on the left (with its own
        tokenizer's pad token, not ``pad_id``), images as it pads them.
        """
        images = [list(getattr(job.prompt, "images", ())) for job in jobs]
        encoded = _process(self.processor, [job.prompt.text for job in jobs], images, batch=True)
        dtype = self.model.dtype  # pixel values come as float32; a half-precision model wants its own
        return {k: v.to(dtype) if v.is_floating_point() else v for k, v in encoded.items()}


class _PartsRenderer:
    """Applies the processor's chat template to template dicts whose content may still be a string
    (the probe turns :meth:`~.prompting.PromptBuilder.render_reply` adds): vision templates read parts.
    """

    def __init__(self, processor: Any) -> None:
        self._processor = processor

    def apply_chat_template(self, conversation: list[dict[str, Any]], **options: Any) -> Any:
        """``processor.apply_chat_template`` on ``conversation`` with every content given as parts."""
        as_parts = [{**m, "content": _text_parts(m.get("content"))} for m in conversation]
        return self._processor.apply_chat_template(as_parts, **options)


def _process(processor: Any, texts: list[str], images: list[list[Any]], *, batch: bool) -> Any:
    """One processor call: the rendered ``texts`` (whose templates wrote every special token) and
    each text's images, as the nested list every processor takes; a refusal becomes our error.

    A ``batch`` is padded on the left into tensors for ``generate``; otherwise (one prompt, for its
    ids) nothing is padded, so the tokenizer's settings stay those of a plain encode.
    """
    padding: dict[str, Any] = {"padding": True, "padding_side": "left"} if batch else {}
    try:
        return processor(
            text=texts,
            images=images if any(images) else None,
            add_special_tokens=False,
            return_tensors="pt" if batch else None,
            **padding,
        )
    except (ValueError, TypeError, OSError) as exc:
        raise InvalidRequestError(f"the model's processor refused the images or text: {exc}") from exc


def _parts_dict(message: Message) -> dict[str, Any]:
    """A message as a vision template reads it: ``developer`` as ``system``, content as parts."""
    out = message.to_dict()
    out["role"] = "system" if message.role in _SYSTEM_ROLES else message.role
    out["content"] = _text_parts(message.content)
    return out


def _text_parts(content: Any) -> list[dict[str, Any]]:
    """Content as template parts: text parts as they are, image parts as ``{"type": "image"}``
    (those already in that form kept). Other part types are left out, as :attr:`Message.text`
    leaves them out for text models.
    """
    if content is None or content == "":
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    parts: list[dict[str, Any]] = []
    for part in content:
        if part.get("type") == "text":
            parts.append({"type": "text", "text": part.get("text", "")})
        elif part.get("type") in ("image_url", "image"):
            parts.append({"type": "image"})
    return parts


def _merge_system_parts(conversation: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``system_role = "merge"`` for parts: the system messages' parts go in front of the first user
    message's, followed by a blank line as in the text form.
    """
    system = [p for m in conversation if m["role"] == "system" for p in m["content"]]
    rest = [dict(m) for m in conversation if m["role"] != "system"]
    if not system:
        return rest
    preamble = [*system, {"type": "text", "text": "\n\n"}]
    for message in rest:
        if message["role"] == "user":
            message["content"] = [*preamble, *message["content"]] if message["content"] else system
            return rest
    return [{"role": "user", "content": system}, *rest]
