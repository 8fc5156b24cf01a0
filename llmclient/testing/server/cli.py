"""``python -m llmclient.testing.server``: the loopback server in a process of its own, for benchmarks
(where the client must not share the server's GIL) and subprocess tests.

Prints ``LISTENING http://HOST:PORT`` once ready and serves an
:class:`~llmclient.testing.server.replies.OpenAIHandler` until SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from collections.abc import Sequence

from llmclient.testing.server.exchange import Handler
from llmclient.testing.server.replies import DEFAULT_TEXT, OpenAIHandler
from llmclient.testing.server.serving import ServerCore


async def _serve_forever(handler: Handler, host: str, port: int) -> None:
    core = ServerCore(handler)
    await core.start(host, port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):  # not on Windows
            loop.add_signal_handler(sig, stop.set)
    display_host = f"[{host}]" if ":" in host else host
    sys.stdout.write(f"LISTENING http://{display_host}:{core.port}\n")
    sys.stdout.flush()
    try:
        await stop.wait()
    finally:
        await core.close()


def main(argv: Sequence[str] | None = None) -> int:
    """Serve an :class:`OpenAIHandler` until SIGTERM/SIGINT (for benchmarks in a separate process)."""
    parser = argparse.ArgumentParser(
        prog="python -m llmclient.testing.server",
        description="Loopback OpenAI-compatible chat-completions server for tests and benchmarks. "
        "Prints 'LISTENING http://HOST:PORT' once ready.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (default)")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds before each status line")
    parser.add_argument(
        "--stream-pieces", type=int, default=None, help="content chunks per stream (default: one per word)"
    )
    parser.add_argument("--chunk-delay", type=float, default=0.0, help="seconds between stream chunks")
    parser.add_argument("--text", default=DEFAULT_TEXT, help="the assistant reply text")
    parser.add_argument("--model", default=None, help="model name to answer with (default: echo request)")
    args = parser.parse_args(argv)
    handler = OpenAIHandler(
        args.text,
        latency=args.latency,
        stream_pieces=args.stream_pieces,
        chunk_delay=args.chunk_delay,
        model=args.model,
    )
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve_forever(handler, args.host, args.port))
    return 0
