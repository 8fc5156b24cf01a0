"""Log records on stderr for the command line: ours labelled ``llmclient:``, nobody's printed twice.

Libraries such as huggingface_hub and transformers print their own records through handlers of
their own; a handler on the root logger that printed every record would print theirs a second
time, under our name. So the command's handler prints a record only where no handler of its own
logger's family has printed it already, labelled with the library it came from.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from typing import TextIO

OURS = "llmclient"
NO_BARS = "HF_HUB_DISABLE_PROGRESS_BARS"
"""Turns off the progress bars of huggingface_hub and transformers (loading weights) without -v."""


class _Stderr(logging.StreamHandler[TextIO]):
    """A handler writing to whatever ``sys.stderr`` is when a record comes (tests swap it)."""

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, value: TextIO) -> None:
        """The stream is always the current ``sys.stderr``; what ``StreamHandler`` sets is ignored."""


def _not_printed_yet(record: logging.LogRecord) -> bool:
    """Whether no handler below the root printed ``record``; labels it with its library's name."""
    logger: logging.Logger | None = logging.getLogger(record.name)
    while logger is not None and logger is not logging.root:
        if logger.handlers:
            return False
        logger = logger.parent
    record.library = record.name.split(".")[0]
    return True


@contextlib.contextmanager
def log_to_stderr(*, verbose: bool) -> Iterator[None]:
    """While a command runs: llmclient's records on stderr (INFO with ``verbose``, else WARNING),
    other libraries' warnings under their own names, each record once; without ``verbose``, no
    progress bars from loading a model.
    """
    handler = _Stderr()
    handler.addFilter(_not_printed_yet)
    handler.setFormatter(logging.Formatter("%(library)s: %(levelname)s %(message)s"))
    ours = logging.getLogger(OURS)
    root = logging.getLogger()
    saved = ours.level, root.level
    ours.setLevel(logging.INFO if verbose else logging.WARNING)
    if root.level == logging.NOTSET or root.level > logging.WARNING:
        root.setLevel(logging.WARNING)
    root.addHandler(handler)
    bars = os.environ.get(NO_BARS)
    if not verbose and bars is None:  # a later load of a model is silent; its first load says so itself
        os.environ[NO_BARS] = "1"  # read when huggingface_hub and transformers are imported
    try:
        yield
    finally:
        root.removeHandler(handler)
        ours.setLevel(saved[0])
        root.setLevel(saved[1])
        if bars is None:
            os.environ.pop(NO_BARS, None)
