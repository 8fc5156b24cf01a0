"""Tool-call replies in the OpenAI API's shape, plain and streamed, with the quirks real servers have,
and :class:`ToolCallHandler`, which answers with calls or text as a function of the request decides.

:func:`tool_call` makes one call; :func:`tool_call_completion` a non-streamed reply holding calls;
:func:`tool_call_chunks` the chunks a stream of calls is sent as, as OpenAI sends them by default, or
as other servers do (:class:`Quirks`): every call under ``index: 0`` (Ollama), no ``index``, the name
repeated in every fragment, ``arguments`` as a JSON object, ids on a later fragment, missing or empty,
and ``finish_reason: "stop"`` after calls.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from llmclient.testing.server.exchange import Reply, Request
from llmclient.testing.server.replies import OpenAIHandler, completion, json_reply, sse_reply

IdStyle = Literal["first", "late", "every", "missing", "empty"]
"""Where a streamed call's id is sent: on its first fragment (OpenAI), on its second, on every one,
never, or as ``""``."""


def tool_call(name: str, arguments: Mapping[str, Any] | str = "{}", id: str = "call_1") -> dict[str, Any]:
    """One call in the OpenAI shape; ``arguments`` given as a dict are written as JSON text."""
    text = arguments if isinstance(arguments, str) else json.dumps(arguments)
    return {"id": id, "type": "function", "function": {"name": name, "arguments": text}}


def tool_call_completion(
    calls: Sequence[Mapping[str, Any]],
    *,
    text: str | None = None,
    finish_reason: str = "tool_calls",
    **kwargs: Any,
) -> dict[str, Any]:
    """A ``chat.completion`` whose message holds ``calls`` (content ``null`` unless ``text``);
    ``kwargs`` as :func:`~llmclient.testing.server.replies.completion` takes them.
    """
    reply = completion(text or "", finish_reason=finish_reason, **kwargs)
    message = reply["choices"][0]["message"]
    message["content"] = text
    message["tool_calls"] = [dict(call) for call in calls]
    return reply


@dataclass(frozen=True)
class Quirks:
    """How a server streams calls, where it departs from OpenAI.

    Attributes:
        index: ``"each"`` (call ``i`` under ``index: i``, OpenAI), ``"zero"`` (all under 0, Ollama),
            or ``"none"`` (no ``index`` key).
        ids: where each call's id goes (:data:`IdStyle`).
        repeat_name: send the full name in every fragment, not only the first.
        object_arguments: send the arguments as one JSON object, not as text in pieces.
        finish_reason: the finish reason after the calls (``"stop"`` from some servers).
        pieces: how many pieces text arguments are cut into.
    """

    index: Literal["each", "zero", "none"] = "each"
    ids: IdStyle = "first"
    repeat_name: bool = False
    object_arguments: bool = False
    finish_reason: str = "tool_calls"
    pieces: int = 3


def _fragments(position: int, call: Mapping[str, Any], quirks: Quirks) -> list[dict[str, Any]]:
    """The fragments one call is streamed as."""
    function = call["function"]
    arguments = function["arguments"]
    if quirks.object_arguments:
        parts: list[Any] = [json.loads(arguments)]
    else:
        size = max(1, -(-len(arguments) // quirks.pieces))
        parts = ["", *(arguments[i : i + size] for i in range(0, len(arguments), size))]
    out = []
    for number, part in enumerate(parts):
        fragment: dict[str, Any] = {}
        if quirks.index != "none":
            fragment["index"] = position if quirks.index == "each" else 0
        wanted = {"first": number == 0, "late": number == 1, "every": True}.get(quirks.ids, False)
        if wanted or quirks.ids == "empty":
            fragment["id"] = "" if quirks.ids == "empty" else call["id"]
            fragment["type"] = "function"
        body: dict[str, Any] = {"arguments": part}
        if number == 0 or quirks.repeat_name:
            body = {"name": function["name"], **body}
        fragment["function"] = body
        out.append(fragment)
    return out


def tool_call_chunks(
    calls: Sequence[Mapping[str, Any]],
    *,
    quirks: Quirks | None = None,
    model: str = "test-model",
    id: str = "chatcmpl-test",
    prompt_tokens: int = 5,
) -> list[dict[str, Any]]:
    """The ``chat.completion.chunk`` objects that stream ``calls``: a role chunk, one chunk per
    fragment (calls one after another), the finish chunk and the usage chunk.
    """
    quirks = quirks or Quirks()
    created = int(time.time())

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return {"id": id, "object": "chat.completion.chunk", "created": created, "model": model,
                "choices": [choice], "usage": None}  # fmt: skip

    out = [chunk({"role": "assistant", "content": None})]
    for position, call in enumerate(calls):
        out.extend(chunk({"tool_calls": [fragment]}) for fragment in _fragments(position, call, quirks))
    out.append(chunk({}, quirks.finish_reason))
    usage = {"prompt_tokens": prompt_tokens, "completion_tokens": 7, "total_tokens": prompt_tokens + 7}
    out.append({"id": id, "object": "chat.completion.chunk", "created": created, "model": model,
                "choices": [], "usage": usage})  # fmt: skip
    return out


Decision = str | Sequence[Mapping[str, Any]]
"""What a :class:`ToolCallHandler`'s function decides: the reply's text, or the calls to make."""


class ToolCallHandler:
    """A handler that answers ``POST /v1/chat/completions`` with tool calls or text, as
    ``decide(body)`` returns calls (dicts from :func:`tool_call`) or a string; streamed when the
    request asks, with ``quirks``. Text replies come from an :class:`OpenAIHandler`.
    """

    def __init__(self, decide: Callable[[dict[str, Any]], Decision], *, quirks: Quirks | None = None) -> None:
        self.decide = decide
        self.quirks = quirks
        self._text = OpenAIHandler(lambda body: str(decide(body)))

    def __call__(self, request: Request) -> Reply:
        """Answer one request."""
        try:
            body = request.json()
        except ValueError:
            return self._text(request)
        decision = self.decide(body) if isinstance(body, dict) else ""
        if isinstance(decision, str):
            return self._text(request)
        model = str(body.get("model") or "test-model")
        if body.get("stream"):
            return sse_reply(tool_call_chunks(decision, quirks=self.quirks, model=model))
        return json_reply(tool_call_completion(decision, model=model))
