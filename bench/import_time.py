"""Time of ``import llmclient`` over a bare interpreter, and the peers' for comparison, in one run.

    python bench/import_time.py

Each figure is the best of 7 fresh interpreters; a module that is not installed is skipped.
"""

from __future__ import annotations

import subprocess
import sys
import time

MODULES = ["llmclient", "httpx2", "aiohttp", "openai", "aisuite", "any_llm", "litellm"]


def best_seconds(code: str, runs: int = 7) -> float:
    best = float("inf")
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True, stderr=subprocess.DEVNULL)
        best = min(best, time.perf_counter() - started)
    return best


def main() -> None:
    bare = best_seconds("pass")
    print(f"bare interpreter: {bare * 1000:.0f} ms\n")
    print("| module | import time over a bare interpreter |")
    print("| --- | ---: |")
    for module in MODULES:
        try:
            seconds = best_seconds(f"import {module}")
        except subprocess.CalledProcessError:
            continue
        print(f"| {module} | {(seconds - bare) * 1000:.0f} ms |")


if __name__ == "__main__":
    main()
