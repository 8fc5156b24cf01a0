"""Record modes: what a cassette does with a request that has no recorded reply.

Chat cassettes (:mod:`llmclient.testing.recording`), HTTP cassettes (:mod:`llmclient.testing.cassettes.vcr`)
and the pytest plugin share these four modes, so ``--llm-record-mode`` means the same everywhere.
"""

from __future__ import annotations

from typing import Literal, get_args

from llmclient.errors import ConfigError

RecordMode = Literal["none", "once", "new_episodes", "all"]
"""What a cassette does with a request.

``none``: replay only; a request with no recorded reply is an error (the CI setting).
``once``: record into a cassette that does not exist yet; once it exists, behave as ``none``.
``new_episodes``: replay what is recorded, record what is not.
``all``: record every request afresh; the entries the file held before are dropped when it is saved.
"""


RECORD_MODES: tuple[RecordMode, ...] = get_args(RecordMode)
"""Every record mode, in the order of the :data:`RecordMode` literal."""


def check_mode(mode: str) -> RecordMode:
    """``mode`` as a :data:`RecordMode`; a :class:`ConfigError` naming the choices if it is not one."""
    if mode not in RECORD_MODES:
        from llmclient._settings import suggest

        raise ConfigError(
            f"unknown record mode {mode!r}{suggest(str(mode), RECORD_MODES)}; use one of {RECORD_MODES}"
        )
    return mode


def may_record(mode: RecordMode, existed: bool) -> bool:
    """Whether ``mode`` records a request that has no reply in a cassette that ``existed`` at load."""
    return mode in ("new_episodes", "all") or (mode == "once" and not existed)


def record_hint(mode: RecordMode, existed: bool) -> str:
    """How to get a missing reply recorded, for the error raised under ``mode``.

    Mode ``once`` records only into a cassette that does not exist yet (or is empty), so it is
    offered only for those; into an existing one, ``new_episodes`` records and ``all`` re-records.
    """
    how = "(pytest: --llm-record-mode=new_episodes), or re-record the whole cassette with mode 'all'."
    if not existed:
        return f"Record it with mode 'once' or 'new_episodes' {how}"
    if mode == "once":
        return (
            "Mode 'once' records only into a cassette that does not exist yet: record the new request "
            f"with mode 'new_episodes' {how}"
        )
    return f"The cassette exists already: record the new request with mode 'new_episodes' {how}"
