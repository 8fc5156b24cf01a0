"""Candidates as token ids after a rendered prompt: what exact scoring feeds a model it runs itself.

Shared by the local backend (:mod:`llmclient.backends.huggingface.scoring`) and the in-process vLLM
backend (:mod:`llmclient.backends.vllm_engine.scoring`), so a candidate is the same tokens on both.
A candidate is scored as the assistant's reply: the conversation is rendered with its generation
prompt (the ids ``chat`` would give the model), and the candidate's ids are found as
lm-evaluation-harness finds a continuation's, by encoding prompt and candidate together and
splitting at the prompt's length, so a candidate is tokenised as it would be in context. The
trailing whitespace of the prompt stays in the prompt (lm-evaluation-harness moves it into the
continuation, which suits plain-text prompts; a chat template's generation prompt ends with its own
newline token, which every reply follows). Where the joint encoding would change the prompt's own
tokens (a candidate that merges with the prompt's last token), the candidate is encoded alone: the
prompt keeps exactly the ids a reply is generated from. With ``end_of_turn``, the template's
end-of-turn token follows the candidate ("this and nothing else").

Plain Python over a tokenizer: no torch, no vLLM.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

_PROBE = "llmclient-end-of-turn-probe"
"""An assistant reply whose rendering shows what the template writes after a reply."""


class Renderer(Protocol):
    """What candidates are encoded with: the model's tokenizer behind its chat template."""

    def encode(self, text: str) -> list[int]:
        """Token ids of rendered text (the prompt and a candidate together)."""
        ...

    def encode_piece(self, text: str) -> list[int]:
        """Token ids of a piece of text on its own: no special tokens added."""
        ...

    def render_reply(self, conversation: list[dict[str, Any]], reply: str) -> str:
        """The template's text for ``conversation`` followed by the assistant's ``reply``."""
        ...


class RenderedPrompt(Protocol):
    """A rendered prompt: its exact text and its token ids."""

    @property
    def text(self) -> str:
        """The prompt's text, generation prompt included."""
        ...

    @property
    def ids(self) -> list[int]:
        """Its token ids."""
        ...


def end_of_turn_id(tokenizer: Any, prompts: Renderer) -> int | None:
    """The template's end-of-turn token: the first token it writes after an assistant reply.

    Read from a rendering of a reply (ChatML's ``<|im_end|>``, Llama 3's ``<|eot_id|>``); where that
    first token is not a special token, or the template cannot render a reply, the tokenizer's
    end-of-sequence token. ``None`` where there is neither.
    """
    eos = getattr(tokenizer, "eos_token_id", None)
    try:
        rendered = prompts.render_reply([{"role": "user", "content": "Hi"}], _PROBE)
    except Exception:  # a template that renders no assistant turn: the end of sequence it is
        rendered = None
    if rendered is not None and _PROBE in rendered:
        after = rendered[rendered.index(_PROBE) + len(_PROBE) :]
        ids = tokenizer.encode(after, add_special_tokens=False) if after else []
        special = set(getattr(tokenizer, "all_special_ids", ()) or ())
        if ids and (ids[0] in special or ids[0] == eos):
            return int(ids[0])
    return None if eos is None else int(eos)


def candidate_ids(
    prompts: Renderer, prompt: RenderedPrompt, candidates: Sequence[str], end_of_turn: int | None
) -> list[list[int]]:
    """Each candidate's ids after ``prompt`` (prompt and candidate encoded together, split at the
    prompt's length), followed by ``end_of_turn`` where given.
    """
    width = len(prompt.ids)
    out: list[list[int]] = []
    for candidate in candidates:
        whole = prompts.encode(prompt.text + candidate)
        ids = whole[width:] if whole[:width] == prompt.ids else []
        if not ids:
            ids = prompts.encode_piece(candidate)
        out.append(ids + ([] if end_of_turn is None else [end_of_turn]))
    return out
