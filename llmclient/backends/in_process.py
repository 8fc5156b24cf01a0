"""``InProcessBackend``: what every backend whose model runs in this process shares.

The model (an engine: a loaded transformers model, a ``vllm.LLM``) is built on first use, under a
lock so that concurrent first calls build one; a call that passed ``prepare`` just before ``close()``
never builds a fresh one after it, which nobody would close. Closing lets go of the engine. The
backend prices replies by its ``prices`` setting, since no provider reports a cost.
"""

from __future__ import annotations

import asyncio
import threading
from abc import abstractmethod
from typing import Generic, Protocol, TypeVar

from llmclient.backend import ChatBackend
from llmclient.cost import Prices
from llmclient.errors import BackendClosedError
from llmclient.params import GenerationParams


class Engine(Protocol):
    """A model run in this process, with everything around it; closing frees it."""

    def close(self) -> None:
        """Stop what runs on it and let go of the model."""


class PricedSettings(Protocol):
    """Settings that carry a ``prices`` table."""

    @property
    def prices(self) -> Prices:
        """Per-token prices; ``known`` when both are set."""


E = TypeVar("E", bound=Engine)


class InProcessBackend(ChatBackend, Generic[E]):
    """The base of in-process backends: an engine built lazily once, closed once, priced by config.

    A subclass sets ``settings`` and implements :meth:`_load_engine`; it reaches the engine through
    :meth:`_ensure` (or :meth:`_aensure` from async code).
    """

    in_process = True
    settings: PricedSettings

    def __init__(self, *, model: str, name: str | None, defaults: GenerationParams | None) -> None:
        super().__init__(model=model, name=name, defaults=defaults)
        self._engine: E | None = None
        self._engine_lock = threading.Lock()

    @abstractmethod
    def _load_engine(self) -> E:
        """Build the engine (this is where the heavy imports happen)."""

    @property
    def loaded(self) -> bool:
        """Whether the engine is built (it is built on the first call unless ``load="eager"``)."""
        return self._engine is not None

    @property
    def prices(self) -> Prices | None:
        """The ``prices`` setting, where both prices are set."""
        return self.settings.prices if self.settings.prices.known else None

    def _ensure(self) -> E:
        """The engine, built on first use; refused once the backend is closed (the check is made under
        the lock ``_close`` takes).
        """
        engine = self._engine
        if engine is not None and not self._closed:
            return engine
        with self._engine_lock:
            if self._closed:
                raise BackendClosedError()
            if self._engine is None:
                self._engine = self._load_engine()
            return self._engine

    async def _aensure(self) -> E:
        engine = self._engine
        if engine is not None and not self._closed:
            return engine
        return await asyncio.to_thread(self._ensure)

    def _close(self) -> None:
        with self._engine_lock:
            engine, self._engine = self._engine, None
        if engine is not None:
            engine.close()
