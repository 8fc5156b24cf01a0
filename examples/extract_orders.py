"""The example pipeline: structured fields pulled from each restaurant order, on whichever backend is
configured, as JSON that is checked against a schema.

    python examples/extract_orders.py                                 # the local SmolLM2 model, offline
    LLMCLIENT_BACKEND=openrouter python examples/extract_orders.py    # the same pipeline, hosted
    LLMCLIENT_BACKEND=vllm python examples/extract_orders.py          # or on your own vLLM server
    python examples/extract_orders.py --retry-failed                  # send again the rows that failed

On a local model, decoding is constrained to the schema, so every reply parses; a hosted model is sent
the schema as strict JSON Schema. Backends are defined in examples/llmclient.toml. Results go to
examples/results-<backend>.jsonl; run it again and it only does what is left.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

import llmclient
from llmclient import pipeline

HERE = Path(__file__).resolve().parent


class Order(BaseModel):
    """What the pipeline pulls out of one order's comment."""

    dish: str = Field(description="the dish the comment is mostly about")
    sentiment: Literal["positive", "negative", "mixed"]
    late: bool = Field(description="whether the order arrived late")
    rating: int = Field(ge=1, le=5, description="1 (very bad) to 5 (excellent)")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--retry-failed", action="store_true", help="send again the rows that failed before")
    args = parser.parse_args()
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
            template=(HERE / "order_extraction.j2").read_text(),
            system="You read restaurant reviews and fill in a form about each, as JSON.",
            output=output,
            id_field="order_id",
            keep_fields=["order_id", "comment"],
            response_format=Order,
            params={"max_new_tokens": 80, "temperature": 0},
            retry_failed=args.retry_failed,
        )
    print(summary)
    for line in output.read_text().splitlines():
        result = json.loads(line)
        if result["status"] == "ok":
            order = result["parsed"]
            late = "late" if order["late"] else "on time"
            print(
                f"{result['row_id']}  {order['sentiment']:<8} {late:<7} {order['rating']}/5  {order['dish']}"
            )
        else:
            print(f"{result['row_id']}  failed: {result['error']['message']}")
    return 1 if summary.failed else 0


if __name__ == "__main__":
    sys.exit(main())
