"""Messages: one turn of a conversation, and reading the OpenAI-shaped dicts people already have.

Plain dicts are accepted wherever messages are taken, so code that already builds
``[{"role": "user", "content": "..."}]`` works unchanged; :class:`Message` is the typed form.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields, replace
from typing import Any, Literal, cast, get_args

from llmclient._settings import suggest
from llmclient.errors import InvalidRequestError
from llmclient.images import IMAGE_PART_SHAPE, image_url_of, part_repr
from llmclient.tools.calls import ToolCall

Role = Literal["system", "user", "assistant", "tool", "developer"]
"""Who speaks a message; ``developer`` is OpenAI's newer name for ``system``."""

TEXT_PART_SEPARATOR = " "
"""What joins the text parts of one message where it is flattened to text (:attr:`Message.text`)."""

_ROLES: frozenset[str] = frozenset(get_args(Role))


@dataclass(frozen=True, slots=True)
class Message:
    """One turn of a conversation.

    ``content`` is a string, or a list of OpenAI content parts for multimodal input: text parts
    (``{"type": "text", "text": ...}``) and image parts (``{"type": "image_url", "image_url": {"url":
    ...}}``, which :func:`llmclient.image` builds from a path, bytes, a PIL image or a URL); their shape
    is checked (docs/images.md).

    ``tool_calls`` (an assistant's calls, as :class:`~llmclient.tools.ToolCall`; dicts in the OpenAI
    shape are read into them) and ``tool_call_id`` (what a tool result answers) carry tool use;
    ``reply.message`` and :func:`llmclient.tool_result` build them.
    """

    role: Role
    content: str | list[dict[str, Any]] | None = ""
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The OpenAI wire form of this message, leaving out fields that are not set."""
        out: dict[str, Any] = {"role": self.role, "content": self.content}
        if self.name is not None:
            out["name"] = self.name
        if self.tool_calls is not None:
            out["tool_calls"] = [ToolCall.from_dict(c).to_dict() for c in self.tool_calls]
        if self.tool_call_id is not None:
            out["tool_call_id"] = self.tool_call_id
        return out

    @property
    def text(self) -> str:
        """The text of the message: its content, or the text parts of multimodal content joined by
        one space (image and other parts left out: a backend that cannot send them refuses them
        rather than reading this).

        This is the one rule wherever llmclient flattens a message to text (the local backend's
        prompts, their truncation), and the one ``transformers serve`` applies, so
        ``"Name three"`` + ``"colours."`` reads ``"Name three colours."`` on every backend.
        """
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        texts = (str(p.get("text", "")) for p in self.content if p.get("type") == "text")
        return TEXT_PART_SEPARATOR.join(texts)


MessageLike = Message | Mapping[str, Any]
"""A :class:`Message` or an OpenAI-shaped dict such as ``{"role": "user", "content": "Hi"}``."""

Messages = str | Iterable[MessageLike]
"""A conversation: a list of messages (dicts or :class:`Message`), or one user prompt as a string."""

_MESSAGE_KEYS = frozenset(f.name for f in fields(Message))


def to_message(item: MessageLike, index: int = 0) -> Message:
    """Check one message and return it as a :class:`Message`.

    Raises :class:`InvalidRequestError` naming the message's position and what is wrong with it.
    """
    if isinstance(item, Message):
        if item.tool_calls and not all(isinstance(c, ToolCall) for c in item.tool_calls):
            item = replace(item, tool_calls=_tool_calls(item.tool_calls, index))
        _check_parts(item.content, index)
        _refuse_lone_surrogates(item, index)
        return item
    if not isinstance(item, Mapping):
        raise InvalidRequestError(
            f"messages[{index}] must be a dict like {{'role': 'user', 'content': '...'}} or a Message, "
            f"got {type(item).__name__}"
        )
    role = item.get("role")
    if not isinstance(role, str) or role not in _ROLES:
        hint = suggest(str(role), _ROLES)
        raise InvalidRequestError(
            f"messages[{index}] has role {role!r}; expected one of {sorted(_ROLES)}{hint}"
        )
    unknown = set(item) - _MESSAGE_KEYS
    if unknown:
        raise InvalidRequestError(
            f"messages[{index}] has unknown key(s) {sorted(unknown)}; allowed: {sorted(_MESSAGE_KEYS)}"
        )
    content = item.get("content", "")
    if content is not None and not isinstance(content, (str, list)):
        raise InvalidRequestError(
            f"messages[{index}].content must be a string or a list of content parts, "
            f"got {type(content).__name__}"
        )
    _check_parts(content, index)
    for key in ("name", "tool_call_id"):
        if item.get(key) is not None and not isinstance(item[key], str):
            raise InvalidRequestError(f"messages[{index}].{key} must be a string, got {item[key]!r}")
    tool_calls = item.get("tool_calls")
    message = Message(
        role=cast(Role, role),
        content=content,
        name=item.get("name"),
        tool_calls=None if tool_calls is None else _tool_calls(tool_calls, index),
        tool_call_id=item.get("tool_call_id"),
    )
    _refuse_lone_surrogates(message, index)
    return message


_IMAGE_LOOKALIKES = frozenset({"image", "input_image", "image_base64"})
"""Part types people write for images in other APIs' shapes; refused with the OpenAI shape to use."""


def _check_parts(content: Any, index: int) -> None:
    """Check the shape of every content part of message ``index`` (nothing to check in a string)."""
    for part_index, part in enumerate(content if isinstance(content, list) else ()):
        _check_part(part, f"messages[{index}].content[{part_index}]")


def _check_part(part: Any, where: str) -> None:
    """Check one content part's shape: a text part holds a string, an image part a URL.

    Other part types pass unchanged to servers that may know them; image look-alikes from other
    APIs (Anthropic's ``image``, the Responses API's ``input_image``) are refused with the fix.
    """
    if not isinstance(part, Mapping) or not isinstance(part.get("type"), str):
        raise InvalidRequestError(
            f"{where} must be a content part like {{'type': 'text', 'text': '...'}} or "
            f"llmclient.image(...), got {part_repr(part)}"
        )
    kind = part["type"]
    if kind == "text" and not isinstance(part.get("text"), str):
        raise InvalidRequestError(f"{where} is a text part without a string 'text': {part_repr(part)}")
    if kind == "image_url":
        image_url_of(part, where)
    elif kind in _IMAGE_LOOKALIKES:
        raise InvalidRequestError(
            f"{where} has type {kind!r}; images go in the OpenAI shape {IMAGE_PART_SHAPE}, "
            f"which llmclient.image(path_bytes_pil_or_url) builds"
        )


def _tool_calls(calls: Any, index: int) -> list[ToolCall]:
    """A message's ``tool_calls`` as :class:`ToolCall` objects; an error naming the one at fault."""
    if not isinstance(calls, list):
        raise InvalidRequestError(
            f"messages[{index}].tool_calls must be a list of tool calls in the OpenAI shape, got {calls!r}"
        )
    return [ToolCall.from_dict(c, f"messages[{index}].tool_calls[{i}]") for i, c in enumerate(calls)]


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def _refuse_lone_surrogates(message: Message, index: int) -> None:
    """Refuse a lone UTF-16 surrogate (left where JavaScript cut an emoji): valid JSON, never sendable."""
    content = message.content
    parts = [
        (f"content[{i}].text", p.get("text")) for i, p in enumerate(content or ()) if isinstance(p, dict)
    ]
    texts: list[tuple[str, Any]] = [("content", content), *parts, ("name", message.name)]
    for where, text in texts:
        found = _LONE_SURROGATE.search(text) if isinstance(text, str) else None
        if found:
            raise InvalidRequestError(
                f"messages[{index}].{where} holds a lone UTF-16 surrogate (\\u{ord(found.group()):04x}) at "
                f"character {found.start()}, which is not text and cannot be sent; it usually comes from "
                f"text cut in the middle of an emoji: remove it or repair the text"
            )


def to_messages(messages: str | Iterable[MessageLike]) -> list[Message]:
    """Normalise a conversation; a bare string is taken as one user message."""
    if isinstance(messages, str):
        return [to_message(Message(role="user", content=messages))]
    out = [to_message(m, i) for i, m in enumerate(messages)]
    if not out:
        raise InvalidRequestError("messages is empty; pass at least one message")
    return out
