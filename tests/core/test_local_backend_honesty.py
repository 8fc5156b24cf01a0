"""The local backend's first contact: every call without the [hf] extra gives the install hint; an
unknown hub id offline fails at once; each reply's latency is its own, not its batch's.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from llmclient.errors import ModelLoadError

WITHOUT_TORCH = textwrap.dedent(
    """
    import asyncio
    import sys

    sys.modules["torch"] = None  # the [hf] extra is not installed

    from llmclient.backends.huggingface import HuggingFaceBackend
    from llmclient.errors import ModelLoadError

    backend = HuggingFaceBackend("smollm2")


    async def read(stream):
        async for _ in stream:
            pass


    async def many():
        return await backend.achat_many(["hi"])


    calls = {
        "chat": lambda: backend.chat("hi"),
        "stream": lambda: list(backend.stream("hi")),
        "astream": lambda: asyncio.run(read(backend.astream("hi"))),
        "chat_many": lambda: backend.chat_many(["hi", "ho"]),
        "achat_many": lambda: asyncio.run(many()),
        "render_prompt": lambda: backend.render_prompt("hi"),
    }
    for name, call in calls.items():
        try:
            call()
            print(name, "no error")
        except ModelLoadError as error:
            print(name, "hint" if 'pip install "llmclient[hf]"' in str(error) else error)
        except BaseException as error:
            print(name, type(error).__name__, error)
    """
)


def test_every_local_call_without_the_hf_extra_raises_model_load_error_with_the_hint() -> None:
    result = subprocess.run(
        [sys.executable, "-c", WITHOUT_TORCH], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"{name} hint" for name in ("chat", "stream", "astream", "chat_many", "achat_many", "render_prompt")
    ]


@pytest.fixture
def hub_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.mark.parametrize(
    ("model", "suggestion"), [("smolm2", "Did you mean 'smollm2'?"), ("nobody/no-such-model", "")]
)
def test_an_unknown_hub_id_offline_fails_at_once(hub_offline: None, model: str, suggestion: str) -> None:
    pytest.importorskip("torch")
    import llmclient.backends.huggingface.engine  # noqa: F401 - torch and transformers imported before the clock
    from llmclient.backends.huggingface import HuggingFaceBackend

    backend = HuggingFaceBackend(model, device="cpu")
    started = time.perf_counter()
    with pytest.raises(ModelLoadError) as info:
        backend.chat("hi")
    assert time.perf_counter() - started < 10  # not half a minute of retries
    message = str(info.value)
    assert "the Hugging Face Hub is offline (HF_HUB_OFFLINE=1)" in message
    assert f"{model!r} is not in the local cache" in message
    assert suggestion in message


def test_an_unreachable_hub_counts_as_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("huggingface_hub")
    from huggingface_hub import constants

    from llmclient.backends.huggingface import hub

    for variable in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # nothing listens on the discard port
    assert hub.offline_reason() == "127.0.0.1 cannot be reached"


def test_a_cached_model_loads_from_its_snapshot_while_offline(
    hub_offline: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_models: dict[str, Path]
) -> None:
    from huggingface_hub import constants

    from llmclient.backends.huggingface import HuggingFaceBackend

    snapshot = tmp_path / "models--tiny--llama" / "snapshots" / "0123abc"
    snapshot.mkdir(parents=True)
    for item in tiny_models["llama"].iterdir():
        (snapshot / item.name).symlink_to(item)
    (tmp_path / "models--tiny--llama" / "refs").mkdir()
    (tmp_path / "models--tiny--llama" / "refs" / "main").write_text("0123abc")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    with HuggingFaceBackend("tiny/llama", device="cpu") as backend:
        assert backend.chat("hi", max_new_tokens=2).usage is not None


def _latencies(backend: Any) -> list[tuple[float, int]]:
    async def both() -> list[Any]:
        return list(
            await asyncio.gather(
                backend.achat("One two three", max_new_tokens=1),
                # long enough that its steps, not the batch's fixed costs, set its time on any machine
                backend.achat("One two three", max_new_tokens=240, extra={"min_new_tokens": 240}),
            )
        )

    return [(reply.latency, reply.usage.completion_tokens) for reply in asyncio.run(both())]


def test_a_short_row_of_a_batch_reports_its_own_latency(llama_backend: Any) -> None:
    (short, short_tokens), (long, long_tokens) = _latencies(llama_backend)
    assert (short_tokens, long_tokens) == (1, 240)
    assert short < long / 3, (short, long)  # it ended at its first token, not with the batch


def test_chat_many_replies_carry_their_own_latency(llama_backend: Any) -> None:
    replies = llama_backend.chat_many(["One two three", "Hello there"], max_new_tokens=4)
    assert all(0 < reply.latency < 60 for reply in replies)
