"""One local Ray cluster (2 CPUs) for the whole session, and a loopback server answering each prompt."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from scale_support import EchoServer

from llmclient.testing.server import LoopbackServer


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[str]:
    """A local Ray cluster of 2 CPUs started once; yields its address (for a driver in another process)."""
    ray = pytest.importorskip("ray", reason="the ray engine needs ray (pip install 'llmclient[ray]')")
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


@pytest.fixture
def echo() -> Iterator[tuple[EchoServer, LoopbackServer]]:
    handler = EchoServer()
    with LoopbackServer(handler) as server:
        yield handler, server
