"""From messages to the token ids a model is given: chat templates, system turns, the context window.

The conversation is rendered by the model's chat template with the generation prompt added, then that
text is tokenised once with ``add_special_tokens=False`` (what ``apply_chat_template(tokenize=True)``
does): the template writes every special token itself, so no second BOS appears. A plain
``tokenizer(text)`` of the messages would miss the turn markers the model was trained on.

An encoder-decoder model without a chat template (T5, FLAN-T5, BART) was trained on plain text, so
it is given plain text: the system and user messages' text, in order, joined by a blank line, and
tokenised as in training, with the tokenizer's own special tokens (T5's closing ``</s>``). A
decoder-only model without a template is refused: no plain form of a conversation is the one it
was trained on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from llmclient.errors import (
    ChatTemplateError,
    ConfigError,
    ContextWindowExceededError,
)
from llmclient.images import refuse_images
from llmclient.tools.templates import tool_history
from llmclient.types import Message

_SYSTEM_ROLES = frozenset({"system", "developer"})
_PLAIN_ROLES = _SYSTEM_ROLES | {"user"}
PLAIN_TEXT_SEPARATOR = "\n\n"
"""What joins the messages of a plain-text prompt (an encoder-decoder model without a template)."""


@dataclass(frozen=True)
class Prompt:
    """A rendered prompt: the exact text and its token ids."""

    text: str
    ids: list[int]


def read_template(value: str | None) -> str | None:
    """A configured ``chat_template``: the template itself, or the file it names."""
    if value is None or "{{" in value or "{%" in value:
        return value
    path = Path(value).expanduser()
    if not path.is_file():
        raise ConfigError(
            f"chat_template = {value!r}: neither a Jinja template (no '{{{{' or '{{%') nor an existing "
            f"file. Give the template text or the path of a .jinja file"
        )
    return path.read_text(encoding="utf-8")


class PromptBuilder:
    """Renders conversations for one tokenizer, and fits them into the model's window.

    Args:
        tokenizer: the model's tokenizer.
        model_name: the model's name, for error messages.
        chat_template: a template replacing the tokenizer's own, or ``None``.
        system_role: ``error`` passes system messages to the template; ``merge`` puts their text in
            front of the first user message, for templates that refuse a system role.
        encoder_decoder: whether the model is encoder-decoder; without a template it is then given
            plain text (:func:`plain_text`) instead of refused.

    A text model is never given images: a conversation with an image part is refused with
    :class:`UnsupportedFeatureError` rather than flattened to its text. Vision models render
    through :class:`~.vision.VisionPromptBuilder`, which overrides the hooks :meth:`conversation`
    and :meth:`with_text` and renders with the processor (``_renderer``).
    """

    takes_images = False

    def __init__(
        self,
        tokenizer: Any,
        *,
        model_name: str,
        chat_template: str | None,
        system_role: Literal["error", "merge"],
        encoder_decoder: bool = False,
    ) -> None:
        self._tokenizer = tokenizer
        self._renderer: Any = tokenizer  # what applies the chat template (a vision model's processor)
        self._model_name = model_name
        self._template = chat_template or getattr(tokenizer, "chat_template", None)
        self._system_role = system_role
        self.plain = not self._template and encoder_decoder
        self._tools: list[dict[str, Any]] | None = None  # bound per request by .toolcalls

    def render(self, messages: Sequence[Message]) -> str:
        """The exact text the model is given for ``messages``, generation prompt included."""
        if not self.takes_images:
            refuse_images(messages, self._model_name)
        if self.plain:
            return plain_text(messages, self._model_name)
        if not self._template:
            raise ChatTemplateError(
                f"model {self._model_name!r} has no chat template, so a conversation cannot be turned "
                f"into its prompt. Set chat_template in the backend config to a Jinja template string or "
                f"the path of a .jinja file (e.g. the ChatML template of a similar model)"
            )
        conversation = self.conversation(messages)
        try:
            return self._apply(conversation)
        except ChatTemplateError:
            raise
        except Exception as exc:
            if any(m["role"] == "system" for m in conversation) and self._renders_without_system(
                conversation
            ):
                raise ChatTemplateError(
                    f"the chat template of {self._model_name!r} rejects the system role ({exc}). Set "
                    f'system_role = "merge" in the backend config to put the system text in front of '
                    f"the first user message, or leave the system message out"
                ) from exc
            raise ChatTemplateError(
                f"the chat template of {self._model_name!r} rejects this conversation: {exc}"
            ) from exc

    def conversation(self, messages: Sequence[Message]) -> list[dict[str, Any]]:
        """``messages`` as the chat template reads them (text content, tool use, system merged)."""
        conversation = tool_history([_to_template_dict(m) for m in messages])
        return _merge_system(conversation) if self._system_role == "merge" else conversation

    def with_text(self, message: Message, text: str) -> Message:
        """``message`` with its content replaced by ``text`` (how truncation cuts the last message)."""
        return replace(message, content=text)

    def encode(self, text: str) -> list[int]:
        """Token ids of rendered ``text``: a template has written every special token already; plain
        text gets the tokenizer's own, as the model saw in training.
        """
        ids: list[int] = self._tokenizer.encode(text, add_special_tokens=self.plain)
        return ids

    def encode_piece(self, text: str) -> list[int]:
        """Token ids of a piece of text on its own: no special tokens added."""
        ids: list[int] = self._tokenizer.encode(text, add_special_tokens=False)
        return ids

    def render_reply(self, conversation: list[dict[str, Any]], reply: str) -> str:
        """The template's text for ``conversation`` followed by the assistant's ``reply`` (no
        generation prompt): what it writes around a reply shows its end-of-turn marker.
        """
        text: str = self._renderer.apply_chat_template(
            [*conversation, {"role": "assistant", "content": reply}],
            chat_template=self._template,
            add_generation_prompt=False,
            tokenize=False,
        )
        return text

    def prompt(self, messages: Sequence[Message]) -> Prompt:
        """Render and tokenise ``messages`` as they are."""
        text = self.render(messages)
        return Prompt(text=text, ids=self.encode(text))

    def fit(
        self,
        messages: Sequence[Message],
        *,
        max_new_tokens: int,
        window: int | None,
        policy: Literal["error", "truncate"],
        decoder_window: bool = True,
    ) -> Prompt:
        """The prompt for ``messages``, made to fit ``window`` as ``policy`` says.

        ``decoder_window`` is false for encoder-decoder models, whose new tokens do not share the
        prompt's window: there only the prompt must fit.
        """
        prompt = self.prompt(messages)
        if window is None:
            return prompt
        reserved = max_new_tokens if decoder_window else 0
        if len(prompt.ids) + reserved <= window:
            return prompt
        if policy == "error" or reserved >= window:
            raise self._too_long(len(prompt.ids), max_new_tokens, window, truncated=False)
        return self._truncate(
            list(messages), budget=window - reserved, max_new_tokens=max_new_tokens, window=window
        )

    def _truncate(self, messages: list[Message], *, budget: int, max_new_tokens: int, window: int) -> Prompt:
        """Drop the oldest non-system turns, then cut the last message from the left, until it fits."""
        prompt = self.prompt(messages)
        while len(prompt.ids) > budget and _drop_oldest_turn(messages):
            prompt = self.prompt(messages)
        last = messages[-1]
        content_ids: list[int] = self._tokenizer.encode(last.text, add_special_tokens=False)
        while len(prompt.ids) > budget:
            keep = len(content_ids) - (len(prompt.ids) - budget)
            if keep < 1:
                raise self._too_long(len(prompt.ids), max_new_tokens, window, truncated=True)
            content_ids = content_ids[-keep:]
            messages[-1] = self.with_text(last, self._tokenizer.decode(content_ids))
            prompt = self.prompt(messages)
        return prompt

    def _too_long(
        self, prompt_tokens: int, max_new_tokens: int, window: int, *, truncated: bool
    ) -> ContextWindowExceededError:
        if truncated:
            fix = (
                "even with older turns dropped and the last message cut, the system messages and the "
                "template's own text do not leave room; shorten them or lower max_new_tokens"
            )
        else:
            fix = (
                'shorten the conversation, lower max_new_tokens, or set context_policy = "truncate" '
                "in the backend config"
            )
        return ContextWindowExceededError(
            f"prompt of {prompt_tokens} tokens + max_new_tokens {max_new_tokens} = "
            f"{prompt_tokens + max_new_tokens} tokens exceeds the context window of {window} tokens of "
            f"{self._model_name!r}; {fix}",
            prompt_tokens=prompt_tokens,
            max_new_tokens=max_new_tokens,
            context_window=window,
        )

    def _apply(self, conversation: list[dict[str, Any]]) -> str:
        text: str = self._renderer.apply_chat_template(
            conversation,
            chat_template=self._template,
            add_generation_prompt=True,
            tokenize=False,
            **({"tools": self._tools} if self._tools else {}),
        )
        return text

    def _renders_without_system(self, conversation: list[dict[str, Any]]) -> bool:
        rest = [m for m in conversation if m["role"] != "system"]
        if not rest:
            return False
        try:
            self._apply(rest)
        except Exception:
            return False
        return True


def plain_text(messages: Sequence[Message], model_name: str) -> str:
    """The plain-text input of an encoder-decoder model without a chat template.

    The text of the system (or developer) and user messages, in their order, joined by a blank line;
    empty ones are left out. Assistant and tool turns are refused: plain text has no form for who
    said what that such a model was trained on, and inventing one would be a template in disguise.
    """
    spoken = next((m for m in messages if m.role not in _PLAIN_ROLES), None)
    if spoken is not None:
        raise ChatTemplateError(
            f"model {model_name!r} is an encoder-decoder model without a chat template, given plain "
            f"text as it was trained; a conversation with {spoken.role} turns has no plain-text form. "
            f"Send the system and user messages only (put what earlier replies said into the user "
            f"text), or set chat_template in the backend config"
        )
    return PLAIN_TEXT_SEPARATOR.join(m.text for m in messages if m.text)


def _to_template_dict(message: Message) -> dict[str, Any]:
    """A message as chat templates expect it: text content, ``developer`` spoken as ``system``."""
    out = message.to_dict()
    out["role"] = "system" if message.role in _SYSTEM_ROLES else message.role
    out["content"] = message.text
    return out


def _merge_system(conversation: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Move the system messages' text in front of the first user message."""
    system = [m["content"] for m in conversation if m["role"] == "system" and m["content"]]
    rest = [dict(m) for m in conversation if m["role"] != "system"]
    if not system:
        return rest
    preamble = "\n\n".join(system)
    for message in rest:
        if message["role"] == "user":
            message["content"] = f"{preamble}\n\n{message['content']}" if message["content"] else preamble
            return rest
    return [{"role": "user", "content": preamble}, *rest]


def _drop_oldest_turn(messages: list[Message]) -> bool:
    """Remove the oldest non-system message before the last, and any assistant or tool replies that
    would then open the conversation, so it still starts with a user turn. False if none is left.
    """
    droppable = [i for i, m in enumerate(messages[:-1]) if m.role not in _SYSTEM_ROLES]
    if not droppable:
        return False
    del messages[droppable[0]]
    while True:
        following = [i for i, m in enumerate(messages[:-1]) if m.role not in _SYSTEM_ROLES]
        if not following or messages[following[0]].role == "user":
            return True
        del messages[following[0]]
