"""The chat cassette: its file format, the matching key, scrubbing, atomic and concurrent saves."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import pytest
import yaml

from llmclient.errors import CassetteError, ConfigError
from llmclient.testing.cassettes.chat import Cassette
from llmclient.testing.cassettes.entries import Interaction
from llmclient.testing.cassettes.matching import request_key
from llmclient.testing.cassettes.modes import check_mode
from llmclient.testing.cassettes.scrubbing import SCRUBBED, Scrubber


def request(content: str = "Capital of France?", **params: Any) -> dict[str, Any]:
    return {
        "backend": "openai-compatible",
        "model": "m",
        "stream": False,
        "messages": [{"role": "user", "content": content}],
        "params": params,
    }


def reply(text: str) -> Interaction:
    return Interaction(
        request=request(),
        response={"text": text, "finish_reason": "stop", "model": "m", "backend": "b"},
        recorded_at="2025-06-01T12:00:00Z",
        llmclient_version="0.1.0",
    )


def recorded(req: dict[str, Any], text: str) -> Interaction:
    return Interaction(request=req, response={"text": text}, recorded_at="t", llmclient_version="v")


# -- the key --------------------------------------------------------------------------------------


def test_the_key_ignores_key_order_and_integral_float_spelling() -> None:
    a = request(temperature=0, max_new_tokens=16)
    b = {
        "params": {"max_new_tokens": 16, "temperature": 0.0},
        **{k: v for k, v in a.items() if k != "params"},
    }
    assert request_key(a) == request_key(b)
    assert request_key(a) != request_key(request(temperature=0.5, max_new_tokens=16))


def test_the_key_is_the_same_in_another_process() -> None:
    req = request("Bonjour, ça va ?", temperature=0.7, stop=["\n"], extra={"user": "u1"})
    code = f"from llmclient.testing.cassettes.matching import request_key; print(request_key({req!r}))"
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert other.stdout.strip() == request_key(req)


def test_ignored_fields_leave_the_key_unchanged() -> None:
    assert request_key(request(seed=1), ignore=["seed"]) == request_key(request(seed=2), ignore=["seed"])
    assert request_key(request(seed=1)) != request_key(request(seed=2))
    with_user = request(extra={"user": "a", "tier": 1})
    other_user = request(extra={"user": "b", "tier": 1})
    assert request_key(with_user, ["params.extra.user"]) == request_key(other_user, ["params.extra.user"])
    assert request_key(with_user, ["model"]) == request_key({**with_user, "model": "other"}, ["model"])


# -- matching ---------------------------------------------------------------------------------------


def test_entries_with_one_key_replay_in_order_then_the_last_repeats(tmp_path: Path) -> None:
    tape = Cassette(tmp_path / "c.yaml")
    for text in ("first", "second"):
        tape.record(recorded(request(), text))
    tape.save()
    again = Cassette(tmp_path / "c.yaml")
    texts = [again.find(request()) for _ in range(3)]
    assert [i.response["text"] for i in texts if i and i.response] == ["first", "second", "second"]


def test_without_repeats_an_exhausted_key_finds_nothing(tmp_path: Path) -> None:
    tape = Cassette(tmp_path / "c.yaml", allow_repeats=False)
    tape.record(recorded(request(), "only"))
    tape.save()
    again = Cassette(tmp_path / "c.yaml", allow_repeats=False)
    assert again.find(request()) is not None
    assert again.find(request()) is None


def test_a_cassette_matches_with_the_fields_it_ignores(tmp_path: Path) -> None:
    tape = Cassette(tmp_path / "c.yaml", ignore=["seed"])
    tape.record(recorded(request(seed=1), "seeded"))
    assert tape.find(request(seed=99)) is not None
    assert tape.find(request("other", seed=1)) is None


def test_unused_lists_the_loaded_entries_no_request_replayed(tmp_path: Path) -> None:
    tape = Cassette(tmp_path / "c.yaml")
    tape.record(recorded(request("a"), "A"))
    tape.record(recorded(request("b"), "B"))
    assert tape.unused() == []  # recorded entries answered the requests that recorded them
    tape.save()
    again = Cassette(tmp_path / "c.yaml")
    again.find(request("a"))
    assert [i.request["messages"][0]["content"] for i in again.unused()] == ["b"]


def test_a_miss_shows_the_closest_request_and_each_difference(tmp_path: Path) -> None:
    tape = Cassette(tmp_path / "c.yaml")
    tape.record(recorded(request("Tell me about Paris", seed=1), "x"))
    tape.record(recorded(request("Something else entirely", seed=1, temperature=0), "y"))
    long_text = "word " * 40
    tape.record(recorded(request(long_text + "end"), "z"))
    message = str(tape.miss_error(request("Tell me about Rome", seed=2), hint="HINT"))
    assert "closest recorded request (interaction 0 of 3)" in message
    assert "params.seed: recorded 1, got 2" in message
    assert "messages[0].content: recorded 'Tell me about Paris', got 'Tell me about Rome'" in message
    assert message.endswith("HINT")
    window = str(tape.miss_error(request(long_text + "END")))
    assert "recorded ...'word word word word end', got ...'word word word word END'" in window
    assert "(they differ from character 200)" in window


def test_a_miss_on_an_empty_cassette_says_the_file_does_not_exist(tmp_path: Path) -> None:
    message = str(Cassette(tmp_path / "absent.yaml").miss_error(request()))
    assert "holds no interactions (the file does not exist)" in message


# -- the file ---------------------------------------------------------------------------------------


def test_a_saved_cassette_is_readable_yaml_with_one_entry_per_interaction(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "folder" / "c.yaml"
    tape = Cassette(path)
    tape.record(
        Interaction(
            request=request("Write two lines"),
            response={"text": "line one\nline two\n", "finish_reason": "stop"},
            recorded_at="2025-06-01T12:00:00Z",
            llmclient_version="0.1.0",
        )
    )
    tape.save()
    text = path.read_text()
    assert text.startswith(
        "llmclient_cassette: 1\ninteractions:\n- request:\n    backend: openai-compatible\n"
    )
    assert "    text: |\n      line one\n      line two\n" in text  # multi-line text as a block
    assert "  recorded_at: '2025-06-01T12:00:00Z'\n  llmclient_version: 0.1.0\n" in text
    (entry,) = yaml.safe_load(text)["interactions"]
    assert Interaction.from_dict(entry, "entry") == tape.interactions[0]


def test_saving_with_nothing_recorded_writes_nothing(tmp_path: Path) -> None:
    Cassette(tmp_path / "c.yaml").save()
    assert not (tmp_path / "c.yaml").exists()
    tape = Cassette(tmp_path / "c.yaml")
    tape.record(reply("x"))
    tape.save()
    before = (tmp_path / "c.yaml").stat().st_mtime_ns
    loaded = Cassette(tmp_path / "c.yaml")
    loaded.find(request())
    loaded.save()
    assert (tmp_path / "c.yaml").stat().st_mtime_ns == before


def test_a_process_killed_while_saving_leaves_the_old_cassette_whole(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    tape = Cassette(path)
    tape.record(reply("old"))
    tape.save()
    old = path.read_bytes()
    # The new file is written in full, then the process dies before it replaces the old one.
    script = textwrap.dedent(
        f"""
        import os
        from llmclient.testing import Cassette, Interaction
        tape = Cassette({str(path)!r})
        tape.record(Interaction(request={{"messages": []}}, response={{"text": "new " * 10000}}))
        os.fsync = lambda fd: os._exit(3)
        tape.save()
        """
    )
    crashed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=False)
    assert crashed.returncode == 3, crashed.stderr
    assert path.read_bytes() == old
    assert [i.response for i in Cassette(path).interactions] == [reply("old").response]


def test_a_failed_save_leaves_the_old_cassette_and_no_temporary_file(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    tape = Cassette(path)
    tape.record(reply("old"))
    tape.save()
    old = path.read_bytes()
    tape.record(Interaction(request=request(), response={"text": "x", "details": {"bad": object()}}))
    with pytest.raises(yaml.YAMLError):
        tape.save()
    assert path.read_bytes() == old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.yaml"]


def test_threads_recording_into_one_cassette_lose_nothing(tmp_path: Path) -> None:
    tape = Cassette(tmp_path / "c.yaml")

    def work(worker: int) -> None:
        for n in range(25):
            tape.record(recorded(request(f"{worker}-{n}"), "ok"))
            if n % 5 == 0:
                tape.save()

    threads = [threading.Thread(target=work, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    tape.save()
    contents = sorted(i.request["messages"][0]["content"] for i in Cassette(tmp_path / "c.yaml").interactions)
    assert contents == sorted(f"{w}-{n}" for w in range(8) for n in range(25))


def test_processes_recording_into_one_cassette_lose_nothing(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    script = textwrap.dedent(
        """
        import sys
        from llmclient.testing import Cassette, Interaction
        worker = sys.argv[1]
        tape = Cassette(sys.argv[2])
        for n in range(15):
            tape.record(Interaction(request={"messages": [{"role": "user", "content": f"{worker}-{n}"}]},
                                    response={"text": "ok"}))
            tape.save()
        """
    )
    workers = [
        subprocess.Popen([sys.executable, "-c", script, str(w), str(path)], stderr=subprocess.PIPE)
        for w in range(4)
    ]
    for worker in workers:
        _, err = worker.communicate(timeout=60)
        assert worker.returncode == 0, err.decode()
    contents = sorted(i.request["messages"][0]["content"] for i in Cassette(path).interactions)
    assert contents == sorted(f"{w}-{n}" for w in range(4) for n in range(15))


def test_starting_over_drops_the_old_entries_but_keeps_what_others_saved_meanwhile(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    first = Cassette(path)
    first.record(recorded(request("old"), "old"))
    first.save()
    rerecording = Cassette(path)
    rerecording.start_over()
    assert rerecording.find(request("old")) is None and len(rerecording) == 0
    other = Cassette(path)
    other.record(recorded(request("other"), "other"))
    other.save()
    rerecording.record(recorded(request("new"), "new"))
    rerecording.save()
    assert sorted(i.request["messages"][0]["content"] for i in Cassette(path).interactions) == [
        "new",
        "other",
    ]


@pytest.mark.parametrize(
    ("content", "complaint"),
    [
        ("interactions: [\n", "is not valid YAML"),
        ("just text\n", "is not an llmclient cassette"),
        ("interactions: []\nversion: 1\n", "is an HTTP-level (VCR) cassette"),
        ("llmclient_cassette: 1\ninteractions: {}\n", "'interactions' must be a list"),
        ("llmclient_cassette: 1\ninteractions:\n- response: {text: x}\n", "'request' must be a mapping"),
        (
            "llmclient_cassette: 1\ninteractions:\n- request: {messages: []}\n",
            "must hold exactly one of response, stream, error",
        ),
        (
            "llmclient_cassette: 1\ninteractions:\n- request: {messages: []}\n  stream: {text: x}\n",
            "'stream' is malformed",
        ),
    ],
)
def test_a_malformed_cassette_is_a_cassette_error_naming_the_file(
    tmp_path: Path, content: str, complaint: str
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(content)
    with pytest.raises(CassetteError, match=r"bad\.yaml") as info:
        Cassette(path)
    assert complaint in str(info.value)


# -- secrets and modes ------------------------------------------------------------------------------


def test_the_scrubber_replaces_api_keys_and_the_secrets_it_knows() -> None:
    scrubber = Scrubber(["my-own-secret-value", "short"])
    text = (
        "keys sk-proj-abcdefghijklmnop1234, sk-or-v1-0123456789abcdef0123456789abcdef, "
        "hf_abcdefghijklmnopqrstuvwxyzABCDEF, AIzaSyA-abcdefghijklmnopqrstuvwxyz01234, "
        "my-own-secret-value, a short word, sk-tiny"
    )
    assert scrubber.text(text) == (
        f"keys {SCRUBBED}, {SCRUBBED}, {SCRUBBED}, {SCRUBBED}, {SCRUBBED}, a short word, sk-tiny"
    )
    assert scrubber.value({"a": ["sk-proj-abcdefghijklmnop1234", 3, None]}) == {"a": [SCRUBBED, 3, None]}


def test_recording_scrubs_keys_from_the_request_and_the_reply(tmp_path: Path) -> None:
    key = "sk-live-0123456789abcdefABCDEF"
    tape = Cassette(tmp_path / "c.yaml", secrets=["hunter2-password"])
    tape.record(
        Interaction(
            request=request(f"my key is {key} and hunter2-password"),
            response={"text": f"echo {key}", "details": {"raw": [key]}},
        )
    )
    tape.save()
    text = (tmp_path / "c.yaml").read_text()
    assert key not in text and "hunter2-password" not in text
    # The request with the key still matches: live requests are scrubbed the same way.
    assert Cassette(tmp_path / "c.yaml", secrets=["hunter2-password"]).find(
        request(f"my key is {key} and hunter2-password")
    )


def test_an_unknown_record_mode_is_a_config_error_with_a_suggestion() -> None:
    assert check_mode("new_episodes") == "new_episodes"
    with pytest.raises(ConfigError, match="did you mean 'new_episodes'"):
        check_mode("new_episode")


# -- issue 12: what YAML cannot hold, permissions, and hints that say what is true ---------------------


def test_a_reply_holding_a_lone_surrogate_is_saved_and_reads_back_the_same(tmp_path: Path) -> None:
    # What JavaScript writes when it cuts an emoji in half: valid JSON, but neither YAML nor UTF-8.
    half = "cut \ud83d here\nand a whole one: \U0001f600, a low half \ude00"
    tape = Cassette(tmp_path / "c.yaml")
    tape.record(
        Interaction(
            request=request(half),
            response={"text": half, "details": {"raw\ud83d": [half]}},
            recorded_at="t",
            llmclient_version="v",
        )
    )
    tape.save()
    text = (tmp_path / "c.yaml").read_text(encoding="utf-8")
    assert "!json" in text  # the documented escape
    again = Cassette(tmp_path / "c.yaml")
    found = again.find(request(half))
    assert found is not None and found.response == {"text": half, "details": {"raw\ud83d": [half]}}
    assert again.unused() == []


@pytest.mark.parametrize("umask", [0o077, 0o022, 0o002])
def test_a_new_cassette_file_gets_the_permissions_the_umask_allows(tmp_path: Path, umask: int) -> None:
    old = os.umask(umask)
    try:
        tape = Cassette(tmp_path / "c.yaml")
        tape.record(reply("Paris."))
        tape.save()
    finally:
        os.umask(old)
    assert (tmp_path / "c.yaml").stat().st_mode & 0o777 == 0o666 & ~umask
    # An existing file keeps its own permissions when it is saved again.
    os.chmod(tmp_path / "c.yaml", 0o640)
    tape = Cassette(tmp_path / "c.yaml")
    tape.record(recorded(request("again"), "x"))
    tape.save()
    assert (tmp_path / "c.yaml").stat().st_mode & 0o777 == 0o640


def test_a_miss_on_an_empty_file_says_it_is_empty(tmp_path: Path) -> None:
    (tmp_path / "empty.yaml").write_text("")
    message = str(Cassette(tmp_path / "empty.yaml").miss_error(request()))
    assert "holds no interactions (the file is empty)" in message
    assert "does not exist" not in message


@pytest.mark.parametrize(
    ("entry", "complaint"),
    [
        ("  response: {finish_reason: stop}", "interaction 1: 'response' is malformed: 'text' is missing"),
        (
            "  stream: [{text: a}, {text: b, usage: {prompt_tokens: 1}}]",
            "interaction 1: 'stream' delta 1 is malformed: 'completion_tokens' is missing",
        ),
        ("  error: {type: Oops, message: no}", "interaction 1: 'error' is malformed: 'type' must be one of"),
        ("  response: {text: x, finish_reason: done}", "finish_reason 'done' is not one of llmclient's"),
    ],
)
def test_a_malformed_entry_is_named_by_its_index_with_what_is_wrong(
    tmp_path: Path, entry: str, complaint: str
) -> None:
    path = tmp_path / "bad.yaml"
    good = "- request: {messages: []}\n  response: {text: fine}\n"
    path.write_text(f"llmclient_cassette: 1\ninteractions:\n{good}- request: {{messages: [x]}}\n{entry}\n")
    with pytest.raises(CassetteError) as info:  # at load, not when the entry is first replayed
        Cassette(path)
    assert complaint in str(info.value)
    assert "bad.yaml" in str(info.value)
