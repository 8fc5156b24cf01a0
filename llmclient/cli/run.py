"""``llmclient run``: the input checked before any model loads, the run, and what it tells the user.

The summary goes to standard output; on standard error, what needs the user: the first row error
(not only inside the results file), the rows skipped because they failed in an earlier run, and
``--retry-failed`` only where a retry can fix what failed. A dry run shows the first rendered prompt
and exits 2 when any row fails to render.
"""

from __future__ import annotations

import argparse
import sys

from llmclient.cli.commands import EXIT_BUDGET, EXIT_FAILED, EXIT_OK, EXIT_USAGE
from llmclient.cli.inputs import check_input, read_few_shot, read_text
from llmclient.config import resolve
from llmclient.errors import InvalidRequestError
from llmclient.pipeline.progress import RunSummary


def run_command(args: argparse.Namespace) -> int:
    """``llmclient run``: a dataset through a backend (or Ray), resumable."""
    from llmclient.pipeline import RunOptions, run_with

    options = RunOptions(
        template=_template(args),
        output=args.output,
        system=args.system if args.system is not None else read_text(args.system_file, "system"),
        few_shot=read_few_shot(args.few_shot),
        params=dict(args.params),
        response_format=args.response_format,
        choices=args.choices,
        id_field=args.id_field,
        keep_fields=args.keep_fields.split(",") if args.keep_fields else None,
        concurrency=args.concurrency,
        requests_per_minute=args.rpm,
        retry_failed=args.retry_failed,
        dry_run=args.dry_run,
        limit=args.limit,
        progress=False if args.no_progress else None,
        fsync=args.fsync,
        nulls=args.nulls,
        max_cost=args.max_cost,
    )
    if args.engine != "ray" and (args.actors is not None or args.num_gpus is not None):
        raise InvalidRequestError("--actors and --num-gpus need --engine ray")
    check_input(args.input)  # a missing, unreadable or empty input is said before any model loads
    config = resolve(args.backend, config_path=args.config)
    if args.engine == "ray":
        from llmclient.scale.ray import run_with as ray_run_with

        resources = {"num_gpus": args.num_gpus} if args.num_gpus else None
        actors = args.actors or 1
        summary = ray_run_with(
            config, args.input, options, actors=actors, batch_size=args.batch_size, resources=resources
        )
    else:
        summary = run_with(config, args.input, options)
    print(summary)
    return report(summary, retried=args.retry_failed)


def report(summary: RunSummary, *, retried: bool = False) -> int:
    """Tell the user on stderr what needs them after ``summary``'s run; return the exit code.

    0 when every row is answered; 1 while failed rows remain (failed now, or failed before and
    skipped); 2 when a dry run found rows that do not render; 3 when ``--max-cost`` stopped the run.
    """
    if summary.dry_run:
        return _report_dry_run(summary)
    if summary.first_error is not None:
        print(f"llmclient: first error: {summary.first_error}", file=sys.stderr)
    if summary.failed:
        fix = (
            "rerun with --retry-failed to try them again"
            if summary.retry_may_fix
            else "a retry would fail the same way: fix the input, the template or the parameters"
        )
        print(
            f"llmclient: {summary.failed} rows failed; their errors are in {summary.output}; {fix}",
            file=sys.stderr,
        )
    if summary.failed_earlier and not retried:
        print(
            f"llmclient: {summary.skipped} skipped, of which {summary.failed_earlier} failed earlier: "
            f"rerun with --retry-failed",
            file=sys.stderr,
        )
    if summary.stopped:
        print(f"llmclient: stopped before the end of the input: {summary.stopped}", file=sys.stderr)
        return EXIT_BUDGET
    return EXIT_FAILED if summary.failed or summary.failed_earlier else EXIT_OK


def _report_dry_run(summary: RunSummary) -> int:
    if summary.first_prompt is not None:
        print(f"first prompt, {summary.first_prompt}")
    if not summary.failed:
        return EXIT_OK
    print(
        f"llmclient: {summary.failed} of {summary.total} rows fail to render; the first: "
        f"{summary.first_error}",
        file=sys.stderr,
    )
    return EXIT_USAGE


def _template(args: argparse.Namespace) -> str:
    return args.template if args.template is not None else read_text(args.template_file, "template") or ""
