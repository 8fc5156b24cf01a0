"""The example pipeline: a short analysis of each restaurant order, on whichever backend is configured.

    python examples/analyse_orders.py                          # the local SmolLM2 model, offline
    LLMCLIENT_BACKEND=openrouter python examples/analyse_orders.py   # the same pipeline, hosted
    LLMCLIENT_BACKEND=vllm python examples/analyse_orders.py         # or on your own vLLM server

Backends are defined in examples/llmclient.toml. Results go to examples/results-<backend>.jsonl; run it
again and it only does what is left.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import llmclient
from llmclient import pipeline

HERE = Path(__file__).resolve().parent


def main() -> int:
    config_path = os.environ.get("LLMCLIENT_CONFIG") or HERE / "llmclient.toml"
    try:
        backend = llmclient.load(config_path=config_path)  # LLMCLIENT_BACKEND, else the file's default
    except llmclient.ConfigError as error:
        print(f"configuration problem: {error}", file=sys.stderr)
        return 2
    output = HERE / f"results-{backend.name}.jsonl"
    with backend:
        summary = pipeline.run(
            backend,
            HERE / "orders.jsonl",
            template=(HERE / "order_analysis.j2").read_text(),
            system="You are a restaurant quality analyst. Answer briefly.",
            output=output,
            id_field="order_id",
            keep_fields=["order_id", "comment"],
            params={"max_new_tokens": 64, "temperature": 0},
        )
    print(summary)
    for line in output.read_text().splitlines()[:3]:
        print(line[:200])
    return 1 if summary.failed else 0


if __name__ == "__main__":
    sys.exit(main())
