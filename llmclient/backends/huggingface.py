"""The local backend: a Hugging Face model run in this process with transformers and torch.

``llmclient.load("hf:smollm2")`` runs the built-in SmolLM2-135M-Instruct; any hub id or local model
directory works the same way. Importing this module is cheap: torch and transformers load with the
model (``_hf_engine`` and the modules it uses), on the first call or when the backend is built with
``load = "eager"``.

How the pieces fit: ``_hf_loading`` finds and loads the model (``_hf_gguf`` converts GGUF weights
once, ``_hf_smollm2`` resolves the alias); ``_hf_prompting`` renders chat templates and fits the
window; ``_hf_generation`` runs one batched ``generate``; ``_hf_streaming`` streams it from a worker
thread; ``_hf_batching`` plans batches; ``_hf_worker`` is the one thread that runs the model, where
every reply is generated and concurrent calls are gathered into batches.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import fields, replace
from typing import TYPE_CHECKING, Any

from typing_extensions import Unpack

from llmclient._settings import read_settings
from llmclient.backend import ChatBackend, Messages
from llmclient.backends._hf_settings import DEFAULT_MAX_NEW_TOKENS, HuggingFaceSettings
from llmclient.config import BackendConfig
from llmclient.errors import LLMClientError, ModelLoadError
from llmclient.types import ChatRequest, ChatResponse, GenerationOptions, GenerationParams, StreamDelta, Usage

if TYPE_CHECKING:
    from llmclient.backends._hf_engine import Engine
    from llmclient.backends._hf_generation import Outcome

__all__ = ["DEFAULT_MAX_NEW_TOKENS", "HuggingFaceBackend", "HuggingFaceSettings", "from_config"]

_HEAVY = ("torch", "transformers", "tokenizers", "accelerate", "gguf", "safetensors", "huggingface_hub")
_DTYPE_NAMES = ("auto", "float32", "fp32", "bfloat16", "bf16", "float16", "fp16")


class HuggingFaceBackend(ChatBackend):
    """Chat with a local Hugging Face model.

    Args:
        model: ``"smollm2"`` (the built-in model), a hub id such as
            ``"HuggingFaceTB/SmolLM2-135M-Instruct"``, or a local model directory.
        settings: how to load and run it (:class:`HuggingFaceSettings`); keyword ``options`` override
            single fields, checked like a config file (``device="cpu"``, ``context_policy="truncate"``).
        name: the name replies carry in ``backend``.
        defaults: generation parameters for every call.

    The model loads on the first call unless ``load="eager"``. Every reply is generated on one worker
    thread, so the backend may be shared by threads, and calls that wait at the same time (``achat``
    tasks, ``chat`` from several threads) are batched together.
    """

    type_name = "huggingface"
    can_count_tokens = True

    def __init__(
        self,
        model: str = "smollm2",
        *,
        settings: HuggingFaceSettings | None = None,
        name: str | None = None,
        defaults: GenerationParams | None = None,
        **options: Any,
    ) -> None:
        super().__init__(model=model, name=name, defaults=defaults)
        self.settings = _checked(_with_options(settings or HuggingFaceSettings(), model, options))
        self._engine: Engine | None = None
        self._engine_lock = threading.Lock()
        if self.settings.load == "eager":
            self._ensure()

    @classmethod
    def from_pretrained_objects(
        cls,
        model: Any,
        tokenizer: Any,
        *,
        model_name: str | None = None,
        settings: HuggingFaceSettings | None = None,
        name: str | None = None,
        defaults: GenerationParams | None = None,
    ) -> HuggingFaceBackend:
        """A backend around a model and tokenizer you have already loaded (or built).

        ``model_name`` is what replies report as ``model``; by default the model's ``name_or_path``.
        Settings about loading are ignored; the others (template, window, batching) apply.
        """
        label = model_name or getattr(model, "name_or_path", "") or type(model).__name__
        chosen = settings or HuggingFaceSettings()
        backend = cls(label, settings=replace(chosen, load="lazy"), name=name, defaults=defaults)
        backend.settings = _checked(chosen)
        backend._engine = _engine_module().Engine.from_objects(
            model, tokenizer, name=label, settings=backend.settings
        )
        return backend

    # -- what the model is -----------------------------------------------------------------------

    @property
    def loaded(self) -> bool:
        """Whether the model is loaded (it loads on the first call unless ``load="eager"``)."""
        return self._engine is not None

    @property
    def hf_model(self) -> Any:
        """The transformers model, loading it if needed."""
        return self._ensure().model

    @property
    def tokenizer(self) -> Any:
        """The model's tokenizer, loading it if needed."""
        return self._ensure().tokenizer

    @property
    def context_window(self) -> int | None:
        """The model's window in tokens (``None`` where its config sets none), loading it if needed."""
        return self._ensure().window

    # -- the contract ------------------------------------------------------------------------

    def _chat(self, request: ChatRequest) -> ChatResponse:
        engine = self._ensure()
        return self._response(engine.generate(engine.job(request)))

    async def _achat(self, request: ChatRequest) -> ChatResponse:
        from llmclient.backends._hf_worker import Pending

        engine = await self._aensure()
        pending, future = Pending.on_loop(engine.job(request))
        engine.collector.add(pending)
        return self._response(await future)

    def _stream(self, request: ChatRequest) -> Iterator[StreamDelta]:
        from llmclient.backends._hf_streaming import stream

        engine = self._ensure()
        return stream(engine, engine.job(request), self.model)

    def _astream(self, request: ChatRequest) -> AsyncIterator[StreamDelta]:
        return self._astream_deltas(request)

    async def _astream_deltas(self, request: ChatRequest) -> AsyncIterator[StreamDelta]:
        from llmclient.backends._hf_streaming import astream

        engine = await self._aensure()
        async with contextlib.aclosing(astream(engine, engine.job(request), self.model)) as deltas:
            async for delta in deltas:
                yield delta

    async def _achat_many(
        self, requests: Sequence[ChatRequest], concurrency: int
    ) -> list[ChatResponse | LLMClientError]:
        """Batched: every request is prepared, then all go to the batch worker at once.

        ``concurrency`` caps the conversations in one batch (with ``max_batch_size``).
        """
        from llmclient.backends._hf_worker import Pending

        started = time.perf_counter()
        engine = await self._aensure()
        jobs = await asyncio.to_thread(_prepare_all, engine, requests, concurrency)
        results: list[ChatResponse | LLMClientError | None] = [None] * len(requests)
        waiting: list[tuple[int, Pending, asyncio.Future[Outcome]]] = []
        for index, job in enumerate(jobs):
            if isinstance(job, LLMClientError):
                results[index] = job
            else:
                waiting.append((index, *Pending.on_loop(job)))
        if waiting:
            engine.worker.submit([pending for _, pending, _ in waiting])
        try:
            for index, _, future in waiting:
                try:
                    results[index] = self._finish(self._response(await future), started)
                except LLMClientError as exc:
                    results[index] = exc
        finally:
            for _, _, future in waiting:
                future.cancel()
        return [r for r in results if r is not None]

    def _close(self) -> None:
        with self._engine_lock:
            engine, self._engine = self._engine, None
        if engine is not None:
            engine.close()

    # -- prompts and tokens ------------------------------------------------------------------

    def render_prompt(self, messages: Messages, **options: Unpack[GenerationOptions]) -> str:
        """The exact text the model is given, chat template applied and generation prompt added.

        With ``context_policy = "truncate"`` this is the truncated prompt; with ``error`` it is the
        whole conversation, even where a call would refuse it as too long.
        """
        request = self.prepare(messages, options)
        engine = self._ensure()
        if self.settings.context_policy == "truncate":
            max_new_tokens = request.params.max_new_tokens or DEFAULT_MAX_NEW_TOKENS
            return engine.fit(request, max_new_tokens).text
        return engine.prompts.prompt(request.messages).text

    def count_tokens(self, messages: Messages) -> int:
        """Tokens in the prompt for ``messages`` (the whole conversation, before any truncation)."""
        request = self.prepare(messages, {})
        return len(self._ensure().prompts.prompt(request.messages).ids)

    # -- helpers -----------------------------------------------------------------------------

    def _ensure(self) -> Engine:
        engine = self._engine
        if engine is not None:
            return engine
        with self._engine_lock:
            if self._engine is None:
                self._engine = _engine_module().Engine.load(self.model, self.settings)
            return self._engine

    async def _aensure(self) -> Engine:
        if self._engine is not None:
            return self._engine
        return await asyncio.to_thread(self._ensure)

    def _response(self, outcome: Outcome) -> ChatResponse:
        return ChatResponse(
            text=outcome.text,
            finish_reason=outcome.finish_reason,
            usage=Usage(prompt_tokens=outcome.prompt_tokens, completion_tokens=len(outcome.token_ids)),
            model=self.model,
        )


def from_config(config: BackendConfig) -> HuggingFaceBackend:
    """Build the backend for a ``huggingface`` (or ``hf``) configuration."""
    settings = read_settings(HuggingFaceSettings, config)
    return HuggingFaceBackend(
        config.model, settings=_checked(settings, config), name=config.name or None, defaults=config.defaults
    )


def _prepare_all(engine: Engine, requests: Sequence[ChatRequest], max_rows: int) -> list[Any]:
    """A job for each request, or the typed error that request raised."""
    jobs: list[Any] = []
    for request in requests:
        try:
            jobs.append(engine.job(request, max_rows=max_rows))
        except LLMClientError as exc:
            jobs.append(exc)
    return jobs


def _engine_module() -> Any:
    """``_hf_engine``, imported now; a missing torch or transformers gives the install hint."""
    try:
        from llmclient.backends import _hf_engine
    except ImportError as exc:
        missing = (exc.name or "").split(".")[0]
        if missing in _HEAVY:
            raise ModelLoadError(
                f"the huggingface backend needs {missing}, which is not installed: "
                f'pip install "llmclient[hf]"'
            ) from exc
        raise
    return _hf_engine


def _with_options(settings: HuggingFaceSettings, model: str, options: dict[str, Any]) -> HuggingFaceSettings:
    """``settings`` with keyword ``options`` laid over, each checked like a config file entry."""
    if not options:
        return settings
    config = BackendConfig(type="huggingface", model=model, options=options, source="HuggingFaceBackend()")
    given = read_settings(HuggingFaceSettings, config)
    return replace(settings, **{f.name: getattr(given, f.name) for f in fields(given) if f.name in options})


def _checked(settings: HuggingFaceSettings, config: BackendConfig | None = None) -> HuggingFaceSettings:
    """Check what a settings type alone cannot: names and ranges."""
    config = config or BackendConfig(type="huggingface", model="", source="HuggingFaceSettings")
    if settings.dtype.lower() not in _DTYPE_NAMES:
        raise config.error("dtype", settings.dtype, "unknown dtype", f"Use one of {', '.join(_DTYPE_NAMES)}")
    for key in ("batch_token_budget", "max_batch_size", "context_window"):
        value = getattr(settings, key)
        if value is not None and value < 1:
            raise config.error(key, value, "must be at least 1", f"Set {key} to a positive number")
    return settings
