"""Ray's own overhead: rows/s through the ray engine with 1 and 2 actors against pipeline.run.

    python bench/ray_overhead.py [--quick] [--rows N] [--latency S] [--concurrency C]

The same rows, template and backend (the loopback server in its own process, answering every request
after a fixed latency) through:

- ``pipeline.run`` in this process, ``concurrency`` C (and 2 x C, the in-flight total of 2 actors);
- ``llmclient.scale.ray.run`` with 1 actor and with 2 actors, each C rows in flight, on a local Ray
  cluster of 2 CPUs started once before the runs (its start-up is reported, not counted).

Each figure is the wall time of the whole run (planning, actor start-up with its backend, the rows,
the shards), as rows/s and as a percent of the ideal ``in flight / latency`` rows/s.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from pipeline import rows, server  # bench/pipeline.py: the loopback server in its own process

from llmclient.pipeline import RunSummary
from llmclient.pipeline import run as pipeline_run
from llmclient.scale import ray as engine

TEMPLATE = "Analyse {{ foods }}: {{ comment }}"


def measure(label: str, in_flight: int, latency: float, n: int, go: Callable[[], RunSummary]) -> None:
    started = time.perf_counter()
    summary = go()
    elapsed = time.perf_counter() - started
    assert summary.done == n, summary
    rate = n / elapsed
    ideal = in_flight / latency
    print(f"{label:<34} {in_flight:>3} in flight  {rate:8.1f} rows/s  {rate / ideal * 100:5.1f}% of ideal")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="400 rows instead of 4,000")
    parser.add_argument("--rows", type=int, help="rows per run")
    parser.add_argument("--latency", type=float, default=0.05, help="server latency in seconds (0.05)")
    parser.add_argument("--concurrency", type=int, default=16, help="rows in flight per process/actor (16)")
    args = parser.parse_args()
    n = args.rows or (400 if args.quick else 4000)
    c, latency = args.concurrency, args.latency
    data = rows(n)

    import ray

    started = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
    print(f"ray.init (local cluster, 2 CPUs): {time.perf_counter() - started:.1f}s, not counted below")
    print(f"{n} rows, server latency {latency * 1000:.0f} ms")
    with server(latency) as base, tempfile.TemporaryDirectory() as tmp:
        config = {"type": "openai-compatible", "model": "m", "base_url": base, "max_connections": 2 * c}
        common = {"template": TEMPLATE, "id_field": "id", "progress": False}
        for in_flight in (c, 2 * c):
            out = Path(tmp) / f"pipeline-{in_flight}.jsonl"
            measure(
                "pipeline.run (one process)",
                in_flight,
                latency,
                n,
                lambda out=out, k=in_flight: pipeline_run(config, data, output=out, concurrency=k, **common),
            )
        for actors in (1, 2):
            out = Path(tmp) / f"ray-{actors}"
            measure(
                f"scale.ray.run, {actors} actor(s)",
                actors * c,
                latency,
                n,
                lambda out=out, a=actors: engine.run(
                    config, data, output=out, actors=a, batch_size=64, concurrency=c, **common
                ),
            )
    ray.shutdown()


if __name__ == "__main__":
    main()
