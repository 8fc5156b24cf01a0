"""The ``llmclient`` command, run as a user runs it: a real subprocess against a loopback server."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter

import pytest
from pipeline_support import ROWS, llmclient, read_results, write_jsonl

from llmclient.testing.server import LoopbackServer, OpenAIHandler


def test_run_writes_results_and_prints_the_summary(project, echo) -> None:
    _, server = echo
    result = llmclient(
        "run",
        "rows.jsonl",
        "-t",
        "Analyse {{ dish }}",
        "-o",
        "out.jsonl",
        "--id-field",
        "id",
        "-p",
        "temperature=0",
        "-p",
        "max_new_tokens=16",
        cwd=project,
    )
    assert result.returncode == 0, result.stderr
    assert "8 done, 0 failed, 0 skipped of 8 rows" in result.stdout
    lines = read_results(project / "out.jsonl")
    assert sorted(r["row_id"] for r in lines) == list(range(8))
    assert {r["text"] for r in lines} == {f"echo: Analyse dish {i}" for i in range(8)}
    body = server.requests[-1].json()
    assert (body["temperature"], body["max_tokens"]) == (0, 16)


def test_run_exits_1_when_rows_fail_and_shows_the_first_error(project) -> None:
    write_jsonl(project / "rows.jsonl", [{"dish": "ok"}, {"dish": "FAIL"}])
    result = llmclient("run", "rows.jsonl", "-t", "{{ dish }}", "-o", "out.jsonl", cwd=project)
    assert result.returncode == 1
    assert (
        "first error: row 1: InvalidRequestError:" in result.stderr
        and "this prompt is refused" in result.stderr
    )
    assert "1 rows failed" in result.stderr
    assert "--retry-failed" not in result.stderr  # the server refused the request: a retry fails the same way


def test_run_template_and_system_from_files(project, echo) -> None:
    _, server = echo
    (project / "prompt.j2").write_text("Dish: {{ dish }}")
    (project / "system.txt").write_text("You are a critic.")
    result = llmclient(
        "run",
        "rows.jsonl",
        "-T",
        "prompt.j2",
        "--system-file",
        "system.txt",
        "-o",
        "out.jsonl",
        "--limit",
        "2",
        cwd=project,
    )
    assert result.returncode == 0, result.stderr
    assert server.requests[-1].json()["messages"][0] == {"role": "system", "content": "You are a critic."}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--backend", "tset"], "no backend named 'tset'; did you mean 'test'?"),
        (["-p", "max_length=5"], "use max_new_tokens"),
        (["-p", "temperature=-1"], "temperature must be >= 0"),
    ],
)
def test_bad_configuration_exits_2_with_the_fix(project, args, message) -> None:
    result = llmclient("run", "rows.jsonl", "-t", "{{ dish }}", "-o", "out.jsonl", *args, cwd=project)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_input_file_exits_2(project) -> None:
    result = llmclient("run", "nope.jsonl", "-t", "{{ dish }}", "-o", "out.jsonl", cwd=project)
    assert result.returncode == 2 and "nope.jsonl' does not exist" in result.stderr


def test_bad_usage_exits_2(project) -> None:
    result = llmclient("run", "rows.jsonl", cwd=project)
    assert result.returncode == 2 and "--template" in result.stderr


def test_dry_run_sends_nothing(project, echo) -> None:
    _, server = echo
    result = llmclient("run", "rows.jsonl", "-t", "{{ dish }}", "-o", "out.jsonl", "--dry-run", cwd=project)
    assert result.returncode == 0
    assert "dry run: 8 rows rendered" in result.stdout
    assert server.requests == [] and not (project / "out.jsonl").exists()


def test_chat_streams_the_reply_for_a_prompt_from_arguments_or_stdin(project) -> None:
    assert llmclient("chat", "Hello", "there", cwd=project).stdout == "echo: Hello there\n"
    assert llmclient("chat", "--no-stream", cwd=project, stdin="From stdin\n").stdout == "echo: From stdin\n"


def test_chat_interactive_keeps_the_conversation(project, echo) -> None:
    _, server = echo
    result = llmclient("chat", "-i", "-s", "Be brief.", cwd=project, stdin="first\nsecond\n/exit\n")
    assert result.returncode == 0
    assert "echo: first" in result.stdout and "echo: second" in result.stdout
    roles = [m["role"] for m in server.requests[-1].json()["messages"]]
    assert roles == ["system", "user", "assistant", "user"]


def test_render_prints_the_request_body(project) -> None:
    result = llmclient("render", "-s", "Sys", "Hi", "-p", "max_new_tokens=3", cwd=project)
    body = json.loads(result.stdout)
    assert body["messages"] == [{"role": "system", "content": "Sys"}, {"role": "user", "content": "Hi"}]
    assert body["max_tokens"] == 3


def test_backends_lists_and_checks_the_configured_backends(project) -> None:
    listed = llmclient("backends", cwd=project)
    assert listed.returncode == 0
    assert "test (default): openai-compatible test-model" in listed.stdout
    assert "backend types:" in listed.stdout and "openrouter" in listed.stdout
    checked = llmclient("backends", "--check", cwd=project)
    assert checked.returncode == 1
    assert "test (default): openai-compatible test-model  ok" in checked.stdout
    assert "broken: openai-compatible m  FAILED: BackendUnavailableError" in checked.stdout


def test_config_names_a_file_elsewhere_for_every_command(project, tmp_path_factory) -> None:
    config = project / "llmclient.toml"
    elsewhere = tmp_path_factory.mktemp("elsewhere")  # no llmclient.toml here
    write_jsonl(elsewhere / "rows.jsonl", ROWS[:2])
    given = ("--config", str(config))
    assert llmclient("chat", *given, "Hi", cwd=elsewhere).stdout == "echo: Hi\n"
    assert json.loads(llmclient("render", *given, "Hi", cwd=elsewhere).stdout)["model"] == "test-model"
    ran = llmclient("run", "rows.jsonl", "-t", "{{ dish }}", "-o", "out.jsonl", *given, cwd=elsewhere)
    assert ran.returncode == 0 and "2 done" in ran.stdout, ran.stderr
    listed = llmclient("backends", *given, cwd=elsewhere)
    assert f"backends in {config}:" in listed.stdout
    missing = llmclient("chat", "--config", "nope.toml", "Hi", cwd=elsewhere)
    assert missing.returncode == 2 and "config file 'nope.toml' does not exist" in missing.stderr


def test_config_is_passed_through_not_put_in_the_environment(project, capsys, monkeypatch) -> None:
    from llmclient.cli import main

    monkeypatch.delenv("LLMCLIENT_CONFIG", raising=False)
    assert main(["backends", "--config", str(project / "llmclient.toml")]) == 0
    assert "test (default): openai-compatible test-model" in capsys.readouterr().out
    assert "LLMCLIENT_CONFIG" not in os.environ


def test_every_command_has_help(project) -> None:
    for command in ("run", "chat", "render", "backends"):
        result = llmclient(command, "--help", cwd=project)
        assert result.returncode == 0 and "usage: llmclient " + command in result.stdout


def test_a_run_killed_with_sigkill_resumes_and_finishes_every_row_once(tmp_path) -> None:
    rows = [{"id": i, "dish": f"dish {i}"} for i in range(60)]
    write_jsonl(tmp_path / "rows.jsonl", rows)
    out = tmp_path / "out.jsonl"
    with LoopbackServer(OpenAIHandler(text="slow answer", latency=0.05)) as server:
        (tmp_path / "llmclient.toml").write_text(
            f'[backends.slow]\ntype = "openai-compatible"\nmodel = "m"\nbase_url = "{server.base_url}"\n'
        )
        command = [
            sys.executable,
            "-m",
            "llmclient",
            "run",
            "rows.jsonl",
            "-t",
            "{{ dish }}",
            "-o",
            str(out),
            "--id-field",
            "id",
            "-c",
            "4",
        ]
        process = subprocess.Popen(
            command, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and (not out.exists() or out.read_text().count("\n") < 12):
            time.sleep(0.01)
        process.send_signal(signal.SIGKILL)
        process.wait()
        killed_at = out.read_text().count("\n")
        assert 12 <= killed_at < 60
        resumed = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert resumed.returncode == 0, resumed.stderr
    lines = read_results(out)
    assert Counter(r["row_id"] for r in lines if r["status"] == "ok") == Counter(range(60))
    assert "skipped" in resumed.stdout
