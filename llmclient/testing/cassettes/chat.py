"""The chat cassette: recorded interactions, found again by a stable key over the normalised request.

A request's key is :func:`~llmclient.testing.cassettes.matching.request_key`: the SHA-256 of its
canonical JSON, less the fields the cassette is told to ignore. Entries with the same key replay in
the order they were recorded; once all have played, the last one repeats (``allow_repeats``): the
one repeat rule of :mod:`llmclient.testing.cassettes.index`, which VCR cassettes follow too. A
request with no entry gets an error naming the closest recorded request and each field that differs.

Everything recorded is scrubbed of secrets (:mod:`llmclient.testing.cassettes.scrubbing`), requests
are scrubbed the same way before matching, and the file is saved atomically and merged with what
other recorders saved meanwhile (:mod:`llmclient.testing.cassettes.files`). The entries' format is
:mod:`llmclient.testing.cassettes.entries`. Large ``data:`` URLs (images) are kept in blob files
beside the cassette and matched by content hash (:mod:`llmclient.testing.cassettes.blobs`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from llmclient.errors import CassetteError
from llmclient.testing.cassettes.blobs import BlobStore
from llmclient.testing.cassettes.entries import Interaction, chat_document, read_interactions
from llmclient.testing.cassettes.files import CassetteFile
from llmclient.testing.cassettes.index import ReplayIndex, miss_report
from llmclient.testing.cassettes.matching import differences, request_key, short_repr, without
from llmclient.testing.cassettes.scrubbing import Scrubber


class Cassette:
    """A chat cassette: recorded interactions, found by the key of their normalised request.

    Safe to share between threads and tasks. Nothing is written until :meth:`save`.

    Args:
        path: the YAML file; it need not exist yet.
        ignore: request fields left out of matching, e.g. ``("seed",)`` or ``("params.extra.user",)``.
        secrets: strings scrubbed from everything recorded, besides API-key-looking ones (those shorter
            than 8 characters are left alone: dummy keys such as ``"EMPTY"`` would mangle words).
        allow_repeats: replay the last matching entry again once all matching entries have played
            (the repeat rule of :mod:`llmclient.testing.cassettes.index`).
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
        self.scrubber = Scrubber(secrets)
        self.blobs = BlobStore(self.path)
        """The blob files large data URLs (images) are kept in, beside the YAML."""
        self._file = CassetteFile(self.path, read=read_interactions, document=chat_document)
        self._index = ReplayIndex(
            (
                self._loaded(Interaction.from_dict(item, f"{self.path} interaction {index}"))
                for index, item in enumerate(self._file.items)
            ),
            repeats=allow_repeats,
        )

    def _loaded(self, interaction: Interaction) -> Interaction:
        """A loaded interaction as it is matched: data URLs written inline (older cassettes) referred to."""
        request = self.blobs.refer(interaction.request)
        return interaction if request == interaction.request else replace(interaction, request=request)

    def _wanted(self, request: Mapping[str, Any]) -> Any:
        """A request as it is matched: large data URLs as blob references, then scrubbed."""
        return self.scrubber.value(self.blobs.refer(request))

    @property
    def allow_repeats(self) -> bool:
        """Whether the last matching entry replays again once all matching entries have played."""
        return self._index.repeats

    @property
    def interactions(self) -> list[Interaction]:
        """Every interaction, loaded then recorded, in order."""
        return self._index.entries

    @property
    def existed(self) -> bool:
        """Whether the file existed when the cassette was loaded."""
        return self._file.existed

    def __len__(self) -> int:
        return len(self._index)

    def add_secrets(self, secrets: Iterable[str]) -> None:
        """Scrub ``secrets`` from everything recorded from now on, whatever their shape (those shorter
        than 8 characters excepted): a recording backend adds the credentials of the backend it wraps.
        """
        self.scrubber.learn_all(secrets)

    def _keying(self, also_ignore: Iterable[str]) -> tuple[tuple[str, ...], Callable[[Interaction], str]]:
        """The ignored fields, and the key of an interaction's request without them."""
        ignore = (*self.ignore, *also_ignore)
        return ignore, lambda interaction: request_key(interaction.request, ignore)

    def find(self, request: Mapping[str, Any], *, also_ignore: Iterable[str] = ()) -> Interaction | None:
        """The next recorded interaction for ``request``, marked as played; ``None`` if there is none."""
        ignore, key_of = self._keying(also_ignore)
        return self._index.find(request_key(self._wanted(request), ignore), key_of, ignore)

    def record(self, interaction: Interaction) -> Interaction:
        """Add ``interaction`` (scrubbed, its large data URLs moved to blob files) for replay and for
        the next :meth:`save`; returns what was kept.
        """
        entry = interaction.to_dict()
        entry["request"] = self.blobs.refer(entry["request"], keep=True)
        scrubbed = Interaction.from_dict(self.scrubber.value(entry), "recorded interaction")
        self._index.add(scrubbed)
        self._file.add(scrubbed.to_dict())
        return scrubbed

    def start_over(self) -> None:
        """Forget what the file held: it is neither replayed nor kept when the cassette is saved."""
        self._index.drop_loaded()
        self._file.start_over()

    def unused(self) -> list[Interaction]:
        """The interactions loaded from the file that no request has replayed."""
        return self._index.unused()

    def miss_error(
        self, request: Mapping[str, Any], *, also_ignore: Iterable[str] = (), hint: str = ""
    ) -> CassetteError:
        """The error for a request with no recorded reply: the closest recorded request, and how."""
        ignore, key_of = self._keying(also_ignore)
        wanted = without(self._wanted(request), ignore)

        def diff(interaction: Interaction) -> list[str]:
            return differences(without(interaction.request, ignore), wanted)

        closest = self._index.closest(request_key(wanted), key_of, lambda i: len(diff(i)), ignore)
        return CassetteError(
            miss_report(
                [f"no recorded reply in cassette {self.path} for this request:", *_summary(wanted)],
                closest,
                noun="request",
                total=len(self.interactions),
                file_state=self._file.state,
                differences=diff,
                repeats_option="allow_repeats=True",
                tail=[f"(ignoring {', '.join(ignore)})" if ignore and closest else "", hint],
            )
        )

    def save(self) -> None:
        """Write what was recorded (merged with the file as it is now), its blob files first; nothing if
        nothing changed.
        """
        self.blobs.save()
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
