"""Turning a row into the messages a model gets: a Jinja2 template, a system prompt, few-shot turns."""

from __future__ import annotations

import functools
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from llmclient.errors import InvalidRequestError
from llmclient.types import Message, MessageLike, to_message

if TYPE_CHECKING:
    import jinja2


class TemplateError(InvalidRequestError):
    """A row cannot be rendered: the template uses a field the row lacks or holds as null, or it is broken."""


Nulls = Literal["error", "empty"]
"""What a null field (JSON ``null``, a short CSV row, a missing Parquet value) renders as."""


class _NullPrinted(Exception):
    """Raised inside rendering when the template prints a null value."""


@dataclass(frozen=True)
class PromptTemplate:
    """The prompt for every row: ``template`` rendered with the row's fields as the user turn.

    Undefined fields are errors (Jinja2's ``StrictUndefined``), so a missing column fails that row
    with the field's name instead of sending a prompt with a hole in it. So is a null the template
    prints (never the word ``None``), unless ``nulls="empty"`` renders nulls as ``""``; a template may
    still test a null (``{% if comment %}``) without printing it.

    Attributes:
        template: Jinja2 source of the user message, e.g. ``"Classify: {{ review }}"``.
        system: an optional system message (also a template).
        few_shot: example turns placed between the system message and the row's turn.
        nulls: ``"error"`` (a printed null fails the row) or ``"empty"`` (nulls render as ``""``).
    """

    template: str
    system: str | None = None
    few_shot: Sequence[MessageLike] = field(default_factory=tuple)
    nulls: Nulls = "error"

    def __post_init__(self) -> None:
        if self.nulls not in ("error", "empty"):
            raise InvalidRequestError(f"nulls must be 'error' or 'empty', got {self.nulls!r}")
        for index, turn in enumerate(self.few_shot):
            to_message(turn, index)
        self._compiled  # noqa: B018 - compile now: a syntax error is reported before any row runs

    @functools.cached_property
    def _compiled(self) -> tuple[jinja2.Template, jinja2.Template | None, frozenset[str]]:
        import jinja2
        import jinja2.meta

        env = jinja2.Environment(undefined=jinja2.StrictUndefined, finalize=self._finalize)
        sources = [self.template] if self.system is None else [self.template, self.system]
        try:
            fields = frozenset().union(
                *(jinja2.meta.find_undeclared_variables(env.parse(s)) for s in sources)
            )
            return (
                env.from_string(self.template),
                env.from_string(self.system) if self.system is not None else None,
                fields,
            )
        except jinja2.TemplateSyntaxError as exc:
            raise TemplateError(
                f"the prompt template has a syntax error on line {exc.lineno}: {exc.message}"
            ) from exc

    def _finalize(self, value: Any) -> Any:
        if value is None:
            if self.nulls == "empty":
                return ""
            raise _NullPrinted
        return value

    def render(self, row: Mapping[str, Any]) -> list[Message]:
        """The conversation for ``row``; a :class:`TemplateError` names a field the row lacks or holds null.

        A message that cannot be sent (a lone UTF-16 surrogate in a field) raises
        :class:`~llmclient.errors.InvalidRequestError`.
        """
        import jinja2

        user, system, fields = self._compiled
        if self.nulls == "empty":
            row = {k: "" if v is None else v for k, v in row.items()}
        source = self.template
        try:
            messages = []
            if system is not None:
                source = self.system or ""
                messages.append(Message(role="system", content=system.render(row)))
                source = self.template
            messages.extend(to_message(turn, i) for i, turn in enumerate(self.few_shot))
            messages.append(Message(role="user", content=user.render(row)))
        except jinja2.UndefinedError as exc:
            raise TemplateError(
                f"the template uses a field this row does not have ({exc.message}); "
                f"row fields: {', '.join(sorted(map(str, row))) or 'none'}"
            ) from exc
        except Exception as exc:  # a printed null, or a filter or expression failing on this row's values
            nulls = sorted(f for f in fields if f in row and row[f] is None)
            if nulls:
                raise TemplateError(
                    f"{', '.join(map(repr, nulls))} {'is' if len(nulls) == 1 else 'are'} null in this row; "
                    f"fill it in, or render nulls as empty text with nulls='empty' (--nulls empty)"
                ) from exc
            if isinstance(exc, _NullPrinted):
                raise TemplateError("the template prints a value that is null in this row") from exc
            where, hint = _where(exc, source), _hint(exc)
            raise TemplateError(
                f"the template failed on this row{where}: {type(exc).__name__}: {exc}{hint}"
            ) from exc
        return [to_message(m, i) for i, m in enumerate(messages)]

    def fingerprint(self) -> dict[str, Any]:
        """What identifies this prompt for resuming: a changed template is new work."""
        return {
            "template": self.template,
            "system": self.system,
            "few_shot": [to_message(t).to_dict() for t in self.few_shot],
        }


def _where(error: BaseException, source: str) -> str:
    """`` at line N: {% the expression %}``: the template line that was running when ``error`` was
    raised (Jinja2 names its frames ``<template>`` with the template's own line numbers).
    """
    lines = [
        n for frame, n in traceback.walk_tb(error.__traceback__) if frame.f_code.co_filename == "<template>"
    ]
    source_lines = source.splitlines()
    if not lines or not 0 < lines[-1] <= len(source_lines):
        return ""
    text = source_lines[lines[-1] - 1].strip()
    shown = text if len(text) <= 80 else text[:77] + "..."
    return f" at template line {lines[-1]} ({shown})"


def _hint(error: BaseException) -> str:
    """The likely fix for a comparison of text with a number: CSV fields are always text."""
    text = str(error)
    if isinstance(error, TypeError) and "'str'" in text and ("'int'" in text or "'float'" in text):
        return "; fields read from CSV are text: convert them in the template, e.g. {% if stars|int < 3 %}"
    return ""
