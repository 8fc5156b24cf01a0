"""float32 against bfloat16 on the local backend: speed, and how far the greedy replies move.

    python bench/local_dtypes.py [--rounds 2] [--new-tokens 64]

Two smollm2 backends, one loaded with ``dtype="float32"`` and one with ``dtype="bfloat16"``, run the
same work in alternation within each round (so a busy machine slows both alike); every figure is
the best of ``--rounds`` and every comparison a ratio within this run:

1. ``chat`` and ``stream`` of 4 prompts (50 to 400 tokens), ``--new-tokens`` each;
2. ``chat_many`` of 16 prompts of mixed lengths, ``--new-tokens`` each;
3. the example pipeline: examples/orders.jsonl's 20 rows through ``pipeline.run`` with the
   extraction schema (examples/extract_orders.py's ``extract``), constrained decoding, greedy; and
   how many orders each dtype gets right against the hand-made answer key of
   tests/examples/test_order_accuracy.py.

Then quality: how many of the pipeline's 20 replies and of ``chat_many``'s 16 are identical between
the two dtypes, and for each that differs, the first token where it does and both texts; and how far
candidate scores move (three labels scored in both).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

import llmclient
from llmclient import pipeline

HERE = Path(__file__).resolve().parent
EXAMPLES = HERE.parent / "examples"
sys.path.insert(0, str(EXAMPLES))
from extract_orders import extract  # noqa: E402
from local import build_prompts  # noqa: E402

DTYPES = ("float32", "bfloat16")
KEY = json.loads((HERE.parent / "tests" / "examples" / "data" / "orders_expected.json").read_text())["orders"]
SCORED = (
    "Is this review positive, negative or mixed? One word.\n\nTasty curry, but it came forty minutes late."
)
LABELS = ["positive", "negative", "mixed"]


def run_pipeline(backend: Any, output: Path) -> dict[str, str]:
    """The example pipeline (examples/extract_orders.py) on ``backend`` into a fresh ``output``; each
    row's reply text by row id.
    """
    output.unlink(missing_ok=True)
    summary = extract(backend, output)
    assert summary.done == 20 and not summary.failed, summary
    return {row["row_id"]: row["text"] for row in pipeline.read_results(output)}


def right_orders(replies: dict[str, str]) -> int:
    """Orders whose every field agrees with the hand-made key of tests/examples/test_order_accuracy.py."""
    right = 0
    for row_id, text in replies.items():
        order, expected = json.loads(text), KEY[row_id]
        right += all(
            order[name] in (expected[name] if isinstance(expected[name], list) else [expected[name]])
            for name in ("sentiment", "dish")
        )
    return right


def first_difference(tokenizer: Any, a: str, b: str) -> int:
    """The index of the first token where the two texts' tokens differ."""
    x, y = tokenizer.encode(a, add_special_tokens=False), tokenizer.encode(b, add_special_tokens=False)
    return next((i for i, (p, q) in enumerate(zip(x, y, strict=False)) if p != q), min(len(x), len(y)))


def compare(tokenizer: Any, label: str, left: dict[str, str], right: dict[str, str]) -> None:
    """Print how many replies are identical, and where the others part."""
    same = sum(left[k] == right[k] for k in left)
    print(f"\n{label}: {same} of {len(left)} greedy replies identical in float32 and bfloat16")
    for key in left:
        if left[key] != right[key]:
            at = first_difference(tokenizer, left[key], right[key])
            print(f"- {key}: from token {at}\n    float32:  {left[key]!r}\n    bfloat16: {right[key]!r}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=2, help="rounds per figure; the best is kept")
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--skip-pipeline", action="store_true")
    args = parser.parse_args()
    new = args.new_tokens
    options: dict[str, Any] = {"max_new_tokens": new, "temperature": 0, "extra": {"min_new_tokens": new}}

    backends = {d: llmclient.load("hf:smollm2", device="cpu", dtype=d, load="eager") for d in DTYPES}
    tokenizer = backends["float32"].tokenizer
    with llmclient.load("hf:smollm2", device="cpu") as auto:
        print(f"torch {torch.__version__}; dtype auto loads {auto.dtype} on this CPU")
    prompts = build_prompts(backends["float32"], 16)
    singles = [prompts[i] for i in (0, 5, 10, 15)]
    for backend in backends.values():
        backend.chat(prompts[0], max_new_tokens=4, temperature=0)  # warm up

    def stream_all(backend: Any) -> None:
        for p in singles:
            for _ in backend.stream(p, **options):
                pass

    work: dict[str, tuple[int, Callable[[Any], Any]]] = {
        "chat (4 prompts)": (4 * new, lambda b: [b.chat(p, **options) for p in singles]),
        "stream (4 prompts)": (4 * new, stream_all),
        "chat_many of 16": (16 * new, lambda b: b.chat_many(prompts, **options)),
    }
    output = Path(tempfile.mkdtemp()) / "results.jsonl"
    if not args.skip_pipeline:
        work["example pipeline (20 rows)"] = (20, lambda b: run_pipeline(b, output))
    best: dict[tuple[str, str], float] = {}
    kept: dict[tuple[str, str], Any] = {}
    for _ in range(args.rounds):
        for name, (_, fn) in work.items():
            for dtype, backend in backends.items():
                started = time.perf_counter()
                kept[name, dtype] = fn(backend)
                seconds = time.perf_counter() - started
                best[name, dtype] = min(best.get((name, dtype), float("inf")), seconds)

    print(f"\nbest of {args.rounds}; {new} new tokens a reply (the pipeline: as the example sets)")
    print("| | float32 | bfloat16 | bfloat16 speed-up |")
    print("| --- | ---: | ---: | ---: |")
    for name, (units, _) in work.items():
        f32, b16 = best[name, "float32"], best[name, "bfloat16"]
        unit = "rows/s" if "pipeline" in name else "tokens/s"
        print(f"| {name} | {units / f32:.1f} {unit} | {units / b16:.1f} {unit} | **{f32 / b16:.2f}x** |")

    many = {d: {f"prompt {i}": r.text for i, r in enumerate(kept["chat_many of 16", d])} for d in DTYPES}
    compare(tokenizer, "chat_many of 16", many["float32"], many["bfloat16"])
    if not args.skip_pipeline:
        replies = {d: kept["example pipeline (20 rows)", d] for d in DTYPES}
        compare(tokenizer, "example pipeline", replies["float32"], replies["bfloat16"])
        print(
            ", ".join(f"{d}: {right_orders(replies[d])} of 20 orders right (the answer key)" for d in DTYPES)
        )
    scores = {d: backends[d].score(SCORED, LABELS) for d in DTYPES}
    gap = max(abs(a.logprob - b.logprob) for a, b in zip(scores["float32"], scores["bfloat16"], strict=True))
    same = [max(scores[d], key=lambda s: s.logprob).text for d in DTYPES]
    print(f"\nscoring {LABELS}: the same best label: {same[0] == same[1]}; largest logprob gap {gap:.3f}")
    for backend in backends.values():
        backend.close()


if __name__ == "__main__":
    main()
