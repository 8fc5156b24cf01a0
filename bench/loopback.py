"""The loopback server for benchmarks: in its own process, on a CPU of its own.

A hosted model runs on another machine, so its server's CPU time is never the client's. On a
machine with two or more CPUs the server process is pinned to the last one and the benchmark to the
others; raw clients and llmclient are measured under the same split, so their ratio stays fair.
(Sharing both cores made the aiohttp-based test server's own cost show up as client overhead.)
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager


def _split() -> tuple[list[str], set[int] | None]:
    """The command prefix that pins the server, and the CPUs left for the benchmark."""
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if len(cpus) < 2:
        return [], None
    return ["taskset", "-c", str(cpus[-1])], set(cpus[:-1])


@contextmanager
def server(latency: float = 0.0, *extra: str) -> Iterator[str]:
    """Start ``python -m llmclient.testing.server`` with ``extra`` arguments; yields its /v1 URL."""
    prefix, ours = _split()
    command = [*prefix, sys.executable, "-m", "llmclient.testing.server", "--port", "0"]
    command += ["--latency", str(latency), *extra]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    if ours is not None:
        os.sched_setaffinity(0, ours)
    try:
        assert process.stdout is not None
        yield process.stdout.readline().split()[1] + "/v1"
    finally:
        process.terminate()
        process.wait()
