"""Everything a run is asked to do, besides the backend and the rows: one frozen, checked object.

:func:`llmclient.pipeline.run` builds it from its keyword arguments and the ``llmclient run``
command from its flags; the runner reads it and nothing else.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, cast

from llmclient.errors import InvalidRequestError
from llmclient.pipeline.prompt import Nulls, PromptTemplate
from llmclient.structured import Choice, output_format
from llmclient.types import GenerationOptions, GenerationParams, MessageLike


@dataclass(frozen=True)
class RunOptions:
    """How to run a prompt over a dataset: the prompt, where results go, and how fast and how much.

    Built once, checked once: a bad value (``concurrency`` below 1, a template with a syntax error,
    an unknown generation parameter, a ``response_format`` that is no format) raises here, before any
    backend is loaded or row is read.
    """

    template: str
    """Jinja2 source of the user message, rendered with each row's fields."""
    output: str | os.PathLike[str]
    """The results file (JSON Lines), appended to; a rerun skips rows it already holds."""
    system: str | None = None
    """An optional system message (also a template)."""
    few_shot: Sequence[MessageLike] = ()
    """Example turns placed between the system message and each row's turn."""
    params: Mapping[str, Any] = field(default_factory=dict)
    """Generation parameters for every row (``max_new_tokens``, ``temperature``, ...)."""
    response_format: Any = None
    """What every reply must be (a pydantic model class, a JSON Schema dict, ``llmclient.JSON``,
    ``llmclient.Choice``, ``llmclient.Regex``); each ok line gets its checked value as ``parsed``, and a
    reply that does not pass fails its row. Held as an :class:`~llmclient.structured.OutputFormat`."""
    choices: Sequence[str] | None = None
    """Classify each row by scoring these labels (``backend.ascore``) instead of generating: each ok
    line gets the chosen label as ``parsed`` and every label's probability in ``scores``. A backend
    that cannot score fails its rows saying why; ``response_format=Choice([...])`` is the constrained
    generation of one of them instead."""
    id_field: str | None = None
    """The field that identifies a row; by default a row is identified by all its fields."""
    keep_fields: Sequence[str] | None = None
    """Input fields copied into each result line; by default all of them."""
    concurrency: int = 16
    """Requests in flight at most; at least 1."""
    requests_per_minute: float | None = None
    """Request starts per minute at most (a number above 0); ``None`` for no limit."""
    retry_failed: bool = False
    """Try again the rows that failed in an earlier run (by default they are skipped)."""
    dry_run: bool = False
    """Render every prompt and count tokens where the backend can; call no model, write nothing."""
    limit: int | None = None
    """Only the first ``limit`` rows of the input."""
    progress: bool | None = None
    """Show a progress bar on stderr; by default when stderr is a terminal."""
    fsync: bool = False
    """Flush each result line to disk, so it survives a power loss (a disk flush per row)."""
    nulls: Nulls = "error"
    """A null field the template prints fails its row (``"error"``), or renders as ``""`` (``"empty"``)."""
    max_cost: float | None = None
    """Start no more rows once the run's cost would pass this (in the provider's unit, as
    ``usage.cost``); rows in flight finish and are written, and a rerun continues. ``None``: no limit."""

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise InvalidRequestError(f"concurrency must be >= 1, got {self.concurrency}")
        rpm = self.requests_per_minute
        if rpm is not None and (
            isinstance(rpm, bool) or not isinstance(rpm, (int, float)) or not math.isfinite(rpm) or rpm <= 0
        ):
            raise InvalidRequestError(
                f"requests_per_minute (--rpm) must be a number above 0, got {rpm!r}; "
                f"leave it out for no limit"
            )
        cap = self.max_cost
        if cap is not None and (
            isinstance(cap, bool) or not isinstance(cap, (int, float)) or not math.isfinite(cap) or cap <= 0
        ):
            raise InvalidRequestError(
                f"max_cost (--max-cost) must be a number above 0, got {cap!r}; leave it out for no limit"
            )
        if isinstance(self.few_shot, (str, bytes, Mapping)):
            raise InvalidRequestError(
                f"few_shot must be a list of messages like [{{'role': 'user', 'content': '...'}}], "
                f"got a {type(self.few_shot).__name__}"
            )
        # Copies, so the caller's lists and dicts changing later cannot change a run in flight.
        object.__setattr__(self, "few_shot", tuple(self.few_shot))
        object.__setattr__(self, "params", MappingProxyType(dict(self.params)))
        if self.keep_fields is not None:
            object.__setattr__(self, "keep_fields", tuple(self.keep_fields))
        self._check_format()
        self.prompt  # noqa: B018 - a template syntax error is reported before any row runs
        self.generation  # noqa: B018 - so is an unknown or out-of-range parameter

    @functools.cached_property
    def prompt(self) -> PromptTemplate:
        """The compiled prompt: template, system message and few-shot turns."""
        return PromptTemplate(self.template, self.system, tuple(self.few_shot), self.nulls)

    def _check_format(self) -> None:
        """Check the reply's format, given once by ``response_format``, ``choices`` or ``params``.

        ``response_format`` is held as its :class:`~llmclient.structured.OutputFormat` and ``choices``
        as a tuple (checked as ``Choice`` checks its options); the format in force is
        :attr:`generation`'s ``response_format``, and a run with ``choices`` generates nothing.
        """
        given = [
            name
            for name, value in (
                ("response_format", self.response_format),
                ("choices", self.choices),
                ("params['response_format']", self.params.get("response_format")),
            )
            if value is not None
        ]
        if len(given) > 1:
            raise InvalidRequestError(
                f"{' and '.join(given)} are both given; give the reply's format once (choices=[...] "
                f"scores the labels and generates nothing; response_format=Choice([...]) generates one)"
            )
        if self.response_format is not None:
            object.__setattr__(self, "response_format", output_format(self.response_format))
        if self.choices is not None:  # a bare string or an empty list is refused by Choice
            object.__setattr__(self, "choices", Choice(self.choices).options)
            if len(self.choices) < 2:
                raise InvalidRequestError(
                    f"choices needs at least two labels to choose between, got {list(self.choices)!r}"
                )

    @functools.cached_property
    def generation(self) -> GenerationParams:
        """The run's generation parameters, checked: ``params`` with ``response_format`` in them
        (a ``choices`` run scores, so it has none).

        The one home of the run's parameters: the resume key is made from them, and every request
        is sent with them (:attr:`call_options`).
        """
        params = dict(self.params)
        if self.response_format is not None:
            params["response_format"] = self.response_format
        return GenerationParams.from_options(params)

    @functools.cached_property
    def call_options(self) -> GenerationOptions:
        """:attr:`generation` as the keyword options of ``backend.achat``: the values that are set,
        each as it is (the :class:`~llmclient.structured.OutputFormat` itself, not a copy of its fields).
        """
        generation = self.generation
        options = {
            f.name: getattr(generation, f.name)
            for f in dataclasses.fields(generation)
            if getattr(generation, f.name) is not None
        }
        if not generation.extra:
            options.pop("extra", None)
        return cast(GenerationOptions, options)

    @property
    def path(self) -> Path:
        """``output`` as a path."""
        return Path(self.output)
