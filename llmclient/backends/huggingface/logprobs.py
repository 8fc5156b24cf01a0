"""Token logprobs of a local reply: recorded from the raw logits while ``generate`` runs, read as text after.

:class:`LogprobRecorder` is a logits processor placed first in the list llmclient gives ``generate``,
before the grammar mask and any processor passed in ``extra``; transformers runs the temperature,
top-p and top-k warpers after every processor it is given, so what it records is the model's own
distribution (vLLM's default ``raw_logprobs`` too): at temperature 0 the chosen token is the most
likely one. It is added only when some row of the batch asked for logprobs, and computes only
those rows. At each step it keeps that step's log-softmax for the asking rows (and their top
alternatives); the token chosen at a step is known at the next step (the last column of
``input_ids``), when a stream's handle receives it, or from the final sequences, whichever comes
first, and only then is the step's entry appended to the row's :attr:`Job.steps
<llmclient.backends.huggingface.generation.Job.steps>`, so a stream's reader finds the entries of
the tokens it has been handed.

:class:`TokenTexts` turns token ids into :class:`~llmclient.TokenLogprob` s: each token's text and
its bytes (for byte-level BPE tokenizers the token's own bytes, which may be part of a character,
as OpenAI gives them).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from functools import lru_cache
from typing import Any, NamedTuple

import torch
from transformers import LogitsProcessor

from llmclient.logprobs import TokenLogprob


class Step(NamedTuple):
    """One generated token as recorded: its id, its logprob, and the most likely alternatives."""

    token: int
    logprob: float
    top: list[tuple[int, float]]


class LogprobRecorder(LogitsProcessor):
    """Records each asking row's raw log-softmax per step; leaves the scores untouched.

    Args:
        rows: per row of the batch, the list its steps are appended to and how many alternatives
            it wants (``None``: the row did not ask for logprobs).
    """

    def __init__(self, rows: Sequence[tuple[list[Step], int] | None]) -> None:
        self._asking = [i for i, row in enumerate(rows) if row is not None]
        self._targets = [row for row in rows if row is not None]
        self._top = max((want for _, want in self._targets), default=0)
        self._index: torch.Tensor | None = None
        self._pending: tuple[torch.Tensor, list[list[tuple[int, float]]]] | None = None

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        """Settle the previous step with the tokens it chose, then record this one."""
        self.settle(input_ids[:, -1])
        if self._index is None or self._index.device != scores.device:
            self._index = torch.tensor(self._asking, dtype=torch.long, device=scores.device)
        logprobs = torch.log_softmax(scores.index_select(0, self._index).float(), dim=-1)
        top: list[list[tuple[int, float]]] = [[] for _ in self._asking]
        if self._top:
            values, ids = logprobs.topk(self._top, dim=-1)
            top = [list(zip(i, v, strict=True)) for i, v in zip(ids.tolist(), values.tolist(), strict=True)]
        self._pending = (logprobs, top)
        return scores

    def settle(self, chosen: torch.Tensor) -> None:
        """Append the pending step's entry to each asking row, given the token every row chose there.

        Does nothing when no step is pending, so whichever of the next step, a stream's handle or
        the end of ``generate`` comes first settles a step, once.
        """
        if self._pending is None:
            return
        logprobs, top = self._pending
        self._pending = None
        tokens = chosen.reshape(-1).to(logprobs.device).index_select(0, self._index)  # type: ignore[arg-type]
        picked = logprobs.gather(1, tokens.unsqueeze(1)).squeeze(1).tolist()
        for (steps, want), token, value, alternatives in zip(
            self._targets, tokens.tolist(), picked, top, strict=True
        ):
            steps.append(Step(token=token, logprob=value, top=alternatives[:want]))


class SettlingStreamer:
    """A stream's handle, with the recorder settled before each token reaches the reader.

    ``generate`` hands the streamer each step's token before it calls the processors again; settling
    here first means the reader, woken by the token, finds its entry already in the row's steps.
    """

    def __init__(self, streamer: Any, recorder: LogprobRecorder) -> None:
        self._streamer = streamer
        self._recorder = recorder
        self._prompt_seen = False

    def put(self, value: torch.Tensor) -> None:
        """The prompt first (passed on), then each step's token (settled, then passed on)."""
        if self._prompt_seen:
            self._recorder.settle(value)
        self._prompt_seen = True
        self._streamer.put(value)

    def end(self) -> None:
        """``generate`` is done."""
        self._streamer.end()


_BYTE_FALLBACK = re.compile(r"<0x([0-9A-Fa-f]{2})>")


@lru_cache(maxsize=1)
def _byte_level_map() -> dict[str, int]:
    """GPT-2's byte-level alphabet, read back: the character that stands for each byte."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    chars = list(printable)
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(printable, chars, strict=True)}


def _is_byte_level(tokenizer: Any) -> bool:
    """Whether the tokenizer's decoder is byte-level BPE (GPT-2, Llama 3, SmolLM2, Qwen)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return False
    try:
        decoder = json.loads(backend.to_str()).get("decoder") or {}
    except (ValueError, AttributeError):
        return False
    return '"ByteLevel"' in json.dumps(decoder)


class TokenTexts:
    """Token ids as text and bytes, for :class:`~llmclient.TokenLogprob` entries.

    A byte-level token's bytes are its own (a token may be part of a UTF-8 character; its text then
    holds U+FFFD, and joining the bytes of consecutive tokens decodes it). A SentencePiece token's
    ``▁`` is a space and ``<0xNN>`` its byte; other tokens are decoded one by one.
    """

    def __init__(self, tokenizer: Any) -> None:
        self._tokenizer = tokenizer
        self._byte_level = _is_byte_level(tokenizer)
        self._special = frozenset(getattr(tokenizer, "all_special_ids", ()) or ())
        self._cache: dict[int, tuple[str, bytes]] = {}

    def text(self, token: int) -> tuple[str, bytes]:
        """The token's text and UTF-8 bytes."""
        found = self._cache.get(token)
        if found is None:
            found = self._cache[token] = self._read(token)
        return found

    def entries(self, steps: Sequence[Step]) -> list[TokenLogprob]:
        """The reply's entries, one per step."""
        out: list[TokenLogprob] = []
        for step in steps:
            text, raw = self.text(step.token)
            top = [(self.text(t)[0], v) for t, v in step.top]
            out.append(TokenLogprob(token=text, logprob=step.logprob, bytes=raw, top=top))
        return out

    def _read(self, token: int) -> tuple[str, bytes]:
        piece = self._tokenizer.convert_ids_to_tokens(token)
        if isinstance(piece, str) and token not in self._special:
            if self._byte_level:
                mapping = _byte_level_map()
                if all(c in mapping for c in piece):
                    raw = bytes(mapping[c] for c in piece)
                    return raw.decode("utf-8", errors="replace"), raw
            elif (match := _BYTE_FALLBACK.fullmatch(piece)) is not None:
                raw = bytes([int(match.group(1), 16)])
                return raw.decode("utf-8", errors="replace"), raw
            elif "\u2581" in piece:
                text = piece.replace("\u2581", " ")
                return text, text.encode("utf-8")
        text = self._tokenizer.decode([token], skip_special_tokens=False)
        return text, text.encode("utf-8")
