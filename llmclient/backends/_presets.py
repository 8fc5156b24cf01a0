"""Providers that speak the chat-completions wire, as data: where they live and how they authenticate.

Adding a provider is adding a row; the backend class stays the same.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Preset:
    """What differs between OpenAI-compatible providers.

    Attributes:
        base_url: the API root (ending in ``/v1``); ``None`` means the config must give one.
        key_env: the environment variable holding the API key.
        base_url_env: an environment variable that overrides ``base_url``, as the provider's SDK reads it.
        key_required: whether a request without a key is certain to fail (hosted APIs).
        max_tokens_field: the body field for ``max_new_tokens``.
        supports_top_k: whether the API accepts ``top_k``.
    """

    base_url: str | None
    key_env: str | None = None
    base_url_env: str | None = None
    key_required: bool = False
    max_tokens_field: str = "max_tokens"
    supports_top_k: bool = True


PRESETS: dict[str, Preset] = {
    "openai-compatible": Preset(base_url=None),
    "openai": Preset(
        base_url="https://api.openai.com/v1",
        key_env="OPENAI_API_KEY",
        base_url_env="OPENAI_BASE_URL",
        key_required=True,
        max_tokens_field="max_completion_tokens",
        supports_top_k=False,
    ),
    "openrouter": Preset(
        base_url="https://openrouter.ai/api/v1", key_env="OPENROUTER_API_KEY", key_required=True
    ),
    "vllm": Preset(base_url="http://localhost:8000/v1", key_env="VLLM_API_KEY"),
    "ollama": Preset(base_url="http://localhost:11434/v1", key_env="OLLAMA_API_KEY"),
}
