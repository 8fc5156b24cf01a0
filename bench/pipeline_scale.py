"""The batch runner at a million rows on one machine: memory, throughput, resume, a SIGKILL, reading back.

    python bench/pipeline_scale.py                 # 1,000,000 rows (tens of minutes on 2 cores)
    python bench/pipeline_scale.py --rows 20000    # the same checks, small

The rows are generated as JSON Lines. The loopback echo server runs in its own process on a CPU of
its own (bench/loopback.py), and each run of the batch runner in a child process of its own, so its
peak RSS (``os.wait4``) is the runner's alone.

1. The runner over every row at 64 in flight: its peak RSS (<= 300 MB) and rows/s. Its rows/s as a
   ratio to the backend alone (``achat_many`` of the same prompts at 64 in flight on the same
   server), >= 80%: measured in 3 interleaved rounds of ``--ratio-rows`` rows (the runner on a fresh
   output, then the backend alone), the median round's ratio, so a machine whose load changes
   during a long run does not skew it; and the same rounds' CPU seconds a row, which a busy
   machine disturbs less (the client is what is busy with a 0 ms server).
2. A rerun over the finished output skips every row: seconds for the whole process, <= 5 s (and
   its CPU seconds, which a busy machine disturbs less).
3. The finished output less ``--kill-rows`` rows picked at random (50,000; give ``--rows`` for a
   fresh output): a run to answer them, SIGKILLed at a random point (after 10-90% of them, by the
   file's growth), then a rerun: every row of the output has exactly one line, and it is ok
   (checked by streaming the output, a count per row).
4. ``pipeline.read_results`` over the finished output: every row once, in input order; seconds and
   peak RSS of the reading process.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import loopback

TEMPLATE = "Analyse {{ foods }}: {{ comment }}"
REPLY = "A short analysis of the order."


def write_rows(path: Path, count: int) -> None:
    """``count`` rows of JSON Lines, written as they are made (never all in memory)."""
    with path.open("w") as handle:
        for i in range(count):
            handle.write(json.dumps({"id": i, "foods": f"dish {i}", "comment": f"comment {i}"}) + "\n")


def backend_config(base: str, in_flight: int) -> dict[str, Any]:
    return {"type": "openai-compatible", "model": "m", "base_url": base, "max_connections": in_flight}


def reference(base: str, count: int, in_flight: int) -> tuple[float, float]:
    """Rows/s of the backend alone (``achat_many`` of ``count`` prompts at ``in_flight``), its CPU seconds."""
    import llmclient

    prompts = [[{"role": "user", "content": f"Analyse dish {i}: comment {i}"}] for i in range(count)]

    async def measure() -> tuple[float, float]:
        backend = llmclient.load(backend_config(base, in_flight))
        try:
            started, cpu = time.perf_counter(), time.process_time()
            await backend.achat_many(prompts, concurrency=in_flight)
            return count / (time.perf_counter() - started), time.process_time() - cpu
        finally:
            await backend.aclose()

    return asyncio.run(measure())


def child(mode: str, *args: str) -> list[str]:
    return [sys.executable, __file__, "--child", mode, *args]


def finish(process: subprocess.Popen[str]) -> tuple[dict[str, Any], float, float]:
    """Wait for a child: what it printed (one JSON line), its peak RSS in MB and its CPU seconds."""
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    assert process.stdout is not None
    out = process.stdout.read()
    assert process.returncode == 0, f"child failed ({process.returncode}): {out}"
    return json.loads(out.strip().splitlines()[-1]), usage.ru_maxrss / 1024, usage.ru_utime + usage.ru_stime


def run_child(rows: Path, out: Path, base: str, in_flight: int) -> subprocess.Popen[str]:
    config = json.dumps(backend_config(base, in_flight))
    return subprocess.Popen(
        child("run", str(rows), str(out), config, str(in_flight)), stdout=subprocess.PIPE, text=True
    )


def timed_run(rows: Path, out: Path, base: str, in_flight: int) -> tuple[dict[str, Any], float, float, float]:
    """One whole run in a child: its summary, peak RSS in MB, CPU seconds, and the process's seconds."""
    started = time.perf_counter()
    summary, rss, cpu = finish(run_child(rows, out, base, in_flight))
    return summary, rss, cpu, time.perf_counter() - started


def without(out: Path, copy: Path, dropped: bytearray) -> None:
    """Copy the results file ``out`` leaving out the lines of the rows marked in ``dropped``: rows to do."""
    with out.open("rb") as source, copy.open("wb") as target:
        for line in source:
            if not dropped[json.loads(line)["row_id"]]:
                target.write(line)


def count_lines(out: Path, rows: int) -> tuple[bytearray, int]:
    """How many ok lines each row has (by ``row_id``), and how many lines are not ok, streaming the file."""
    counts, other = bytearray(rows), 0
    with out.open("rb") as handle:
        for line in handle:
            record = json.loads(line)
            if record["status"] == "ok":
                counts[record["row_id"]] = min(counts[record["row_id"]] + 1, 255)
            else:
                other += 1
    return counts, other


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--in-flight", type=int, default=64)
    parser.add_argument("--latency", type=float, default=0.0, help="server seconds per reply (default 0)")
    parser.add_argument("--ratio-rows", type=int, default=20_000, help="rows of each interleaved ratio round")
    parser.add_argument(
        "--kill-rows",
        type=int,
        default=50_000,
        help="rows left to do in the run that is killed (--rows: all)",
    )
    parser.add_argument(
        "--seed", type=int, default=None, help="for the rows left to do and the SIGKILL's moment"
    )
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return children(*args.child)
    n, in_flight = args.rows, args.in_flight
    slice_rows, kill_rows = min(n, args.ratio_rows), min(n, args.kill_rows)
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as tmp, loopback.server(args.latency, "--text", REPLY) as base:
        rows, out, killed = Path(tmp) / "rows.jsonl", Path(tmp) / "out.jsonl", Path(tmp) / "killed.jsonl"
        write_rows(rows, n)
        summary, rss, _, _ = timed_run(rows, out, base, in_flight)
        assert summary["done"] == n, summary
        rate = n / summary["wall_time"]
        sample = Path(tmp) / "sample.jsonl"
        write_rows(sample, slice_rows)
        walls, cpus = [], []  # per round: the runner's over the backend alone's rows/s, and CPU a row
        for round_ in range(3):
            ours, _, _, _ = timed_run(sample, Path(tmp) / f"round{round_}.jsonl", base, in_flight)
            alone, alone_cpu = reference(base, slice_rows, in_flight)
            walls.append(slice_rows / ours["wall_time"] / alone)
            cpus.append(alone_cpu / ours["cpu"])
        again, _, rerun_cpu, rerun_s = timed_run(rows, out, base, in_flight)
        assert (again["done"], again["skipped"]) == (0, n), again

        dropped = bytearray(n)
        for row in rng.sample(range(n), kill_rows):
            dropped[row] = 1
        without(out, killed, dropped)
        process = run_child(rows, killed, base, in_flight)
        started, line = time.perf_counter(), out.stat().st_size / n  # lines are about the same size
        target = killed.stat().st_size + rng.uniform(0.1, 0.9) * kill_rows * line
        while process.poll() is None and killed.stat().st_size < target:
            time.sleep(0.01)
        interrupted = process.poll() is None
        process.send_signal(signal.SIGKILL)
        process.wait()
        moment = time.perf_counter() - started
        lines_at_kill = sum(1 for _ in killed.open("rb"))
        resumed, _, _, _ = timed_run(rows, killed, base, in_flight)
        counts, not_ok = count_lines(killed, n)
        exactly_once = not_ok == 0 and counts.count(1) == n and interrupted

        reading, read_rss, _ = finish(
            subprocess.Popen(child("read", str(out), str(n)), stdout=subprocess.PIPE, text=True)
        )
    rounds = ", ".join(f"{wall:.0%}" for wall in walls)
    cpu_rounds = ", ".join(f"{cpu:.0%}" for cpu in cpus)
    print(f"{n:,} rows, {in_flight} in flight, {args.latency * 1000:g} ms server latency\n")
    print("| measure | figure | target |")
    print("| --- | ---: | ---: |")
    print(f"| runner: peak RSS | {rss:.0f} MB | <= 300 MB |")
    print(f"| runner: rows/s over all {n:,} rows | {rate:,.0f} | |")
    print(
        f"| runner / backend alone (achat_many): rows/s, {slice_rows:,} rows, 3 interleaved rounds "
        f"({rounds}) | median {sorted(walls)[1]:.0%} | >= 80% |"
    )
    print(
        f"| the same rounds: backend alone's CPU a row / the runner's ({cpu_rounds}) "
        f"| median {sorted(cpus)[1]:.0%} | |"
    )
    print(
        f"| rerun over the finished output, skips every row (whole process) | {rerun_s:.1f} s "
        f"(CPU {rerun_cpu:.1f} s, run {again['wall_time']:.1f} s) | <= 5 s |"
    )
    print(
        f"| {kill_rows:,} rows left to do, SIGKILL after {moment:.1f} s ({lines_at_kill:,} lines), "
        f"then a rerun ({resumed['done']:,} done) | "
        f"{'every row exactly once' if exactly_once else 'FAILED: not killed, or rows missing or repeated'} "
        "| exactly once |"
    )
    print(f"| read_results, input order | {reading['seconds']:.1f} s, peak RSS {read_rss:.0f} MB | |")
    if not exactly_once:
        sys.exit(1)


def children(mode: str, *args: str) -> None:
    """What a child process does: ``run`` the runner, or ``read`` the results back; prints one JSON line."""
    from llmclient import pipeline

    if mode == "run":
        rows, out, config, in_flight = args
        cpu = time.process_time()
        summary = pipeline.run(
            json.loads(config),
            rows,
            template=TEMPLATE,
            output=out,
            id_field="id",
            concurrency=int(in_flight),
            progress=False,
        )
        fields = ("total", "done", "failed", "skipped", "duplicates", "wall_time")
        print(
            json.dumps(
                {"cpu": time.process_time() - cpu, **{name: getattr(summary, name) for name in fields}}
            )
        )
    elif mode == "read":
        out, expected = args
        started, count = time.perf_counter(), 0
        for count, record in enumerate(pipeline.read_results(out), start=1):
            assert record["index"] == count - 1 and record["status"] == "ok", record
        assert count == int(expected), count
        print(json.dumps({"rows": count, "seconds": time.perf_counter() - started}))


if __name__ == "__main__":
    main()
