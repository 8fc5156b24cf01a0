"""Structured output when the model refuses ``response_format``, and replies sent back to be fixed.

With ``structured_fallback = "prompt"``, a request whose ``response_format`` the server refuses (an
:class:`~llmclient.errors.UnsupportedFeatureError` from a 400 that says so) is sent again with the
schema in the system message and no ``response_format``; the backend remembers the refusal, so the
next requests of that kind go that way at once. With ``structured_retries = N``, a reply that does not
validate is sent back, the validation error appended as a user message, up to N times; the last
failure raises :class:`~llmclient.errors.StructuredOutputError`.

The steps are written once, as a generator (:meth:`StructuredOutput.attempts`) that yields each
request to send and is given what came back; :func:`drive` and :func:`adrive` run it from sync and
async code. A stream is a single attempt: it may fall back, but is not validated and resent.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Generator
from dataclasses import replace
from typing import Any, TypeVar

from llmclient.backends.openai.failures import refuses_images
from llmclient.backends.openai.schemas import normalised
from llmclient.backends.openai.settings import OpenAICompatibleSettings
from llmclient.errors import StructuredOutputError, UnsupportedFeatureError
from llmclient.structured import OutputFormat
from llmclient.types import ChatRequest, ChatResponse, Message

T = TypeVar("T")

Attempts = Generator[ChatRequest, Any, T]
"""Yields each request to send; is sent what came back (or the refusal it raised); returns the result."""


def instruction(fmt: OutputFormat) -> str:
    """What the system message says in place of ``response_format``."""
    if fmt.kind == "choice":
        return "Reply with exactly one of these, and nothing else: " + ", ".join(fmt.choices)
    if fmt.kind == "regex":
        return f"Reply with only text that fully matches this regular expression, nothing else: {fmt.pattern}"
    if fmt.kind == "json_object":
        return "Reply with only a JSON object: no other text, no code fences."
    schema = json.dumps(fmt.schema, ensure_ascii=False)
    return (
        "Reply with only a JSON value that matches this JSON Schema: no other text, no code fences.\n"
        f"JSON Schema ({fmt.name}):\n{schema}"
    )


def prompted(request: ChatRequest) -> ChatRequest:
    """``request`` with its format described in the system message and no ``response_format``.

    The instruction joins the first message when that is a system (or developer) message, else
    becomes a system message of its own at the start.
    """
    fmt = request.params.response_format
    assert fmt is not None
    text = instruction(fmt)
    messages = list(request.messages)
    first = messages[0] if messages else None
    if first is not None and first.role in ("system", "developer") and isinstance(first.content, str):
        messages[0] = replace(first, content=f"{first.content}\n\n{text}" if first.content else text)
    else:
        messages.insert(0, Message(role="system", content=text))
    return replace(request, messages=tuple(messages), params=replace(request.params, response_format=None))


def corrected(sent: ChatRequest, reply: ChatResponse, error: StructuredOutputError) -> ChatRequest:
    """``sent`` with the reply that failed and the validation error appended, to be sent again."""
    problems = "; ".join(error.errors) or error.message
    note = (
        f"That reply does not match the required format: {problems}. "
        "Reply again with only the corrected output, nothing else."
    )
    return replace(
        sent,
        messages=(
            *sent.messages,
            Message(role="assistant", content=reply.text),
            Message(role="user", content=note),
        ),
    )


class StructuredOutput:
    """A backend's structured-output policy: the fallback, the retries, and the refusals seen."""

    def __init__(self, settings: OpenAICompatibleSettings) -> None:
        self.fallback = settings.structured_fallback == "prompt"
        retries = settings.structured_retries
        self.retries = retries if retries is not None else (1 if self.fallback else 0)
        self.refused: set[str] = set()
        """The ``response_format`` types the server refused: later requests go prompted at once."""

    def attempts(self, request: ChatRequest, *, validate: bool = True) -> Attempts[Any]:
        """The requests one call sends, and its result: the reply (normalised and checked when
        ``validate``), or for a stream whatever the send returned.
        """
        fmt = request.params.response_format
        if fmt is None:
            outcome = yield request
            if isinstance(outcome, Exception):
                raise outcome
            return outcome
        kind = "json_object" if fmt.kind == "json_object" else "json_schema"
        fall_back = self.fallback and kind in self.refused
        sent = prompted(request) if fall_back else request
        retries = self.retries if validate else 0
        while True:
            outcome = yield sent
            if isinstance(outcome, UnsupportedFeatureError):
                if not self.fallback or fall_back or refuses_images(outcome):  # images: the schema is fine
                    raise outcome
                if outcome.status_code is not None:  # the server refused the kind, not this schema
                    self.refused.add(kind)
                fall_back, sent = True, prompted(request)
                continue
            if not validate:
                return outcome
            reply = replace(outcome, text=normalised(fmt, outcome.text))
            try:
                fmt.parse(reply.text, finish_reason=reply.finish_reason)
            except StructuredOutputError as exc:
                if retries <= 0 or exc.finish_reason == "length":
                    raise
                retries -= 1
                sent = corrected(sent, reply, exc)
                continue
            return reply


class _Run:
    """One run of :meth:`StructuredOutput.attempts`: the request to send next, or the result."""

    def __init__(self, attempts: Attempts[Any]) -> None:
        self.attempts = attempts
        self.request = next(attempts)
        self.done = False
        self.result: Any = None

    def give(self, outcome: Any) -> None:
        """Hand back what the last request got; the next request, or the result, follows."""
        try:
            self.request = self.attempts.send(outcome)
        except StopIteration as finished:
            self.done, self.result = True, finished.value


def drive(attempts: Attempts[T], send: Callable[[ChatRequest], Any]) -> T:
    """Run ``attempts`` from sync code, sending each request with ``send``."""
    run = _Run(attempts)
    while not run.done:
        try:
            outcome = send(run.request)
        except UnsupportedFeatureError as exc:
            outcome = exc
        run.give(outcome)
    return run.result  # type: ignore[no-any-return]


async def adrive(attempts: Attempts[T], send: Callable[[ChatRequest], Awaitable[Any]]) -> T:
    """:func:`drive` from async code."""
    run = _Run(attempts)
    while not run.done:
        try:
            outcome = await send(run.request)
        except UnsupportedFeatureError as exc:
            outcome = exc
        run.give(outcome)
    return run.result  # type: ignore[no-any-return]
