"""pytest plugin: recorded model replies for tests, registered through the ``pytest11`` entry point.

It loads in every pytest session of a project that installs llmclient, so it imports nothing of
llmclient until a test asks for it, and changes nothing for tests that do not use it.

- The ``llm_cassette`` fixture gives a :class:`~llmclient.testing.session.CassetteSession` on the
  test's cassette: ``llm_cassette.load("local")`` or ``llm_cassette.wrap(backend_or_factory)``.
- ``@pytest.mark.llm_cassette("name", ignore=("seed",), record_mode="once")`` names the cassette
  (default: the test's name) and sets its options. Cassettes live at
  ``<test file's folder>/cassettes/<test module>/<name>.yaml``.
- ``--llm-record-mode=none|once|new_episodes|all`` (ini ``llm_record_mode``; default ``none``: replay
  only, the CI setting) says what to do with requests that have no recorded reply.
- ``--llm-fail-unused`` (ini ``llm_fail_unused``) fails a test that leaves recorded replies unplayed.
- ``--llm-block-real`` (ini ``llm_block_real``) makes ``llmclient.load()`` refuse to build real
  backends in tests, except when a cassette builds one to record a reply.
"""

from __future__ import annotations

import re
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from llmclient.testing.session import CassetteSession

_MODES = ("none", "once", "new_episodes", "all")
_SESSION_KEY = pytest.StashKey["CassetteSession"]()
_MARKER = (
    "llm_cassette(name=None, *, ignore=(), record_mode=None): the llmclient cassette of this test: its "
    "file name (default: the test's name), request fields left out of matching, and a record mode "
    "overriding --llm-record-mode."
)


def pytest_addoption(parser: pytest.Parser) -> None:
    """Add the llmclient options and ini settings."""
    group = parser.getgroup("llmclient", "llmclient recorded replies")
    group.addoption(
        "--llm-record-mode",
        choices=_MODES,
        default=None,
        help="what llm_cassette does with requests that have no recorded reply: none (fail; the default), "
        "once (record into new cassettes), new_episodes (record the missing ones), all (re-record)",
    )
    group.addoption(
        "--llm-fail-unused",
        action="store_true",
        default=None,
        help="fail a test that leaves replies in its llm_cassette unplayed",
    )
    group.addoption(
        "--llm-block-real",
        action="store_true",
        default=None,
        help="make llmclient.load() refuse to build real backends in tests, except to record a reply",
    )
    parser.addini("llm_record_mode", "default for --llm-record-mode", default="none")
    parser.addini("llm_fail_unused", "default for --llm-fail-unused", type="bool", default=False)
    parser.addini("llm_block_real", "default for --llm-block-real", type="bool", default=False)


def pytest_configure(config: pytest.Config) -> None:
    """Declare the marker."""
    config.addinivalue_line("markers", _MARKER)


def _setting(config: pytest.Config, name: str) -> Any:
    value = config.getoption(f"--{name.replace('_', '-')}")
    return config.getini(name) if value is None else value


def _file_name(name: str) -> str:
    return re.sub(r"[^\w.-]+", "-", name).strip("-") or "cassette"


def cassette_path(item: pytest.Item, name: str | None = None) -> Path:
    """Where a test's cassette lives: ``<test file's folder>/cassettes/<module>/<name>.yaml``.

    ``name`` defaults to the test's name within its module (``TestClass.test_x[param]``).
    """
    module = item.path.stem
    test = name or item.nodeid.split("::", 1)[-1].replace("::", ".")
    return item.path.parent / "cassettes" / module / f"{_file_name(test)}.yaml"


@pytest.fixture
def llm_cassette(request: pytest.FixtureRequest) -> Iterator[CassetteSession]:
    """The test's cassette: wrap backends with it to record their replies once and replay them after.

    ``llm_cassette.load(spec)`` is ``llmclient.load(spec)`` behind the cassette, built only when a
    reply must be recorded; ``llm_cassette.wrap(backend_or_factory)`` wraps any backend. The cassette is
    saved when the test ends.
    """
    from llmclient.testing.cassettes.modes import check_mode
    from llmclient.testing.session import CassetteSession

    marker = request.node.get_closest_marker("llm_cassette")
    args: tuple[Any, ...] = marker.args if marker else ()
    kwargs: dict[str, Any] = dict(marker.kwargs) if marker else {}
    mode = check_mode(kwargs.pop("record_mode", None) or _setting(request.config, "llm_record_mode"))
    session = CassetteSession(
        cassette_path(request.node, args[0] if args else kwargs.pop("name", None)),
        mode=mode,
        ignore=kwargs.pop("ignore", ()),
        secrets=kwargs.pop("secrets", ()),
    )
    if kwargs:
        raise pytest.UsageError(f"llm_cassette marker: unknown option(s) {sorted(kwargs)}; {_MARKER}")
    request.node.stash[_SESSION_KEY] = session
    yield session
    session.close()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    """With ``--llm-fail-unused``, fail a passing test that left recorded replies unplayed."""
    result = yield
    session = item.stash.get(_SESSION_KEY, None)
    if session is not None and _setting(item.config, "llm_fail_unused"):
        unused = session.unused()
        if unused:
            listed = "\n".join(
                f"  - {(i.request.get('messages') or [{}])[-1].get('content')!r}" for i in unused[:10]
            )
            pytest.fail(
                f"{len(unused)} recorded repl{'y' if len(unused) == 1 else 'ies'} in {session.path} "
                f"went unplayed (--llm-fail-unused); the last message of each request:\n{listed}\n"
                f"Re-record the cassette (--llm-record-mode=all) to drop them.",
                pytrace=False,
            )
    return result


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(
    item: pytest.Item, nextitem: pytest.Item | None
) -> Generator[None, object, object]:
    """With ``--llm-block-real``, run each test (setup to teardown) with real backends blocked."""
    if not _setting(item.config, "llm_block_real"):
        return (yield)
    from llmclient.testing.real_backends import block_real_backends

    with block_real_backends("tests run with --llm-block-real"):
        return (yield)
