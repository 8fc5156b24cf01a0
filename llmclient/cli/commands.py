"""The commands ``chat``, ``render``, ``backends`` and ``results`` (``run`` is in :mod:`.run`); each
returns its exit code.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

from llmclient.backend import ChatBackend
from llmclient.cli.inputs import call_options
from llmclient.config import ConfigFile, find_config_file, load, resolve
from llmclient.errors import ConfigError, InvalidRequestError, LLMClientError
from llmclient.logprobs import best
from llmclient.registry import get_factory
from llmclient.tools.calls import shown_call
from llmclient.types import Message

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_BUDGET = 0, 1, 2, 3


def _prompt(args: argparse.Namespace) -> list[Message]:
    text = " ".join(args.prompt) if args.prompt else sys.stdin.read()
    if not text.strip():
        raise InvalidRequestError("no prompt: pass it as arguments or on standard input")
    messages = [Message(role="system", content=args.system)] if args.system else []
    return [*messages, Message(role="user", content=text.strip())]


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
    """``llmclient render``: what the model would be given.

    Rendering sends nothing, so a remote backend whose API key is not set still renders: it is built
    with a stand-in key, which never leaves this process (the body printed carries no key).
    """
    config = resolve(args.backend, config_path=args.config)
    factory = get_factory(config.type)
    try:
        backend = factory(config)
    except ConfigError as first:
        try:
            backend = factory(replace(config, options={**config.options, "api_key": "-"}))
        except LLMClientError:
            raise first from None  # not a missing key after all: the first error is the one to show
    with backend:
        print(backend.render_prompt(_prompt(args), **call_options(args)))
    return EXIT_OK


def backends_command(args: argparse.Namespace) -> int:
    """``llmclient backends``: the types and configured backends, optionally checked.

    With no config file, ``--check`` checks the backend a command would use: ``$LLMCLIENT_BACKEND``,
    else the embedded default ``hf:smollm2`` (or says why there is none, and exits 1).
    """
    from llmclient.registry import backend_types

    path = find_config_file(args.config)
    failures = 0
    if path is None:
        print(
            "no llmclient.toml here and $LLMCLIENT_CONFIG is not set; use provider:model specs, e.g. "
            "openrouter:meta-llama/llama-3.1-8b-instruct"
        )
        if args.check:
            status = _check(None, None)
            failures += status.startswith("FAILED")
            print(f"  the backend commands use now: {status}")
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


def _check(name: str | None, path: Path | None) -> str:
    """``ok (0.42s)`` when backend ``name`` answers a short prompt, else ``FAILED: ...`` with why.

    ``name=None`` checks the backend a command would use with no ``-b`` (named as provider:model).
    """
    try:
        with load(name, config_path=path) as backend:
            reply = backend.chat("Say OK.", max_new_tokens=4)
            dtype_name = getattr(backend, "dtype", None)  # local backends say which dtype they run in
            dtype = f", {dtype_name}" if isinstance(dtype_name, str) else ""
    except LLMClientError as error:
        return f"FAILED: {type(error).__name__}: {error}"
    return (
        f"{backend.type_name}:{backend.model} ok ({reply.latency:.2f}s{dtype})"
        if name is None
        else f"ok ({reply.latency:.2f}s{dtype})"
    )
