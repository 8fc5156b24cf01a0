"""The replay index both cassette levels share: which recorded entry answers a request, and what a miss
says.

Chat cassettes (:mod:`llmclient.testing.cassettes.chat`) and VCR cassettes
(:mod:`llmclient.testing.cassettes.vcr`) keep their entries in a :class:`ReplayIndex`, which counts
plays, applies the one repeat rule, lists unused entries and finds the closest entry for a miss. The
levels differ only in how they key a request (a chat cassette hashes its normalised request; a VCR
cassette the properties it matches on) and in the words of their miss reports.

The repeat rule (:meth:`ReplayIndex.find`): entries with the same key play in the order they were
recorded, each once; once all have played, the **last** one repeats where repeats are allowed (the
latest recording of a request is the one a re-record appended), else the request is a miss.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from llmclient.testing.cassettes.files import FileState

E = TypeVar("E")

_WHY_NONE: dict[FileState, str] = {
    "absent": " (the file does not exist).",
    "empty": " (the file is empty).",
    "loaded": ".",
}


@dataclass(frozen=True)
class Closest(Generic[E]):
    """The recorded entry nearest to a request that found none: for the miss report."""

    position: int
    """Where the entry sits among all the index's entries (for "interaction N")."""
    entry: E
    played_out: bool
    """The entry matches, but it (and every other match) has played and repeats are off."""


class ReplayIndex(Generic[E]):
    """Recorded entries found by key, with play counts and the shared repeat rule.

    ``key_of`` gives an entry's key under a *keying* (a hashable naming one way of keying, e.g. the
    fields a chat cassette ignores); the key table of each keying is built on first use and kept up to
    date as entries are added. Safe to share between threads and tasks.

    Args:
        entries: the entries loaded from the file, in recorded order.
        repeats: whether the last matching entry repeats once all matching entries have played.
    """

    def __init__(self, entries: Iterable[E], *, repeats: bool) -> None:
        self.repeats = repeats
        self._entries: list[E] = list(entries)
        self._loaded = len(self._entries)
        self._dropped = 0  # entries [0, _dropped) no longer count (record mode "all")
        self._plays = [0] * self._loaded
        self._tables: dict[Hashable, tuple[int, dict[Hashable, list[int]]]] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        """How many entries replay (those recorded since, included; dropped ones not)."""
        return len(self._entries) - self._dropped

    @property
    def entries(self) -> list[E]:
        """Every entry, in order: loaded, then recorded (dropped ones too, so positions stay put)."""
        return self._entries

    def _table(self, keying: Hashable, key_of: Callable[[E], Hashable]) -> dict[Hashable, list[int]]:
        """Key -> positions of the live entries under ``keying`` (extended to entries added since)."""
        done, table = self._tables.get(keying, (self._dropped, {}))
        for position in range(max(done, self._dropped), len(self._entries)):
            table.setdefault(key_of(self._entries[position]), []).append(position)
        self._tables[keying] = (len(self._entries), table)
        return table

    def find(self, key: Hashable, key_of: Callable[[E], Hashable], keying: Hashable = ()) -> E | None:
        """The entry that answers a request keyed ``key``, counted as played; ``None`` for a miss.

        The repeat rule: the first matching entry not yet played; once all have played, the last
        matching one again where :attr:`repeats` allows it.
        """
        with self._lock:
            positions = self._table(keying, key_of).get(key, [])
            chosen = next((p for p in positions if self._plays[p] == 0), None)
            if chosen is None and positions and self.repeats:
                chosen = positions[-1]
            if chosen is None:
                return None
            self._plays[chosen] += 1
            return self._entries[chosen]

    def add(self, entry: E) -> None:
        """Add a recorded entry; it counts as played (it answered the request that recorded it)."""
        with self._lock:
            self._entries.append(entry)
            self._plays.append(1)

    def drop_loaded(self) -> None:
        """Stop replaying the entries loaded from the file (record mode ``all``)."""
        with self._lock:
            if self._dropped < self._loaded:
                self._dropped = self._loaded
                self._tables.clear()

    def unused(self) -> list[E]:
        """The entries loaded from the file that no request has replayed (dropped ones excepted)."""
        with self._lock:
            return [self._entries[p] for p in range(self._dropped, self._loaded) if self._plays[p] == 0]

    def closest(
        self,
        key: Hashable,
        key_of: Callable[[E], Hashable],
        distance: Callable[[E], int],
        keying: Hashable = (),
    ) -> Closest[E] | None:
        """The live entry nearest a request that missed: a match that has played out, else the entry
        with the smallest ``distance`` (the first of equals); ``None`` when nothing is live.
        """
        with self._lock:
            positions = self._table(keying, key_of).get(key)
            if positions:
                return Closest(positions[-1], self._entries[positions[-1]], played_out=True)
            live = list(enumerate(self._entries))[self._dropped :]
        if not live:
            return None
        _, best = min((distance(entry), position) for position, entry in live)
        return Closest(best, self._entries[best], played_out=False)


def miss_report(
    head: Sequence[str],
    closest: Closest[E] | None,
    *,
    noun: str,
    total: int,
    file_state: FileState,
    differences: Callable[[E], list[str]],
    repeats_option: str,
    tail: Sequence[str] = (),
) -> str:
    """The text of a miss at either level: ``head``; then the closest recorded ``noun`` and what
    differs (at most 12 lines), or that it matches but played out and ``repeats_option`` would replay
    it; then ``tail`` (what was ignored, how to record).
    """
    lines = list(head)
    if closest is None:
        lines.append(f"The cassette holds no interactions{_WHY_NONE[file_state]}")
    elif closest.played_out:
        lines.append(
            f"Interaction {closest.position} matches but has already played: pass {repeats_option} "
            f"to replay it again, or record the repeat."
        )
    else:
        diffs = differences(closest.entry)
        lines.append(f"The closest recorded {noun} (interaction {closest.position} of {total}) differs in:")
        lines.extend(f"  {line}" for line in diffs[:12])
        if len(diffs) > 12:
            lines.append(f"  ... and {len(diffs) - 12} more")
    lines.extend(line for line in tail if line)
    return "\n".join(lines)
