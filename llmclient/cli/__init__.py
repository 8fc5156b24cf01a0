"""The ``llmclient`` command: run a dataset through a backend, chat, render prompts, list backends,
read a results file back in input order.

Exit codes: 0 when everything asked for was done, 1 when some rows failed or failed rows remain from
an earlier run (or a check failed), 2 for bad usage or configuration, or a dry run with rows that do
not render, with a message that says what to fix, 3 when ``run`` stopped
before the end of its input because ``--max-cost`` was reached (finished rows are saved; rerun with
a higher ``--max-cost`` to continue).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from llmclient.cli.commands import EXIT_FAILED, EXIT_USAGE, backends_command, chat_command, render_command
from llmclient.cli.inputs import read_choices, read_response_format
from llmclient.cli.logs import log_to_stderr
from llmclient.cli.results import results_command
from llmclient.cli.run import run_command
from llmclient.config import CONFIG_ENV
from llmclient.errors import ConfigError, InvalidRequestError, LLMClientError

COMMANDS = {
    "run": run_command,
    "chat": chat_command,
    "render": render_command,
    "backends": backends_command,
    "results": results_command,
}
INTERRUPTED = {"run": "interrupted; finished rows are saved, rerun to continue"}
"""What Ctrl-C says, per command (``interrupted`` for the others)."""


def _param(text: str) -> tuple[str, Any]:
    name, sep, raw = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected name=value, got {text!r} (e.g. -p temperature=0)")
    try:
        value: Any = json.loads(raw)
    except ValueError:
        value = raw
    return name.strip(), value


def _rpm(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a number of requests per minute above 0, got {text!r}")
    return value


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", metavar="FILE", help=f"config file (default: ${CONFIG_ENV} or ./llmclient.toml)"
    )
    parser.add_argument(
        "--backend",
        "-b",
        metavar="NAME",
        help="a backend name from the config file, or provider:model (default: $LLMCLIENT_BACKEND, then the "
        "file's default)",
    )
    parser.add_argument(
        "-p",
        "--param",
        dest="params",
        metavar="NAME=VALUE",
        type=_param,
        action="append",
        default=[],
        help="a generation parameter, e.g. -p temperature=0 -p max_new_tokens=128 (values are read as JSON "
        "when they parse)",
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="log what llmclient does (retries, loading)"
    )
    structured = parser.add_mutually_exclusive_group()
    structured.add_argument(
        "--schema",
        metavar="FILE",
        type=Path,
        help="a JSON Schema file every reply must match; the reply is checked and parsed",
    )
    structured.add_argument(
        "--choices",
        metavar="A,B,C",
        help="comma-separated labels: score each one as the reply and pick the most probable (no text is "
        "generated); for a generated reply constrained to them, use a --schema with an enum",
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``llmclient`` command."""
    parser = argparse.ArgumentParser(
        prog="llmclient",
        description="One prompt pipeline, any backend: local Hugging Face models or OpenAI-compatible APIs.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser(
        "run",
        help="run a prompt template over every row of a dataset",
        description="Render TEMPLATE for every row of INPUT, send it to the backend, append each reply to "
        "OUTPUT (JSON Lines). A rerun with the same OUTPUT skips rows already done.",
    )
    run.add_argument("input", help="the dataset: .jsonl, .csv or .parquet")
    source = run.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--template", "-t", help="Jinja2 template of the user message, e.g. 'Summarise: {{ text }}'"
    )
    source.add_argument("--template-file", "-T", type=Path, help="a file holding the template")
    run.add_argument(
        "--output", "-o", type=Path, required=True, help="results file (JSON Lines), appended to"
    )
    run.add_argument("--system", help="a system message (also a template)")
    run.add_argument("--system-file", type=Path, help="a file holding the system message")
    run.add_argument(
        "--few-shot", type=Path, help="a JSON file with example messages placed before each row's"
    )
    run.add_argument("--id-field", help="the field that identifies a row (default: a hash of the row)")
    run.add_argument(
        "--keep-fields", help="comma-separated input fields copied into each result (default: all)"
    )
    run.add_argument(
        "--concurrency", "-c", type=int, default=16, help="requests in flight at most (default 16)"
    )
    run.add_argument("--rpm", type=_rpm, help="requests per minute at most (a number above 0)")
    run.add_argument("--retry-failed", action="store_true", help="retry rows that failed in an earlier run")
    run.add_argument("--dry-run", action="store_true", help="render prompts and count tokens; call no model")
    run.add_argument("--limit", type=int, help="only the first N rows")
    run.add_argument(
        "--max-cost",
        type=float,
        help="start no more rows once the run's cost would pass this (exit code 3; rerun to continue)",
    )
    run.add_argument("--fsync", action="store_true", help="fsync each result line (survives power loss)")
    run.add_argument("--no-progress", action="store_true", help="no progress bar even on a terminal")
    run.add_argument(
        "--nulls",
        choices=("error", "empty"),
        default="error",
        help="a null field the template prints: fail the row (error, the default) or render it as empty text",
    )
    run.add_argument(
        "--engine",
        choices=("local", "ray"),
        default="local",
        help="where rows run: this process (local, the default) or Ray Data (ray: --output is a folder)",
    )
    run.add_argument("--actors", type=int, help="with --engine ray: actors, one backend each (default 1)")
    run.add_argument("--batch-size", type=int, default=16, help="with --engine ray: rows per batch")
    run.add_argument("--num-gpus", type=float, help="with --engine ray: GPUs each actor takes")
    _common(run)

    chat = commands.add_parser(
        "chat",
        help="send one prompt, or chat interactively",
        description="Send PROMPT (or standard input) and print the reply as it streams. With no prompt on a "
        "terminal, start an interactive session (/exit to leave).",
    )
    chat.add_argument("prompt", nargs="*", help="the prompt (default: standard input)")
    chat.add_argument("--system", "-s", help="a system message")
    chat.add_argument("--interactive", "-i", action="store_true", help="an interactive session")
    chat.add_argument("--no-stream", action="store_true", help="print the reply when it is complete")
    _common(chat)

    render = commands.add_parser(
        "render",
        help="print exactly what the backend would be sent",
        description="Print the prompt the backend will get for PROMPT: the exact text for a local model, the "
        "JSON body for a remote one.",
    )
    render.add_argument("prompt", nargs="*", help="the prompt (default: standard input)")
    render.add_argument("--system", "-s", help="a system message")
    _common(render)

    backends = commands.add_parser(
        "backends",
        help="list the configured backends",
        description="List the backends of the config file and the backend types installed.",
    )
    backends.add_argument(
        "--check", action="store_true", help="build each backend and send it one short prompt"
    )
    backends.add_argument("--config", metavar="FILE", help="config file")
    backends.add_argument("-v", "--verbose", action="store_true", help="log what llmclient does")

    results = commands.add_parser(
        "results",
        help="print a results file, one record per row, in input order",
        description="Print what a run wrote to FILE (its --output): one readable record per row, in the "
        "order of the input, whatever order the rows finished in.",
    )
    results.add_argument("file", metavar="FILE", help="the results file of a run (JSON Lines)")
    results.add_argument("--json", action="store_true", help="one JSON line per row instead")
    results.add_argument("-v", "--verbose", action="store_true", help="log what llmclient does")
    return parser


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("llmclient")
    except PackageNotFoundError:  # run from a checkout that is not installed
        return "(not installed)"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    args = build_parser().parse_args(argv)
    with log_to_stderr(verbose=args.verbose):
        try:
            handler = COMMANDS[args.command]
            if args.command in ("run", "chat", "render"):
                args.response_format = read_response_format(args.schema)
                args.choices = read_choices(args.choices)
            return handler(args)
        except (ConfigError, InvalidRequestError) as error:
            print(f"llmclient: error: {error}", file=sys.stderr)
            return EXIT_USAGE
        except LLMClientError as error:
            print(f"llmclient: error: {type(error).__name__}: {error}", file=sys.stderr)
            return EXIT_FAILED
        except KeyboardInterrupt:
            print(f"\nllmclient: {INTERRUPTED.get(args.command, 'interrupted')}", file=sys.stderr)
            return 130
