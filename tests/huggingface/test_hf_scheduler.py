"""Every local call reaches the model through the scheduler's one ``submit``, on one worker thread."""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from llmclient import BackendUnavailableError
from llmclient.backends.huggingface import HuggingFaceBackend

pytest.importorskip("torch")

from llmclient.backends.huggingface.scheduler import Handle


class Seen:
    """What a backend's scheduler and model saw: each ``submit``, each batch, each forward's thread.

    The real scheduler and model run; this only records around them.
    """

    def __init__(self, backend: HuggingFaceBackend, monkeypatch: pytest.MonkeyPatch) -> None:
        engine = backend._engine
        assert engine is not None, "load the model first (load='eager')"
        self.scheduler = engine.scheduler
        self.submits: list[tuple[str, int, bool]] = []  # calling thread, jobs, stream
        self.batches: list[int] = []
        self.forward_threads: set[threading.Thread] = set()
        self.forwards = 0
        self.forwarding = threading.Event()
        self.submitted = threading.Event()
        submit, run, forward = engine.scheduler.submit, engine.generator.run, engine.model.forward

        def spy_submit(jobs: Any, **kwargs: Any) -> list[Handle]:
            self.submits.append((threading.current_thread().name, len(jobs), kwargs.get("stream", False)))
            handles = submit(jobs, **kwargs)
            self.submitted.set()
            return handles

        def spy_run(jobs: Any, streamer: Any = None) -> Any:
            self.batches.append(len(jobs))
            return run(jobs, streamer)

        def spy_forward(*args: Any, **kwargs: Any) -> Any:
            self.forward_threads.add(threading.current_thread())
            self.forwards += 1
            self.forwarding.set()
            return forward(*args, **kwargs)

        monkeypatch.setattr(engine.scheduler, "submit", spy_submit)
        monkeypatch.setattr(engine.generator, "run", spy_run)
        monkeypatch.setattr(engine.model, "forward", spy_forward)


@pytest.fixture
def backend(tiny_models: dict[str, Path]) -> Iterator[HuggingFaceBackend]:
    """A backend of its own, so its threads and its closing are this test's alone."""
    built = HuggingFaceBackend(str(tiny_models["llama"]), device="cpu", dtype="float32", load="eager")
    yield built
    built.close()


OPTIONS: dict[str, Any] = {"max_new_tokens": 6, "temperature": 0}


async def _async_calls(backend: HuggingFaceBackend) -> list[str]:
    texts = [(await backend.achat("Hello", **OPTIONS)).text]
    texts += [r.text for r in await backend.achat_many(["Hi", "Hello", "Bye"], **OPTIONS)]
    texts.append("".join([d.text async for d in backend.astream("Hello", **OPTIONS)]))
    return texts


def test_every_kind_of_call_goes_through_submit_to_the_one_worker_thread(
    backend: HuggingFaceBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = Seen(backend, monkeypatch)
    texts = [backend.chat("Hello", **OPTIONS).text]
    texts += [r.text for r in backend.chat_many(["Hi", "Hello", "Bye"], **OPTIONS)]
    texts.append("".join(d.text for d in backend.stream("Hello", **OPTIONS)))
    texts += asyncio.run(_async_calls(backend))

    # chat, chat_many, stream | achat, achat_many, astream: one submit each, batches as submitted
    assert [(jobs, stream) for _, jobs, stream in seen.submits] == [(1, False), (3, False), (1, True)] * 2
    assert seen.batches == [1, 3, 1] * 2
    worker = seen.scheduler.thread
    assert worker is not None and worker.name == "llmclient-hf-model"
    assert seen.forward_threads == {worker}  # every forward pass of every call ran there
    assert texts[:5] == texts[5:] and texts[0] == texts[2] == texts[4]


def test_a_sync_chat_many_goes_from_the_calling_thread_straight_to_the_worker(
    backend: HuggingFaceBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = Seen(backend, monkeypatch)
    alive: list[set[str]] = []
    real_run = backend._engine.generator.run  # type: ignore[union-attr]

    def run(jobs: Any, streamer: Any = None) -> Any:
        alive.append({t.name for t in threading.enumerate()})
        return real_run(jobs, streamer)

    monkeypatch.setattr(backend._engine.generator, "run", run)  # type: ignore[union-attr]
    replies = backend.chat_many(["Hi", "Hello there", "Bye"], **OPTIONS)

    assert len(replies) == 3 and seen.batches == [3]
    caller = threading.current_thread()
    assert [name for name, _, _ in seen.submits] == [caller.name]
    assert seen.forward_threads == {seen.scheduler.thread}
    # the backend's event-loop thread (what a remote backend's sync batch runs on) never started
    assert backend._loop_thread._thread is None
    assert not any(name.startswith(f"llmclient-{backend.name}") for name in alive[0])


def test_a_timed_out_wait_cancels_the_running_job_and_frees_the_model(
    backend: HuggingFaceBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = Seen(backend, monkeypatch)
    engine = backend._engine
    assert engine is not None
    job = engine.job(backend.prepare("Hello there", {"max_new_tokens": 400, "temperature": 0}))
    (handle,) = engine.scheduler.submit([job])
    assert seen.forwarding.wait(30)
    with pytest.raises(TimeoutError):
        handle.result(timeout=0.01)
    assert job.cancel.is_set()
    stopped = handle.future.result(timeout=30)  # the row stopped at its next token
    assert stopped.finish_reason == "length" and len(stopped.token_ids) < 100
    started = time.perf_counter()
    assert backend.chat("Hello", max_new_tokens=2).usage.completion_tokens <= 2
    assert time.perf_counter() - started < 10


def test_ctrl_c_during_a_sync_chat_cancels_the_job_and_frees_the_model(
    backend: HuggingFaceBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = Seen(backend, monkeypatch)
    main = threading.get_ident()

    def press_ctrl_c() -> None:  # once the model runs, as a user would
        if seen.forwarding.wait(30):
            signal.pthread_kill(main, signal.SIGINT)

    presser = threading.Thread(target=press_ctrl_c)
    presser.start()
    with pytest.raises(KeyboardInterrupt):
        backend.chat("Hello there", max_new_tokens=400, temperature=0)
    presser.join()
    reply = backend.chat("Hello", max_new_tokens=2, temperature=0)
    assert reply.usage.completion_tokens <= 2
    # the interrupted reply stopped at its next token instead of running on to 400
    assert seen.forwards < 100
    assert seen.batches == [1, 1]


def test_ctrl_c_during_a_sync_chat_many_cancels_the_running_and_the_waiting_jobs(
    backend: HuggingFaceBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    # issue 12 item 14, local half: the batch kept generating and the next call waited minutes
    seen = Seen(backend, monkeypatch)
    main = threading.get_ident()

    def press_ctrl_c() -> None:
        if seen.forwarding.wait(30):
            signal.pthread_kill(main, signal.SIGINT)

    presser = threading.Thread(target=press_ctrl_c)
    presser.start()
    with pytest.raises(KeyboardInterrupt):  # concurrency=1: one conversation per batch, two wait
        backend.chat_many(["Hello there", "Hi", "Bye"], concurrency=1, max_new_tokens=400, temperature=0)
    presser.join()
    started = time.perf_counter()
    assert backend.chat("Hello", max_new_tokens=2, temperature=0).usage.completion_tokens <= 2
    assert time.perf_counter() - started < 10
    assert seen.forwards < 100  # the running row stopped at its next token
    assert seen.batches == [1, 1]  # the two waiting conversations never ran


def test_closing_while_a_batch_runs_stops_it_and_fails_what_waits(
    backend: HuggingFaceBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = Seen(backend, monkeypatch)
    results: dict[str, Any] = {}

    def call(key: str, fn: Any) -> None:
        try:
            results[key] = fn()
        except BaseException as exc:
            results[key] = exc

    running = threading.Thread(
        target=call,
        args=("batch", lambda: backend.chat_many(["Hello there", "Hi"], max_new_tokens=400, temperature=0)),
    )
    running.start()
    assert seen.forwarding.wait(30)
    seen.submitted.clear()
    waiting = threading.Thread(target=call, args=("waiting", lambda: backend.chat("Bye", max_new_tokens=4)))
    waiting.start()
    assert seen.submitted.wait(30)  # queued behind the running batch
    backend.close()
    running.join(30)
    waiting.join(30)

    batch = results["batch"]
    assert [r.finish_reason for r in batch] == ["length", "length"]
    assert all(r.usage.completion_tokens < 100 for r in batch)
    assert isinstance(results["waiting"], BackendUnavailableError)
    assert "closed before this request ran" in str(results["waiting"])
    assert seen.batches == [2]
    with pytest.raises(BackendUnavailableError):
        backend.chat("Hello")


async def test_achat_calls_of_one_loop_turn_share_one_batch_and_sync_callers_are_not_delayed(
    backend: HuggingFaceBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = Seen(backend, monkeypatch)
    replies = await asyncio.gather(*(backend.achat(f"Hello {i}", **OPTIONS) for i in range(5)))
    assert len(replies) == 5 and seen.batches == [5]
    # a sync call made inside the loop is queued at once (it cannot wait for the turn to end)
    assert backend.chat("Hello", **OPTIONS).usage.completion_tokens <= 6
    assert seen.batches == [5, 1]
