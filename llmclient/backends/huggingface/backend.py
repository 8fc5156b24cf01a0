"""``HuggingFaceBackend``: the backend contract, on a model that :mod:`.engine` loads.

Importing this module is cheap: torch and transformers load with the model (``engine`` and the
modules it uses), on the first call or when the backend is built with ``load = "eager"``.

Every call, whatever its shape, becomes jobs given to the scheduler's one ``submit`` and waited on
through the handles it returns: ``chat`` and ``chat_many`` from the calling thread, ``achat`` and
``achat_many`` from the event loop, ``stream`` and ``astream`` reading tokens. So a sync
``chat_many`` involves two threads: the caller's and the model's. Scoring candidates (``score`` and
its forms) submits score jobs the same way (:mod:`.scoring`).

Each hook reaches the engine before it imports a module that imports torch, so without the ``[hf]``
extra every call (``chat``, ``stream``, ``chat_many``, ...) raises the typed ``ModelLoadError`` with
the install hint. A reply's latency ends at its own last token, not at the end of its batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import replace
from functools import partial
from typing import TYPE_CHECKING, Any

from typing_extensions import Unpack

from llmclient._settings import read_settings
from llmclient.backend import Messages
from llmclient.backends.huggingface.settings import DEFAULT_MAX_NEW_TOKENS, HuggingFaceSettings
from llmclient.backends.in_process import InProcessBackend
from llmclient.config import BackendConfig
from llmclient.errors import LLMClientError, ModelLoadError
from llmclient.logprobs import RawScore, ScoreOptions
from llmclient.scoring import Scored
from llmclient.types import ChatRequest, ChatResponse, GenerationOptions, GenerationParams, StreamDelta, Usage

if TYPE_CHECKING:
    from llmclient.backends.huggingface.engine import Engine
    from llmclient.backends.huggingface.generation import Outcome
    from llmclient.backends.huggingface.scheduler import AnyJob, Handle

_HEAVY = ("torch", "transformers", "tokenizers", "accelerate", "gguf", "safetensors", "huggingface_hub")


class HuggingFaceBackend(InProcessBackend["Engine"]):
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
    settings: HuggingFaceSettings

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
        given = BackendConfig(type="huggingface", model=model, options=options, source="HuggingFaceBackend()")
        self.settings = read_settings(HuggingFaceSettings, given, base=settings or HuggingFaceSettings())
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
        """A backend around a model and tokenizer you have already loaded (or built); for a
        vision-language model, pass its processor as ``tokenizer`` so images reach the model.

        ``model_name`` is what replies report as ``model``; by default the model's ``name_or_path``.
        Settings about loading are ignored; the others (template, window, batching) apply.
        """
        label = model_name or getattr(model, "name_or_path", "") or type(model).__name__
        chosen = settings or HuggingFaceSettings()
        backend = cls(label, settings=replace(chosen, load="lazy"), name=name, defaults=defaults)
        backend.settings = chosen.check()
        backend._engine = _engine_module().Engine.from_objects(
            model, tokenizer, name=label, settings=backend.settings
        )
        return backend

    # -- what the model is -----------------------------------------------------------------------

    @property
    def hf_model(self) -> Any:
        """The transformers model, loading it if needed."""
        return self._ensure().model

    @property
    def tokenizer(self) -> Any:
        """The model's tokenizer, loading it if needed."""
        return self._ensure().tokenizer

    @property
    def dtype(self) -> str:
        """The dtype the model computes in (``bfloat16``, ``float32``, ...), loading it if needed: the
        ``dtype`` setting, or what ``auto`` chose for this machine (docs/local.md).
        """
        return str(self._ensure().model.dtype).removeprefix("torch.")

    @property
    def context_window(self) -> int | None:
        """The model's window in tokens (``None`` where its config sets none), loading it if needed."""
        return self._ensure().window

    # -- the contract ------------------------------------------------------------------------

    def _chat(self, request: ChatRequest) -> ChatResponse:
        started = time.perf_counter()
        engine = self._ensure()
        (handle,) = engine.scheduler.submit([engine.job(request)])
        return self._response(handle.result(), started)

    async def _achat(self, request: ChatRequest) -> ChatResponse:
        started = time.perf_counter()
        engine = await self._aensure()
        (handle,) = engine.scheduler.submit([engine.job(request)], gather=asyncio.get_running_loop())
        return self._response(await handle, started)

    def _stream(self, request: ChatRequest) -> Iterator[StreamDelta]:
        engine = self._ensure()
        from llmclient.backends.huggingface.streaming import stream

        return stream(engine, engine.job(request), self.model)

    def _astream(self, request: ChatRequest) -> AsyncIterator[StreamDelta]:
        return self._astream_deltas(request)

    async def _astream_deltas(self, request: ChatRequest) -> AsyncIterator[StreamDelta]:
        engine = await self._aensure()
        from llmclient.backends.huggingface.streaming import astream

        async with contextlib.aclosing(astream(engine, engine.job(request), self.model)) as deltas:
            async for delta in deltas:
                yield delta

    def _chat_many(
        self, requests: Sequence[ChatRequest], concurrency: int
    ) -> list[ChatResponse | LLMClientError]:
        """Batched, handed from this thread straight to the model's: no event loop in between.

        ``concurrency`` caps the conversations in one batch (with ``max_batch_size``).
        """
        started = time.perf_counter()
        engine = self._ensure()
        from llmclient.backends.huggingface.scheduler import wait_all

        items = _submit_all(engine, _jobs(requests, partial(engine.job, max_rows=concurrency)), gather=None)
        wait_all(_handles(items))
        return self._replies(items, started)

    async def _achat_many(
        self, requests: Sequence[ChatRequest], concurrency: int
    ) -> list[ChatResponse | LLMClientError]:
        """Async :meth:`_chat_many`: prompts are prepared off the event loop, then all submitted."""
        started = time.perf_counter()
        engine = await self._aensure()
        from llmclient.backends.huggingface.scheduler import await_all

        jobs = await asyncio.to_thread(_jobs, requests, partial(engine.job, max_rows=concurrency))
        items = _submit_all(engine, jobs, gather=asyncio.get_running_loop())
        await await_all(_handles(items))
        return self._replies(items, started)

    # -- scoring -----------------------------------------------------------------------------

    def _score(
        self, request: ChatRequest, candidates: Sequence[str], options: ScoreOptions
    ) -> list[RawScore]:
        engine = self._ensure()
        (handle,) = engine.scheduler.submit([engine.score_job(request, candidates, options)])
        return handle.result()

    async def _ascore(
        self, request: ChatRequest, candidates: Sequence[str], options: ScoreOptions
    ) -> list[RawScore]:
        engine = await self._aensure()
        job = engine.score_job(request, candidates, options)
        (handle,) = engine.scheduler.submit([job], gather=asyncio.get_running_loop())
        return await handle

    def _score_many(
        self,
        requests: Sequence[ChatRequest],
        candidates: Sequence[str],
        options: ScoreOptions,
        concurrency: int,
    ) -> list[Scored]:
        """Batched like :meth:`_chat_many`: every conversation's score job submitted at once."""
        engine = self._ensure()
        from llmclient.backends.huggingface.scheduler import wait_all

        build = partial(engine.score_job, candidates=candidates, options=options, max_rows=concurrency)
        items = _submit_all(engine, _jobs(requests, build), gather=None)
        wait_all(_handles(items))
        return _settled_items(items)

    async def _ascore_many(
        self,
        requests: Sequence[ChatRequest],
        candidates: Sequence[str],
        options: ScoreOptions,
        concurrency: int,
    ) -> list[Scored]:
        """Async :meth:`_score_many`: the jobs are prepared off the event loop, then all submitted."""
        engine = await self._aensure()
        from llmclient.backends.huggingface.scheduler import await_all

        build = partial(engine.score_job, candidates=candidates, options=options, max_rows=concurrency)
        jobs = await asyncio.to_thread(_jobs, requests, build)
        items = _submit_all(engine, jobs, gather=asyncio.get_running_loop())
        await await_all(_handles(items))
        return _settled_items(items)

    # -- prompts and tokens ------------------------------------------------------------------

    def render_prompt(self, messages: Messages, **options: Unpack[GenerationOptions]) -> str:
        """The exact text the model is given, chat template applied and generation prompt added.

        With ``context_policy = "truncate"`` this is the truncated prompt; with ``error`` it is the
        whole conversation, even where a call would refuse it as too long.
        """
        request = self.prepare(messages, options)
        engine = self._ensure()
        plan = engine.tools.plan(request, engine.prompts)  # tools rendered as a call renders them
        request, prompts = (request, engine.prompts) if plan is None else (plan.request, plan.prompts)
        if self.settings.context_policy == "truncate":
            max_new_tokens = request.params.max_new_tokens or DEFAULT_MAX_NEW_TOKENS
            return engine.fit(request, max_new_tokens, prompts).text
        return prompts.prompt(request.messages).text

    def count_tokens(self, messages: Messages) -> int:
        """Tokens in the prompt for ``messages`` (the whole conversation, before any truncation)."""
        request = self.prepare(messages, {})
        return len(self._ensure().prompts.prompt(request.messages).ids)

    # -- helpers -----------------------------------------------------------------------------

    def _load_engine(self) -> Engine:
        engine: Engine = _engine_module().Engine.load(self.model, self.settings)
        return engine

    def _replies(
        self, items: list[Handle[Any] | LLMClientError], started: float
    ) -> list[ChatResponse | LLMClientError]:
        """The reply or typed error of each settled item, in order."""
        replies: list[ChatResponse | LLMClientError] = []
        for item in items:
            if isinstance(item, LLMClientError):
                replies.append(item)
                continue
            try:
                replies.append(self._finish(self._response(item.result(), started), started))
            except LLMClientError as exc:
                replies.append(exc)
        return replies

    def _finish(self, reply: ChatResponse, started: float) -> ChatResponse:
        """The base's stamp, keeping the latency :meth:`_response` measured to the row's last token."""
        finished = super()._finish(reply, started)
        return replace(finished, latency=reply.latency) if reply.latency else finished

    def _response(self, outcome: Outcome, started: float | None = None) -> ChatResponse:
        """The reply of ``outcome``; with ``started``, its latency: from then to the row's own last
        token, not to the end of the batch it shared with longer rows.
        """
        ended = outcome.finished_at or time.perf_counter()
        return ChatResponse(
            latency=max(ended - started, 0.0) if started is not None else 0.0,
            text=outcome.text,
            finish_reason=outcome.finish_reason,
            usage=Usage(prompt_tokens=outcome.prompt_tokens, completion_tokens=len(outcome.token_ids)),
            model=self.model,
            logprobs=self._ensure().texts.entries(outcome.steps) if outcome.steps else [],
            tool_calls=list(outcome.tool_calls),  # ids, finish reason and arguments: the base class
        )


def from_config(config: BackendConfig) -> HuggingFaceBackend:
    """Build the backend for a ``huggingface`` (or ``hf``) configuration."""
    return HuggingFaceBackend(
        config.model,
        settings=read_settings(HuggingFaceSettings, config),
        name=config.name or None,
        defaults=config.defaults,
    )


def _jobs(
    requests: Sequence[ChatRequest], build: Callable[[ChatRequest], AnyJob]
) -> list[AnyJob | LLMClientError]:
    """A job for each request (``build``), or the typed error that request raised."""
    jobs: list[AnyJob | LLMClientError] = []
    for request in requests:
        try:
            jobs.append(build(request))
        except LLMClientError as exc:
            jobs.append(exc)
    return jobs


def _submit_all(
    engine: Engine, jobs: Sequence[AnyJob | LLMClientError], gather: asyncio.AbstractEventLoop | None
) -> list[Handle[Any] | LLMClientError]:
    """Submit every job at once (all of one kind); each error stays in its place."""
    given: list[Any] = [j for j in jobs if not isinstance(j, LLMClientError)]
    handles = iter(engine.scheduler.submit(given, gather=gather))
    return [j if isinstance(j, LLMClientError) else next(handles) for j in jobs]


def _settled_items(items: list[Handle[Any] | LLMClientError]) -> list[Scored]:
    """The raw scores or typed error of each settled score item, in order."""
    out: list[Scored] = []
    for item in items:
        if isinstance(item, LLMClientError):
            out.append(item)
            continue
        try:
            out.append(item.result())
        except LLMClientError as exc:
            out.append(exc)
    return out


def _handles(items: list[Handle[Any] | LLMClientError]) -> list[Handle[Any]]:
    return [item for item in items if not isinstance(item, LLMClientError)]


def _engine_module() -> Any:
    """``engine``, imported now; a missing torch or transformers gives the install hint."""
    try:
        from llmclient.backends.huggingface import engine
    except ImportError as exc:
        missing = (exc.name or "").split(".")[0]
        if missing in _HEAVY:
            raise ModelLoadError(
                f"the huggingface backend needs {missing}, which is not installed: "
                f'pip install "llmclient[hf]"'
            ) from exc
        raise
    return engine
