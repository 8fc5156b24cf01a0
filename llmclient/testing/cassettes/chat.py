"""The chat cassette: recorded interactions, found again by a stable key over the normalised request.

A request's key is :func:`~llmclient.testing.matching.request_key`: the SHA-256 of its canonical JSON,
less the fields the cassette is told to ignore. Entries with the same key replay in the order they
were recorded; once all have played, the last one repeats (``allow_repeats``). A request with no
entry gets an error naming the closest recorded request and each field that differs.

Everything recorded is scrubbed of secrets (:mod:`llmclient.testing.scrubbing`), requests are scrubbed
the same way before matching, and the file is saved atomically and merged with what other recorders
saved meanwhile (:mod:`llmclient.testing.cassette_file`). The entries' format is
:mod:`llmclient.testing.chat_format`.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from llmclient.errors import CassetteError
from llmclient.testing.cassette_file import CassetteFile
from llmclient.testing.chat_format import Interaction, chat_document, read_interactions
from llmclient.testing.matching import differences, request_key, short_repr, without
from llmclient.testing.scrubbing import Scrubber


class Cassette:
    """A chat cassette: recorded interactions, found by the key of their normalised request.

    Safe to share between threads and tasks. Nothing is written until :meth:`save`.

    Args:
        path: the YAML file; it need not exist yet.
        ignore: request fields left out of matching, e.g. ``("seed",)`` or ``("params.extra.user",)``.
        secrets: strings scrubbed from everything recorded, besides API-key-looking ones.
        allow_repeats: replay the last matching entry again once all matching entries have played.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        ignore: Iterable[str] = (),
        secrets: Iterable[str] = (),
        allow_repeats: bool = True,
    ) -> None:
        self.path = Path(path)
        self.ignore: tuple[str, ...] = tuple(ignore)
        self.allow_repeats = allow_repeats
        self.scrubber = Scrubber(secrets)
        self._file = CassetteFile(self.path, read=read_interactions, document=chat_document)
        self.interactions: list[Interaction] = [
            Interaction.from_dict(item, f"{self.path} interaction {index}")
            for index, item in enumerate(self._file.items)
        ]
        self._loaded = len(self.interactions)
        self._dropped = 0  # interactions [0, _dropped) no longer count (record mode "all")
        self._plays = [0] * self._loaded
        self._index: dict[tuple[str, ...], tuple[int, dict[str, list[int]]]] = {}
        self._lock = threading.Lock()

    @property
    def existed(self) -> bool:
        """Whether the file existed when the cassette was loaded."""
        return self._file.existed

    def __len__(self) -> int:
        return len(self.interactions) - self._dropped

    def _keys(self, ignore: tuple[str, ...]) -> dict[str, list[int]]:
        """Key -> positions of the live interactions, for this set of ignored fields (built as needed)."""
        done, keys = self._index.get(ignore, (self._dropped, {}))
        for position in range(max(done, self._dropped), len(self.interactions)):
            keys.setdefault(request_key(self.interactions[position].request, ignore), []).append(position)
        self._index[ignore] = (len(self.interactions), keys)
        return keys

    def find(self, request: Mapping[str, Any], *, also_ignore: Iterable[str] = ()) -> Interaction | None:
        """The next recorded interaction for ``request``, marked as played; ``None`` if there is none."""
        ignore = (*self.ignore, *also_ignore)
        key = request_key(self.scrubber.value(request), ignore)
        with self._lock:
            positions = self._keys(ignore).get(key, [])
            chosen = next((p for p in positions if self._plays[p] == 0), None)
            if chosen is None and positions and self.allow_repeats:
                chosen = positions[-1]
            if chosen is None:
                return None
            self._plays[chosen] += 1
            return self.interactions[chosen]

    def record(self, interaction: Interaction) -> Interaction:
        """Add ``interaction`` (scrubbed) for replay and for the next :meth:`save`; returns what was kept."""
        scrubbed = Interaction.from_dict(self.scrubber.value(interaction.to_dict()), "recorded interaction")
        with self._lock:
            self.interactions.append(scrubbed)
            self._plays.append(1)  # it answered the request that recorded it
            self._file.add(scrubbed.to_dict())
        return scrubbed

    def start_over(self) -> None:
        """Forget what the file held: it is neither replayed nor kept when the cassette is saved."""
        with self._lock:
            if self._dropped < self._loaded:
                self._dropped = self._loaded
                self._index.clear()
                self._file.start_over()

    def unused(self) -> list[Interaction]:
        """The interactions loaded from the file that no request has replayed."""
        with self._lock:
            return [self.interactions[p] for p in range(self._dropped, self._loaded) if self._plays[p] == 0]

    def miss_error(
        self, request: Mapping[str, Any], *, also_ignore: Iterable[str] = (), hint: str = ""
    ) -> CassetteError:
        """The error for a request with no recorded reply: the closest recorded request, and how."""
        ignore = (*self.ignore, *also_ignore)
        wanted = without(self.scrubber.value(request), ignore)
        lines = [f"no recorded reply in cassette {self.path} for this request:", *_summary(wanted)]
        with self._lock:
            live = list(enumerate(self.interactions))[self._dropped :]
        if not live:
            lines.append(
                "The cassette holds no interactions"
                + ("." if self.existed else " (the file does not exist).")
            )
        else:
            scored = [(len(differences(without(i.request, ignore), wanted)), p) for p, i in live]
            _, best = min(scored)
            diffs = differences(without(self.interactions[best].request, ignore), wanted)
            lines.append(
                f"The closest recorded request (interaction {best} of {len(self.interactions)}) differs in:"
            )
            lines.extend(f"  {line}" for line in diffs[:12])
            if len(diffs) > 12:
                lines.append(f"  ... and {len(diffs) - 12} more")
            if ignore:
                lines.append(f"(ignoring {', '.join(ignore)})")
        if hint:
            lines.append(hint)
        return CassetteError("\n".join(lines))

    def save(self) -> None:
        """Write what was recorded (merged with the file as it is now); nothing if nothing changed."""
        self._file.save()


def _summary(request: Mapping[str, Any]) -> list[str]:
    head = ", ".join(f"{k}: {request[k]}" for k in ("backend", "model", "stream") if k in request)
    lines = [f"  {head}"] if head else []
    messages = request.get("messages") or []
    if messages and isinstance(messages[-1], Mapping):
        last = messages[-1]
        content = short_repr(last.get("content"))
        lines.append(f"  last of {len(messages)} messages ({last.get('role')}): {content}")
    if request.get("params"):
        lines.append(f"  params: {short_repr(request['params'])}")
    return lines
