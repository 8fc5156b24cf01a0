"""A third-party backend in one file: a keyword-rule classifier that runs anywhere llmclient runs.

A rules baseline is worth having beside a model: run the same pipeline over the same rows with
``type = "keywords"`` and compare. It shows the whole backend contract (docs/concepts.md, "Writing a
backend"): ``_chat`` is the one required hook; ``_stream`` and ``count_tokens`` are optional; the
capabilities are attributes; ``from_config`` builds it from a config table, and ``register`` (or an
entry point in the ``llmclient.backends`` group) makes ``llmclient.load`` know its type name.

    python examples/custom_backend.py
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import ClassVar

import llmclient
from llmclient import (
    ChatBackend,
    ChatRequest,
    ChatResponse,
    FinishReason,
    GenerationParams,
    StreamDelta,
    Usage,
)
from llmclient.config import BackendConfig
from llmclient.registry import register

DEFAULT_RULES = {"late": "late", "cold": "negative", "great": "positive", "delicious": "positive"}


class KeywordBackend(ChatBackend):
    """Answers with the label of the first keyword found in the last user message."""

    type_name: ClassVar[str] = "keywords"
    can_count_tokens: ClassVar[bool] = True

    def __init__(
        self,
        model: str,
        *,
        rules: Mapping[str, str],
        fallback: str = "neutral",
        name: str | None = None,
        defaults: GenerationParams | None = None,
    ) -> None:
        super().__init__(model=model, name=name, defaults=defaults)
        self.rules = dict(rules)
        self.fallback = fallback

    def _chat(self, request: ChatRequest) -> ChatResponse:
        prompt = request.messages[-1].text.lower()
        label = next((label for word, label in self.rules.items() if word in prompt), self.fallback)
        limit = request.params.max_new_tokens
        words = label.split()[:limit] if limit else label.split()
        finish: FinishReason = "length" if limit and len(label.split()) > limit else "stop"
        return ChatResponse(
            text=" ".join(words),
            finish_reason=finish,
            usage=Usage(prompt_tokens=len(prompt.split()), completion_tokens=len(words)),
            model=self.model,
        )

    def _stream(self, request: ChatRequest) -> Iterator[StreamDelta]:
        reply = self._chat(request)
        for number, word in enumerate(reply.text.split()):
            yield StreamDelta(text=word if number == 0 else " " + word)
        yield StreamDelta(finish_reason=reply.finish_reason, usage=reply.usage)

    def count_tokens(self, messages: llmclient.Messages) -> int:
        """Words in the conversation: this backend's tokens."""
        return sum(len(m.text.split()) for m in self.prepare(messages, {}).messages)


def from_config(config: BackendConfig) -> KeywordBackend:
    """Build the backend from a ``type = "keywords"`` table; ``rules`` maps keywords to labels."""
    rules = config.options.get("rules", DEFAULT_RULES)
    if not isinstance(rules, Mapping):
        raise config.error(
            "rules", rules, "must be a table of keyword = label", "Write rules = {late = 'late'}"
        )
    return KeywordBackend(config.model, rules=rules, name=config.name or None, defaults=config.defaults)


register("keywords", from_config)

if __name__ == "__main__":
    with llmclient.load({"type": "keywords", "model": "rules-v1"}) as backend:
        print(backend.chat("The soup was cold.").text)  # negative
        print([r.text for r in backend.chat_many(["Delicious!", "It came late", "ok"])])
        with backend.stream("great pizza") as stream:
            print("".join(d.text for d in stream), stream.final().finish_reason)
