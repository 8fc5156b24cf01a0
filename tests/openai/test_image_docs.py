"""The example in docs/images.md runs as written, against the loopback server, and prints what it says."""

from __future__ import annotations

import re
from pathlib import Path

import pytest


def test_the_example_in_docs_images_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    text = (Path(__file__).resolve().parents[2] / "docs" / "images.md").read_text()
    hosted = text.split("## Local vision models")[0]  # the local example: tests/huggingface/test_vision.py
    (example,) = re.findall(r"```python\n(.*?)```", hosted, re.DOTALL)
    monkeypatch.chdir(tmp_path)  # the example writes square.png where it runs
    exec(compile(example, "docs/images.md", "exec"), {})
    assert capsys.readouterr().out.splitlines() == [
        "saw text, data:image/png;base64",
        "saw https://example.com/cat.jpg",
        "UnsupportedFeatureError 400",
    ]
    assert (tmp_path / "square.png").exists()
