"""What llmclient's local backend costs over transformers' own ``generate``, measured in one run.

    python bench/local.py [--rounds 2] [--device auto] [--dtype auto] [--skip-naive]

On the built-in smollm2 model (SmolLM2-135M-Instruct), with prompts of 50 to 400 tokens and 128 new
tokens each (``min_new_tokens=128`` on both sides, so every call generates exactly 128):

1. ``chat`` against raw ``model.generate`` on the same token ids (target: at most 1.05x the time);
2. ``stream`` against non-streamed ``generate`` (target: at most 1.05x), with transformers'
   ``TextIteratorStreamer`` as a reference, and the time to the first text (against its floor, a
   ``generate`` of one new token: prefill and one step);
3. ``chat_many`` of 16 prompts of mixed lengths against 16 single ``chat`` calls and against one raw
   left-padded batched ``generate`` of the same 16 (target: at least 1.0x its throughput);
4. the naive loop that feeds the whole sequence again for every token, with no KV cache, as a
   reference for what the cache saves.

Every figure is the best of ``--rounds`` rounds, and every comparison is a ratio within this run.
"""

from __future__ import annotations

import argparse
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import torch
from transformers import TextIteratorStreamer

import llmclient

T = TypeVar("T")

NEW_TOKENS = 128
NOTES = (
    "The harbour town kept its old lighthouse long after ships stopped needing it. Every evening the "
    "keeper climbed the spiral stairs, polished the lens and wrote the weather in a thick ledger. "
    "Children from the school came on Fridays to hear stories about storms, wrecks and rescues, and "
    "the baker sent up bread still warm from the oven. When the council proposed to sell the tower, "
    "the town voted to keep it as a museum, and the ledgers went on display beside the great lens. "
)
INSTRUCTION = "Read these notes and write a long, detailed story that continues them.\n\n"


def build_prompts(backend: Any, count: int, low: int = 50, high: int = 400) -> list[list[dict[str, str]]]:
    """``count`` conversations whose prompts run from ``low`` to ``high`` tokens, evenly spread."""
    words = (NOTES * 12).split()
    prompts = []
    for i in range(count):
        target = low + (high - low) * i // max(count - 1, 1)
        lo, hi = 1, len(words)
        while lo < hi:  # the most words whose prompt stays within the target
            mid = (lo + hi + 1) // 2
            conversation = [{"role": "user", "content": INSTRUCTION + " ".join(words[:mid])}]
            if backend.count_tokens(conversation) <= target:
                lo = mid
            else:
                hi = mid - 1
        prompts.append([{"role": "user", "content": INSTRUCTION + " ".join(words[:lo])}])
    return prompts


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(device: torch.device, fn: Callable[[], T]) -> tuple[float, T]:
    sync(device)
    started = time.perf_counter()
    result = fn()
    sync(device)
    return time.perf_counter() - started, result


class Raw:
    """transformers by hand: the baselines."""

    def __init__(self, backend: Any) -> None:
        self.model = backend.hf_model
        self.tokenizer = backend.tokenizer
        self.device = self.model.device
        self.pad_id = self.tokenizer.pad_token_id
        if self.pad_id is None:
            self.pad_id = self.tokenizer.eos_token_id

    def ids(self, conversation: list[dict[str, str]]) -> list[int]:
        encoded = self.tokenizer.apply_chat_template(
            conversation, add_generation_prompt=True, tokenize=True, return_dict=True
        )
        ids: list[int] = encoded["input_ids"]
        return ids

    def generate(self, batch: list[list[int]], new_tokens: int = NEW_TOKENS, **kwargs: Any) -> Any:
        """One left-padded ``generate`` of ``batch``, exactly ``new_tokens`` new tokens per row."""
        width = max(map(len, batch))
        input_ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, ids in enumerate(batch):
            input_ids[row, width - len(ids) :] = torch.tensor(ids)
            mask[row, width - len(ids) :] = 1
        return self.model.generate(
            input_ids=input_ids.to(self.device),
            attention_mask=mask.to(self.device),
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            do_sample=False,
            pad_token_id=self.pad_id,
            **kwargs,
        )

    def text_iterator_stream(self, ids: list[int]) -> float:
        """Stream with ``TextIteratorStreamer``; returns seconds to the first text."""
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        started = time.perf_counter()
        worker = threading.Thread(target=self.generate, args=([ids],), kwargs={"streamer": streamer})
        worker.start()
        first = None
        for piece in streamer:
            if piece and first is None:
                first = time.perf_counter() - started
        worker.join()
        return first or 0.0

    def naive(self, ids: list[int]) -> list[int]:
        """Greedy decoding that runs the whole sequence through the model for every new token."""
        sequence = torch.tensor([ids], device=self.device)
        with torch.no_grad():
            for _ in range(NEW_TOKENS):
                logits = self.model(sequence, use_cache=False).logits[:, -1, :]
                sequence = torch.cat([sequence, logits.argmax(dim=-1, keepdim=True)], dim=-1)
        new: list[int] = sequence[0, len(ids) :].tolist()
        return new


def llmclient_stream(backend: Any, conversation: list[dict[str, str]]) -> float:
    """Stream with llmclient; returns seconds to the first text."""
    started = time.perf_counter()
    first = None
    for delta in backend.stream(conversation, **OPTIONS):
        if delta.text and first is None:
            first = time.perf_counter() - started
    return first or 0.0


OPTIONS: dict[str, Any] = {
    "max_new_tokens": NEW_TOKENS,
    "temperature": 0,
    "extra": {"min_new_tokens": NEW_TOKENS},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=2, help="rounds per figure; the best is kept")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--skip-naive", action="store_true", help="leave out the no-KV-cache loop")
    args = parser.parse_args()

    backend = llmclient.load("hf:smollm2", device=args.device, dtype=args.dtype, load="eager")
    raw = Raw(backend)
    device = raw.device
    print(f"smollm2 on {device} as {str(raw.model.dtype).removeprefix('torch.')}, torch {torch.__version__}")
    prompts = build_prompts(backend, 16)
    ids = [raw.ids(p) for p in prompts]
    assert all(backend.count_tokens(p) == len(i) for p, i in zip(prompts, ids, strict=True))
    print(f"16 prompts of {min(map(len, ids))} to {max(map(len, ids))} tokens; {NEW_TOKENS} new tokens each")
    singles = [0, 5, 10, 15]
    raw.generate([ids[0]])  # warm up
    backend.chat(prompts[0], max_new_tokens=8, temperature=0)

    best: dict[str, list[float]] = {}

    def keep(name: str, index: int, seconds: float) -> None:
        row = best.setdefault(name, [float("inf")] * len(singles))
        row[index] = min(row[index], seconds)

    first_text = dict.fromkeys(("TextIteratorStreamer", "llmclient stream", "floor"), float("inf"))
    for _ in range(args.rounds):
        for index, p in enumerate(singles):
            seconds, out = timed(device, lambda p=p: raw.generate([ids[p]]))
            assert out.shape[1] - len(ids[p]) == NEW_TOKENS
            keep("generate", index, seconds)
            seconds, reply = timed(device, lambda p=p: backend.chat(prompts[p], **OPTIONS))
            assert reply.usage.completion_tokens == NEW_TOKENS
            keep("chat", index, seconds)
            seconds, first = timed(device, lambda p=p: raw.text_iterator_stream(ids[p]))
            keep("TextIteratorStreamer", index, seconds)
            first_text["TextIteratorStreamer"] = min(first_text["TextIteratorStreamer"], first)
            seconds, first = timed(device, lambda p=p: llmclient_stream(backend, prompts[p]))
            keep("llmclient stream", index, seconds)
            first_text["llmclient stream"] = min(first_text["llmclient stream"], first)
            seconds, _out = timed(device, lambda p=p: raw.generate([ids[p]], new_tokens=1))
            first_text["floor"] = min(first_text["floor"], seconds)  # prefill + one token
    total = {name: sum(row) for name, row in best.items()}

    batch_best: dict[str, float] = {}
    for _ in range(args.rounds):
        seconds, _out = timed(device, lambda: raw.generate(ids))
        batch_best["raw batched generate"] = min(
            batch_best.get("raw batched generate", float("inf")), seconds
        )
        seconds, replies = timed(device, lambda: backend.chat_many(prompts, **OPTIONS))
        assert all(r.usage.completion_tokens == NEW_TOKENS for r in replies)
        batch_best["chat_many"] = min(batch_best.get("chat_many", float("inf")), seconds)
    seconds, _replies = timed(device, lambda: [backend.chat(p, **OPTIONS) for p in prompts])
    batch_best["16 single chat calls"] = seconds

    naive_seconds = None
    if not args.skip_naive:
        reference = singles[1]
        naive_seconds, naive_ids = timed(device, lambda: raw.naive(ids[reference]))
        cached = raw.generate([ids[reference]])[0, len(ids[reference]) :].tolist()
        print(f"naive loop gives the same tokens as generate: {naive_ids == cached}")

    tokens = 16 * NEW_TOKENS
    raw_batched = batch_best["raw batched generate"]
    print()
    single_tokens = len(singles) * NEW_TOKENS

    def row(name: str, label: str, target: str = "") -> None:
        seconds = total[name]
        ratio = f"{seconds / total['generate']:.3f}x" if name != "generate" else ""
        if target:
            label, ratio = f"**{label}**", f"**{ratio}**"
        print(f"| {label} | {seconds:.2f} | {single_tokens / seconds:.1f} | {ratio} | {target} |")

    heading = f"{len(singles)} prompts x {NEW_TOKENS} new tokens, best of {args.rounds}"
    print(f"| {heading} | seconds | tokens/s | ratio | target |")
    print("| --- | ---: | ---: | ---: | --- |")
    row("generate", "raw `generate`")
    row("chat", "llmclient `chat`", "<= 1.05x")
    row("TextIteratorStreamer", "`generate` + `TextIteratorStreamer`")
    row("llmclient stream", "llmclient `stream`", "<= 1.05x")
    print()
    print("| first text (best single prompt) | ms |")
    print("| --- | ---: |")
    labels = {"floor": "`generate` of 1 new token (prefill + one step: the floor)"}
    for name, seconds in first_text.items():
        print(f"| {labels.get(name, name)} | {seconds * 1000:.0f} |")
    print()
    print(
        f"| 16 prompts x {NEW_TOKENS} new tokens | seconds | tokens/s | throughput vs raw batched | target |"
    )
    print("| --- | ---: | ---: | ---: | --- |")
    for name in ("raw batched generate", "chat_many", "16 single chat calls"):
        seconds = batch_best[name]
        bold = "**" if name == "chat_many" else ""
        target = ">= 1.0x" if name == "chat_many" else ""
        print(
            f"| {bold}{name}{bold} | {seconds:.2f} | {tokens / seconds:.0f} | "
            f"{bold}{raw_batched / seconds:.2f}x{bold} | {target} |"
        )
    if naive_seconds is not None:
        cached_seconds = best["generate"][1]
        print()
        print(f"| one prompt of {len(ids[singles[1]])} tokens, {NEW_TOKENS} new | seconds | ratio |")
        print("| --- | ---: | ---: |")
        print(f"| `generate` (KV cache) | {cached_seconds:.2f} | |")
        print(f"| naive loop, no KV cache | {naive_seconds:.2f} | {naive_seconds / cached_seconds:.1f}x |")
    backend.close()


if __name__ == "__main__":
    main()
