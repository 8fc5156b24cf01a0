"""The dtype a local model runs in: ``auto`` takes bfloat16 on a CPU that computes it natively and
float32 on one that does not; an explicit setting always wins; the choice is logged and shown. Under
bfloat16, constrained decoding and logprobs/scoring (softmax in float32) still work, on smollm2.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import pytest

torch = pytest.importorskip("torch", reason="the local backend needs torch (pip install 'llmclient[hf]')")

from pydantic import BaseModel  # noqa: E402

from llmclient.backends.huggingface import HuggingFaceBackend  # noqa: E402
from llmclient.backends.huggingface.loading import cpu_computes_bf16, pick_dtype  # noqa: E402
from llmclient.cli import main  # noqa: E402

CPU = torch.device("cpu")
WITHOUT_BF16 = {"avx512_f": True, "avx512_bw": True, "avx2": True, "avx512_bf16": False, "amx_bf16": False}
"""An AVX-512 CPU without bfloat16 instructions: oneDNN emulates bf16 there, slower than float32."""


@pytest.mark.parametrize(
    "flags", [{"avx512_bf16": True}, {"amx_bf16": True}, {"amx_bf16": True, "avx512_bf16": True}]
)
def test_auto_picks_bfloat16_on_a_cpu_with_bf16_instructions(flags: dict[str, bool]) -> None:
    assert pick_dtype("auto", CPU, flags) == torch.bfloat16


@pytest.mark.parametrize("flags", [{}, WITHOUT_BF16])
def test_auto_keeps_float32_on_a_cpu_without_them(flags: dict[str, bool]) -> None:
    assert pick_dtype("auto", CPU, flags) == torch.float32


def test_an_explicit_dtype_wins_over_what_the_cpu_has() -> None:
    assert pick_dtype("float32", CPU, {"avx512_bf16": True}) == torch.float32
    assert pick_dtype("FP32", CPU, {"amx_bf16": True}) == torch.float32
    assert pick_dtype("bf16", CPU, WITHOUT_BF16) == torch.bfloat16


def test_detection_agrees_with_proc_cpuinfo_on_this_machine() -> None:
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.exists():
        pytest.skip("no /proc/cpuinfo to compare with")
    flags = set(cpuinfo.read_text().split())
    assert cpu_computes_bf16() == bool({"avx512_bf16", "amx_bf16"} & flags)


def test_without_torch_capabilities_the_flags_come_from_proc_cpuinfo(monkeypatch: pytest.MonkeyPatch) -> None:
    detected = cpu_computes_bf16()
    if not Path("/proc/cpuinfo").exists():
        pytest.skip("no /proc/cpuinfo")
    monkeypatch.delattr(torch.cpu, "get_capabilities", raising=False)  # an older torch
    assert cpu_computes_bf16() == detected


def test_auto_loads_what_the_cpu_computes_and_logs_it(
    tiny_models: dict[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    expected = "bfloat16" if cpu_computes_bf16() else "float32"
    with caplog.at_level(logging.INFO, logger="llmclient"):
        backend = HuggingFaceBackend(str(tiny_models["llama"]), device="cpu", load="eager")
    with backend:
        assert backend.dtype == expected
        assert backend.chat("Hi", max_new_tokens=3, temperature=0).usage is not None
    loaded = [r.getMessage() for r in caplog.records if r.getMessage().startswith("loaded ")]
    assert len(loaded) == 1 and f" on cpu as {expected} in " in loaded[0]


def test_a_cpu_without_bf16_loads_float32(
    tiny_models: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: WITHOUT_BF16, raising=False)
    with HuggingFaceBackend(str(tiny_models["llama"]), device="cpu", load="eager") as backend:
        assert backend.dtype == "float32"
        assert backend.hf_model.dtype == torch.float32


def test_dtype_float32_is_one_setting_away(
    tiny_models: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: {"avx512_bf16": True}, raising=False)
    with HuggingFaceBackend(str(tiny_models["llama"]), device="cpu", dtype="float32") as backend:
        assert backend.dtype == "float32"
    with HuggingFaceBackend(str(tiny_models["llama"]), device="cpu") as backend:
        assert backend.dtype == "bfloat16"


def test_llmclient_backends_check_shows_the_dtype(
    tiny_models: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "llmclient.toml"
    config.write_text(
        f'[backends.tiny]\ntype = "huggingface"\nmodel = "{tiny_models["llama"]}"\ndevice = "cpu"\n'
        'dtype = "float32"\n'
    )
    assert main(["backends", "--check", "--config", str(config)]) == 0
    assert ", float32)" in capsys.readouterr().out


# -- smollm2 in bfloat16 ------------------------------------------------------------------------


class Order(BaseModel):
    dish: str
    sentiment: Literal["positive", "negative", "mixed"]
    late: bool


REVIEWS = [
    "The pizza was cold when it arrived and the tiramisu was soggy.",
    "Perfect as always, the spring rolls were crispy!",
    "Tasty curry, but it came forty minutes late.",
]


@pytest.fixture(scope="module")
def smollm2_bf16(smollm2_backend: Any) -> Iterator[Any]:
    """smollm2 in bfloat16, whatever this CPU has (the session's backend runs in what ``auto`` picks)."""
    import llmclient

    backend = llmclient.load("hf:smollm2", device="cpu", dtype="bfloat16", load="eager")
    yield backend
    backend.close()


@pytest.mark.slow
def test_constrained_decoding_in_bf16_gives_valid_replies(smollm2_bf16: Any) -> None:
    assert smollm2_bf16.dtype == "bfloat16"
    prompts = [f"Fill in the form about this review, as JSON.\n\n{review}" for review in REVIEWS]
    replies = smollm2_bf16.chat_many(prompts, response_format=Order, max_new_tokens=60, temperature=0)
    assert [type(r.parsed) for r in replies] == [Order] * len(REVIEWS)
    streamed = smollm2_bf16.stream(prompts[0], response_format=Order, max_new_tokens=60, temperature=0)
    assert streamed.final().parsed == replies[0].parsed


def _off_the_bf16_grid(value: float) -> bool:
    """Whether ``value`` has more precision than bfloat16 holds (a float32 softmax, not a bf16 one)."""
    return float(torch.tensor(value).to(torch.bfloat16).float()) != value


@pytest.mark.slow
def test_logprobs_in_bf16_come_from_a_float32_softmax(smollm2_bf16: Any) -> None:
    reply = smollm2_bf16.chat(
        "Capital of France? One word.", logprobs=True, top_logprobs=3, temperature=0, max_new_tokens=4
    )
    values = [t.logprob for t in reply.logprobs] + [lp for t in reply.logprobs for _, lp in t.top]
    assert values and all(math.isfinite(v) and v <= 0 for v in values)
    assert any(_off_the_bf16_grid(v) for v in values)
    for token in reply.logprobs:  # greedy: the chosen token is the most likely alternative
        assert token.top[0][1] == pytest.approx(token.logprob)


@pytest.fixture(scope="module")
def smollm2_fp32(smollm2_bf16: Any) -> Iterator[Any]:
    """smollm2 in float32, to compare with."""
    import llmclient

    backend = llmclient.load("hf:smollm2", device="cpu", dtype="float32", load="eager")
    yield backend
    backend.close()


@pytest.mark.slow
def test_scoring_in_bf16_ranks_as_float32_does(smollm2_bf16: Any, smollm2_fp32: Any) -> None:
    messages = "Is this review positive or negative? Answer with one word.\n\nPerfect, crispy and hot!"
    candidates = ["positive", "negative"]
    low, full = smollm2_bf16.score(messages, candidates), smollm2_fp32.score(messages, candidates)
    assert all(math.isfinite(s.logprob) for s in low) and any(_off_the_bf16_grid(s.logprob) for s in low)
    assert sum(s.probability for s in low) == pytest.approx(1.0)
    assert max(low, key=lambda s: s.logprob).text == max(full, key=lambda s: s.logprob).text
    for a, b in zip(low, full, strict=True):
        assert a.logprob == pytest.approx(b.logprob, abs=0.5)
