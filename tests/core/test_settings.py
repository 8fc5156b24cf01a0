"""Reading a backend type's settings: names, types and ranges checked, with the key and the fix named."""

from __future__ import annotations

import ast
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

import llmclient
from llmclient import BackendConfig, ConfigError
from llmclient._settings import Settings as BaseSettings
from llmclient._settings import read_settings
from llmclient.config import resolve


@dataclass
class Settings(BaseSettings):
    """A backend type's settings, as a type declares them."""

    base_url: str
    timeout: float = 30.0
    retries: int = 2
    verbose: bool = False
    mode: Literal["fast", "slow"] = "fast"
    proxy: str | None = None
    tags: list[str] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)


def settings_config(**options: object) -> BackendConfig:
    return BackendConfig(
        type="mytype", model="m", name="local", options=options, source="/etc/llmclient.toml", in_file=True
    )


def test_read_settings_builds_the_dataclass() -> None:
    settings = read_settings(
        Settings,
        settings_config(
            base_url="http://x",
            timeout=5,  # an int is a fine float
            retries=0,
            verbose=True,
            mode="slow",
            proxy=None,
            tags=["a", "b"],
            headers={"X-Title": "t"},
        ),
    )
    assert settings == Settings(
        base_url="http://x",
        timeout=5,
        retries=0,
        verbose=True,
        mode="slow",
        tags=["a", "b"],
        headers={"X-Title": "t"},
    )


def test_read_settings_fills_in_field_defaults() -> None:
    assert read_settings(Settings, settings_config(base_url="http://x")) == Settings(base_url="http://x")


def test_an_unknown_setting_is_named_with_a_suggestion_and_the_allowed_names() -> None:
    with pytest.raises(ConfigError) as info:
        read_settings(Settings, settings_config(base_url="u", timout=3))
    message = str(info.value)
    assert "/etc/llmclient.toml [backends.local] timout = 3" in message
    assert "unknown setting for type 'mytype'; did you mean 'timeout'?" in message
    assert "Allowed: " in message and "retries" in message


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("retries", 1.5, "expected int"),
        ("retries", True, "expected int"),
        ("retries", "3", "expected int"),
        ("timeout", "30", "expected float"),
        ("timeout", False, "expected float"),
        ("verbose", 1, "expected bool"),
        ("verbose", "yes", "expected bool"),
        ("mode", "medium", "expected one of 'fast', 'slow'"),
        ("proxy", 8080, "expected str or nothing (omit it)"),
        ("tags", "a", "expected list of str"),
        ("tags", ["a", 1], "expected list of str"),
        ("headers", {"X-Retries": 3}, "expected dict of str, str"),
        ("headers", ["X-Title"], "expected dict of str, str"),
        ("base_url", None, "expected str"),
    ],
)
def test_a_wrong_type_names_the_key_value_and_expected_type(key: str, value: object, expected: str) -> None:
    options = {"base_url": "http://x", key: value}
    with pytest.raises(ConfigError) as info:
        read_settings(Settings, settings_config(**options))
    message = str(info.value)
    assert f"[backends.local] {key} = {value!r}: {expected}." in message
    assert f"Fix the value of {key!r}" in message


def test_a_missing_required_setting_is_named() -> None:
    with pytest.raises(ConfigError, match=r"\[backends.local\] base_url = None: missing. Set base_url"):
        read_settings(Settings, settings_config(timeout=3))


def test_settings_errors_from_a_file_name_the_file_and_table(tmp_path: Path) -> None:
    path = tmp_path / "llmclient.toml"
    path.write_text(
        textwrap.dedent(
            """
            [backends.local]
            type = "mytype"
            model = "m"
            base_url = "http://x"
            retries = "many"
            """
        )
    )
    with pytest.raises(ConfigError) as info:
        read_settings(Settings, resolve(config_path=path))
    assert f"{path} [backends.local] retries = 'many': expected int" in str(info.value)


# -- a settings class checks its own ranges -----------------------------------------------------


@dataclass
class Limits(BaseSettings):
    """Settings with ranges of their own, as a backend type declares them."""

    timeout: float = 30.0
    max_attempts: int = 3

    def problems(self) -> Iterator[tuple[str, str, str]]:
        if self.timeout <= 0:
            yield "timeout", "must be > 0", "Use a number of seconds above 0"
        if self.max_attempts < 1:
            yield "max_attempts", "must be >= 1", "Use 1 for no retries"


def limits_config(**options: object) -> BackendConfig:
    return BackendConfig(
        type="mytype", model="m", name="local", options=options, source="llmclient.toml", in_file=True
    )


def test_settings_in_range_pass_their_own_check() -> None:
    assert Limits().check() == Limits()
    assert list(Limits(timeout=1, max_attempts=1).problems()) == []
    assert list(BaseSettings().problems()) == []


def test_a_value_out_of_range_is_a_config_error_naming_the_class_and_key() -> None:
    assert [key for key, _, _ in Limits(timeout=0, max_attempts=0).problems()] == ["timeout", "max_attempts"]
    with pytest.raises(ConfigError) as info:
        Limits(max_attempts=0).check()
    assert str(info.value) == "Limits.max_attempts = 0: must be >= 1. Use 1 for no retries"


def test_a_value_out_of_range_from_a_config_names_where_it_came_from() -> None:
    with pytest.raises(ConfigError) as info:
        Limits(timeout=-1).check(limits_config(timeout=-1))
    assert str(info.value) == (
        "llmclient.toml [backends.local] timeout = -1: must be > 0. Use a number of seconds above 0"
    )


def test_read_settings_checks_the_ranges_after_the_types() -> None:
    assert read_settings(Limits, limits_config(timeout=5)) == Limits(timeout=5)
    with pytest.raises(ConfigError, match=r"\[backends.local\] max_attempts = 0: must be >= 1"):
        read_settings(Limits, limits_config(max_attempts=0))
    with pytest.raises(ConfigError, match=r"max_attempts = 'x': expected int"):
        read_settings(Limits, limits_config(max_attempts="x"))


def test_read_settings_lays_the_configs_keys_over_a_base() -> None:
    base = Limits(timeout=5, max_attempts=7)
    assert read_settings(Limits, limits_config(max_attempts=2), base=base) == Limits(
        timeout=5, max_attempts=2
    )
    assert read_settings(Limits, limits_config(), base=base) == base
    assert base == Limits(timeout=5, max_attempts=7)  # the base is not changed


def test_read_settings_over_a_base_still_checks_names_types_and_ranges() -> None:
    base = Limits(timeout=5)
    with pytest.raises(ConfigError, match="did you mean 'timeout'"):
        read_settings(Limits, limits_config(timout=1), base=base)
    with pytest.raises(ConfigError, match="expected float"):
        read_settings(Limits, limits_config(timeout="1"), base=base)
    with pytest.raises(ConfigError, match="timeout = 0: must be > 0"):
        read_settings(Limits, limits_config(timeout=0), base=base)


def test_a_required_setting_may_come_from_the_base() -> None:
    base = Settings(base_url="http://x")
    assert read_settings(Settings, settings_config(timeout=3), base=base) == Settings(
        base_url="http://x", timeout=3
    )


# -- no import circle ---------------------------------------------------------------------------


def _runtime_imports(module: str) -> set[str]:
    """The llmclient modules ``module`` imports when it runs (``TYPE_CHECKING`` blocks left out)."""
    source = Path(llmclient.__file__).parent / (module.removeprefix("llmclient.").replace(".", "/") + ".py")
    tree = ast.parse(source.read_text(encoding="utf-8"))
    skipped = {
        id(node)
        for branch in ast.walk(tree)
        if isinstance(branch, ast.If) and "TYPE_CHECKING" in ast.unparse(branch.test)
        for stmt in branch.body
        for node in ast.walk(stmt)
    }
    found = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name.startswith("llmclient")}


def test_settings_is_a_leaf_and_registry_does_not_import_config() -> None:
    assert _runtime_imports("llmclient._settings") == {"llmclient.errors"}
    assert "llmclient.config" not in _runtime_imports("llmclient.registry")
    assert "llmclient.registry" in _runtime_imports("llmclient.config")  # one way only


def test_read_settings_is_still_importable_from_config() -> None:
    from llmclient.config import Settings as PublicSettings
    from llmclient.config import read_settings as public_read_settings

    assert (PublicSettings, public_read_settings) == (BaseSettings, read_settings)
