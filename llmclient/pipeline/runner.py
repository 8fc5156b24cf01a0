"""The run: rows in, prompts rendered, replies out, resumable, with bounded concurrency."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from llmclient.backend import ChatBackend
from llmclient.config import BackendConfig
from llmclient.errors import InvalidRequestError, LLMClientError
from llmclient.pipeline.progress import Progress, RunSummary
from llmclient.pipeline.prompt import PromptTemplate, TemplateError
from llmclient.pipeline.results import Finished, ResultsFile
from llmclient.pipeline.rows import RowSource, count_rows, read_rows
from llmclient.types import ChatResponse, GenerationParams, Message

BackendSpec = ChatBackend | str | Mapping[str, Any] | BackendConfig
"""A backend, or anything :func:`llmclient.load` takes."""


class _RateLimit:
    """Spaces request starts so that at most ``per_minute`` begin in any minute."""

    def __init__(self, per_minute: float | None) -> None:
        self._interval = 60.0 / per_minute if per_minute else 0.0
        self._next = 0.0
        self._lock = asyncio.Lock()

    async def wait(self) -> None:
        if not self._interval:
            return
        async with self._lock:
            now = time.monotonic()
            start = max(now, self._next)
            self._next = start + self._interval
        await asyncio.sleep(start - now)


def run_fingerprint(prompt: PromptTemplate, params: GenerationParams, model: str) -> str:
    """A digest of everything that shapes each row's prompt and reply: template, parameters, model."""
    payload = {
        "prompt": prompt.fingerprint(),
        "params": {k: v for k, v in asdict(params).items() if v is not None and v != {}},
        "model": model,
    }
    return _digest(payload)


def row_key(identity: Any, fingerprint: str) -> str:
    """The resume key of a row: what the row is (its id, or its fields) under one run fingerprint."""
    return _digest({"row": identity, "run": fingerprint})


def _digest(payload: Any) -> str:
    canonical = json.dumps(payload, sort_keys=True, ensure_ascii=False, default=str, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:24]


class _Run:
    def __init__(
        self,
        backend: ChatBackend,
        prompt: PromptTemplate,
        params: GenerationParams,
        results: ResultsFile,
        summary: RunSummary,
        progress: Progress,
        *,
        id_field: str | None,
        keep_fields: Sequence[str] | None,
    ) -> None:
        self.backend = backend
        self.prompt = prompt
        self.params = params
        self.results = results
        self.summary = summary
        self.progress = progress
        self.id_field = id_field
        self.keep_fields = keep_fields
        self.options: dict[str, Any] = {k: v for k, v in asdict(params).items() if v is not None}
        self.fingerprint = run_fingerprint(prompt, params, backend.model)

    def identify(self, index: int, row: Mapping[str, Any]) -> tuple[Any, str]:
        if self.id_field is None:
            return index, row_key(row, self.fingerprint)
        if self.id_field not in row:
            raise TemplateError(
                f"row {index} has no id field {self.id_field!r}; row fields: {', '.join(sorted(row))}"
            )
        row_id = row[self.id_field]
        return row_id, row_key({self.id_field: row_id}, self.fingerprint)

    def record(self, row_id: Any, key: str, row: Mapping[str, Any]) -> dict[str, Any]:
        fields = row if self.keep_fields is None else {k: row[k] for k in self.keep_fields if k in row}
        return {
            "row_id": row_id,
            "key": key,
            "input": dict(fields),
            "backend": self.backend.name,
            "model": self.backend.model,
        }

    def write_reply(self, base: dict[str, Any], reply: ChatResponse) -> None:
        usage = reply.usage
        self.results.append(
            {
                **base,
                "status": "ok",
                "text": reply.text,
                "finish_reason": reply.finish_reason,
                "usage": usage.to_dict() if usage else None,
                "latency": round(reply.latency, 4),
                "model": reply.model or base["model"],
                "error": None,
            }
        )
        self.summary.done += 1
        self.summary.latencies.append(reply.latency)
        if usage:
            self.summary.prompt_tokens += usage.prompt_tokens
            self.summary.completion_tokens += usage.completion_tokens

    def write_error(self, base: dict[str, Any], error: LLMClientError) -> None:
        """Record a failed row; a dry run only counts it."""
        self.summary.failed += 1
        if self.summary.dry_run:
            return
        self.results.append(
            {
                **base,
                "status": "error",
                "text": None,
                "finish_reason": None,
                "usage": None,
                "latency": None,
                "error": {
                    "type": type(error).__name__,
                    "message": error.message,
                    "status_code": error.status_code,
                },
            }
        )

    async def answer(self, base: dict[str, Any], messages: list[Message], rate: _RateLimit) -> None:
        await rate.wait()
        try:
            reply = await self.backend.achat(messages, **self.options)
        except LLMClientError as error:
            self.write_error(base, error)
        else:
            self.write_reply(base, reply)
        self.progress.update()


async def arun(
    backend: BackendSpec,
    rows: RowSource,
    *,
    template: str,
    output: str | Path,
    system: str | None = None,
    few_shot: Sequence[Mapping[str, Any]] = (),
    params: Mapping[str, Any] | None = None,
    id_field: str | None = None,
    keep_fields: Sequence[str] | None = None,
    concurrency: int = 16,
    requests_per_minute: float | None = None,
    retry_failed: bool = False,
    dry_run: bool = False,
    limit: int | None = None,
    progress: bool | None = None,
    fsync: bool = False,
) -> RunSummary:
    """Run ``template`` over every row of ``rows`` on ``backend`` and append the replies to ``output``.

    Rows already answered in ``output`` (same row, template, parameters and model) are skipped, so
    a rerun after a crash picks up where it stopped; rows that failed are retried when
    ``retry_failed``. At most ``concurrency`` requests are in flight, and at most
    ``requests_per_minute`` start per minute. A ``dry_run`` renders every prompt and counts tokens
    (where the backend can) without calling the model. ``progress`` shows a bar on stderr (default:
    when stderr is a terminal). Returns a :class:`RunSummary`; failed rows do not raise, their
    errors are in the results file.
    """
    if concurrency < 1:
        raise InvalidRequestError(f"concurrency must be >= 1, got {concurrency}")
    owned = not isinstance(backend, ChatBackend)
    chat_backend = _load(backend)
    try:
        return await _execute(
            chat_backend,
            rows,
            PromptTemplate(template, system, tuple(few_shot)),
            GenerationParams.from_options(params or {}),
            ResultsFile(output, fsync=fsync),
            id_field=id_field,
            keep_fields=keep_fields,
            concurrency=concurrency,
            requests_per_minute=requests_per_minute,
            retry_failed=retry_failed,
            dry_run=dry_run,
            limit=limit,
            progress=progress,
        )
    finally:
        if owned:
            await chat_backend.aclose()


def _load(backend: BackendSpec) -> ChatBackend:
    if isinstance(backend, ChatBackend):
        return backend
    from llmclient.config import load

    return load(backend)


async def _execute(
    backend: ChatBackend,
    rows: RowSource,
    prompt: PromptTemplate,
    params: GenerationParams,
    results: ResultsFile,
    *,
    id_field: str | None,
    keep_fields: Sequence[str] | None,
    concurrency: int,
    requests_per_minute: float | None,
    retry_failed: bool,
    dry_run: bool,
    limit: int | None,
    progress: bool | None,
) -> RunSummary:
    started = time.perf_counter()
    summary = RunSummary(output=results.path, dry_run=dry_run)
    bar = Progress(summary, enabled=progress)
    if bar.enabled:
        bar.expected = count_rows(rows)
    finished = results.scan() if results.path.exists() else Finished()
    run = _Run(backend, prompt, params, results, summary, bar, id_field=id_field, keep_fields=keep_fields)
    rate = _RateLimit(requests_per_minute)
    window = getattr(backend, "context_window", None)
    seen: set[str] = set()
    in_flight: set[asyncio.Task[None]] = set()
    gate = asyncio.Semaphore(concurrency)
    try:
        for index, row in enumerate(read_rows(rows)):
            if limit is not None and index >= limit:
                break
            summary.total += 1
            try:
                row_id, key = run.identify(index, row)
            except TemplateError as error:
                run.write_error(run.record(index, f"no-id-{index}", row), error)
                continue
            if key in seen:
                summary.duplicates += 1
                continue
            seen.add(key)
            if key in finished.done or (key in finished.failed and not retry_failed):
                summary.skipped += 1
                continue
            base = run.record(row_id, key, row)
            try:
                messages = prompt.render(row)
            except TemplateError as error:
                run.write_error(base, error)
                continue
            if dry_run:
                _count(backend, messages, params, window, summary)
                continue
            await gate.acquire()
            task = asyncio.ensure_future(run.answer(base, messages, rate))
            task.add_done_callback(in_flight.discard)
            task.add_done_callback(lambda _: gate.release())
            in_flight.add(task)
        if in_flight:
            await asyncio.gather(*list(in_flight))
    finally:
        for task in in_flight:
            task.cancel()
        results.close()
        summary.wall_time = time.perf_counter() - started
        bar.close()
    return summary


def _count(
    backend: ChatBackend,
    messages: list[Message],
    params: GenerationParams,
    window: int | None,
    summary: RunSummary,
) -> None:
    if not backend.can_count_tokens:
        return
    tokens = backend.count_tokens(messages)
    summary.prompt_tokens += tokens
    wanted = params.max_new_tokens or backend.defaults.max_new_tokens or 0
    if window is not None and tokens + wanted > window:
        summary.over_window += 1


def run(backend: BackendSpec, rows: RowSource, **options: Any) -> RunSummary:
    """Sync :func:`arun`: the same arguments; call it from code that is not async."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(arun(backend, rows, **options))
    raise InvalidRequestError(
        "pipeline.run() was called inside a running event loop; use 'await pipeline.arun(...)'"
    )
