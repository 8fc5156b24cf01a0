"""The ``retry`` table: read into the retry policy, range-checked with the key named, and honoured."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import pytest
from remote_support import Caller

from llmclient.backends.openai import OpenAICompatibleBackend, OpenAICompatibleSettings
from llmclient.errors import BackendUnavailableError, ConfigError
from llmclient.retry import RetryPolicy
from llmclient.testing.server import OpenAIHandler
from llmclient.testing.server.faults import FaultHandler

FAST = "initial_backoff = 0.01, max_backoff = 0.01, jitter = 0"


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in ("LLMCLIENT_CONFIG", "LLMCLIENT_BACKEND", "VLLM_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def loaded(
    built: Callable[..., OpenAICompatibleBackend], project: Path
) -> Callable[[str], OpenAICompatibleBackend]:
    """``llmclient.load`` of a ``vllm`` table written to ``llmclient.toml`` with ``table``'s lines."""

    def load(table: str) -> OpenAICompatibleBackend:
        (project / "llmclient.toml").write_text(f'[backends.remote]\ntype = "vllm"\nmodel = "m"\n{table}\n')
        return built("remote")

    return load


@pytest.mark.parametrize("attempts", [1, 2, 4])
def test_max_attempts_from_the_table_is_honoured_against_injected_503s(
    serve, loaded, call: Caller, attempts: int
) -> None:
    server = serve(FaultHandler(["server_503"], repeat=True))
    backend = loaded(f'base_url = "{server.base_url}"\nretry = {{ max_attempts = {attempts}, {FAST} }}')
    with pytest.raises(BackendUnavailableError) as info:
        call.chat(backend)
    assert info.value.status_code == 503
    assert len(server.requests) == attempts


def test_the_table_is_read_into_the_retry_policy_over_its_defaults(serve, loaded) -> None:
    server = serve(OpenAIHandler())
    backend = loaded(f'base_url = "{server.base_url}"\nretry = {{ max_attempts = 5, max_wait = 60 }}')
    assert backend.settings.retry == RetryPolicy(max_attempts=5, max_wait=60)


@pytest.mark.parametrize(
    ("table", "named", "problem"),
    [
        ("retry = { max_attempts = 0 }", "retry.max_attempts = 0", "at least 1"),
        ("retry = { max_wait = -1 }", "retry.max_wait = -1", ">= 0"),
        ("retry = { jitter = -0.5 }", "retry.jitter = -0.5", ">= 0"),
        ("retry = { max_atempts = 2 }", "retry.max_atempts = 2", "did you mean 'max_attempts'"),
        ('retry = { max_attempts = "many" }', "retry.max_attempts = 'many'", "expected int"),
        ("retry = 3", "retry = 3", "expected a table of max_attempts"),
        ("timeout = 0", "timeout = 0", "above 0"),
        ("max_connections = 0", "max_connections = 0", "at least 1"),
    ],
)
def test_out_of_range_settings_name_file_table_and_key(loaded, table: str, named: str, problem: str) -> None:
    with pytest.raises(ConfigError) as info:
        loaded(f'base_url = "http://127.0.0.1:9/v1"\n{table}')
    message = str(info.value)
    assert f"llmclient.toml [backends.remote] {named}" in message
    assert problem in message


def test_keyword_retry_options_are_checked_and_laid_over_the_settings(serve, make_backend) -> None:
    server = serve(OpenAIHandler())
    base = OpenAICompatibleSettings(retry=RetryPolicy(max_wait=5))
    backend = make_backend(server, settings=base, retry={"max_attempts": 1})
    assert (backend.settings.retry.max_attempts, backend.settings.retry.max_wait) == (1, 5)
    with pytest.raises(ConfigError, match=r"OpenAICompatibleBackend\(\) retry.max_attempts = 0"):
        make_backend(server, retry=RetryPolicy(max_attempts=0))


def test_flat_retry_keys_still_work_with_a_warning(serve, loaded, call: Caller, caplog) -> None:
    server = serve(FaultHandler(["server_503"], repeat=True))
    with caplog.at_level(logging.WARNING, logger="llmclient"):
        backend = loaded(f'base_url = "{server.base_url}"\nmax_attempts = 2\ninitial_backoff = 0.01')
    assert "retry table" in caplog.text and "deprecated" in caplog.text
    assert (backend.settings.retry.max_attempts, backend.settings.retry.initial_backoff) == (2, 0.01)
    with pytest.raises(BackendUnavailableError):
        call.chat(backend)
    assert len(server.requests) == 2


def test_a_retry_table_wins_over_flat_keys(loaded) -> None:
    backend = loaded('base_url = "http://127.0.0.1:9/v1"\nmax_attempts = 2\nretry = { max_attempts = 3 }')
    assert backend.settings.retry.max_attempts == 3
