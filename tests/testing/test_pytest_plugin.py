"""The pytest plugin, from a fresh project that only installs llmclient: no conftest, the plugin found
through its ``pytest11`` entry point, pytest run in a subprocess.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parents[2]

PIPELINE_TESTS = textwrap.dedent(
    """
    import os

    import pytest

    import llmclient
    from llmclient.testing.server import LoopbackServer, OpenAIHandler


    @pytest.fixture
    def config():
        if os.environ.get("NO_SERVER"):  # replaying: nothing listens there
            yield {"type": "openai-compatible", "model": "m", "base_url": "http://127.0.0.1:9/v1"}
            return
        with LoopbackServer(OpenAIHandler(lambda body: "echo: " + body["messages"][-1]["content"])) as server:
            yield {"type": "openai-compatible", "model": "m", "base_url": server.base_url}


    def test_default_cassette(llm_cassette, config):
        assert llm_cassette.load(config).chat("Hi").text == "echo: Hi"


    @pytest.mark.llm_cassette("named")
    def test_named_cassette(llm_cassette, config):
        replies = llm_cassette.load(config).chat_many(["a", "b"])
        assert [r.text for r in replies] == ["echo: a", "echo: b"]


    @pytest.mark.llm_cassette("named")
    def test_partial_use(llm_cassette, config):
        assert llm_cassette.load(config).chat("a").text == "echo: a"


    class TestGroup:
        @pytest.mark.parametrize("word", ["x y"])
        def test_param(self, llm_cassette, config, word):
            assert llm_cassette.load(config).stream(word).final().text == "echo: x y"


    def test_never_recorded(llm_cassette, config):
        llm_cassette.load(config).chat("new question")


    def test_direct_load(config):
        llmclient.load(config)
    """
)


def test_the_plugin_records_then_replays_in_a_fresh_project(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makepyfile(**{"tests/test_pipeline.py": PIPELINE_TESTS})

    recording = pytester.runpytest_subprocess("--llm-record-mode=once", "-k", "not never_recorded")
    recording.assert_outcomes(passed=5)
    cassettes = pytester.path / "tests" / "cassettes" / "test_pipeline"
    assert sorted(p.name for p in cassettes.iterdir()) == [
        "TestGroup.test_param-x-y.yaml",
        "named.yaml",
        "test_default_cassette.yaml",
    ]
    named = yaml.safe_load((cassettes / "named.yaml").read_text())
    assert [i["response"]["text"] for i in named["interactions"]] == ["echo: a", "echo: b"]

    # Replay (the default mode) with no server, unused replies failing and real backends blocked.
    pytester.makeini("[pytest]\nllm_fail_unused = true\nllm_block_real = true\n")
    monkeypatch.setenv("NO_SERVER", "1")
    replaying = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    replaying.assert_outcomes(passed=3, failed=3)
    replaying.stdout.fnmatch_lines(
        [
            "*test_partial_use*",
            "*1 recorded reply in *named.yaml went unplayed (--llm-fail-unused)*",
            "*- 'b'*",
        ]
    )
    output = replaying.stdout.str()
    assert "no recorded reply in cassette" in output and "test_never_recorded.yaml" in output
    assert "Record it with mode 'once' or 'new_episodes' (pytest: --llm-record-mode=new_episodes)" in output
    assert "is blocked: tests run with --llm-block-real" in output
    assert output.count("FAILED") == 3


def test_the_plugin_costs_nothing_to_tests_that_do_not_use_it(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_plain="def test_plain():\n    assert True\n")
    result = pytester.runpytest_subprocess("--llm-fail-unused", "--llm-block-real", "--llm-record-mode=none")
    result.assert_outcomes(passed=1)
    assert not (pytester.path / "cassettes").exists()


def test_a_bad_record_mode_in_a_marker_is_reported(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_bad=textwrap.dedent(
            """
            import pytest

            @pytest.mark.llm_cassette(record_mode="sometimes")
            def test_x(llm_cassette):
                pass
            """
        )
    )
    result = pytester.runpytest_subprocess()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*unknown record mode 'sometimes'*"])


def test_the_example_pipeline_replays_without_torch_or_network() -> None:
    example = ROOT / "examples" / "test_recorded_pipeline.py"
    script = textwrap.dedent(
        f"""
        import json, sys
        for name in ("torch", "transformers", "tokenizers", "httpx2", "aiohttp"):
            sys.modules[name] = None  # importing any of them now fails, as on a machine without them
        import pytest
        code = pytest.main([{str(example)!r}, "-q", "-p", "no:cacheprovider", "--llm-block-real",
                            "--llm-fail-unused"])
        heavy = {{m.split(".")[0] for m, mod in sys.modules.items() if mod is not None}}
        heavy &= {{"torch", "transformers", "tokenizers", "httpx2", "aiohttp"}}
        print(json.dumps({{"code": int(code), "heavy": sorted(heavy)}}))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {"code": 0, "heavy": []}, done.stdout
