"""A loaded local model with everything that runs on it: prompts, generation, the scheduler.

This is the one module the backend imports lazily: importing it imports torch and transformers.
"""

from __future__ import annotations

import gc
from collections.abc import Sequence
from functools import cached_property
from typing import Any

import torch

from llmclient.backends.candidates import candidate_ids, end_of_turn_id
from llmclient.backends.huggingface.generation import Generator, Job, check_extra, resolve_sampling
from llmclient.backends.huggingface.grammars import Grammar
from llmclient.backends.huggingface.loading import LoadedModel, context_window, load, model_class_for
from llmclient.backends.huggingface.logprobs import TokenTexts
from llmclient.backends.huggingface.prompting import Prompt, PromptBuilder, read_template
from llmclient.backends.huggingface.scheduler import Scheduler
from llmclient.backends.huggingface.scoring import ScoreJob, refuse_unscorable
from llmclient.backends.huggingface.settings import DEFAULT_MAX_NEW_TOKENS, HuggingFaceSettings
from llmclient.backends.huggingface.toolcalls import tool_kit
from llmclient.backends.huggingface.vision import (
    VisionGenerator,
    VisionPromptBuilder,
    check_processor,
    is_vision_processor,
    refuse_image_scoring,
)
from llmclient.errors import UnsupportedFeatureError
from llmclient.logprobs import ScoreOptions
from llmclient.types import ChatRequest


class Engine:
    """A model, its tokenizer and the machinery around them.

    Args:
        loaded: the model and tokenizer (and a vision model's processor, which then renders the
            prompts and prepares every batch with its images: :mod:`.vision`).
        name: the model's name as the user gave it, for replies and messages.
        settings: the backend's settings.
    """

    def __init__(self, loaded: LoadedModel, *, name: str, settings: HuggingFaceSettings) -> None:
        self.name = name
        self.settings = settings
        self.is_seq2seq = loaded.is_seq2seq
        processor = loaded.processor
        self.generator = (
            Generator(loaded.model, loaded.tokenizer)
            if processor is None
            else VisionGenerator(loaded.model, processor)
        )
        prompt_options: dict[str, Any] = {
            "model_name": name,
            "chat_template": read_template(settings.chat_template),
            "system_role": settings.system_role,
            "encoder_decoder": loaded.is_seq2seq,
        }
        self.prompts = (
            PromptBuilder(loaded.tokenizer, **prompt_options)
            if processor is None
            else VisionPromptBuilder(processor, **prompt_options)
        )
        self.texts = TokenTexts(loaded.tokenizer)
        template = read_template(settings.chat_template) or getattr(processor, "chat_template", None)
        self.tools = tool_kit(loaded.tokenizer, template, name, settings.tool_profile)
        self.window = settings.context_window or context_window(loaded.model.config)
        self.scheduler = Scheduler(
            self.generator, token_budget=settings.batch_token_budget, max_rows=settings.max_batch_size
        )
        # A fast tokenizer changes its own settings on first use; do that now, before threads share it.
        loaded.tokenizer.encode("warm up", add_special_tokens=False)

    @classmethod
    def load(cls, name: str, settings: HuggingFaceSettings) -> Engine:
        """Load ``name`` and build its engine."""
        return cls(load(name, settings), name=name, settings=settings)

    @classmethod
    def from_objects(cls, model: Any, tokenizer: Any, *, name: str, settings: HuggingFaceSettings) -> Engine:
        """An engine around an already loaded model and tokenizer (or a vision model's processor, in
        place of the tokenizer); encoder-only models are refused.
        """
        _, is_seq2seq = model_class_for(model.config, name)
        model.eval()
        processor = tokenizer if is_vision_processor(tokenizer) else None
        check_processor(model.config, processor, name)
        loaded = LoadedModel(
            model=model,
            tokenizer=tokenizer if processor is None else processor.tokenizer,
            is_seq2seq=is_seq2seq,
            processor=processor,
        )
        return cls(loaded, name=name, settings=settings)

    @property
    def model(self) -> Any:
        """The transformers model."""
        return self.generator.model

    @property
    def tokenizer(self) -> Any:
        """Its tokenizer."""
        return self.generator.tokenizer

    def job(self, request: ChatRequest, *, max_rows: int = 1 << 30) -> Job:
        """Turn a checked request into a job: prompt fitted to the window, parameters resolved, the
        ``response_format`` compiled (or refused with :class:`UnsupportedFeatureError`) before anything
        is generated.
        """
        params = request.params
        check_extra(params.extra)
        fmt = params.response_format
        max_new_tokens = params.max_new_tokens or DEFAULT_MAX_NEW_TOKENS
        plan = self.tools.plan(request, self.prompts)  # None without tools
        if plan is not None:
            request = plan.request
        prompt = self.fit(request, max_new_tokens, None if plan is None else plan.prompts)
        grammar: Grammar | None
        if plan is not None and plan.grammar is not None:
            grammar = plan.grammar
        else:
            grammar = None if fmt is None else self.generator.grammars.compile(fmt)
        return Job(
            prompt=prompt,
            max_new_tokens=max_new_tokens,
            stop=params.stop or (),
            sampling=resolve_sampling(params, self.model.generation_config),
            extra=params.extra,
            max_rows=max_rows,
            grammar=grammar,
            top_logprobs=(params.top_logprobs or 0) if params.wants_logprobs else None,
            tools=plan,
        )

    def score_job(
        self,
        request: ChatRequest,
        candidates: Sequence[str],
        options: ScoreOptions,
        *,
        max_rows: int = 1 << 30,
    ) -> ScoreJob:
        """Turn a checked request and its candidates into a score job: the prompt fitted to the window
        with room for the longest candidate, each candidate's ids as the reply (:mod:`.scoring`).
        """
        refuse_unscorable(self.is_seq2seq, self.name)
        end = None
        if options.end_of_turn:
            end = self.end_of_turn
            if end is None:
                raise UnsupportedFeatureError(
                    f"{self.name!r} has no end-of-turn or end-of-sequence token to score candidates "
                    f"with; pass end_of_turn=False to score them as the start of the reply"
                )
        longest = max(len(self.prompts.encode_piece(c)) for c in candidates) + (end is not None)
        prompt = self.fit(request, longest)
        refuse_image_scoring(prompt, self.name)
        return ScoreJob(
            prompt=prompt, candidates=candidate_ids(self.prompts, prompt, candidates, end), max_rows=max_rows
        )

    @cached_property
    def end_of_turn(self) -> int | None:
        """The template's end-of-turn token id (:func:`~.scoring.end_of_turn_id`)."""
        return end_of_turn_id(self.tokenizer, self.prompts)

    def fit(self, request: ChatRequest, max_new_tokens: int, prompts: PromptBuilder | None = None) -> Prompt:
        """The prompt for ``request`` under the configured context policy (rendered by ``prompts``,
        the engine's own by default).
        """
        return (prompts or self.prompts).fit(
            request.messages,
            max_new_tokens=max_new_tokens,
            window=self.window,
            policy=self.settings.context_policy,
            decoder_window=not self.is_seq2seq,
        )

    def close(self) -> None:
        """Stop the worker thread and let go of the model."""
        self.scheduler.close()
        device = getattr(self.generator.model, "device", None)
        del self.generator
        gc.collect()
        if device is not None and device.type == "cuda":
            torch.cuda.empty_cache()
