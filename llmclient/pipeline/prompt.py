"""Turning a row into the messages a model gets: a Jinja2 template, a system prompt, few-shot turns."""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from llmclient.errors import InvalidRequestError
from llmclient.types import Message, MessageLike, to_message

if TYPE_CHECKING:
    import jinja2


class TemplateError(InvalidRequestError):
    """A row cannot be rendered: the template uses a field the row lacks, or the template is broken."""


@dataclass(frozen=True)
class PromptTemplate:
    """The prompt for every row: ``template`` rendered with the row's fields as the user turn.

    Undefined fields are errors (Jinja2's ``StrictUndefined``), so a missing column fails that row
    with the field's name instead of sending a prompt with a hole in it.

    Attributes:
        template: Jinja2 source of the user message, e.g. ``"Classify: {{ review }}"``.
        system: an optional system message (also a template).
        few_shot: example turns placed between the system message and the row's turn.
    """

    template: str
    system: str | None = None
    few_shot: Sequence[MessageLike] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        for index, turn in enumerate(self.few_shot):
            to_message(turn, index)
        self._compiled  # noqa: B018 - compile now: a syntax error is reported before any row runs

    @functools.cached_property
    def _compiled(self) -> tuple[jinja2.Template, jinja2.Template | None]:
        import jinja2

        env = jinja2.Environment(undefined=jinja2.StrictUndefined)
        try:
            return (
                env.from_string(self.template),
                env.from_string(self.system) if self.system is not None else None,
            )
        except jinja2.TemplateSyntaxError as exc:
            raise TemplateError(
                f"the prompt template has a syntax error on line {exc.lineno}: {exc.message}"
            ) from exc

    def render(self, row: Mapping[str, Any]) -> list[Message]:
        """The conversation for ``row``; a :class:`TemplateError` names a field the row lacks."""
        import jinja2

        user, system = self._compiled
        try:
            messages = [Message(role="system", content=system.render(row))] if system is not None else []
            messages.extend(to_message(turn, i) for i, turn in enumerate(self.few_shot))
            messages.append(Message(role="user", content=user.render(row)))
        except jinja2.UndefinedError as exc:
            raise TemplateError(
                f"the template uses a field this row does not have ({exc.message}); "
                f"row fields: {', '.join(sorted(row)) or 'none'}"
            ) from exc
        return messages

    def fingerprint(self) -> dict[str, Any]:
        """What identifies this prompt for resuming: a changed template is new work."""
        return {
            "template": self.template,
            "system": self.system,
            "few_shot": [to_message(t).to_dict() for t in self.few_shot],
        }
