"""Exact candidate scoring on a local model: one prefill of a prompt, its KV cache reused by each candidate.

A candidate is scored as the assistant's reply, its ids found after the rendered prompt by the rule
:mod:`llmclient.backends.candidates` holds (shared with the vllm-engine backend): prompt and
candidate encoded together and split at the prompt's length, the template's end-of-turn token
after it with ``end_of_turn``.

:func:`score_batch` runs the score jobs of one batch (several conversations, each with its
candidates): the prompts are prefilled together, left-padded, once; the cache is then copied for
each (conversation, candidate) row and the candidates run as one batch on top of it. A candidate's
first token is read from the prefill's last position, so single-token candidates cost no second
pass at all. The logprob of each token is ``log_softmax`` of the raw logits at the position before
it, summed over the candidate: the same as one full forward pass of prompt + candidate (the tests
check it to 1e-4 against that), at a fraction of the cost.
"""

from __future__ import annotations

import copy
import inspect
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from llmclient.backends.huggingface.prompting import Prompt
from llmclient.errors import UnsupportedFeatureError
from llmclient.logprobs import RawScore


@dataclass(eq=False)
class ScoreJob:
    """One conversation's candidates, ready for the model.

    Attributes:
        prompt: the rendered prompt and its ids (generation prompt included).
        candidates: each candidate's ids as the reply (end-of-turn token included where asked).
        max_rows: the most conversations a batch holding this job may have.
        cancel: set when nobody waits for the scores any more.
    """

    prompt: Prompt
    candidates: list[list[int]]
    max_rows: int = 1 << 30
    cancel: threading.Event = field(default_factory=threading.Event)

    @property
    def max_new_tokens(self) -> int:
        """The longest candidate, in tokens: what a row adds to the prompt."""
        return max(len(c) for c in self.candidates)

    @property
    def weight(self) -> int:
        """Rows this job adds to a batch: one per candidate."""
        return len(self.candidates)

    @property
    def batch_key(self) -> tuple[Any, ...]:
        """Score jobs share batches with other score jobs only, never with generation."""
        return ("score",)


def refuse_unscorable(is_seq2seq: bool, model_name: str) -> None:
    """Encoder-decoder models are not scored (yet): their reply is the decoder's, a separate pass."""
    if is_seq2seq:
        raise UnsupportedFeatureError(
            f"{model_name!r} is an encoder-decoder model; candidate scoring on the local backend covers "
            f"decoder-only (causal) models. Ask for a constrained reply with response_format=Choice([...])"
        )


@torch.inference_mode()
def score_batch(
    model: Any, jobs: Sequence[ScoreJob], *, pad_id: int, token_budget: int
) -> list[list[RawScore]]:
    """Every candidate's total logprob, per job: one prefill of the prompts, the candidates on its cache."""
    device = model.device
    width = max(len(job.prompt.ids) for job in jobs)
    input_ids = torch.full((len(jobs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(jobs), width), dtype=torch.long)
    for row, job in enumerate(jobs):
        input_ids[row, width - len(job.prompt.ids) :] = torch.tensor(job.prompt.ids, dtype=torch.long)
        mask[row, width - len(job.prompt.ids) :] = 1
    input_ids, mask = input_ids.to(device), mask.to(device)
    prefill = model(
        input_ids=input_ids,
        attention_mask=mask,
        position_ids=(mask.cumsum(-1) - 1).clamp(min=0),
        use_cache=True,
        logits_to_keep=1,
    )
    first = torch.log_softmax(prefill.logits[:, -1].float(), dim=-1)
    totals = [[first[j, ids[0]].item() for ids in job.candidates] for j, job in enumerate(jobs)]
    rows = [(j, c) for j, job in enumerate(jobs) for c, ids in enumerate(job.candidates) if len(ids) > 1]
    longest = max((len(jobs[j].candidates[c]) - 1 for j, c in rows), default=0)
    per_chunk = max(1, token_budget // (width + longest)) if rows else 1
    chunks = [rows[i : i + per_chunk] for i in range(0, len(rows), per_chunk)]
    for n, chunk in enumerate(chunks):
        if any(jobs[j].cancel.is_set() for j, _ in chunk):
            continue
        kept = _returned_cache(prefill)
        cache = kept if n == len(chunks) - 1 else copy.deepcopy(kept)
        for (j, c), value in zip(chunk, _continue(model, cache, jobs, chunk, mask, pad_id), strict=True):
            totals[j][c] += value
    return [
        [
            RawScore(logprob=total, tokens=len(ids), exact=True)
            for total, ids in zip(t, job.candidates, strict=True)
        ]
        for t, job in zip(totals, jobs, strict=True)
    ]


def _continue(
    model: Any,
    cache: Any,
    jobs: Sequence[ScoreJob],
    rows: Sequence[tuple[int, int]],
    prompt_mask: torch.Tensor,
    pad_id: int,
) -> list[float]:
    """The logprob of each row's candidate after its first token, run as one batch on the prompts' cache.

    The cache is narrowed (and repeated) to the rows' conversations in place; each candidate is fed
    but for its last token (nothing is read after it), right-padded: a padding token comes after
    every real one, so causality keeps it from touching them.
    """
    device = prompt_mask.device
    length = max(len(jobs[j].candidates[c]) - 1 for j, c in rows)
    index = torch.tensor([j for j, _ in rows], dtype=torch.long, device=device)
    cache.batch_select_indices(index)
    fed = torch.full((len(rows), length), pad_id, dtype=torch.long)
    for row, (j, c) in enumerate(rows):
        ids = jobs[j].candidates[c][:-1]
        fed[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
    mask = prompt_mask.index_select(0, index)
    start = mask.sum(-1, keepdim=True)
    out = model(
        input_ids=fed.to(device),
        attention_mask=torch.cat(
            [mask, torch.ones((len(rows), length), dtype=mask.dtype, device=device)], -1
        ),
        position_ids=start + torch.arange(length, device=device),
        use_cache=True,
        **{_cache_argument(model): cache},
    )
    logits = out.logits.float()
    norms = torch.logsumexp(logits, dim=-1)
    values: list[float] = []
    for row, (j, c) in enumerate(rows):
        targets = torch.tensor(jobs[j].candidates[c][1:], dtype=torch.long, device=device)
        picked = logits[row, : len(targets)].gather(1, targets.unsqueeze(1)).squeeze(1)
        values.append(float((picked - norms[row, : len(targets)]).sum().item()))
    return values


def _cache_argument(model: Any) -> str:
    """The keyword a model's forward takes its cache by: ``cache`` (transformers 5.2x), formerly
    ``past_key_values``.
    """
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def _returned_cache(output: Any) -> Any:
    """The cache a forward pass returned, under either of its names."""
    cache = output.get("cache")
    return cache if cache is not None else output.past_key_values
