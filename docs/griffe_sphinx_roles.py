"""A griffe extension for the API reference: the docstrings' Sphinx roles shown as code.

The docstrings cross-reference in Sphinx's words (``:class:`~llmclient.errors.ConfigError```), which
read well in an editor and in ``help()``, but mkdocstrings renders Google-style docstrings as
Markdown, where a role is literal text. This turns each role into inline code with the text Sphinx
would show: the last name with ``~``, the name as written otherwise (a relative name's leading dots
dropped), and ``()`` after a function or method. Loaded by mkdocs.yml (``extensions:``).
"""

from __future__ import annotations

import re
from typing import Any

import griffe

ROLE = re.compile(r":(?:py:)?(class|meth|func|attr|mod|data|exc|obj|const):`(~?)([^`]+)`")
"""A Sphinx cross-reference role: its kind, the ``~`` that shortens it, and the target."""


def as_code(match: re.Match[str]) -> str:
    """The role as Markdown inline code showing what Sphinx would show."""
    kind, short, target = match.groups()
    shown = target.rsplit(".", 1)[-1] if short else target.lstrip(".")
    if kind in ("meth", "func") and not shown.endswith(")"):
        shown += "()"
    return f"`{shown}`"


class SphinxRoles(griffe.Extension):
    """Rewrites every object's docstring before mkdocstrings parses it."""

    def on_object(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        """Once the object tree is built: the docstring's roles become inline code."""
        if obj.docstring is not None:
            obj.docstring.value = ROLE.sub(as_code, obj.docstring.value)
