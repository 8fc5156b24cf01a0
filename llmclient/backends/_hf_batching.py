"""Planning batched generation: which conversations share a ``generate`` call.

Jobs that may share a batch (the same sampling settings) are grouped, sorted by prompt length so a
batch pads little, and cut into micro-batches whose rows x (longest prompt + most new tokens) fit a
token budget, which bounds the KV cache one batch needs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from llmclient.backends._hf_generation import Job


def plan_batches(jobs: Sequence[Job], *, token_budget: int, max_rows: int) -> list[list[Job]]:
    """Cut ``jobs`` into batches that share a :attr:`Job.batch_key`, of similar prompt lengths.

    A batch holds at most ``max_rows`` jobs (and no more than any of its jobs' own ``max_rows``), and
    rows x (longest prompt + most new tokens) stays within ``token_budget``. A job that alone exceeds
    the budget still runs, alone.
    """
    groups: dict[tuple[Any, ...], list[Job]] = {}
    for job in jobs:
        groups.setdefault(job.batch_key, []).append(job)
    batches: list[list[Job]] = []
    for group in groups.values():
        batch: list[Job] = []
        width = new = 0
        cap = max_rows
        for job in sorted(group, key=lambda j: len(j.prompt.ids)):
            length = len(job.prompt.ids)
            grown = (max(width, length), max(new, job.max_new_tokens), min(cap, job.max_rows))
            if batch and ((len(batch) + 1) * (grown[0] + grown[1]) > token_budget or len(batch) >= grown[2]):
                batches.append(batch)
                batch, grown = [], (length, job.max_new_tokens, min(max_rows, job.max_rows))
            batch.append(job)
            width, new, cap = grown
        if batch:
            batches.append(batch)
    return batches
