"""The examples users copy from must run as written."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import llmclient

ROOT = Path(__file__).resolve().parents[2]


def test_remote_chat_demo_runs_offline() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "remote_chat.py"), "--demo"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "chat: 'You said: What is the capital of France?'" in result.stdout
    assert "What is 6 squared? -> You said: What is 6 squared?" in result.stdout


def test_example_config_file_is_valid() -> None:
    config = llmclient.ConfigFile.read(ROOT / "examples" / "llmclient.toml")
    assert config.default == "local"
    assert {name: c.type for name, c in config.backends.items()} == {
        "local": "huggingface",
        "openrouter": "openrouter",
        "vllm": "vllm",
    }
    assert all(c.defaults.temperature == 0 for c in config.backends.values())
