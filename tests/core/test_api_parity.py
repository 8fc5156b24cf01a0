"""Every sync method that does I/O has an async twin with the same parameters, on the base and on
every concrete backend that the registry can import cheaply.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import subprocess
import sys
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any

import pytest

from llmclient import AsyncChatStream, ChatBackend, ChatStream
from llmclient.registry import ENTRY_POINT_GROUP

TWINS = {
    "chat": "achat",
    "stream": "astream",
    "chat_many": "achat_many",
    "close": "aclose",
    "score": "ascore",
    "choose": "achoose",
    "score_many": "ascore_many",
    "choose_many": "achoose_many",
}
"""The sync methods that do I/O, and their async twins."""

SYNC_ONLY = {
    # No I/O: they only check and format input, so an async twin would add nothing but a copy.
    "render_prompt",
    "count_tokens",
    "prepare",
}


def public_methods(cls: type) -> dict[str, Callable[..., Any]]:
    return {
        name: member
        for name, member in inspect.getmembers(cls, inspect.isfunction)
        if not name.startswith("_")
    }


def parameters(fn: Callable[..., Any]) -> list[tuple[str, Any, Any, Any]]:
    signature = inspect.signature(fn, eval_str=True)
    return [(p.name, p.kind, p.default, p.annotation) for p in signature.parameters.values()]


@pytest.mark.parametrize(("sync", "async_"), sorted(TWINS.items()))
def test_each_io_method_has_an_async_twin_with_the_same_parameters(sync: str, async_: str) -> None:
    assert parameters(getattr(ChatBackend, sync)) == parameters(getattr(ChatBackend, async_))


COROUTINES = ["achat", "achat_many", "aclose", "ascore", "achoose", "ascore_many", "achoose_many"]


@pytest.mark.parametrize("name", COROUTINES)
def test_async_twins_are_coroutine_functions(name: str) -> None:
    assert inspect.iscoroutinefunction(getattr(ChatBackend, name))


def test_astream_returns_the_async_form_of_what_stream_returns() -> None:
    sync = inspect.signature(ChatBackend.stream, eval_str=True).return_annotation
    async_ = inspect.signature(ChatBackend.astream, eval_str=True).return_annotation
    assert (sync, async_) == (ChatStream, AsyncChatStream)


def test_every_public_method_is_a_twin_or_listed_as_sync_only() -> None:
    # A new public method must either get an async twin (add it to TWINS) or be declared sync-only.
    known = set(TWINS) | set(TWINS.values()) | SYNC_ONLY
    assert set(public_methods(ChatBackend)) == known


def test_sync_only_methods_are_not_coroutines() -> None:
    for name in SYNC_ONLY:
        assert not inspect.iscoroutinefunction(getattr(ChatBackend, name)), name


def test_the_context_managers_come_in_pairs() -> None:
    assert parameters(ChatBackend.__exit__) == parameters(ChatBackend.__aexit__)


# -- concrete backends --------------------------------------------------------------------------


def _backend_modules() -> list[str]:
    return sorted({ep.value.partition(":")[0] for ep in entry_points(group=ENTRY_POINT_GROUP)})


def _imports_cheaply(module: str) -> bool:
    """Whether importing ``module`` leaves torch and transformers out (checked in a fresh process)."""
    code = f"import sys, {module}; sys.exit(int(any(m in sys.modules for m in ('torch', 'transformers'))))"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60).returncode == 0


@pytest.mark.parametrize("module", _backend_modules())
def test_concrete_backends_keep_the_base_signatures(module: str) -> None:
    try:
        found = importlib.util.find_spec(module)
    except ModuleNotFoundError:
        found = None
    if found is None:
        pytest.skip(f"{module} does not exist yet")
    if not _imports_cheaply(module):
        pytest.skip(f"{module} imports torch or transformers at import time")
    loaded = importlib.import_module(module)
    names = getattr(loaded, "__all__", list(vars(loaded)))
    classes = [
        obj
        for obj in (getattr(loaded, name) for name in names)
        if isinstance(obj, type) and issubclass(obj, ChatBackend) and obj.__module__.startswith(module)
    ]
    assert classes, f"{module} exports no ChatBackend subclass of its own"
    base = public_methods(ChatBackend)
    for cls in classes:
        for name, method in public_methods(cls).items():
            if name in base and method is not base[name]:
                assert parameters(method) == parameters(base[name]), f"{cls.__name__}.{name}"
        for sync, async_ in TWINS.items():
            assert parameters(getattr(cls, sync)) == parameters(getattr(cls, async_)), (
                f"{cls.__name__}.{sync}"
            )
        for name in COROUTINES:
            assert inspect.iscoroutinefunction(getattr(cls, name)), f"{cls.__name__}.{name}"


def test_the_signature_comparison_sees_a_changed_default() -> None:
    # Guards the checks above against passing vacuously.
    class Drifted(ChatBackend):
        def _chat(self, request: Any) -> Any:
            raise NotImplementedError

        def close(self, force: bool = False) -> None:
            """Close, with an extra parameter the async twin lacks."""

    assert parameters(Drifted.close) != parameters(Drifted.aclose)
    assert parameters(Drifted.close) != parameters(ChatBackend.close)
