"""Constrained decoding: a ``response_format`` compiled by llguidance into a grammar, and a logits
processor that keeps every constrained row of a batch inside its grammar.

One :class:`Grammars` per backend compiles each format once (cached by :attr:`OutputFormat.digest`;
how, in :mod:`.grammars`) and checks it before anything is generated: a schema part llguidance cannot
honour raises :class:`~llmclient.errors.UnsupportedFeatureError` naming the part and the fix, never
a silent fallback to free text. The llguidance tokenizer (about a second to build on a large vocabulary) is
built once, on the worker thread, when the first constrained batch runs.

One :class:`GrammarMask` per batch holds one matcher per row (``None`` for a free row), so rows with
different formats, and rows with none, share one ``generate`` call. Before each step it fills the
masks of the live constrained rows in parallel (llguidance's executor) and sets every token they
forbid to ``-inf``: the numpy bit unpacking and one ``masked_fill_``, no ``torch.compile``. The
row tracker feeds each matcher the token the row actually got (never a pad of a finished row) and
ends a row whose grammar is complete; the reply is then exactly the constrained text.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from transformers import LogitsProcessor

from llmclient.backends.huggingface.grammars import Grammar, grammar_text, label
from llmclient.errors import UnsupportedFeatureError
from llmclient.structured import OutputFormat

if TYPE_CHECKING:
    from llguidance import LLExecutor, LLMatcher, LLTokenizer

logger = logging.getLogger("llmclient")


class Grammars:
    """The grammars of one backend: each format compiled once, the llguidance tokenizer built once.

    :meth:`compile` runs on the calling thread (it is cheap after the first call of a format, and
    never needs the tokenizer); :meth:`mask` runs on the worker thread.

    Args:
        tokenizer: the model's (fast) tokenizer.
    """

    def __init__(self, tokenizer: Any) -> None:
        self._tokenizer = tokenizer
        self._lock = threading.Lock()
        self._grammars: dict[str, Grammar] = {}
        self._templates: dict[str, LLMatcher] = {}
        self._ll_tokenizer: LLTokenizer | None = None
        self._executor: LLExecutor | None = None

    def compile(self, fmt: OutputFormat) -> Grammar:
        """The grammar of ``fmt``, compiled and checked on first use, then from the cache.

        Raises :class:`UnsupportedFeatureError` (naming the part of the format and the fix) when
        llguidance cannot honour it, or when llguidance or a fast tokenizer is missing.
        """
        with self._lock:
            known = self._grammars.get(fmt.digest)
        if known is not None:
            return known
        if not getattr(self._tokenizer, "is_fast", False):
            raise UnsupportedFeatureError(
                f"response_format needs a fast (Rust) tokenizer for constrained decoding, and this model's "
                f"is {type(self._tokenizer).__name__}: load the model with its tokenizer.json"
            )
        grammar = Grammar(fmt.digest, grammar_text(fmt, self._ll_tokenizer), label(fmt))
        with self._lock:
            return self._grammars.setdefault(fmt.digest, grammar)

    def mask(self, grammars: Sequence[Grammar | None], eos_ids: frozenset[int]) -> GrammarMask:
        """A fresh mask for one batch: a matcher for each row that has a grammar."""
        from llguidance import LLExecutor

        if self._executor is None:
            self._executor = LLExecutor()
        matchers = [None if g is None else self._template(g, eos_ids).deep_copy() for g in grammars]
        vocab = self._llg_tokenizer(eos_ids).vocab_size
        return GrammarMask(matchers, self._executor, eos_ids, vocab)

    def _template(self, grammar: Grammar, eos_ids: frozenset[int]) -> LLMatcher:
        """A matcher in its start state, built once per grammar; each row gets a copy."""
        template = self._templates.get(grammar.digest)
        if template is None:
            from llguidance import LLMatcher

            template = LLMatcher(self._llg_tokenizer(eos_ids), grammar.text, log_level=0)
            if template.is_error():  # validated without the tokenizer: a safety net only
                raise UnsupportedFeatureError(
                    f"response_format {grammar.label} cannot be constrained on this model: "
                    f"{template.get_error()}"
                )
            self._templates[grammar.digest] = template
        return template

    def _llg_tokenizer(self, eos_ids: frozenset[int]) -> LLTokenizer:
        """The tokenizer as llguidance sees it (about 0.3 s for 49k tokens), built on first use with
        the end-of-sequence ids of that call: a complete format may end with any of them.
        """
        if self._ll_tokenizer is None:
            from llguidance.hf import from_tokenizer

            eos = sorted(eos_ids) or None
            try:
                self._ll_tokenizer = from_tokenizer(self._tokenizer, eos_token=eos)
            except (ValueError, RuntimeError) as exc:
                raise UnsupportedFeatureError(
                    f"llguidance cannot read this model's tokenizer for constrained decoding: {exc}"
                ) from exc
        return self._ll_tokenizer


class GrammarMask(LogitsProcessor):
    """Keeps each constrained row of one batch inside its grammar; free rows pass untouched.

    ``generate`` calls it before choosing each step's tokens (before temperature, top-k and top-p,
    so greedy and sampling both see only allowed tokens); the row tracker calls :meth:`advance` with
    each row's chosen token and :meth:`release` when a row ends.

    Args:
        matchers: one llguidance matcher per row, ``None`` for a free row.
        executor: llguidance's thread pool, filling several rows' masks at once.
        eos_ids: the end-of-sequence ids; a row whose matcher fails may still end with one.
        vocab_size: the tokens the masks cover (the model's logits may have more columns: those
            are forbidden to constrained rows).
    """

    def __init__(
        self,
        matchers: list[LLMatcher | None],
        executor: LLExecutor,
        eos_ids: frozenset[int],
        vocab_size: int,
    ) -> None:
        self._matchers = matchers
        self._executor = executor
        self._eos = sorted(eos_ids)
        words = (vocab_size + 31) // 32
        self._bits = np.full((len(matchers), words), -1, dtype=np.int32)

    def advance(self, row: int, token: int) -> bool:
        """Feed ``row``'s matcher the token the row got; true when its grammar is complete.

        A matcher that refuses the token (which the mask makes impossible) also ends the row: the
        reply is then checked, and refused, by the base class like any other.
        """
        matcher = self._matchers[row]
        if matcher is None:
            return False
        if not matcher.consume_token(token):
            logger.warning("constrained row %d left its grammar: %s", row, matcher.get_error())
            return True
        return matcher.is_stopped()

    def release(self, row: int) -> None:
        """Forget ``row``'s matcher: the row has ended, whatever ``generate`` gives it next is padding."""
        self._matchers[row] = None

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        """``scores`` with every token a live constrained row may not take set to ``-inf``."""
        from llguidance.numpy import fill_next_token_bitmask_par

        live = [(m, row) for row, m in enumerate(self._matchers) if m is not None]
        if not live:
            return scores
        fill_next_token_bitmask_par(self._executor, live, self._bits)
        rows = [row for _, row in live]
        allowed = np.unpackbits(self._bits[rows].view(np.uint8), axis=1, bitorder="little")
        width = scores.shape[-1]
        forbidden = torch.ones((len(rows), width), dtype=torch.bool)
        shared = min(width, allowed.shape[1])
        forbidden[:, :shared] = torch.from_numpy(allowed[:, :shared] == 0)
        for i in forbidden.all(dim=1).nonzero().flatten().tolist():
            self._unstick(live[i], forbidden[i])
        index = torch.tensor(rows, device=scores.device)
        scores[index] = scores[index].masked_fill(forbidden.to(scores.device), float("-inf"))
        return scores

    def _unstick(self, live: tuple[LLMatcher, int], forbidden: torch.Tensor) -> None:
        """A matcher that allows nothing (it hit one of llguidance's limits) would leave its row
        nothing to choose, and sampling from all ``-inf`` fails: let the row end instead, and its
        reply be refused by the check every reply passes.
        """
        matcher, row = live
        logger.warning("constrained row %d has no allowed token: %s", row, matcher.get_error() or "no reason")
        eos = [e for e in self._eos if e < forbidden.shape[0]]
        forbidden[eos if eos else slice(None)] = False
