"""One batched call of ``model.generate``: parameters, padding, per-row stopping, the replies.

Every reply (single, streamed, batched) goes through :meth:`Generator.run`, so they share one meaning:
``max_new_tokens`` (never ``max_length``), greedy at temperature 0 with no sampling flag passed,
every end-of-sequence id honoured, stop strings that end the reply and are cut from it, and a finish
reason taken from what actually ended each row.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from transformers import LogitsProcessorList, StoppingCriteria, StoppingCriteriaList

from llmclient.backends.huggingface.constrained import GrammarMask, Grammars
from llmclient.backends.huggingface.grammars import Grammar
from llmclient.backends.huggingface.logprobs import LogprobRecorder, SettlingStreamer, Step
from llmclient.backends.huggingface.prompting import Prompt
from llmclient.backends.huggingface.scoring import ScoreJob, score_batch
from llmclient.backends.huggingface.toolcalls import ToolPlan
from llmclient.errors import BackendUnavailableError, InvalidRequestError, LLMClientError, ProviderError
from llmclient.logprobs import RawScore
from llmclient.stops import find_stop
from llmclient.tools.calls import ToolCall
from llmclient.types import GenerationParams

RESERVED_EXTRA = frozenset(
    {
        "input_ids",
        "attention_mask",
        "inputs",
        "max_length",
        "max_new_tokens",
        "do_sample",
        "temperature",
        "top_p",
        "top_k",
        "stop_strings",
        "stopping_criteria",
        "streamer",
        "generation_config",
        "pad_token_id",
        "eos_token_id",
        "num_return_sequences",
    }
)
"""``generate`` arguments llmclient sets itself; ``extra`` may not override them."""

Ending = Literal["eos", "stop", "grammar", "length"]


@dataclass(frozen=True)
class Sampling:
    """How the next token is chosen: greedy, or sampled with these settings."""

    do_sample: bool
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    seed: int | None = None

    def generate_kwargs(self) -> dict[str, Any]:
        """The ``generate`` arguments for this choice; greedy passes no sampling parameter at all."""
        if not self.do_sample:
            return {"do_sample": False}
        return {"do_sample": True, "temperature": self.temperature, "top_p": self.top_p, "top_k": self.top_k}


def resolve_sampling(params: GenerationParams, generation_config: Any) -> Sampling:
    """The sampling a request asks for, with the model's ``generation_config`` for what it leaves unset.

    Temperature 0 is greedy. Unset temperature follows the model (greedy unless its generation config
    samples). When sampling, unset ``top_p``/``top_k`` take the model's values if it sets them, else
    no nucleus or top-k cut: the same meaning as on an OpenAI-compatible server.
    """
    temperature = params.temperature
    if temperature is None:
        if not getattr(generation_config, "do_sample", False):
            return Sampling(do_sample=False)
        temperature = getattr(generation_config, "temperature", None) or 1.0
    if temperature == 0:
        return Sampling(do_sample=False)
    model_top_k = getattr(generation_config, "top_k", None)
    model_top_p = getattr(generation_config, "top_p", None)
    return Sampling(
        do_sample=True,
        temperature=float(temperature),
        top_p=params.top_p if params.top_p is not None else (model_top_p or 1.0),
        top_k=params.top_k if params.top_k is not None else (model_top_k or 0),
        seed=params.seed,
    )


@dataclass(eq=False)
class Job:
    """One conversation ready for the model.

    Attributes:
        prompt: the rendered prompt and its ids.
        max_new_tokens: tokens to generate at most.
        stop: strings that end the reply.
        sampling: how tokens are chosen.
        extra: more ``generate`` keyword arguments.
        max_rows: the most rows a batch holding this job may have.
        cancel: set to stop this row (a closed stream, a cancelled task).
        grammar: the compiled ``response_format`` the reply is constrained to, or ``None``; rows
            with different grammars, or none, share a batch.
        top_logprobs: how many alternatives per token to record with each token's logprob, or
            ``None`` for no logprobs (rows that want them and rows that do not share a batch).
        steps: where the recorder appends this row's tokens and logprobs as they are chosen (a
            stream's reader reads them from here).
        tools: how the reply's tool calls are read (:mod:`.toolcalls`), where the request offered
            tools; ``None`` otherwise.
    """

    prompt: Prompt
    max_new_tokens: int
    stop: tuple[str, ...] = ()
    sampling: Sampling = field(default_factory=lambda: Sampling(do_sample=False))
    extra: Mapping[str, Any] = field(default_factory=dict)
    max_rows: int = 1 << 30
    cancel: threading.Event = field(default_factory=threading.Event)
    grammar: Grammar | None = None
    top_logprobs: int | None = None
    steps: list[Step] = field(default_factory=list)
    tools: ToolPlan | None = None

    @property
    def weight(self) -> int:
        """Rows this job adds to a batch."""
        return 1

    @property
    def batch_key(self) -> tuple[Any, ...]:
        """Jobs with equal keys may share a batch. A seeded sampled job runs alone, so its seed gives
        the same reply however requests happen to be batched.
        """
        if self.sampling.do_sample and self.sampling.seed is not None:
            return ("alone", id(self))
        return (self.sampling, repr(sorted(self.extra.items())))


@dataclass(frozen=True)
class Outcome:
    """What one row produced.

    Attributes:
        text: the reply text: new tokens only, special tokens and the end-of-sequence token skipped,
            cut at the first stop string.
        token_ids: the new tokens generated, up to and including the one that ended the row.
        finish_reason: ``stop`` (end of sequence or a stop string) or ``length``.
        prompt_tokens: tokens in the prompt.
        steps: the logprobs of the reply's tokens (the end-of-sequence token left out, as from its
            text), where the job asked for them; empty otherwise.
        tool_calls: the calls read from the reply (ids empty), where the job had tools; ``text`` is
            then the text outside them.
        finished_at: ``time.perf_counter()`` when the row's last token was made (rows of a batch
            end at different steps); the reply's latency ends here, not at the end of the batch.
    """

    text: str
    token_ids: list[int]
    finish_reason: Literal["stop", "length"]
    prompt_tokens: int
    steps: list[Step] = field(default_factory=list)
    tool_calls: list[ToolCall] = field(default_factory=list)
    finished_at: float | None = None


class RowTracker(StoppingCriteria):
    """A stopping criterion that ends each row on its own terms and records what ended it.

    ``generate`` calls it after each step with the sequences so far. A row ends at an end-of-sequence
    id, a completed stop string, a completed grammar, its own ``max_new_tokens`` (rows of one batch
    may differ) or its cancel flag. ``ends[i]`` is the number of new tokens row ``i`` kept,
    ``endings[i]`` why. With a ``grammar`` mask, each constrained row's matcher is fed the token the
    row got here, once per step and never after the row ended (later tokens are padding).
    """

    def __init__(
        self, jobs: Sequence[Job], eos_ids: frozenset[int], tokenizer: Any, grammar: GrammarMask | None = None
    ) -> None:
        self._jobs = jobs
        self._eos_ids = eos_ids
        self._tokenizer = tokenizer
        self._grammar = grammar
        self._offset: int | None = None
        self._tokens: list[list[int]] = [[] for _ in jobs]
        self._windows = [4 * max(map(len, job.stop)) + 4 if job.stop else 0 for job in jobs]
        self.ends: list[int | None] = [None] * len(jobs)
        self.endings: list[Ending | None] = [None] * len(jobs)
        self.times: list[float | None] = [None] * len(jobs)

    @property
    def offset(self) -> int:
        """The position of the first new token in the sequences ``generate`` returns."""
        if self._offset is None:
            raise RuntimeError("generate produced no token")
        return self._offset

    def __call__(self, input_ids: torch.LongTensor, scores: Any, **kwargs: Any) -> torch.BoolTensor:
        """Which rows are done after this step (``generate`` stops when all are)."""
        if self._offset is None:
            self._offset = input_ids.shape[1] - 1
        step = input_ids.shape[1] - self._offset
        for row, token in enumerate(input_ids[:, -1].tolist()):
            if self.ends[row] is None:
                self._check(row, token, step)
        done = [end is not None for end in self.ends]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)  # type: ignore[return-value]

    def _check(self, row: int, token: int, step: int) -> None:
        job = self._jobs[row]
        ending: Ending | None = None
        if token in self._eos_ids:
            ending = "eos"
        elif job.stop and self._stop_completed(row, token, job.stop):
            ending = "stop"
        elif self._grammar is not None and self._grammar.advance(row, token):
            ending = "grammar"
        elif step >= job.max_new_tokens or job.cancel.is_set():
            ending = "length"
        if ending is not None:
            self.ends[row] = step
            self.endings[row] = ending
            self.times[row] = time.perf_counter()
            if self._grammar is not None:
                self._grammar.release(row)

    def _stop_completed(self, row: int, token: int, stops: tuple[str, ...]) -> bool:
        tokens = self._tokens[row]
        tokens.append(token)
        tail = self._tokenizer.decode(tokens[-self._windows[row] :], skip_special_tokens=True)
        return any(s in tail for s in stops)


class Generator:
    """Runs batches on one model.

    The backend calls :meth:`run` only from its worker thread; the lock keeps it safe from any
    thread all the same. End-of-sequence and pad ids are read from the model's generation config at
    each call, so changes made to it after loading apply.

    Args:
        model: a causal or encoder-decoder transformers model (new tokens are found the same way for
            both: after the sequence ``generate`` had before its first step).
        tokenizer: its tokenizer.
    """

    def __init__(self, model: Any, tokenizer: Any) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.grammars = Grammars(tokenizer)
        self.lock = threading.RLock()

    def run(self, jobs: Sequence[Job], streamer: Any = None) -> list[Outcome]:
        """Generate for ``jobs`` in one left-padded batch; they must share a :attr:`Job.batch_key`."""
        eos_ids = _eos_ids(self.model.generation_config, self.tokenizer)
        pad_id = _pad_id(self.model.generation_config, self.tokenizer, eos_ids)
        inputs = self.inputs(jobs, pad_id)
        width = inputs["input_ids"].shape[1]
        max_new_tokens = max(job.max_new_tokens for job in jobs)
        kwargs: dict[str, Any] = {
            **jobs[0].extra,
            **jobs[0].sampling.generate_kwargs(),
            "max_new_tokens": max_new_tokens,
            "pad_token_id": pad_id,
            "eos_token_id": sorted(eos_ids) or None,
        }
        recorder = _recorder(jobs)
        if streamer is not None:
            kwargs["streamer"] = streamer if recorder is None else SettlingStreamer(streamer, recorder)
        with self.lock:
            mask = self._mask(jobs, eos_ids)
            tracker = RowTracker(jobs, eos_ids, self.tokenizer, mask)
            kwargs["stopping_criteria"] = StoppingCriteriaList([tracker])
            processors = [
                p for p in (recorder, *(kwargs.get("logits_processor") or ()), mask) if p is not None
            ]
            if processors:
                kwargs["logits_processor"] = LogitsProcessorList(processors)
            device = self.model.device
            try:
                with _seeded(jobs[0].sampling.seed, device):
                    sequences = self.model.generate(**{k: v.to(device) for k, v in inputs.items()}, **kwargs)
            except LLMClientError:
                raise
            except Exception as exc:
                raise _generation_error(exc, len(jobs), width, max_new_tokens, device) from exc
            if recorder is not None:
                recorder.settle(sequences[:, -1])
            new_tokens = sequences[:, tracker.offset :].tolist()
        return [
            self._outcome(job, new_tokens[row], tracker.ends[row], tracker.endings[row], tracker.times[row])
            for row, job in enumerate(jobs)
        ]

    def inputs(self, jobs: Sequence[Job], pad_id: int) -> dict[str, torch.Tensor]:
        """The batch's ``generate`` tensors: the prompts' ids left-padded with ``pad_id``, and their
        attention mask (a vision model's generator adds its images, :mod:`.vision`).
        """
        width = max(len(job.prompt.ids) for job in jobs)
        input_ids = torch.full((len(jobs), width), pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(jobs), width), dtype=torch.long)
        for row, job in enumerate(jobs):
            length = len(job.prompt.ids)
            input_ids[row, width - length :] = torch.tensor(job.prompt.ids, dtype=torch.long)
            attention_mask[row, width - length :] = 1
        return {"input_ids": input_ids, "attention_mask": attention_mask}

    def score(self, jobs: Sequence[ScoreJob], token_budget: int) -> list[list[RawScore]]:
        """Score the candidates of ``jobs`` in one batch (:func:`~.scoring.score_batch`)."""
        pad_id = _pad_id(
            self.model.generation_config,
            self.tokenizer,
            _eos_ids(self.model.generation_config, self.tokenizer),
        )
        with self.lock:
            try:
                return score_batch(self.model, jobs, pad_id=pad_id, token_budget=token_budget)
            except LLMClientError:
                raise
            except Exception as exc:
                width = max(len(job.prompt.ids) for job in jobs)
                longest = max(job.max_new_tokens for job in jobs)
                raise _generation_error(exc, len(jobs), width, longest, self.model.device) from exc

    def _mask(self, jobs: Sequence[Job], eos_ids: frozenset[int]) -> GrammarMask | None:
        """The grammar mask of a batch with constrained rows; ``None`` (no processor) without."""
        if all(job.grammar is None for job in jobs):
            return None
        return self.grammars.mask([job.grammar for job in jobs], eos_ids)

    def _outcome(
        self, job: Job, tokens: list[int], end: int | None, ending: Ending | None, at: float | None = None
    ) -> Outcome:
        kept = tokens[:end] if end is not None else tokens
        shown = kept[:-1] if ending == "eos" else kept
        calls: list[ToolCall] = []
        if job.tools is not None:  # special tokens kept: some models' call tags are special tokens
            text, calls, stopped = job.tools.parse(self.tokenizer, shown, job.stop)
        else:
            text, stopped = self.final_text(shown, job.stop)
        finish: Literal["stop", "length"] = "stop" if stopped or ending in ("eos", "grammar") else "length"
        return Outcome(
            text=text,
            token_ids=kept,
            finish_reason=finish,
            prompt_tokens=len(job.prompt.ids),
            steps=job.steps[: len(shown)],
            tool_calls=calls,
            finished_at=at or time.perf_counter(),
        )

    def final_text(self, tokens: list[int], stops: Sequence[str]) -> tuple[str, bool]:
        """The reply text of ``tokens``, cut at the first stop string, and whether one was found."""
        text: str = self.tokenizer.decode(tokens, skip_special_tokens=True)
        cut = find_stop(text, stops) if stops else None
        return (text, False) if cut is None else (text[:cut], True)


def _recorder(jobs: Sequence[Job]) -> LogprobRecorder | None:
    """The logprob recorder of a batch where some row asked for logprobs; ``None`` (no cost) otherwise."""
    if all(job.top_logprobs is None for job in jobs):
        return None
    return LogprobRecorder(
        [None if job.top_logprobs is None else (job.steps, job.top_logprobs) for job in jobs]
    )


def check_extra(extra: Mapping[str, Any]) -> None:
    """Refuse ``extra`` keys that would override what llmclient sets, naming the parameter to use."""
    clash = sorted(RESERVED_EXTRA & set(extra))
    if clash:
        raise InvalidRequestError(
            f"extra may not set {clash}: llmclient sets these itself. Use max_new_tokens, temperature, "
            f"top_p, top_k and stop instead"
        )


@contextlib.contextmanager
def _seeded(seed: int | None, device: torch.device) -> Iterator[None]:
    """Seed torch's generators for one call, restoring the caller's random state afterwards."""
    if seed is None:
        yield
        return
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def _eos_ids(generation_config: Any, tokenizer: Any) -> frozenset[int]:
    """Every end-of-sequence id: the generation config's (one or several) and the tokenizer's."""
    configured = getattr(generation_config, "eos_token_id", None)
    ids = set(configured if isinstance(configured, list) else [configured] if configured is not None else [])
    if getattr(tokenizer, "eos_token_id", None) is not None:
        ids.add(tokenizer.eos_token_id)
    return frozenset(int(i) for i in ids)


def _pad_id(generation_config: Any, tokenizer: Any, eos_ids: frozenset[int]) -> int:
    """The id to pad with: the tokenizer's pad, the config's, an end-of-sequence id, else 0.

    Any id is safe: padded positions are masked out by the attention mask, which is built from the
    prompt lengths, never by comparing ids with the pad id.
    """
    for candidate in (
        getattr(tokenizer, "pad_token_id", None),
        getattr(generation_config, "pad_token_id", None),
    ):
        if candidate is not None:
            return int(candidate)
    return min(eos_ids) if eos_ids else 0


def _generation_error(
    exc: Exception, rows: int, width: int, max_new: int, device: torch.device
) -> LLMClientError:
    """The typed error for a failure inside ``generate``."""
    if isinstance(exc, torch.OutOfMemoryError) or "can't allocate memory" in str(exc):
        return BackendUnavailableError(
            f"out of memory on {device} generating a batch of {rows} conversation(s) of up to {width} "
            f"prompt tokens + {max_new} new tokens; lower batch_token_budget or max_batch_size in the "
            f"backend config, or max_new_tokens"
        )
    if isinstance(exc, (ValueError, TypeError)):
        return InvalidRequestError(f"generate() refused the request: {exc}")
    return ProviderError(f"generation failed: {type(exc).__name__}: {exc}")
