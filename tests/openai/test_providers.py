"""Providers are objects: their own settings and hooks put their headers and body fields on the wire."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from typing import Any

import pytest
from remote_support import Caller

from llmclient.backends.openai import (
    PROVIDERS,
    OpenAICompatibleSettings,
    OpenRouterSettings,
    Provider,
)
from llmclient.errors import ConfigError
from llmclient.testing.server import OpenAIHandler


@dataclass(frozen=True)
class TeamSettings(OpenAICompatibleSettings):
    """A company gateway's settings: the usual ones and the team to bill."""

    team: str | None = None


@dataclass(frozen=True)
class TeamGateway(Provider):
    """A provider written outside llmclient: one header and one body field from its own setting."""

    settings_class: type[OpenAICompatibleSettings] = TeamSettings

    def headers(self, settings: OpenAICompatibleSettings) -> dict[str, str]:
        team = getattr(settings, "team", None)
        return {"X-Team": team} if team else {}

    def body_fields(self, settings: OpenAICompatibleSettings) -> dict[str, Any]:
        team = getattr(settings, "team", None)
        return {"metadata": {"team": team}} if team else {}


def test_a_provider_object_puts_its_headers_and_body_fields_on_the_wire(
    serve, make_backend, call: Caller
) -> None:
    server = serve(OpenAIHandler(text="hooked"))
    backend = make_backend(
        server, preset=TeamGateway("team-gateway"), team="search", extra_body={"user": "u1"}
    )
    assert call.chat(backend).text == "hooked"
    request = server.requests[-1]
    assert request.headers["x-team"] == "search"
    assert request.json()["metadata"] == {"team": "search"}
    assert request.json()["user"] == "u1"  # the user's extra_body and the provider's fields both
    assert backend.name == "team-gateway"
    assert isinstance(backend.settings, TeamSettings)


def test_a_provider_s_settings_are_checked_like_any(serve, make_backend) -> None:
    server = serve(OpenAIHandler())
    with pytest.raises(ConfigError, match=r"OpenAICompatibleBackend\(\) tem = 'x'.*did you mean 'team'"):
        make_backend(server, preset=TeamGateway("team-gateway"), tem="x")


def test_openrouter_hooks_reach_the_wire_from_keyword_settings(serve, make_backend, call: Caller) -> None:
    server = serve(OpenAIHandler(text="routed"))
    backend = make_backend(
        server,
        preset="openrouter",
        app_url="https://example.org/app",
        app_title="My App",
        provider={"sort": "throughput"},
        models=["a/b", "c/d"],
    )
    assert call.chat(backend).text == "routed"
    request = server.requests[-1]
    assert (request.headers["http-referer"], request.headers["x-title"]) == (
        "https://example.org/app",
        "My App",
    )
    body = request.json()
    assert (body["provider"], body["models"]) == ({"sort": "throughput"}, ["a/b", "c/d"])
    assert backend.name == "openrouter"


def test_openrouter_without_its_settings_adds_nothing(serve, make_backend, call: Caller) -> None:
    server = serve(OpenAIHandler())
    call.chat(make_backend(server, preset="openrouter"))
    request = server.requests[-1]
    assert "x-title" not in request.headers and "http-referer" not in request.headers
    assert "provider" not in request.json() and "models" not in request.json()


def test_generic_settings_are_adopted_by_a_provider_with_its_own(serve, make_backend) -> None:
    server = serve(OpenAIHandler())
    backend = make_backend(
        server, preset="openrouter", settings=OpenAICompatibleSettings(timeout=5.0), app_title="T"
    )
    assert isinstance(backend.settings, OpenRouterSettings)
    assert (backend.settings.timeout, backend.settings.app_title) == (5.0, "T")


def test_openrouter_settings_belong_to_openrouter(serve, make_backend) -> None:
    server = serve(OpenAIHandler())
    with pytest.raises(ConfigError, match="unknown setting for type 'vllm'"):
        make_backend(server, preset="vllm", app_title="T")


def test_an_unknown_preset_name_suggests_the_close_one(serve, make_backend) -> None:
    server = serve(OpenAIHandler())
    with pytest.raises(ConfigError, match="did you mean 'openrouter'"):
        make_backend(server, preset="openruter")


def test_every_built_in_provider_is_named_by_its_type() -> None:
    assert sorted(PROVIDERS) == ["ollama", "openai", "openai-compatible", "openrouter", "vllm"]
    assert all(name == provider.name for name, provider in PROVIDERS.items())


def test_a_configured_context_window_is_the_backend_s(serve, make_backend) -> None:
    server = serve(OpenAIHandler())
    assert make_backend(server).context_window is None
    assert make_backend(server, context_window=8192).context_window == 8192
    with pytest.raises(ConfigError, match="context_window = 0"):
        make_backend(server, context_window=0)


def test_the_package_and_its_providers_import_without_the_http_stacks() -> None:
    probe = (
        "import sys, llmclient.backends.openai as package\n"
        "assert package.PROVIDERS['openrouter'].settings_class.__name__ == 'OpenRouterSettings'\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'httpx2', 'aiohttp', 'tenacity'}))\n"
        "package.from_config\n"
        "print('httpx2' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.split() == ["[]", "True"]  # the backend (and httpx2) only on first use
