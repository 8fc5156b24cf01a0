"""The ``llmclient`` command: run a dataset through a backend, chat, render prompts, list backends.

Exit codes: 0 when everything asked for was done, 1 when some rows failed (or a check failed),
2 for bad usage or configuration, with a message that says what to fix, 3 when ``run`` stopped
before the end of its input because ``--max-cost`` was reached (finished rows are saved; rerun with
a higher ``--max-cost`` to continue).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

from llmclient.backend import ChatBackend
from llmclient.config import CONFIG_ENV, ConfigFile, find_config_file, load, resolve
from llmclient.errors import ConfigError, InvalidRequestError, LLMClientError
from llmclient.logprobs import best, check_candidates
from llmclient.structured import Choice, OutputFormat, output_format
from llmclient.tools.calls import shown_call
from llmclient.types import Message

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_BUDGET = 0, 1, 2, 3


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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="llmclient: %(levelname)s %(message)s"
    )
    try:
        handler = {"run": _run, "chat": _chat, "render": _render, "backends": _backends}[args.command]
        if args.command != "backends":
            args.response_format = _response_format(args.schema)
            args.choices = _choices(args.choices)
        return handler(args)
    except (ConfigError, InvalidRequestError) as error:
        print(f"llmclient: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except LLMClientError as error:
        print(f"llmclient: error: {type(error).__name__}: {error}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("\nllmclient: interrupted; finished rows are saved, rerun to continue", file=sys.stderr)
        return 130


def _read(path: Path | None, what: str) -> str | None:
    if path is None:
        return None
    try:
        return path.read_text(encoding="utf-8")
    except OSError as error:
        raise InvalidRequestError(f"cannot read the {what} file {str(path)!r}: {error.strerror}") from error
    except UnicodeDecodeError as error:
        raise InvalidRequestError(
            f"the {what} file {str(path)!r} is not UTF-8 text (byte 0x{error.object[error.start]:02x} at "
            f"offset {error.start}); save it as UTF-8"
        ) from error


def _json_text(text: str, path: Path | None, what: str, shape: type, wanted: str) -> Any:
    """The JSON value of the ``what`` file's ``text``, which must be a ``shape`` (``wanted`` says
    what it must be, for the message).
    """
    try:
        value = json.loads(text)
    except ValueError as error:
        raise InvalidRequestError(
            f"the {what} file {str(path)!r} is not valid JSON ({error}); it must be {wanted}"
        ) from error
    if not isinstance(value, shape):
        raise InvalidRequestError(
            f"the {what} file {str(path)!r} holds a JSON {type(value).__name__}; it must be {wanted}"
        )
    return value


def _few_shot(path: Path | None) -> list[Any]:
    text = _read(path, "few-shot")
    if not text:
        return []
    example = '[{"role": "user", "content": "..."}, {"role": "assistant", "content": "..."}]'
    return cast(list[Any], _json_text(text, path, "few-shot", list, f"a list of messages like {example}"))


def _choices(choices: str | None) -> tuple[str, ...] | None:
    """The labels of ``--choices a,b,c``, checked before any backend is loaded."""
    if choices is None:
        return None
    options = [option.strip() for option in choices.split(",")]
    if not all(options):
        raise InvalidRequestError(
            f"--choices takes comma-separated labels, none of them empty, got {choices!r} "
            f"(e.g. --choices positive,negative,mixed)"
        )
    return check_candidates(Choice(options).options)


def _response_format(schema: Path | None) -> OutputFormat | None:
    """What ``--schema FILE`` asks every reply to be, checked before any backend is loaded: a file
    that is missing, not JSON or not a JSON Schema is a usage error naming it.
    """
    text = _read(schema, "schema")
    if text is None:
        return None
    example = '{"type": "object", "properties": {...}, "required": [...]}'
    value = _json_text(text, schema, "schema", dict, f"a JSON Schema object like {example}")
    try:
        return output_format(value)
    except InvalidRequestError as error:
        raise InvalidRequestError(f"the schema file {str(schema)!r}: {error}") from error


def _options(args: argparse.Namespace) -> dict[str, Any]:
    """The generation parameters of ``-p``, with the reply's format of ``--schema``."""
    options = dict(args.params)
    given = args.response_format is not None or args.choices is not None
    if given and options.get("response_format") is not None:
        raise InvalidRequestError(
            "-p response_format=... and --schema/--choices are both given; give the reply's format once"
        )
    if args.response_format is not None:
        options["response_format"] = args.response_format
    return options


def _run(args: argparse.Namespace) -> int:
    from llmclient.pipeline import RunOptions, run_with

    options = RunOptions(
        template=args.template if args.template is not None else _read(args.template_file, "template") or "",
        output=args.output,
        system=args.system if args.system is not None else _read(args.system_file, "system"),
        few_shot=_few_shot(args.few_shot),
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
    config = resolve(args.backend, config_path=args.config)
    if args.engine == "ray":
        from llmclient.scale.ray import run_with as ray_run_with

        resources = {"num_gpus": args.num_gpus} if args.num_gpus else None
        actors = args.actors or 1
        summary = ray_run_with(
            config, args.input, options, actors=actors, batch_size=args.batch_size, resources=resources
        )
    else:
        if args.actors is not None or args.num_gpus is not None:
            raise InvalidRequestError("--actors and --num-gpus need --engine ray")
        summary = run_with(config, args.input, options)
    print(summary)
    if summary.failed:
        print(
            f"llmclient: {summary.failed} rows failed; their errors are in {args.output}; "
            f"rerun with --retry-failed to try them again",
            file=sys.stderr,
        )
    if summary.stopped:
        print(f"llmclient: stopped before the end of the input: {summary.stopped}", file=sys.stderr)
        return EXIT_BUDGET
    return EXIT_FAILED if summary.failed else EXIT_OK


def _prompt(args: argparse.Namespace) -> list[Message]:
    text = " ".join(args.prompt) if args.prompt else sys.stdin.read()
    if not text.strip():
        raise InvalidRequestError("no prompt: pass it as arguments or on standard input")
    messages = [Message(role="system", content=args.system)] if args.system else []
    return [*messages, Message(role="user", content=text.strip())]


def _chat(args: argparse.Namespace) -> int:
    interactive = args.interactive or (not args.prompt and sys.stdin.isatty())
    with load(args.backend, config_path=args.config) as backend:
        if interactive:
            return _interactive(backend, args)
        _answer(backend, _prompt(args), args)
    return EXIT_OK


def _answer(backend: ChatBackend, messages: list[Message], args: argparse.Namespace) -> str:
    """Print the reply to ``messages`` (streamed unless ``--no-stream``) and return its text.

    With ``--schema`` the checked value is printed instead, as one pretty JSON document (so it pipes
    into ``jq``); a reply that does not pass is a ``StructuredOutputError``. With ``--choices`` the
    labels are scored and the chosen one, every label's probability and ``exact`` are printed (a
    backend that cannot score says why: ``UnsupportedFeatureError``).
    """
    if args.choices is not None:
        scored = backend.score(messages, args.choices, **_options(args))
        chosen = best(scored)
        scores = {s.text: round(s.probability, 6) for s in scored}
        print(json.dumps({"choice": chosen.text, "scores": scores, "exact": chosen.exact}, indent=2))
        return chosen.text
    if args.response_format is not None:
        from llmclient.pipeline.results import parsed_json

        reply = backend.chat(messages, **_options(args))
        print(json.dumps(parsed_json(reply.parsed), indent=2, ensure_ascii=False))
        return reply.text
    if args.no_stream:
        reply = backend.chat(messages, **_options(args))
        print(reply.text)
    else:
        with backend.stream(messages, **_options(args)) as stream:
            for delta in stream:
                print(delta.text, end="", flush=True)
        print()
        reply = stream.final()
    for call in reply.tool_calls:  # the model asked for tools: say which, with what
        print(f"tool call {call.id}: {shown_call(call)}")
    return reply.text


def _interactive(backend: ChatBackend, args: argparse.Namespace) -> int:
    history = [Message(role="system", content=args.system)] if args.system else []
    print(f"chatting with {backend.name} ({backend.model}); /exit or Ctrl-D to leave", file=sys.stderr)
    while True:
        try:
            line = input("> ")
        except EOFError:
            print(file=sys.stderr)
            return EXIT_OK
        if line.strip() in ("/exit", "/quit"):
            return EXIT_OK
        if not line.strip():
            continue
        history.append(Message(role="user", content=line))
        history.append(Message(role="assistant", content=_answer(backend, history, args)))


def _render(args: argparse.Namespace) -> int:
    with load(args.backend, config_path=args.config) as backend:
        print(backend.render_prompt(_prompt(args), **_options(args)))
    return EXIT_OK


def _backends(args: argparse.Namespace) -> int:
    from llmclient.registry import backend_types

    path = find_config_file(args.config)
    failures = 0
    if path is None:
        print(
            "no llmclient.toml here and $LLMCLIENT_CONFIG is not set; use provider:model specs, e.g. "
            "openrouter:meta-llama/llama-3.1-8b-instruct"
        )
    else:
        config = ConfigFile.read(path)
        print(f"backends in {path}:")
        for name, backend in config.backends.items():
            marker = " (default)" if name == config.default else ""
            status = ""
            if args.check:
                status = "  " + _check(name, path)
                failures += not status.strip().startswith("ok")
            print(f"  {name}{marker}: {backend.type} {backend.model}{status}")
    print(f"backend types: {', '.join(backend_types())}")
    return EXIT_FAILED if failures else EXIT_OK


def _check(name: str, path: Path) -> str:
    try:
        with load(name, config_path=path) as backend:
            reply = backend.chat("Say OK.", max_new_tokens=4)
    except LLMClientError as error:
        return f"FAILED: {type(error).__name__}: {error}"
    return f"ok ({reply.latency:.2f}s)"
