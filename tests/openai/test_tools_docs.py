"""The example in docs/tools.md runs as written, against the loopback server, and prints what it says."""

from __future__ import annotations

import re
from pathlib import Path

import pytest


def test_the_example_in_docs_tools_runs(capsys: pytest.CaptureFixture[str]) -> None:
    text = (Path(__file__).resolve().parents[2] / "docs" / "tools.md").read_text()
    example = re.search(r"```python\n(.*?)```", text, re.DOTALL)
    assert example is not None
    exec(compile(example.group(1), "docs/tools.md", "exec"), {})
    assert capsys.readouterr().out.splitlines() == [
        'call_1 get_weather {"city": "Lisbon"}',
        "It is 21C and sunny in Lisbon",
        "It is 21C and sunny in Lisbon 2",
    ]
