"""What constrained decoding costs on the local backend, and what it buys, measured in one run.

    python bench/structured.py [--rounds 3] [--quick] [--device auto]

On the built-in smollm2 model (SmolLM2-135M-Instruct), greedy:

1. per-step cost: a batch of 8 order reviews with 4 different extraction schemas (2 rows each), one
   ``generate`` call, against the same 8 rows decoded free for the same number of steps
   (``min_new_tokens`` keeps every free row going), and the time spent in the grammar mask itself
   per step, inside the constrained run (target: step / (step - mask) <= 1.05x);
2. compile time of each schema in the tests: the first call (llguidance's compiler and checks), a
   cached call, and the first matcher on the model's tokens (the llguidance tokenizer is built once
   per backend, timed apart);
3. validity on the 20 rows of examples/orders.jsonl with an order-extraction schema (dish,
   sentiment, late, rating): constrained, and the same prompts unconstrained (the reply as it is,
   and leniently: the first ``{...}`` in it).

Every time is the best of ``--rounds`` rounds; ``--quick`` runs one round.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import time
from pathlib import Path
from typing import Any

import llmclient
from llmclient.backends.huggingface.constrained import GrammarMask, Grammars
from llmclient.structured import output_format

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "huggingface"))
from test_hf_smollm2_structured import SHAPES, Order  # noqa: E402 - the schemas the tests use

ORDER = {
    "type": "object",
    "properties": {
        "dish": {"type": "string"},
        "sentiment": {"enum": ["positive", "negative", "mixed"]},
        "late": {"type": "boolean"},
        "rating": {"type": "integer", "minimum": 1, "maximum": 5},
    },
    "required": ["dish", "sentiment", "late", "rating"],
}
SCHEMAS: dict[str, dict[str, Any]] = {
    "order": ORDER,
    "verdict": {
        "type": "object",
        "properties": {"sentiment": ORDER["properties"]["sentiment"], "reason": {"type": "string"}},
        "required": ["sentiment", "reason"],
    },
    "foods": {
        "type": "object",
        "properties": {"foods": {"type": "array", "items": {"type": "string"}, "maxItems": 4}},
        "required": ["foods"],
    },
    "complaint": {
        "type": "object",
        "properties": {
            "complaint": {"type": "boolean"},
            "about": {"enum": ["temperature", "delivery", "taste", "portion", "order", "none"]},
        },
        "required": ["complaint", "about"],
    },
}
INSTRUCTIONS = {
    "order": "Extract the order as JSON: dish (the main dish), sentiment (positive, negative or mixed), "
    "late (true if it arrived late) and rating (1 to 5).",
    "verdict": "Give the sentiment of this review (positive, negative or mixed) and the reason, as JSON.",
    "foods": "List the foods of this order as JSON.",
    "complaint": "Is this review a complaint, and about what? Answer as JSON.",
}
MAX_NEW = 96


def orders() -> list[dict[str, Any]]:
    lines = (ROOT / "examples" / "orders.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def conversation(kind: str, row: dict[str, Any]) -> list[dict[str, str]]:
    review = f"Foods: {', '.join(row['foods'])}\nReview: {row['comment']}"
    return [{"role": "system", "content": INSTRUCTIONS[kind]}, {"role": "user", "content": review}]


class MaskClock:
    """Time spent in the grammar mask (filling, applying, advancing), summed over a run."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.steps = 0
        self._call, self._advance = GrammarMask.__call__, GrammarMask.advance
        clock = self

        def call(mask: GrammarMask, input_ids: Any, scores: Any) -> Any:
            started = time.perf_counter()
            out = clock._call(mask, input_ids, scores)
            clock.seconds += time.perf_counter() - started
            clock.steps += 1
            return out

        def advance(mask: GrammarMask, row: int, token: int) -> bool:
            started = time.perf_counter()
            done = clock._advance(mask, row, token)
            clock.seconds += time.perf_counter() - started
            return done

        GrammarMask.__call__ = call  # type: ignore[method-assign]
        GrammarMask.advance = advance  # type: ignore[method-assign]


async def constrained_batch(backend: Any, rows: list[dict[str, Any]]) -> list[Any]:
    kinds = [kind for kind in SCHEMAS for _ in range(2)]
    calls = [
        backend.achat(conversation(k, r), response_format=SCHEMAS[k], max_new_tokens=MAX_NEW, temperature=0)
        for k, r in zip(kinds, rows, strict=True)
    ]
    return list(await asyncio.gather(*calls))


def per_step(backend: Any, rounds: int) -> dict[str, float]:
    rows = orders()[:8]
    kinds = [kind for kind in SCHEMAS for _ in range(2)]
    clock = MaskClock()
    best_c = best_f = float("inf")
    mask_per_step = steps = 0.0
    for _ in range(rounds):
        clock.seconds, clock.steps = 0.0, 0
        started = time.perf_counter()
        replies = asyncio.run(constrained_batch(backend, rows))
        seconds = time.perf_counter() - started
        steps = max(r.usage.completion_tokens for r in replies)
        if seconds / steps < best_c:
            best_c, mask_per_step = seconds / steps, clock.seconds / clock.steps
        free = [conversation(k, r) for k, r in zip(kinds, rows, strict=True)]
        started = time.perf_counter()
        out = backend.chat_many(
            free, max_new_tokens=int(steps), temperature=0, extra={"min_new_tokens": int(steps)}
        )
        assert all(r.usage.completion_tokens == steps for r in out)
        best_f = min(best_f, (time.perf_counter() - started) / steps)
    return {"constrained": best_c, "free": best_f, "mask": mask_per_step, "steps": steps}


def get_weather(city: str, unit: str = "C") -> str:
    """Current weather for a city.

    Args:
        city: the city's name.
        unit: the temperature unit, C or F.
    """
    return f"18 {unit} in {city}"


def tool_step(backend: Any, rounds: int) -> dict[str, float]:
    """A required tool call on smollm2: seconds per step, and the grammar mask's share of a step."""
    clock = MaskClock()
    best = float("inf")
    mask = steps = 0.0
    for _ in range(rounds):
        clock.seconds, clock.steps = 0.0, 0
        started = time.perf_counter()
        reply = backend.chat(
            "What is the weather in Lisbon?",
            tools=[get_weather],
            tool_choice="required",
            max_new_tokens=60,
            temperature=0,
        )
        seconds = time.perf_counter() - started
        assert reply.tool_calls and reply.tool_calls[0].name == "get_weather", reply
        steps = reply.usage.completion_tokens
        if seconds / steps < best:
            best, mask = seconds / steps, clock.seconds / max(clock.steps, 1)
    return {"step": best, "mask": mask, "steps": steps}


def compile_times(backend: Any, rounds: int) -> tuple[float, list[tuple[str, float, float, float]]]:
    formats: dict[str, Any] = {**SHAPES, "pydantic Order": Order, "order (bench)": ORDER}
    formats.update({"llmclient.JSON": llmclient.JSON, "Choice": llmclient.Choice(["yes", "no"])})
    formats["Regex"] = llmclient.Regex(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
    eos = frozenset({backend.tokenizer.eos_token_id})
    started = time.perf_counter()
    Grammars(backend.tokenizer)._llg_tokenizer(eos)
    tokenizer_seconds = time.perf_counter() - started
    table = []
    for name, value in formats.items():
        fmt = output_format(value)
        first = cached = matcher = float("inf")
        for _ in range(rounds):
            grammars = Grammars(backend.tokenizer)
            started = time.perf_counter()
            grammar = grammars.compile(fmt)
            first = min(first, time.perf_counter() - started)
            started = time.perf_counter()
            grammars.compile(fmt)
            cached = min(cached, time.perf_counter() - started)
            grammars._ll_tokenizer = backend._engine.generator.grammars._llg_tokenizer(eos)
            started = time.perf_counter()
            grammars._template(grammar, eos)
            matcher = min(matcher, time.perf_counter() - started)
        table.append((name, first, cached, matcher))
    return tokenizer_seconds, table


def validity(backend: Any) -> dict[str, tuple[int, int]]:
    conversations = [conversation("order", row) for row in orders()]
    fmt = output_format(ORDER)
    constrained = backend.chat_many(
        conversations, response_format=ORDER, max_new_tokens=MAX_NEW, temperature=0, return_exceptions=True
    )
    free = backend.chat_many(conversations, max_new_tokens=MAX_NEW, temperature=0)
    lenient = 0
    for reply in free:
        found = re.search(r"\{.*\}", reply.text, re.DOTALL)
        lenient += bool(found) and _valid(fmt, found.group(0) if found else "")
    return {
        "constrained": (sum(isinstance(r, llmclient.ChatResponse) for r in constrained), len(conversations)),
        "unconstrained, the reply as it is": (sum(_valid(fmt, r.text) for r in free), len(free)),
        "unconstrained, its first {...}": (lenient, len(free)),
    }


def _valid(fmt: Any, text: str) -> bool:
    try:
        fmt.parse(text)
    except llmclient.StructuredOutputError:
        return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="rounds per figure; the best is kept")
    parser.add_argument("--quick", action="store_true", help="one round")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    rounds = 1 if args.quick else args.rounds

    backend = llmclient.load("hf:smollm2", device=args.device, load="eager")
    print(f"smollm2 on {backend.hf_model.device}, llguidance {_version()}, best of {rounds}\n")
    backend.chat_many(["Hi"], response_format=ORDER, max_new_tokens=4, return_exceptions=True)  # warm up

    step = per_step(backend, rounds)
    ratio = step["constrained"] / step["free"]
    inrun = step["constrained"] / (step["constrained"] - step["mask"])
    print("| batch of 8 rows, 4 schemas | ms per step |")
    print("| --- | ---: |")
    print(f"| free decoding ({step['steps']:.0f} steps) | {1000 * step['free']:.1f} |")
    print(f"| constrained decoding | {1000 * step['constrained']:.1f} ({ratio:.2f}x free, wall clock) |")
    print(f"| of which the grammar mask (fill, apply, advance) | {1000 * step['mask']:.2f} |")
    print(f"| **cost of the mask per step** | **{inrun:.3f}x** (target <= 1.05x) |\n")
    print(
        "The wall-clock ratio compares two runs and moves with whatever else the machine does; the\n"
        "cost of the mask is measured inside the constrained run: step / (step - mask).\n"
    )

    tool = tool_step(backend, rounds)
    print("| a required tool call (get_weather), one row | ms per step |")
    print("| --- | ---: |")
    print(f"| constrained step ({tool['steps']:.0f} steps) | {1000 * tool['step']:.1f} |")
    print(f"| of which the grammar mask | {1000 * tool['mask']:.2f} |")
    print(
        f"| **cost of the mask per step** | **{tool['step'] / (tool['step'] - tool['mask']):.3f}x** "
        "(target <= 1.05x) |\n"
    )

    tokenizer_seconds, table = compile_times(backend, rounds)
    print(f"llguidance tokenizer, built once per backend: {1000 * tokenizer_seconds:.0f} ms\n")
    print("| format | first compile (ms) | cached (µs) | first matcher (ms) |")
    print("| --- | ---: | ---: | ---: |")
    for name, first, cached, matcher in table:
        print(f"| {name} | {1000 * first:.2f} | {1e6 * cached:.1f} | {1000 * matcher:.2f} |")
    print()

    print("| 20 order rows (examples/orders.jsonl) | valid |")
    print("| --- | ---: |")
    for name, (valid, total) in validity(backend).items():
        print(f"| {name} | {valid}/{total} ({100 * valid / total:.0f}%) |")
    backend.close()


def _version() -> str:
    from importlib.metadata import version

    return version("llguidance")


if __name__ == "__main__":
    main()
