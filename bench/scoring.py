"""What exact candidate scoring costs on a local model, and how it classifies, measured in one run.

    python bench/scoring.py [--rounds 3] [--quick] [--device auto]

On the built-in smollm2 model (SmolLM2-135M-Instruct):

1. scoring 4 and 16 candidates after a prompt of about 300 tokens with ``backend.score`` (one
   prefill of the prompt, the candidates batched on its KV cache) against the naive way: one full
   forward pass of prompt + candidate per candidate, ``log_softmax`` at the candidate's positions.
   Targets: at least 2x faster at 4 candidates, 4x at 16. The two must agree to 1e-4.
2. classifying the 20 example orders (examples/orders.jsonl) as positive, negative or mixed with
   ``choose`` (and ``choose_many``, batched) against generating the label with
   ``response_format=Choice([...])`` at temperature 0: time per row, and how often they agree.

Every time is the best of ``--rounds`` rounds; ``--quick`` runs one round.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch

import llmclient

T = TypeVar("T")
ROOT = Path(__file__).resolve().parents[1]
LABELS = ["positive", "negative", "mixed"]
CLASSIFY = (
    "Classify the sentiment of the customer's comment about their food order as positive, negative "
    "or mixed. Answer with one word."
)
NOTES = (
    "The harbour town kept its old lighthouse long after ships stopped needing it. Every evening the "
    "keeper climbed the spiral stairs, polished the lens and wrote the weather in a thick ledger. "
    "Children from the school came on Fridays to hear stories about storms, wrecks and rescues, and "
    "the baker sent up bread still warm from the oven. When the council proposed to sell the tower, "
    "the town voted to keep it as a museum, and the ledgers went on display beside the great lens. "
)
TOPICS = [
    "history", "weather", "education", "food", "politics", "architecture", "shipping", "tourism",
    "museums", "family", "technology", "sports", "music", "medicine", "farming", "law",
]  # fmt: skip


def best_of(rounds: int, fn: Callable[[], T]) -> tuple[float, T]:
    """The fastest of ``rounds`` runs of ``fn`` in seconds, and its last result."""
    times, result = [], None
    for _ in range(rounds):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return min(times), result  # type: ignore[return-value]


def long_prompt(backend: Any, target: int = 300) -> list[dict[str, str]]:
    """A conversation whose prompt is about ``target`` tokens."""
    words = (NOTES * 8).split()
    for n in range(len(words), 0, -1):
        messages = [
            {"role": "system", "content": "You label texts with their main topic."},
            {"role": "user", "content": "What is this text mainly about? " + " ".join(words[:n])},
        ]
        if backend.count_tokens(messages) <= target:
            return messages
    raise AssertionError("unreachable")


def naive(backend: Any, messages: list[dict[str, str]], candidates: list[str]) -> list[float]:
    """One full forward pass of prompt + candidate (+ end of turn) per candidate, logits kept only at
    the candidate's positions (so the comparison is about the prompt computed once, not the logits).
    """
    model, tokenizer = backend.hf_model, backend.tokenizer
    prompt = backend.render_prompt(messages)
    prompt_ids = tokenizer.encode(prompt, add_special_tokens=False)
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    out = []
    for candidate in candidates:
        ids = [*tokenizer.encode(prompt + candidate, add_special_tokens=False)[len(prompt_ids) :], end]
        with torch.inference_mode():  # logits only where they are read, as score computes them
            sequence = torch.tensor([prompt_ids + ids], device=model.device)
            logits = model(input_ids=sequence, logits_to_keep=len(ids) + 1).logits[0].float()
        logprobs = torch.log_softmax(logits[:-1], dim=-1)
        out.append(sum(logprobs[i, t].item() for i, t in enumerate(ids)))
    return out


def bench_candidates(backend: Any, rounds: int) -> None:
    messages = long_prompt(backend)
    print(f"## scoring after a {backend.count_tokens(messages)}-token prompt\n")
    print("| candidates | score | naive (forward per candidate) | speed-up | max difference |")
    print("| --- | --- | --- | --- | --- |")
    for count in (4, 16):
        candidates = TOPICS[:count]
        backend.score(messages, candidates)  # warm up
        fast, scores = best_of(rounds, lambda c=candidates: backend.score(messages, c))
        slow, expected = best_of(rounds, lambda c=candidates: naive(backend, messages, c))
        diff = max(abs(s.logprob - e) for s, e in zip(scores, expected, strict=True))
        print(f"| {count} | {fast * 1000:.0f} ms | {slow * 1000:.0f} ms | {slow / fast:.1f}x | {diff:.1e} |")
    print()


def bench_orders(backend: Any, rounds: int, limit: int) -> None:
    rows = [
        json.loads(line) for line in (ROOT / "examples" / "orders.jsonl").read_text().splitlines() if line
    ]
    conversations = [
        [{"role": "system", "content": CLASSIFY}, {"role": "user", "content": row["comment"]}]
        for row in rows[:limit]
    ]
    choice = llmclient.Choice(LABELS)
    backend.choose(conversations[0], LABELS)  # warm up
    chose_t, chosen = best_of(rounds, lambda: [backend.choose(c, LABELS) for c in conversations])
    many_t, many = best_of(rounds, lambda: backend.choose_many(conversations, LABELS))
    gen_t, generated = best_of(
        rounds,
        lambda: [backend.chat(c, response_format=choice, temperature=0).parsed for c in conversations],
    )
    assert [s.text for s in many] == [s.text for s in chosen]
    agree = sum(s.text == g for s, g in zip(chosen, generated, strict=True))
    n = len(conversations)
    print(f"## classifying {n} orders ({', '.join(LABELS)})\n")
    print("| method | per row | labels |")
    print("| --- | --- | --- |")
    print(f"| `choose`, row by row | {chose_t / n * 1000:.0f} ms | {_counts([s.text for s in chosen])} |")
    print(f"| `choose_many`, batched | {many_t / n * 1000:.0f} ms | same |")
    print(f"| `chat(response_format=Choice)` | {gen_t / n * 1000:.0f} ms | {_counts(generated)} |")
    print(f"\nagreement between `choose` and the generated label: {agree}/{n}")
    for row, s, g in zip(rows, chosen, generated, strict=False):
        if s.text != g:
            print(
                f"- {row['order_id']}: choose {s.text} ({s.probability:.2f}), "
                f"generated {g}: {row['comment']!r}"
            )


def _counts(labels: list[str]) -> str:
    return ", ".join(f"{label} {labels.count(label)}" for label in LABELS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="one round")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    rounds = 1 if args.quick else args.rounds
    backend = llmclient.load("hf:smollm2", device=args.device, load="eager")
    try:
        print(f"device: {backend.hf_model.device}, torch threads: {torch.get_num_threads()}\n")
        bench_candidates(backend, rounds)
        bench_orders(backend, rounds, limit=20)
    finally:
        backend.close()


if __name__ == "__main__":
    main()
