"""Issue 12 items 13 and 26: ``close()`` while calls are in flight, and no open session left at exit."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time
from typing import Any

import pytest
from remote_support import API_KEY

from llmclient.backends.openai import OpenAICompatibleBackend
from llmclient.errors import BackendUnavailableError, LLMClientError
from llmclient.testing.server import LoopbackServer, completion, json_reply


def _slow(request: Any) -> Any:
    return json_reply(completion("late"), delay=1.5)


def test_close_settles_a_sync_batch_running_on_another_thread(serve) -> None:
    server = serve(_slow)
    backend = OpenAICompatibleBackend(model="m", base_url=server.base_url, api_key=API_KEY)
    results: list[Any] = []
    worker = threading.Thread(
        target=lambda: results.append(backend.chat_many(["a", "b", "c"], return_exceptions=True))
    )
    worker.start()
    time.sleep(0.4)
    backend.close()
    worker.join(timeout=8)
    assert not worker.is_alive(), "chat_many blocked after close()"
    [replies] = results
    assert all(isinstance(r, BackendUnavailableError) and "closed" in str(r) for r in replies), replies
    assert all(not r.retryable for r in replies)
    assert len(server.requests) == 3  # none retried


def test_close_fails_a_sync_call_in_flight_as_closed_never_retried(serve) -> None:
    server = serve(_slow)
    backend = OpenAICompatibleBackend(model="m", base_url=server.base_url, api_key=API_KEY)
    errors: list[BaseException] = []

    def chat() -> None:
        try:
            backend.chat("a")
        except BaseException as exc:
            errors.append(exc)

    worker = threading.Thread(target=chat)
    worker.start()
    time.sleep(0.4)
    backend.close()
    worker.join(timeout=8)
    assert not worker.is_alive()
    [error] = errors
    assert isinstance(error, BackendUnavailableError) and "closed" in str(error), repr(error)
    assert len(server.requests) == 1


def test_aclose_fails_async_calls_in_flight_and_after(serve, runner) -> None:
    server = serve(_slow)
    backend = OpenAICompatibleBackend(model="m", base_url=server.base_url, api_key=API_KEY)

    async def scenario() -> tuple[list[Any], BaseException | None]:
        import asyncio

        calls = [asyncio.ensure_future(backend.achat(p)) for p in "ab"]
        await asyncio.sleep(0.4)
        await backend.aclose()
        done = await asyncio.gather(*calls, return_exceptions=True)
        try:
            await backend.achat("after")
        except LLMClientError as exc:
            return done, exc
        return done, None

    done, after = runner.run(scenario())
    for outcome in [*done, after]:
        assert isinstance(outcome, BackendUnavailableError) and "closed" in str(outcome), repr(outcome)
    assert len(server.requests) == 2


SCRIPT = """
import warnings
warnings.simplefilter("error")
from llmclient.backends.openai import OpenAICompatibleBackend
backend = OpenAICompatibleBackend(model="m", base_url={url!r}, api_key="sk-test-0123456789")
print([r.text for r in backend.chat_many(["a", "b"])])
"""


@pytest.mark.parametrize("collect", [False, True])
def test_no_unclosed_session_after_a_sync_batch_without_close(collect: bool) -> None:
    with LoopbackServer(lambda r: json_reply(completion("ok"))) as server:
        code = textwrap.dedent(SCRIPT.format(url=server.base_url))
        if collect:
            code += "del backend\nimport gc; gc.collect()\nprint('collected')\n"
        done = subprocess.run(
            [sys.executable, "-X", "dev", "-c", code], capture_output=True, text=True, timeout=60
        )
    assert done.returncode == 0, done.stderr
    assert "['ok', 'ok']" in done.stdout
    assert "Unclosed" not in done.stderr, done.stderr
