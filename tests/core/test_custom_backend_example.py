"""examples/custom_backend.py, the backend contract's worked example, runs as docs/concepts.md shows it."""

from __future__ import annotations

import re
import runpy
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import llmclient
from llmclient import registry

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "custom_backend.py"


@pytest.fixture
def example() -> Any:
    namespace = runpy.run_path(str(EXAMPLE))
    yield namespace
    registry.unregister("keywords")


def test_the_example_runs_as_a_script() -> None:
    result = subprocess.run(
        [sys.executable, str(EXAMPLE)], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.splitlines() == ["negative", "['positive', 'late', 'neutral']", "positive stop"]


def test_the_concepts_page_shows_the_example_class_as_it_is() -> None:
    page = (ROOT / "docs" / "concepts.md").read_text(encoding="utf-8")
    block = next(b for b in re.findall(r"```python\n(.*?)```", page, re.S) if "class KeywordBackend" in b)
    class_source = block[block.index("class KeywordBackend") :]
    assert class_source in EXAMPLE.read_text(encoding="utf-8")


def test_a_backend_with_only_chat_gets_every_call_style(example: Any) -> None:
    with llmclient.load({"type": "keywords", "model": "rules-v1", "name": "rules"}) as backend:
        assert isinstance(backend, example["KeywordBackend"])
        reply = backend.chat("The soup was cold.")
        assert (reply.text, reply.backend, reply.model, reply.finish_reason) == (
            "negative",
            "rules",
            "rules-v1",
            "stop",
        )
        assert reply.latency > 0
        with backend.stream("great pizza") as stream:
            assert [d.text for d in stream][:1] == ["positive"]
        assert stream.final().text == "positive"
        assert backend.count_tokens("three small words") == 3
        results = backend.chat_many(["late again", "meh"], return_exceptions=True)
        assert [r.text for r in results if isinstance(r, llmclient.ChatResponse)] == ["late", "neutral"]


async def test_the_async_methods_come_from_the_base(example: Any) -> None:
    async with llmclient.load({"type": "keywords", "model": "rules-v1"}) as backend:
        assert (await backend.achat("delicious")).text == "positive"
        assert [r.text for r in await backend.achat_many(["cold", "ok"])] == ["negative", "neutral"]
        assert "".join([d.text async for d in backend.astream("late")]) == "late"


def test_parameters_are_checked_by_the_base_before_the_backend_sees_them(example: Any) -> None:
    with llmclient.load({"type": "keywords", "model": "rules-v1"}) as backend:
        with pytest.raises(llmclient.InvalidRequestError, match="max_new_tokens"):
            backend.chat("cold", max_length=3)  # type: ignore[call-arg]
        assert backend.chat("cold", max_new_tokens=1).finish_reason == "stop"


def test_a_bad_setting_names_the_key(example: Any) -> None:
    with pytest.raises(llmclient.ConfigError, match=r"rules = 'late'.*table of keyword = label"):
        llmclient.load({"type": "keywords", "model": "rules-v1", "rules": "late"})
