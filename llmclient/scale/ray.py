"""The batch runner on Ray: the same run as :func:`llmclient.pipeline.run`, over an actor pool.

    from llmclient.scale import ray as ray_engine

    summary = ray_engine.run(
        "hf:smollm2", "reviews.jsonl",
        template="Is this review positive or negative? {{ text }}",
        output="results/",                  # a folder of JSONL shards, one per writer
        actors=4, resources={"num_gpus": 1},  # one model per GPU
        params={"max_new_tokens": 8, "temperature": 0},
    )

The driver (this process) reads the rows as a stream and plans each one with the batch runner's own
rules (:class:`~llmclient.pipeline.plan.Plan`: row keys, duplicates, id conflicts, template errors
as error lines, rows done in an earlier run skipped); only the rows to send are handed to Ray Data,
in blocks of ``batch_size`` rows. ``map_batches`` runs them on a pool of ``actors`` actors, each of
which builds ONE backend from the configuration (a local model loaded once per actor, or a remote
client sending ``concurrency`` requests at a time) and appends each row's line to a shard of its own
(:mod:`llmclient.scale.shards`). A rerun reads the done keys back from the shards, one line at a
time, and sends only what is left.

The module is named after the engine it runs on; inside it ``import ray`` is the Ray package
(imports are absolute), and it is imported as ``llmclient.scale.ray``, never as a top-level ``ray``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import pickle
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmclient.backend import ChatBackend
from llmclient.config import BackendConfig, load, resolve
from llmclient.errors import InvalidRequestError
from llmclient.pipeline.options import RunOptions
from llmclient.pipeline.output import OutputLock, ResultsWriteError, check_writable
from llmclient.pipeline.plan import Plan
from llmclient.pipeline.progress import Progress, RunSummary
from llmclient.pipeline.results import Finished, ResultsFile
from llmclient.pipeline.rows import RowSource, read_rows
from llmclient.pipeline.runner import RowRun
from llmclient.scale.actor import REPORT_COLUMN, WORK_COLUMN, BatchReport, RowAnswerer, option_fields
from llmclient.scale.shards import Shard, check_folder, new_shard_path, scan_folder

ConfigSpec = str | Mapping[str, Any] | BackendConfig
"""A backend as a configuration: a name, a ``provider:model`` string, a dict or a :class:`BackendConfig`."""

_BATCHES_PER_ACTOR = 4
"""Batches an actor works on at once (as Ray's own LLM processors do): the next batch's rows start as
the last rows of one finish, so a batch's slowest row never leaves the actor idle. Rows in flight stay
bounded by ``concurrency`` per actor, across its batches."""

BlockRef = Any
"""A block of work in Ray's object store (``ray.put`` and ``from_arrow_refs`` type it differently)."""

_SHAPE_KEYS = ("num_cpus", "num_gpus", "memory", "accelerator_type")
"""Keys of ``resources`` that are ``map_batches`` arguments of their own; the others are custom resources."""


def run(
    backend: ConfigSpec,
    source: RowSource,
    *,
    actors: int = 1,
    batch_size: int = 16,
    resources: Mapping[str, Any] | None = None,
    address: str | None = None,
    **options: Any,
) -> RunSummary:
    """Run a template over every row of ``source`` on a Ray actor pool; results in the folder ``output``.

    ``options`` are the keyword arguments of :func:`llmclient.pipeline.run` (``template``, ``output``,
    ``params``, ``id_field``, ``concurrency``, ...), with the same meaning; ``output`` is a folder.
    See :func:`run_with`.
    """
    return run_with(
        backend,
        source,
        RunOptions(**options),
        actors=actors,
        batch_size=batch_size,
        resources=resources,
        address=address,
    )


def run_with(
    backend: ConfigSpec,
    source: RowSource,
    options: RunOptions,
    *,
    actors: int = 1,
    batch_size: int = 16,
    resources: Mapping[str, Any] | None = None,
    address: str | None = None,
) -> RunSummary:
    """:func:`run` with its options already built: what ``llmclient run --engine ray`` calls.

    Args:
        backend: the backend as a configuration, never a built backend: each actor builds its own
            from it. A name is looked up here, in the driver's ``llmclient.toml``.
        source: the rows (a ``.jsonl``, ``.csv`` or ``.parquet`` path, or an iterable of dicts), read by
            this process as a stream.
        options: the run's options; ``output`` is a folder of shards. ``concurrency`` bounds the
            rows in flight per actor and ``requests_per_minute`` the whole run's rate (each actor
            gets its share). ``max_cost`` is not supported here.
        actors: the size of the actor pool (one backend each).
        batch_size: rows per ``map_batches`` batch.
        resources: what each actor reserves: ``num_cpus`` (default 1), ``num_gpus``, ``memory``,
            ``accelerator_type``, or any custom resource name.
        address: the Ray cluster to join; by default ``$RAY_ADDRESS``, else a new local cluster.
            A Ray already initialized in this process (``ray.init(...)``) is used as it is.

    Returns the :class:`~llmclient.pipeline.RunSummary` of the run. Failed rows do not raise: each
    has an error line in a shard. A results write that fails on an actor raises
    :class:`~llmclient.pipeline.ResultsWriteError` at the end, as the batch runner does.
    """
    config = _config(backend)
    remote = _remote_args(resources)
    if isinstance(actors, bool) or not isinstance(actors, int) or actors < 1:
        raise InvalidRequestError(f"actors must be an integer >= 1, got {actors!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InvalidRequestError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    if options.max_cost is not None:
        raise InvalidRequestError(
            "max_cost (--max-cost) is not supported by the ray engine: actors cannot share one budget; "
            "run with the default engine (pipeline.run) to keep a budget"
        )
    if not options.dry_run and importlib.util.find_spec("ray") is None:
        raise InvalidRequestError("the ray engine needs Ray: pip install 'llmclient[ray]'")
    started = time.perf_counter()
    rows = read_rows(source)  # a missing input is reported before anything else
    folder = Path(options.output) if options.dry_run else check_folder(options.output)
    summary = RunSummary(output=folder, dry_run=options.dry_run)
    driver = load(config)  # for the run's fingerprint and dry-run token counts; never sent a request
    try:
        with contextlib.ExitStack() as stack:
            if not options.dry_run:
                stack.enter_context(OutputLock(folder))  # one driver per output folder
            finished = scan_folder(folder, repair=not options.dry_run) if folder.is_dir() else Finished()
            if options.dry_run:
                nowhere = ResultsFile(os.devnull)  # a dry run writes nothing
                _plan(RowRun(driver, options, nowhere, summary, _quiet(summary)), rows, finished)
            else:
                pool = _Pool(config, actors, batch_size, remote, address)
                _execute(pool, driver, options, rows, finished, summary)
    finally:
        driver.close()
        summary.wall_time = time.perf_counter() - started
    return summary


def _config(backend: ConfigSpec) -> BackendConfig:
    if isinstance(backend, ChatBackend):
        raise InvalidRequestError(
            f"the ray engine builds one backend per actor from a configuration; pass a name, a "
            f"'provider:model' string, a dict or a BackendConfig, not a built {type(backend).__name__} "
            f"(e.g. {backend.type_name + ':' + backend.model!r})"
        )
    return resolve(backend)


def _remote_args(resources: Mapping[str, Any] | None) -> dict[str, Any]:
    """``resources`` as ``map_batches`` keyword arguments; each actor takes one CPU by default."""
    given = dict(resources or {})
    args: dict[str, Any] = {key: given.pop(key) for key in _SHAPE_KEYS if key in given}
    args.setdefault("num_cpus", 1)
    if given:
        args["resources"] = given
    return args


def _quiet(summary: RunSummary) -> Progress:
    return Progress(summary, enabled=False)


@dataclass(frozen=True)
class _Pool:
    """The actor pool asked for: the backend each actor builds, how many, their batch and resources."""

    config: BackendConfig
    actors: int
    batch_size: int
    remote: dict[str, Any]
    """``map_batches`` keyword arguments: what each actor reserves."""
    address: str | None


def _execute(
    pool: _Pool,
    driver: ChatBackend,
    options: RunOptions,
    rows: Iterable[dict[str, Any]],
    finished: Finished,
    summary: RunSummary,
) -> None:
    """Plan every row here, then answer the rows to send on the actor pool, adding up its reports."""
    import ray
    import ray.data

    folder = Path(options.output)
    shard_path = new_shard_path(folder)
    check_writable(shard_path)  # a full disk or a file-size limit, before anything is paid for
    started_ray = _connect(pool.address)
    try:
        shard = Shard(shard_path, fsync=options.fsync)  # the driver's lines: rows that fail before sending
        try:
            run = RowRun(driver, options, shard, summary, _quiet(summary))
            blocks = _plan(run, rows, finished, pool.batch_size)
        finally:
            shard.close()
        if not blocks:
            return
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = sys.stderr.isatty() if options.progress is None else options.progress
        size = min(pool.actors, len(blocks))  # no actor (and no model loaded) without work
        rpm = options.requests_per_minute
        dataset = ray.data.from_arrow_refs(blocks).map_batches(
            RowAnswerer,
            batch_size=pool.batch_size,
            batch_format="pyarrow",
            compute=ray.data.ActorPoolStrategy(size=size, max_concurrent_calls_per_actor=_BATCHES_PER_ACTOR),
            fn_constructor_kwargs={
                "config": pool.config,
                "options": option_fields(options),
                "folder": str(folder.resolve()),
                "requests_per_minute": None if rpm is None else rpm / size,
            },
            **pool.remote,
        )
        _collect(dataset.iter_batches(batch_size=None, batch_format="pyarrow"), summary, folder)
    finally:
        if started_ray:
            ray.shutdown()


def _plan(
    run: RowRun, rows: Iterable[dict[str, Any]], finished: Finished, batch_size: int = 0
) -> list[BlockRef]:
    """Plan each row as the batch runner does; the rows to send, in blocks of ``batch_size`` in Ray's store.

    A dry run only counts (no Ray, nothing written). Only one block is held here at a time: the
    driver's memory holds the keys of the input, not its rows.
    """
    options, summary = run.options, run.summary
    plan = Plan(run, finished)
    window = run.backend.context_window if options.dry_run else None
    blocks: list[BlockRef] = []
    pending: list[bytes] = []
    for index, row in enumerate(rows):
        if options.limit is not None and index >= options.limit:
            break
        summary.total += 1
        work = plan.row(index, row)
        if work is None:
            continue
        if options.dry_run:
            run.count(work[1], window, work[0]["row_id"])
            continue
        pending.append(pickle.dumps(work, protocol=pickle.HIGHEST_PROTOCOL))
        if len(pending) == batch_size:
            blocks.append(_block(pending))
            pending = []
    if pending:
        blocks.append(_block(pending))
    if run.write_failure is not None:
        raise ResultsWriteError(Path(options.output), run.write_failure, run.unsaved) from run.write_failure
    return blocks


def _block(work: list[bytes]) -> BlockRef:
    import pyarrow as pa
    import ray

    return ray.put(pa.table({WORK_COLUMN: pa.array(work, type=pa.binary())}))


def _collect(batches: Iterable[Any], summary: RunSummary, folder: Path) -> None:
    """Add each batch's report to ``summary``; a write that failed on an actor raises at the end."""
    unsaved = 0
    failure: tuple[int, str] | None = None
    for batch in batches:
        for text in batch.column(REPORT_COLUMN).to_pylist():
            report = BatchReport.from_json(text)
            report.add_to(summary)
            unsaved += report.unsaved
            failure = failure or report.write_error
    if failure is not None:
        error = OSError(*failure)
        raise ResultsWriteError(folder, error, unsaved) from error


def _connect(address: str | None) -> bool:
    """Join the cluster at ``address`` (or ``$RAY_ADDRESS``), else start a local one; True if this call
    initialized Ray (and so shuts it down at the end). A Ray already initialized is used as it is.
    """
    import ray

    if ray.is_initialized():
        return False
    ray.init(address=address, include_dashboard=False, logging_level=logging.WARNING)
    return True
