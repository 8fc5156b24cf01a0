"""The batch runner's own cost: throughput against the ideal, and the time to resume a half-done run.

    python bench/pipeline.py [--quick]

1. 2,000 rows at 50 ms server latency with 64 in flight: percent of the ideal 2000/64 x 50 ms, for
   the pipeline and, in the same run, for the backend alone (``achat_many`` of the same prompts).
2. Resuming a 10,000-row output that is half done: seconds from the call until the first new
   request would be sent (measured as a dry run over the remaining rows, which does all the skipping
   work and calls no model).

The loopback server runs in its own process.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import loopback

import llmclient
from llmclient import pipeline
from llmclient.pipeline.keys import RowKeys, key_text


@contextmanager
def server(latency: float) -> Iterator[str]:
    with loopback.server(latency, "--text", "A short analysis of the order.") as base:
        yield base


def rows(n: int) -> list[dict[str, object]]:
    return [{"id": i, "foods": f"dish {i}", "comment": f"comment {i}"} for i in range(n)]


def throughput(n: int, in_flight: int, latency: float, rounds: int) -> tuple[float, float]:
    ideal = n / in_flight * latency
    data = rows(n)
    with server(latency) as base, tempfile.TemporaryDirectory() as tmp:
        backend = llmclient.load(
            {"type": "openai-compatible", "model": "m", "base_url": base, "max_connections": in_flight}
        )

        async def measure() -> tuple[float, float]:
            best_pipeline = best_backend = float("inf")
            prompts = [[{"role": "user", "content": f"Analyse {r['foods']}: {r['comment']}"}] for r in data]
            for round_ in range(rounds):
                started = time.perf_counter()
                summary = await pipeline.arun(
                    backend,
                    data,
                    template="Analyse {{ foods }}: {{ comment }}",
                    output=Path(tmp) / f"out{round_}.jsonl",
                    id_field="id",
                    concurrency=in_flight,
                    progress=False,
                )
                best_pipeline = min(best_pipeline, time.perf_counter() - started)
                assert summary.done == n, summary
                started = time.perf_counter()
                await backend.achat_many(prompts, concurrency=in_flight)
                best_backend = min(best_backend, time.perf_counter() - started)
            await backend.aclose()
            return ideal / best_pipeline * 100, ideal / best_backend * 100

        result = asyncio.run(measure())
        backend.close()
        return result


def resume(n: int) -> float:
    """Seconds to skip the done half of an n-row output and reach the remaining rows."""
    data = rows(n)
    template = "Analyse {{ foods }}: {{ comment }}"
    backend = llmclient.load({"type": "openai-compatible", "model": "m", "base_url": "http://127.0.0.1:9/v1"})
    fingerprint = pipeline.run_fingerprint(
        pipeline.PromptTemplate(template),
        backend.defaults.merged(llmclient.GenerationParams()),
        backend.model,
        backend_type=backend.type_name,
        endpoint=backend.endpoint,
    )
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out.jsonl"
        keys = RowKeys("id", fingerprint)
        with out.open("w") as handle:
            for index, row in enumerate(data[: n // 2]):
                key = key_text(keys.of(index, row)[1])
                handle.write(
                    json.dumps(
                        {
                            "row_id": row["id"],
                            "key": key,
                            "status": "ok",
                            "input": row,
                            "text": "done",
                            "error": None,
                        }
                    )
                    + "\n"
                )
        started = time.perf_counter()
        summary = pipeline.run(
            backend, data, template=template, output=out, id_field="id", dry_run=True, progress=False
        )
        elapsed = time.perf_counter() - started
    assert summary.skipped == n // 2, summary
    backend.close()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="one round")
    args = parser.parse_args()
    rounds = 1 if args.quick else 3
    ours, alone = throughput(2000, 64, 0.05, rounds)
    print("| measure | figure | target |")
    print("| --- | ---: | ---: |")
    print(f"| pipeline, 2,000 rows, 50 ms, 64 in flight | {ours:.1f}% of ideal | >= 80% |")
    print(f"| backend alone (achat_many), same prompts | {alone:.1f}% of ideal | >= 85% |")
    print(f"| resume a 10,000-row output, half done | {resume(10_000):.3f} s | < 1 s |")


if __name__ == "__main__":
    main()
