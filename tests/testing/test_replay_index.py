"""The one replay index both cassette levels share, and its repeat rule at each level: entries with
the same request play in recorded order, each once; then the last one repeats where repeats are on."""

from __future__ import annotations

import itertools
from pathlib import Path

import httpx2
import pytest

from llmclient import CassetteError
from llmclient.testing import Cassette, CassetteTransport, FunctionBackend, RecordingBackend, ReplayBackend
from llmclient.testing.cassettes.index import ReplayIndex
from llmclient.testing.server import LoopbackServer, Reply, Request


def key_of(entry: str) -> str:
    return entry.split(":")[0]


def test_the_index_plays_in_order_then_repeats_the_last() -> None:
    index = ReplayIndex(["a:1", "b:1", "a:2"], repeats=True)
    assert [index.find("a", key_of) for _ in range(4)] == ["a:1", "a:2", "a:2", "a:2"]
    assert index.unused() == ["b:1"]
    assert index.find("c", key_of) is None


def test_without_repeats_a_played_out_key_is_a_miss_whose_closest_entry_says_so() -> None:
    index = ReplayIndex(["a:1", "b:1"], repeats=False)
    assert index.find("a", key_of) == "a:1"
    assert index.find("a", key_of) is None
    closest = index.closest("a", key_of, lambda entry: 0)
    assert closest is not None and closest.played_out and closest.position == 0
    other = index.closest("z", key_of, lambda entry: 0 if entry == "b:1" else 1)
    assert other is not None and not other.played_out and other.entry == "b:1"


def test_recorded_entries_count_as_played_and_dropped_ones_no_longer_replay() -> None:
    index = ReplayIndex(["a:old"], repeats=True)
    index.drop_loaded()
    assert index.find("a", key_of) is None and index.unused() == [] and len(index) == 0
    index.add("a:new")
    assert index.unused() == [] and index.find("a", key_of) == "a:new"
    assert index.closest("z", key_of, lambda entry: 0) is not None


def _record_two_replies(path: Path) -> None:
    answers = iter(["first", "second"])
    backend = FunctionBackend(lambda messages, params: next(answers), model="m")
    with RecordingBackend(backend, Cassette(path), mode="all") as recording:
        recording.chat("same question")
        recording.chat("same question")  # mode "all" never replays: a second entry


@pytest.mark.parametrize("repeats", [True, False])
def test_backend_level_cassettes_follow_the_rule(tmp_path: Path, repeats: bool) -> None:
    path = tmp_path / "c.yaml"
    _record_two_replies(path)
    replay = ReplayBackend(Cassette(path, allow_repeats=repeats))
    assert [replay.chat("same question").text for _ in range(2)] == ["first", "second"]
    if repeats:
        assert [r.text for r in replay.chat_many(["same question"] * 2)] == ["second", "second"]
    else:
        with pytest.raises(CassetteError, match="has already played: pass allow_repeats=True"):
            replay.chat("same question")


@pytest.mark.parametrize("repeats", [True, False])
def test_vcr_level_cassettes_follow_the_rule(tmp_path: Path, repeats: bool) -> None:
    path = tmp_path / "vcr.yaml"
    counter = itertools.count(1)

    def numbered(request: Request) -> Reply:
        return Reply(headers=[("Content-Type", "text/plain")], body=f"reply {next(counter)}".encode())

    with LoopbackServer(numbered) as server:
        url = server.url + "/poll"
        with httpx2.Client(transport=CassetteTransport(path, mode="once")) as client:
            assert [client.get(url).text for _ in range(2)] == ["reply 1", "reply 2"]
    transport = CassetteTransport(path, allow_playback_repeats=repeats)
    with httpx2.Client(transport=transport) as client:
        assert [client.get(url).text for _ in range(2)] == ["reply 1", "reply 2"]
        if repeats:
            assert [client.get(url).text for _ in range(2)] == ["reply 2", "reply 2"]
        else:
            with pytest.raises(CassetteError, match="has already played: pass allow_playback_repeats=True"):
                client.get(url)
    assert transport.unused() == []
