"""The exception tree drawn at the top of errors.py is the tree the code defines."""

from __future__ import annotations

import re

import llmclient.errors as errors
from llmclient import pipeline, tools
from llmclient.errors import LLMClientError


def _drawn() -> dict[str, int]:
    """Each class in the drawing, with its depth in the tree."""
    doc = errors.__doc__ or ""
    drawing = doc[doc.index("    LLMClientError ") :]
    depths = {}
    for line in drawing.splitlines():
        match = re.match(r"^ {4}((?:\|   |    )*)(?:\+-- )?([\w.]+)", line)
        if match:
            name = match.group(2).removeprefix("pipeline.").removeprefix("tools.")
            depths[name] = len(match.group(1)) // 4 + ("+--" in line)
    return depths


def _defined() -> dict[str, type[LLMClientError]]:
    classes = [*vars(errors).values(), *vars(pipeline).values(), *vars(tools).values()]
    return {c.__name__: c for c in classes if isinstance(c, type) and issubclass(c, LLMClientError)}


def test_every_error_class_is_in_the_drawn_tree_at_its_depth() -> None:
    drawn, defined = _drawn(), _defined()
    assert set(drawn) == set(defined)
    for name, cls in defined.items():
        depth = len([c for c in cls.__mro__ if issubclass(c, LLMClientError)]) - 1
        assert drawn[name] == depth, name


def test_the_drawing_marks_exactly_the_retryable_classes() -> None:
    doc = errors.__doc__ or ""
    marked = set(re.findall(r"(\w+) \*", doc))
    assert marked == {name for name, cls in _defined().items() if cls.retryable}
