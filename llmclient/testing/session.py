"""One cassette for every backend a test wraps: :class:`CassetteSession`, what ``llm_cassette`` gives.

The pytest plugin's ``llm_cassette`` fixture opens a session on the test's cassette in the run's record
mode; each backend the test wraps (or loads) shares the cassette, and closing the session closes
them and saves the file.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from llmclient.testing.cassettes.chat import Cassette
from llmclient.testing.cassettes.entries import Interaction
from llmclient.testing.cassettes.modes import RecordMode, check_mode
from llmclient.testing.recording import BackendSource, RecordingBackend
from llmclient.testing.replay import CassetteBackend, ReplayBackend
from llmclient.types import GenerationParams

if TYPE_CHECKING:
    from llmclient.config import BackendConfig


class CassetteSession:
    """One cassette shared by every backend a test wraps: what the ``llm_cassette`` pytest fixture gives.

    :meth:`wrap` puts a backend (or a function building one) behind the cassette in the session's
    record mode; :meth:`load` does the same for ``llmclient.load(spec)``, building the backend only
    when a reply must be recorded. :meth:`close` closes the wrapped backends and saves the cassette.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        mode: RecordMode = "none",
        ignore: Iterable[str] = (),
        secrets: Iterable[str] = (),
    ) -> None:
        self.mode = check_mode(mode)
        self.cassette = Cassette(path, ignore=ignore, secrets=secrets)
        self._backends: list[CassetteBackend] = []

    @property
    def path(self) -> os.PathLike[str]:
        """The cassette file."""
        return self.cassette.path

    def wrap(
        self,
        backend: BackendSource | None = None,
        *,
        backend_type: str | None = None,
        model: str | None = None,
        name: str | None = None,
        defaults: GenerationParams | None = None,
    ) -> CassetteBackend:
        """``backend`` behind this session's cassette; with no backend, replay only."""
        wrapped: CassetteBackend = (
            ReplayBackend(self.cassette, backend_type=backend_type, model=model, name=name, defaults=defaults)
            if backend is None
            else RecordingBackend(
                backend,
                self.cassette,
                mode=self.mode,
                backend_type=backend_type,
                model=model,
                name=name,
                defaults=defaults,
            )
        )
        self._backends.append(wrapped)
        return wrapped

    def load(
        self, spec: str | Mapping[str, Any] | BackendConfig | None = None, **options: Any
    ) -> CassetteBackend:
        """``llmclient.load(spec, **options)`` behind this session's cassette, built only to record.

        The configuration is read now (cheaply), so the key's backend type and model, the name and
        the defaults are those configured.
        """
        import llmclient
        from llmclient.config import resolve

        config = resolve(spec)
        overrides = options.get("defaults")
        defaults = config.defaults
        if overrides:
            defaults = defaults.merged(
                GenerationParams.from_options(overrides, source="generation parameter in defaults")
            )
        return self.wrap(
            lambda: llmclient.load(config, **options),
            backend_type=options.get("type", config.type),
            model=options.get("model", config.model),
            name=options.get("name") or config.name or config.type,
            defaults=defaults,
        )

    def unused(self) -> list[Interaction]:
        """Interactions in the cassette that no request of this session replayed."""
        return self.cassette.unused()

    def close(self) -> None:
        """Close every wrapped backend and save the cassette."""
        try:
            for backend in self._backends:
                backend.close()
        finally:
            self.cassette.save()
