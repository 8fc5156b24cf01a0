"""``WrapperBackend``: the base of backends that add behaviour around another one.

Recording, replay and any user's cache or guard sit on it as siblings. It is the one place that
calls another backend's hooks, so no backend reaches into another object's private methods.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import replace

from llmclient.backend import ChatBackend, Messages
from llmclient.cost import Prices
from llmclient.errors import InvalidRequestError, LLMClientError
from llmclient.types import ChatRequest, ChatResponse, GenerationParams, StreamDelta


class WrapperBackend(ChatBackend):
    """A backend that adds behaviour around another one: the base of recording and replay backends.

    Every hook forwards to the inner backend's, with the inner backend's own defaults laid under the
    call's parameters (:meth:`for_inner`); a subclass overrides the hooks it changes. ``_chat_many`` is
    not forwarded: a sync batch runs the wrapper's own ``_achat_many``, so what a subclass does there
    holds for sync and async batches alike. The inner
    backend is given directly or as a function that builds it on first use (a replay that never
    misses never loads a model). Closing the wrapper closes the inner backend it holds.

    Args:
        inner: the backend to wrap, a function that builds it, or ``None`` where there is none.
        model: the model replies report; by default the inner backend's.
        name: the wrapper's name; by default the inner backend's.
        defaults: generation parameters for every call; by default the inner backend's.
    """

    def __init__(
        self,
        inner: ChatBackend | Callable[[], ChatBackend] | None,
        *,
        model: str | None = None,
        name: str | None = None,
        defaults: GenerationParams | None = None,
    ) -> None:
        built = inner if isinstance(inner, ChatBackend) else None
        super().__init__(
            model=model or (built.model if built else ""),
            name=name or (built.name if built else None),
            defaults=defaults or (built.defaults if built else None),
        )
        self._inner = built
        self._build: Callable[[], ChatBackend] | None = None if isinstance(inner, ChatBackend) else inner
        self._inner_lock = threading.Lock()

    @property
    def inner_built(self) -> ChatBackend | None:
        """The inner backend if it exists yet (it is built on first use when given as a function)."""
        return self._inner

    def inner(self) -> ChatBackend:
        """The inner backend, built now if it was given as a function."""
        if self._inner is None:
            with self._inner_lock:
                if self._inner is None:
                    if self._build is None:
                        raise InvalidRequestError(f"{type(self).__name__} {self.name!r} wraps no backend")
                    self._inner = self._build()
        return self._inner

    def for_inner(self, request: ChatRequest) -> ChatRequest:
        """``request`` as the inner backend expects it: its own defaults under the call's values."""
        inner = self.inner()
        return replace(request, params=inner.defaults.merged(request.params))

    @property
    def context_window(self) -> int | None:
        """The inner backend's window (building it if needed); ``None`` where it has none."""
        return self.inner().context_window

    def _chat(self, request: ChatRequest) -> ChatResponse:
        return self.inner()._chat(self.for_inner(request))

    async def _achat(self, request: ChatRequest) -> ChatResponse:
        return await self.inner()._achat(self.for_inner(request))

    def _stream(self, request: ChatRequest) -> Iterator[StreamDelta]:
        return self.inner()._stream(self.for_inner(request))

    def _astream(self, request: ChatRequest) -> AsyncIterator[StreamDelta]:
        return self.inner()._astream(self.for_inner(request))

    async def _achat_many(
        self, requests: Sequence[ChatRequest], concurrency: int
    ) -> list[ChatResponse | LLMClientError]:
        inner = self.inner()
        return await inner._achat_many([self.for_inner(r) for r in requests], concurrency)

    def count_tokens(self, messages: Messages) -> int:
        """The inner backend's count."""
        return self.inner().count_tokens(messages)

    def _close(self) -> None:
        if self._inner is not None:
            self._inner.close()

    async def _aclose(self) -> None:
        if self._inner is not None:
            await self._inner.aclose()

    @property
    def prices(self) -> Prices | None:
        """The inner backend's prices, once it is built."""
        return self._inner.prices if self._inner is not None else None

    @property
    def provider_name(self) -> str:
        """The inner backend's provider, once it is built; else this backend's own name."""
        return self._inner.provider_name if self._inner is not None else super().provider_name

    @property
    def credentials(self) -> tuple[str, ...]:
        """The inner backend's credentials, once it is built; a wrapper holds none of its own."""
        return self._inner.credentials if self._inner is not None else ()
