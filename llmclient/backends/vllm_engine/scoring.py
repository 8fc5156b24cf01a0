"""Exact candidate scoring on the ``vllm-engine`` backend, through vLLM's ``prompt_logprobs``.

Each candidate becomes token ids after the rendered prompt by the rule the local backend uses
(:mod:`llmclient.backends.candidates`: prompt and candidate encoded together and split at the
prompt's length, the template's end-of-turn token after it with ``end_of_turn``), so both backends
score the same tokens. Every (conversation, candidate) row is one prompt of a single
``LLM.generate`` call with ``prompt_logprobs=0`` (the logprob of each prompt token, under the
tokens before it) and ``max_tokens=1``; a candidate's score is the total over its own positions.

Functions over the tokenizer and vLLM's outputs (read by attribute): nothing here imports vLLM; the
engine passes its ``SamplingParams`` in.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from llmclient.backends.candidates import candidate_ids, end_of_turn_id
from llmclient.backends.vllm_engine.convert import typed_error
from llmclient.errors import (
    ContextWindowExceededError,
    LLMClientError,
    ProviderError,
)
from llmclient.images import has_images, image_scoring_refusal
from llmclient.logprobs import RawScore

if TYPE_CHECKING:
    from llmclient.backends.vllm_engine.engine import Engine, Item


class TemplateRenderer:
    """The tokenizer behind the engine's chat template, as :mod:`llmclient.backends.candidates` uses it.

    Args:
        tokenizer: the engine's tokenizer (``LLM.get_tokenizer()``).
        template: the ``chat_template`` setting, or ``None`` for the tokenizer's own.
    """

    def __init__(self, tokenizer: Any, template: str | None) -> None:
        self._tokenizer = tokenizer
        self._template = template

    def encode(self, text: str) -> list[int]:
        """Token ids of rendered text, as ``LLM.chat`` tokenizes a prompt (no special tokens added)."""
        ids: list[int] = self._tokenizer.encode(text, add_special_tokens=False)
        return ids

    def encode_piece(self, text: str) -> list[int]:
        """Token ids of a piece of text on its own."""
        return self.encode(text)

    def render_reply(self, conversation: list[dict[str, Any]], reply: str) -> str:
        """The template's text for ``conversation`` followed by the assistant's ``reply``."""
        text: str = self._tokenizer.apply_chat_template(
            [*conversation, {"role": "assistant", "content": reply}],
            chat_template=self._template,
            add_generation_prompt=False,
            tokenize=False,
        )
        return text


@dataclass(frozen=True)
class Prompt:
    """A rendered prompt: its text and token ids."""

    text: str
    ids: list[int]


@dataclass(frozen=True)
class ScoreRows:
    """One conversation's candidates as rows for ``LLM.generate``, and how their scores are read.

    Attributes:
        prompt: the prompt's ids (generation prompt included).
        candidates: each candidate's ids after it (end-of-turn token included where asked).
    """

    prompt: list[int]
    candidates: list[list[int]]

    @classmethod
    def build(
        cls,
        renderer: TemplateRenderer,
        text: str,
        candidates: Sequence[str],
        end_of_turn: int | None,
        window: int | None,
    ) -> ScoreRows:
        """The rows of the prompt ``text`` and ``candidates``; refused with
        :class:`ContextWindowExceededError` where the longest row does not fit the engine's window.
        """
        prompt = Prompt(text, renderer.encode(text))
        ids = candidate_ids(renderer, prompt, candidates, end_of_turn)
        longest = len(prompt.ids) + max(len(c) for c in ids)
        if window is not None and longest > window:
            raise ContextWindowExceededError(
                f"scoring needs {longest} tokens (prompt and longest candidate), over the engine's "
                f"max_model_len of {window}: shorten the conversation or the candidates, or raise "
                f"max_model_len where the model allows it"
            )
        return cls(prompt.ids, ids)

    def rows(self) -> list[dict[str, list[int]]]:
        """The prompts of ``LLM.generate``: prompt and candidate, one per candidate."""
        return [{"prompt_token_ids": self.prompt + ids} for ids in self.candidates]

    def read(self, outputs: Sequence[Any]) -> list[RawScore]:
        """Each candidate's total logprob from its ``RequestOutput`` (in the order of :meth:`rows`)."""
        scores: list[RawScore] = []
        for ids, output in zip(self.candidates, outputs, strict=True):
            found = output.prompt_logprobs or []
            total = 0.0
            for position, token in enumerate(ids, len(self.prompt)):
                entry = found[position] if position < len(found) else None
                logprob = entry.get(token) if entry else None
                if logprob is None:
                    raise ProviderError(
                        f"vLLM returned no prompt logprob for token {token} at position {position}; "
                        f"candidates cannot be scored on this engine"
                    )
                total += float(logprob.logprob)
            scores.append(RawScore(total, len(ids), True))
        return scores


def score_all(
    engine: Engine,
    items: Sequence[Item | LLMClientError],
    candidates: Sequence[str],
    end_of_turn: bool,
    sampling: Any,
) -> list[list[RawScore] | LLMClientError]:
    """Each item's candidate scores (or its typed error, in its place): every row of every item in
    one ``LLM.generate`` call with ``sampling`` (``prompt_logprobs=0``, ``max_tokens=1``); run on
    the engine's worker thread.
    """
    tokenizer = engine.llm.get_tokenizer()
    renderer = TemplateRenderer(tokenizer, engine.chat_template)
    end = end_of_turn_id(tokenizer, renderer) if end_of_turn else None
    results: list[ScoreRows | LLMClientError] = []
    for item in items:
        if isinstance(item, LLMClientError):
            results.append(item)
            continue
        try:
            if has_images(item.conversation):
                raise image_scoring_refusal("the vllm-engine backend")
            text = engine.prompt_text(item.conversation, item.tools)
            results.append(ScoreRows.build(renderer, text, candidates, end, engine.window))
        except Exception as exc:
            results.append(typed_error(exc, item.params))
    built = [r for r in results if isinstance(r, ScoreRows)]
    prompts = [row for rows in built for row in rows.rows()]
    outputs = iter(engine.llm.generate(prompts, sampling, use_tqdm=False) if prompts else ())
    read: dict[int, list[RawScore] | LLMClientError] = {}
    for rows in built:
        mine = [next(outputs) for _ in rows.candidates]
        try:
            read[id(rows)] = rows.read(mine)
        except LLMClientError as exc:
            read[id(rows)] = exc
    return [r if isinstance(r, LLMClientError) else read[id(r)] for r in results]
