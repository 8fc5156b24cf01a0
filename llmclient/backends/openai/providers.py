"""The providers that speak the chat-completions wire, as small objects.

A :class:`Provider` says where the API lives (and which variable overrides that), which variable
holds the key and whether one is required, how the provider spells the standard fields
(:class:`~llmclient.backends.openai.wire.WireOptions`), and which settings class it reads. Three
hooks add what a provider's own settings put on the wire: :meth:`Provider.headers`,
:meth:`Provider.body_fields` and, with a ``response_format`` or ``tools``,
:meth:`Provider.constrained_fields`.
OpenRouter's settings (attribution, routing, fallback models, ``require_parameters``) live here
with :class:`OpenRouter`; the backend never asks which provider it talks to. A new provider is an
object (a subclass where it needs hooks), added to :data:`PROVIDERS` or passed as ``preset=``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, replace
from typing import Any

from llmclient._settings import suggest
from llmclient.backends.openai.scoring import ScoringMode
from llmclient.backends.openai.settings import OpenAICompatibleSettings
from llmclient.backends.openai.wire import WireOptions
from llmclient.config import BackendConfig
from llmclient.errors import ConfigError


@dataclass(frozen=True)
class Provider:
    """What one OpenAI-compatible provider needs that the others do not.

    Attributes:
        name: the backend type it answers to (``openrouter``), and a backend's default name.
        base_url: the API root (ending in ``/v1``); ``None`` means the settings must give one.
        key_env: the environment variable holding the API key.
        base_url_env: a variable that overrides ``base_url``, as the provider's own SDK reads it.
        key_required: whether a request without a key is certain to fail (hosted APIs, at their
            own address).
        wire: how it spells the standard fields.
        settings_class: the settings it reads: :class:`OpenAICompatibleSettings` or a subclass
            holding the provider's own.
        scoring: how it scores candidates (``score``, ``choose``): ``"prompt_logprobs"`` where the
            server returns the prompt's own logprobs (vLLM; exact), else ``"first_token"`` (see
            :mod:`llmclient.backends.openai.scoring`); the ``scoring`` setting overrides it.
    """

    name: str
    base_url: str | None = None
    key_env: str | None = None
    base_url_env: str | None = None
    key_required: bool = False
    wire: WireOptions = field(default_factory=WireOptions)
    settings_class: type[OpenAICompatibleSettings] = OpenAICompatibleSettings
    scoring: ScoringMode = "first_token"

    def headers(self, settings: OpenAICompatibleSettings) -> dict[str, str]:
        """Headers this provider's own settings add to every request (none by default)."""
        return {}

    def body_fields(self, settings: OpenAICompatibleSettings) -> dict[str, Any]:
        """Body fields this provider's own settings add to every request (none by default)."""
        return {}

    def constrained_fields(self, settings: OpenAICompatibleSettings) -> dict[str, Any]:
        """Body fields added when a request constrains the reply (it sends a ``response_format`` or
        ``tools``), merged under the body's own (none by default).
        """
        return {}

    def wire_options(self, settings: OpenAICompatibleSettings) -> WireOptions:
        """The wire options for ``settings``: the provider's, with the user's field name and extras."""
        extra = {**settings.extra_body, **self.body_fields(settings)}
        return replace(
            self.wire,
            max_tokens_field=settings.max_tokens_field or self.wire.max_tokens_field,
            body_extra=extra or None,
            developer_role=settings.developer_role,
            constrained_extra=self.constrained_fields(settings) or None,
        )

    def adopt(self, settings: OpenAICompatibleSettings | None) -> OpenAICompatibleSettings:
        """``settings`` as this provider's settings class; its defaults when ``None``."""
        if settings is None:
            return self.settings_class()
        if isinstance(settings, self.settings_class):
            return settings
        return self.settings_class(**{f.name: getattr(settings, f.name) for f in fields(settings)})

    def resolve(self, settings: OpenAICompatibleSettings, config: BackendConfig) -> OpenAICompatibleSettings:
        """``settings`` with the base URL and the API key found: given, from the environment, or
        the provider's; a :class:`ConfigError` naming ``config``'s source when one is needed and
        missing.
        """
        base_url = settings.base_url or _env(self.base_url_env) or self.base_url
        if not base_url:
            raise ConfigError(
                f"{config.where('base_url')} is missing: type {config.type!r} needs the server's API root, "
                f'e.g. base_url = "http://localhost:8000/v1"'
            )
        key_env = settings.api_key_env or self.key_env
        api_key = settings.api_key or _env(key_env)
        needs_key = settings.api_key_env or (self.key_required and base_url.rstrip("/") == self.base_url)
        if not api_key and needs_key:
            raise ConfigError(
                f"{config.where()} (type {config.type!r}) needs an API key and ${key_env} is not set. "
                f"Set it (export {key_env}=...), or set api_key_env to the variable that holds your key"
            )
        return replace(settings, base_url=base_url, api_key=api_key)


@dataclass(frozen=True, repr=False)
class OpenRouterSettings(OpenAICompatibleSettings):
    """OpenRouter's settings: those of every OpenAI-compatible backend, and its own five."""

    app_url: str | None = None
    """App attribution: sent as ``HTTP-Referer``."""
    app_title: str | None = None
    """App attribution: sent as ``X-Title``."""
    provider: dict[str, Any] | None = None
    """Provider routing (``{"order": [...], "allow_fallbacks": false}``), sent as ``provider``."""
    models: list[str] | None = None
    """Fallback models, tried in order when the main one fails; sent as ``models``."""
    require_parameters: bool = True
    """With a ``response_format`` or ``tools``, send ``provider.require_parameters = true`` so OpenRouter
    routes only to providers that honour them (a ``require_parameters`` in ``provider`` wins)."""


@dataclass(frozen=True)
class OpenRouter(Provider):
    """OpenRouter: attribution headers, provider routing and fallback models in the body, and
    ``require_parameters`` with structured output and tools.
    """

    settings_class: type[OpenAICompatibleSettings] = OpenRouterSettings

    def headers(self, settings: OpenAICompatibleSettings) -> dict[str, str]:
        """``HTTP-Referer`` and ``X-Title`` from ``app_url`` and ``app_title``, where set."""
        if not isinstance(settings, OpenRouterSettings):
            return {}
        named = {"HTTP-Referer": settings.app_url, "X-Title": settings.app_title}
        return {header: value for header, value in named.items() if value}

    def body_fields(self, settings: OpenAICompatibleSettings) -> dict[str, Any]:
        """``provider`` (routing) and ``models`` (fallbacks), where set."""
        if not isinstance(settings, OpenRouterSettings):
            return {}
        named = {"provider": settings.provider, "models": settings.models}
        return {key: value for key, value in named.items() if value is not None}

    def constrained_fields(self, settings: OpenAICompatibleSettings) -> dict[str, Any]:
        """``provider.require_parameters = true``, unless the ``require_parameters`` setting is off:
        without it OpenRouter may route to a provider that ignores the schema or the tools.
        """
        if not isinstance(settings, OpenRouterSettings) or not settings.require_parameters:
            return {}
        return {"provider": {"require_parameters": True}}


PROVIDERS: dict[str, Provider] = {
    provider.name: provider
    for provider in (
        Provider("openai-compatible"),
        Provider(
            "openai",
            base_url="https://api.openai.com/v1",
            key_env="OPENAI_API_KEY",
            base_url_env="OPENAI_BASE_URL",
            key_required=True,
            wire=WireOptions(max_tokens_field="max_completion_tokens", supports_top_k=False),
        ),
        OpenRouter(
            "openrouter",
            base_url="https://openrouter.ai/api/v1",
            key_env="OPENROUTER_API_KEY",
            base_url_env="OPENROUTER_BASE_URL",
            key_required=True,
        ),
        Provider(
            "vllm", base_url="http://localhost:8000/v1", key_env="VLLM_API_KEY", scoring="prompt_logprobs"
        ),
        Provider("ollama", base_url="http://localhost:11434/v1", key_env="OLLAMA_API_KEY"),
    )
}
"""The built-in providers by backend type; a type without its own (registered by a plugin to
``from_config``) gets the generic ``openai-compatible`` one."""


def provider_named(name: str) -> Provider:
    """The built-in provider ``name``; a :class:`ConfigError` with the close names when unknown."""
    try:
        return PROVIDERS[name]
    except KeyError:
        raise ConfigError(
            f"unknown provider preset {name!r}{suggest(name, PROVIDERS)}; known: {', '.join(PROVIDERS)}"
        ) from None


def _env(name: str | None) -> str | None:
    return os.environ.get(name) or None if name else None
