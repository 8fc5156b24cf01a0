"""The commands: ``run``, ``chat``, ``render``, ``backends``; each returns its exit code."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from llmclient.backend import ChatBackend
from llmclient.cli.inputs import call_options, read_few_shot, read_text
from llmclient.config import ConfigFile, find_config_file, load, resolve
from llmclient.errors import InvalidRequestError, LLMClientError
from llmclient.logprobs import best
from llmclient.tools.calls import shown_call
from llmclient.types import Message

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_BUDGET = 0, 1, 2, 3


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


def _template(args: argparse.Namespace) -> str:
    return args.template if args.template is not None else read_text(args.template_file, "template") or ""


def chat_command(args: argparse.Namespace) -> int:
    """``llmclient chat``: one prompt, or an interactive session."""
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
        scored = backend.score(messages, args.choices, **call_options(args))
        chosen = best(scored)
        scores = {s.text: round(s.probability, 6) for s in scored}
        print(json.dumps({"choice": chosen.text, "scores": scores, "exact": chosen.exact}, indent=2))
        return chosen.text
    if args.response_format is not None:
        from llmclient.pipeline.results import parsed_json

        reply = backend.chat(messages, **call_options(args))
        print(json.dumps(parsed_json(reply.parsed), indent=2, ensure_ascii=False))
        return reply.text
    if args.no_stream:
        reply = backend.chat(messages, **call_options(args))
        print(reply.text)
    else:
        with backend.stream(messages, **call_options(args)) as stream:
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


def render_command(args: argparse.Namespace) -> int:
    """``llmclient render``: what the model would be given."""
    with load(args.backend, config_path=args.config) as backend:
        print(backend.render_prompt(_prompt(args), **call_options(args)))
    return EXIT_OK


def backends_command(args: argparse.Namespace) -> int:
    """``llmclient backends``: the types and configured backends, optionally checked."""
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
