"""Streaming a local reply that may call tools: text as it comes, calls as index-keyed fragments.

The reply is decoded with special tokens kept (some models' call tags are special tokens) and the
turn-end tokens stripped. Text before a call is streamed as it arrives, holding back whatever could
be the start of the profile's call tag (or, for a profile whose calls are bare JSON, a reply that
opens with ``{``). Once a call has begun nothing more is shown as text: the calls are read from the
whole reply, as ``chat`` reads them, and sent in the last delta as the same index-keyed fragments the
remote backend yields (``details["tool_calls"]``), with ``finish_reason="tool_calls"``; so one
accumulator (:class:`~llmclient.tools.fragments.CallFragments`) serves both backends.
"""

from __future__ import annotations

from typing import Any

from llmclient.backends.huggingface.generation import Job, Outcome
from llmclient.backends.huggingface.streaming import IncrementalDecoder, StreamText
from llmclient.logprobs import TokenLogprob
from llmclient.tools.templates import call_start, with_calls
from llmclient.types import StreamDelta


class _KeptDecoder(IncrementalDecoder):
    """An incremental decoder that keeps special tokens."""

    def _decode(self, ids: list[int]) -> str:
        text: str = self._tokenizer.decode(ids, skip_special_tokens=False)
        return text


class ToolStreamText(StreamText):
    """:class:`~.streaming.StreamText` for a job with tools: text up to a call, then the calls."""

    def __init__(self, tokenizer: Any, job: Job) -> None:
        super().__init__(tokenizer, job.stop)
        assert job.tools is not None
        self._plan = job.tools
        self._decoder = _KeptDecoder(tokenizer)
        self._raw = ""

    def _take(self, ids: list[int]) -> None:
        """Add the text of new token ids, special tokens kept, the turn-end tokens stripped."""
        self._raw += self._decoder.add(ids)
        self._text = self._plan.strip(self._raw)

    def _safe_end(self) -> int:
        """Before a stop string, and before anything that may be the start of a call."""
        limit = super()._safe_end()
        return min(limit, call_start(self._text, self._plan.profile)) if self._plan.active else limit

    def last(
        self, outcome: Outcome, model_name: str, logprobs: list[TokenLogprob] | None = None
    ) -> StreamDelta:
        """The last delta: the rest of the text, the calls as fragments, the finish reason, the usage."""
        return with_calls(super().last(outcome, model_name, logprobs), outcome.tool_calls)
