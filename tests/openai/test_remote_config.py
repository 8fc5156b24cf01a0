"""Presets, keys, settings and proxies of the OpenAI-compatible backend, as users configure them."""

from __future__ import annotations

import pytest
from remote_support import Caller, Script

from llmclient.errors import ConfigError, InvalidRequestError
from llmclient.testing.server import OpenAIHandler, completion, json_reply

KEY_VARS = (
    "OPENAI_API_KEY",
    "OPENROUTER_API_KEY",
    "VLLM_API_KEY",
    "OLLAMA_API_KEY",
    "OPENAI_BASE_URL",
    "MY_KEY",
)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    for name in (*KEY_VARS, "LLMCLIENT_CONFIG", "LLMCLIENT_BACKEND"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)


def test_openrouter_preset_sends_attribution_routing_and_fallbacks(
    serve, built, monkeypatch, call: Caller
) -> None:
    monkeypatch.setenv("OPENROUTER_API_KEY", "sk-or-test")
    server = serve(OpenAIHandler(text="routed"))
    backend = built(
        {
            "type": "openrouter",
            "model": "meta-llama/llama-3.1-8b-instruct",
            "base_url": server.base_url,
            "app_url": "https://example.org/app",
            "app_title": "My App",
            "provider": {"order": ["Together"], "allow_fallbacks": False},
            "models": ["mistralai/mistral-7b-instruct"],
        }
    )
    assert call.chat(backend).text == "routed"
    request = server.requests[-1]
    assert request.headers["authorization"] == "Bearer sk-or-test"
    assert request.headers["http-referer"] == "https://example.org/app"
    assert request.headers["x-title"] == "My App"
    body = request.json()
    assert body["provider"] == {"order": ["Together"], "allow_fallbacks": False}
    assert body["models"] == ["mistralai/mistral-7b-instruct"]


def test_openrouter_default_base_url_and_key_variable(built, monkeypatch) -> None:
    monkeypatch.setenv("OPENROUTER_API_KEY", "sk-or-test")
    backend = built("openrouter:meta-llama/llama-3.1-8b-instruct")
    assert backend.base_url == "https://openrouter.ai/api/v1"
    assert backend.name == "openrouter"
    assert backend.model == "meta-llama/llama-3.1-8b-instruct"


def test_openrouter_reasoning_is_kept_apart_from_the_answer(serve, built, monkeypatch) -> None:
    monkeypatch.setenv("OPENROUTER_API_KEY", "sk-or-test")
    reply = completion("42", provider="DeepInfra")
    reply["choices"][0]["message"]["reasoning"] = "Six times seven."
    server = serve(Script([json_reply(reply)]))
    answer = built({"type": "openrouter", "model": "m", "base_url": server.base_url}).chat("6*7?")
    assert answer.text == "42"
    assert answer.details["reasoning"] == "Six times seven."
    assert answer.details["provider"] == "DeepInfra"


def test_missing_key_names_the_variable_to_set(built) -> None:
    with pytest.raises(ConfigError, match="OPENAI_API_KEY"):
        built("openai:gpt-4o-mini")
    with pytest.raises(ConfigError, match="OPENROUTER_API_KEY"):
        built("openrouter:some/model")


def test_custom_key_variable_must_be_set(built) -> None:
    with pytest.raises(ConfigError, match=r"\$MY_KEY is not set"):
        built({"type": "vllm", "model": "m", "api_key_env": "MY_KEY"})


def test_local_servers_need_no_key(serve, built, call: Caller) -> None:
    server = serve(OpenAIHandler(text="local"))
    for kind in ("vllm", "ollama", "openai-compatible", "openai"):
        backend = built({"type": kind, "model": "qwen", "base_url": server.base_url})
        assert call.chat(backend).text == "local"
        assert "authorization" not in server.requests[-1].headers


def test_preset_base_urls(built) -> None:
    assert built("vllm:m").base_url == "http://localhost:8000/v1"
    assert built("ollama:llama3").base_url == "http://localhost:11434/v1"


def test_openai_base_url_variable_is_honoured(built, monkeypatch) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:1234/v1")
    assert built("openai:gpt-4o-mini").base_url == "http://127.0.0.1:1234/v1"


def test_generic_type_needs_a_base_url(built) -> None:
    with pytest.raises(ConfigError, match="base_url"):
        built("openai-compatible:m")


def test_openai_preset_spells_max_tokens_its_way_and_refuses_top_k(serve, built, monkeypatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    server = serve(OpenAIHandler())
    monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
    backend = built("openai:gpt-4o-mini")
    backend.chat("Hi", max_new_tokens=5)
    assert server.requests[-1].json()["max_completion_tokens"] == 5
    with pytest.raises(InvalidRequestError, match="top_k"):
        backend.chat("Hi", top_k=4)
    assert len(server.requests) == 1


def test_toml_defaults_apply_and_calls_override_them(serve, built, tmp_path) -> None:
    server = serve(OpenAIHandler())
    (tmp_path / "llmclient.toml").write_text(
        f'[backends.local]\ntype = "vllm"\nmodel = "qwen"\nbase_url = "{server.base_url}"\n'
        f"defaults = {{ max_new_tokens = 64, temperature = 0 }}\n"
    )
    backend = built("local")
    backend.chat("Hi")
    backend.chat("Hi", temperature=0.7)
    first, second = (r.json() for r in server.requests)
    assert (first["max_tokens"], first["temperature"]) == (64, 0)
    assert (second["max_tokens"], second["temperature"]) == (64, 0.7)
    assert backend.name == "local"


def test_setting_typo_names_file_table_and_suggestion(built, tmp_path) -> None:
    (tmp_path / "llmclient.toml").write_text(
        '[backends.remote]\ntype = "vllm"\nmodel = "m"\nbase_ur = "http://x/v1"\n'
    )
    with pytest.raises(ConfigError) as info:
        built("remote")
    message = str(info.value)
    assert "llmclient.toml" in message and "[backends.remote]" in message
    assert "base_ur" in message and "did you mean 'base_url'" in message


def test_setting_of_the_wrong_type_names_the_expected_type(built) -> None:
    with pytest.raises(ConfigError, match="timeout = 'slow': expected float"):
        built({"type": "vllm", "model": "m", "timeout": "slow"})


def test_requests_go_through_a_configured_proxy(serve, built, call: Caller) -> None:
    proxy = serve(Script([json_reply(completion("via proxy"))]))
    backend = built(
        {"type": "vllm", "model": "m", "base_url": "http://upstream.invalid/v1", "proxy": proxy.url}
    )
    assert call.chat(backend).text == "via proxy"
    assert "upstream.invalid" in proxy.requests[-1].path + proxy.requests[-1].headers.get("host", "")


def test_proxy_from_the_environment_is_used(serve, built, call: Caller, monkeypatch) -> None:
    proxy = serve(Script([json_reply(completion("env proxy"))]))
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    monkeypatch.setenv("NO_PROXY", "")
    backend = built({"type": "vllm", "model": "m", "base_url": "http://upstream.invalid/v1"})
    assert call.chat(backend).text == "env proxy"
