"""CassetteTransport: VCR-format HTTP record and replay, sync and async, through the OpenAI-compatible
backend; real cassettes recorded by other projects against OpenAI and OpenRouter replay through it.

The real recordings live in tests/data/real-cassettes (copied with their licences; tests/data/README.md
names the source repositories and commits).
"""

from __future__ import annotations

import asyncio
import gzip
import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx2
import openai
import pytest
import yaml

from llmclient import AuthenticationError, CassetteError, ChatResponse, RateLimitError
from llmclient.backends.openai import OpenAICompatibleBackend
from llmclient.errors import ConfigError
from llmclient.retry import RetryPolicy
from llmclient.testing.cassettes.vcr import DEFAULT_MATCH_ON, CassetteTransport
from llmclient.testing.server import LoopbackServer, OpenAIHandler, Reply, Request, error_reply, json_reply

REAL = Path(__file__).resolve().parents[1] / "data" / "real-cassettes"
API_KEY = "sk-test-0f1e2d3c4b5a-SECRET"
NO_RETRY = RetryPolicy(max_attempts=1)


def backend_for(base_url: str, transport: CassetteTransport, **kwargs: Any) -> OpenAICompatibleBackend:
    kwargs.setdefault("api_key", API_KEY)
    return OpenAICompatibleBackend(
        model="m", base_url=base_url, transport=transport, retry=NO_RETRY, **kwargs
    )


def echo(body: dict[str, Any]) -> str:
    return f"echo: {body['messages'][-1]['content']}"


# -- real recordings ----------------------------------------------------------------------------


def _chat_items(path: Path) -> list[dict[str, Any]]:
    items = yaml.safe_load(path.read_text())["interactions"]
    return [i for i in items if i["request"]["uri"].endswith("/chat/completions")]


def _real_cassettes() -> list[Any]:
    if not REAL.is_dir():
        return [pytest.param(None, marks=pytest.mark.skip(reason=f"{REAL} not found (real recordings)"))]
    return [
        pytest.param(path, id=str(path.relative_to(REAL)))
        for path in sorted(REAL.rglob("*.yaml"))
        if _chat_items(path)
    ]


def what_the_body_says(item: dict[str, Any]) -> dict[str, Any]:
    """Text, stream pieces, finish reason, usage and tool calls, read straight from a recorded body."""
    body = item["response"]["body"]["string"]
    if json.loads(item["request"]["body"]).get("stream"):
        events = [
            json.loads(line[5:])
            for line in body.splitlines()
            if line.startswith("data:") and line[5:].strip() != "[DONE]"
        ]
    else:
        whole = json.loads(body)
        message = whole["choices"][0]["message"]
        events = [{**whole, "choices": [{**whole["choices"][0], "delta": message}]}]
    pieces: list[str] = []
    finish, usage = None, None
    calls: dict[int, list[str]] = {}
    for event in events:
        choice = (event.get("choices") or [{}])[0]
        delta = choice.get("delta") or {}
        pieces.append(delta["content"] if isinstance(delta.get("content"), str) else "")
        finish = choice.get("finish_reason") or finish
        usage = event.get("usage") or usage
        for position, call in enumerate(delta.get("tool_calls") or []):
            name_args = calls.setdefault(call.get("index", position), ["", ""])
            name_args[0] += (call.get("function") or {}).get("name") or ""
            name_args[1] += (call.get("function") or {}).get("arguments") or ""
    return {
        "pieces": pieces,
        "text": "".join(pieces),
        "finish": finish,
        "usage": (usage["prompt_tokens"], usage["completion_tokens"]),
        "calls": [tuple(calls[i]) for i in sorted(calls)],
    }


def what_we_read(reply: ChatResponse, pieces: list[str]) -> dict[str, Any]:
    assert reply.usage is not None
    return {
        "pieces": pieces,
        "text": reply.text,
        "finish": reply.finish_reason,
        "usage": (reply.usage.prompt_tokens, reply.usage.completion_tokens),
        "calls": [(c.name, c.arguments) for c in reply.tool_calls],
    }


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("path", _real_cassettes())
def test_every_real_chat_completion_replays_through_our_backend(path: Path, mode: str) -> None:
    items = _chat_items(path)
    base_url = items[0]["request"]["uri"].removesuffix("/chat/completions")
    transport = CassetteTransport(path)
    backend = backend_for(base_url, transport)
    streams = [bool(json.loads(i["request"]["body"]).get("stream")) for i in items]

    async def replay_async() -> list[dict[str, Any]]:
        out = []
        for stream in streams:
            if stream:
                s = backend.astream("Hi")
                pieces = [d.text async for d in s]
                out.append(what_we_read(await s.final(), pieces))
            else:
                reply = await backend.achat("Hi")
                out.append(what_we_read(reply, [reply.text]))
        with pytest.raises(CassetteError, match="has already played"):
            await backend.achat("one more")
        await backend.aclose()
        return out

    def replay_sync() -> list[dict[str, Any]]:
        out = []
        for stream in streams:
            if stream:
                s = backend.stream("Hi")
                pieces = [d.text for d in s]
                out.append(what_we_read(s.final(), pieces))
            else:
                reply = backend.chat("Hi")
                out.append(what_we_read(reply, [reply.text]))
        with pytest.raises(CassetteError, match="has already played"):
            backend.chat("one more")
        backend.close()  # replay never writes: the recordings stay as they are
        return out

    ours = asyncio.run(replay_async()) if mode == "async" else replay_sync()
    expected = [what_the_body_says(i) for i in items]
    for item, want in zip(items, expected, strict=True):
        if not json.loads(item["request"]["body"]).get("stream"):
            want["pieces"] = [want["text"]]
    assert ours == expected
    assert all(not i["request"]["uri"].endswith("/chat/completions") for i in transport.unused())


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_real_401_replays_as_an_authentication_error(mode: str) -> None:
    path = REAL / "chatlas/tests/_vcr/test_parallel_chat_errors/test_parallel_chat_error_stop_mode.yaml"
    if not path.exists():
        pytest.skip(f"{path} not found (real recordings)")
    said = json.loads(yaml.safe_load(path.read_text())["interactions"][0]["response"]["body"]["string"])
    # It was recorded against /v1/responses: match on method and host only to serve it to our POST.
    backend = backend_for("https://api.openai.com/v1", CassetteTransport(path, match_on=["method", "host"]))
    with pytest.raises(AuthenticationError) as info:
        if mode == "sync":
            backend.chat("Say 'A'")
        else:
            asyncio.run(backend.achat("Say 'A'"))
    backend.close()
    assert info.value.status_code == 401
    assert info.value.provider_reason == said["error"]["code"]
    assert said["error"]["message"] in info.value.message


# -- recording ------------------------------------------------------------------------------------


def calls_of(backend: OpenAICompatibleBackend, mode: str) -> list[Any]:
    """A chat, a stream (pieces and final reply) and a batch, sync or async."""

    async def run_async() -> list[Any]:
        reply = await backend.achat("Hi", temperature=0)
        stream = backend.astream("Stream it")
        pieces = [d.text async for d in stream]
        many = await backend.achat_many(["a", "b"])
        await backend.aclose()
        return [reply, pieces, await stream.final(), many]

    if mode == "async":
        return asyncio.run(run_async())
    reply = backend.chat("Hi", temperature=0)
    stream = backend.stream("Stream it")
    pieces = [d.text for d in stream]
    out = [reply, pieces, stream.final(), backend.chat_many(["a", "b"])]
    backend.close()
    return out


def timeless(values: list[Any]) -> list[Any]:
    out: list[Any] = []
    for value in values:
        if isinstance(value, ChatResponse):
            value = replace(value, latency=0.0)
        elif isinstance(value, list):
            value = timeless(value)
        out.append(value)
    return out


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_exchanges_recorded_from_a_server_replay_without_it(tmp_path: Path, mode: str) -> None:
    path = tmp_path / "http.yaml"
    with LoopbackServer(OpenAIHandler(echo)) as server:
        base_url = server.base_url
        recorded = calls_of(backend_for(base_url, CassetteTransport(path, mode="once")), mode)
    assert len(server.requests) == 4
    assert len(yaml.safe_load(path.read_text())["interactions"]) == 4
    # The batch's requests go out concurrently to one URL: the body tells them apart.
    by_body = CassetteTransport(path, match_on=[*DEFAULT_MATCH_ON, "body"])
    replayed = calls_of(backend_for(base_url, by_body), mode)
    assert timeless(replayed) == timeless(recorded)
    assert recorded[1] == ["", "echo:", " Stream", " it", "", ""]


def test_recorded_errors_replay_as_the_same_typed_errors(tmp_path: Path) -> None:
    path = tmp_path / "http.yaml"
    limited = error_reply(429, "Rate limit reached", type="requests", headers=[("Retry-After", "7")])
    with LoopbackServer(lambda request: limited) as server:
        base_url = server.base_url
        with (
            backend_for(base_url, CassetteTransport(path, mode="once")) as backend,
            pytest.raises(RateLimitError) as live,
        ):
            backend.chat("Hi")
    with backend_for(base_url, CassetteTransport(path)) as backend, pytest.raises(RateLimitError) as replayed:
        backend.chat("Hi")
    assert (replayed.value.message, replayed.value.retry_after) == (live.value.message, 7.0)


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_compressed_reply_is_recorded_decoded(tmp_path: Path, mode: str) -> None:
    body = json.dumps({"id": "x", "choices": [{"message": {"content": "unzipped"}, "finish_reason": "stop"}]})
    gzipped = Reply(
        headers=[("Content-Type", "application/json"), ("Content-Encoding", "gzip")],
        body=gzip.compress(body.encode()),
    )

    def ask(backend: OpenAICompatibleBackend) -> str:
        with backend:
            return backend.chat("Hi").text if mode == "sync" else asyncio.run(backend.achat("Hi")).text

    path = tmp_path / "http.yaml"
    with LoopbackServer(lambda request: gzipped) as server:
        base_url = server.base_url
        assert ask(backend_for(base_url, CassetteTransport(path, mode="once"))) == "unzipped"
    (item,) = yaml.safe_load(path.read_text())["interactions"]
    assert item["response"]["body"]["string"] == body
    assert "content-encoding" not in {h.lower() for h in item["response"]["headers"]}
    assert ask(backend_for(base_url, CassetteTransport(path))) == "unzipped"


def test_the_openai_sdk_replays_a_cassette_we_recorded(tmp_path: Path) -> None:
    path = tmp_path / "http.yaml"
    with LoopbackServer(OpenAIHandler(echo)) as server:
        base_url = server.base_url
        with backend_for(base_url, CassetteTransport(path, mode="once")) as backend:
            ours = backend.chat("Hi")
    with (
        httpx2.Client(transport=CassetteTransport(path)) as http,
        openai.OpenAI(base_url=base_url, api_key="sk-other", http_client=http, max_retries=0) as client,
    ):
        theirs = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
    assert theirs.choices[0].message.content == ours.text
    assert theirs.usage is not None and ours.usage is not None
    assert theirs.usage.completion_tokens == ours.usage.completion_tokens


# -- secrets --------------------------------------------------------------------------------------


def test_secrets_never_reach_the_http_cassette(tmp_path: Path) -> None:
    token = "plain-token-without-a-known-shape"  # scrubbed because it was sent as the Authorization
    body_key = "sk-proj-abcdefghijklmnopqrstuvwx"
    query_key = "AIzaSyA-abcdefghijklmnopqrstuvwxyz01234"

    def mirror(request: Request) -> Reply:
        seen = {"body": request.json(), "authorization": request.headers.get("authorization")}
        return json_reply(seen, headers=[("Set-Cookie", "session=s3cr3t-session; HttpOnly")])

    path = tmp_path / "http.yaml"
    headers = {
        "authorization": f"Bearer {token}",
        "x-api-key": "xkey-0123456789",
        "cookie": "id=c00kie-value",
    }
    payload = {"prompt": f"my key is {body_key}"}
    with LoopbackServer(mirror) as server:
        url = f"{server.url}/v1/echo?key={query_key}"
        with httpx2.Client(transport=CassetteTransport(path, mode="once")) as client:
            live = client.post(url, json=payload, headers=headers).json()
    assert live["authorization"] == f"Bearer {token}"
    text = path.read_text()
    for secret in (token, body_key, query_key, "xkey-0123456789", "c00kie-value", "s3cr3t-session"):
        assert secret not in text
    assert text.count("**scrubbed**") >= 6
    with httpx2.Client(transport=CassetteTransport(path)) as client:
        replayed = client.post(url, json=payload, headers=headers).json()
    assert replayed == {"body": {"prompt": "my key is **scrubbed**"}, "authorization": "**scrubbed**"}


# -- matching ---------------------------------------------------------------------------------------


@pytest.fixture
def recorded_chat(tmp_path: Path) -> tuple[Path, str]:
    path = tmp_path / "http.yaml"
    with LoopbackServer(OpenAIHandler(echo)) as server:
        base_url = server.base_url
        with backend_for(base_url, CassetteTransport(path, mode="once")) as backend:
            backend.chat("Hi")
    return path, base_url


def test_a_miss_names_the_closest_exchange_and_what_differs(recorded_chat: tuple[Path, str]) -> None:
    path, base_url = recorded_chat
    with httpx2.Client(transport=CassetteTransport(path)) as client, pytest.raises(CassetteError) as info:
        client.get(f"{base_url}/models?limit=5")
    message = str(info.value)
    assert f"for GET {base_url}/models?limit=5" in message
    assert "method: recorded 'POST', got 'GET'" in message
    assert "path: recorded '/v1/chat/completions', got '/v1/models'" in message
    assert "query: recorded 0 items, got 1" in message


def test_matching_on_the_body_compares_the_json_and_shows_the_difference(
    recorded_chat: tuple[Path, str],
) -> None:
    path, base_url = recorded_chat
    match_on = ["method", "path", "body"]
    with backend_for(base_url, CassetteTransport(path, match_on=match_on)) as backend:
        assert backend.chat("Hi").text == "echo: Hi"
    with (
        backend_for(base_url, CassetteTransport(path, match_on=match_on)) as backend,
        pytest.raises(CassetteError, match=r"body\.messages\[0\]\.content: recorded 'Hi', got 'Hello'"),
    ):
        backend.chat("Hello")


@pytest.mark.parametrize(("repeats", "second"), [(False, "raises"), (True, "replays")])
def test_an_exchange_replays_again_only_when_repeats_are_allowed(
    recorded_chat: tuple[Path, str], repeats: bool, second: str
) -> None:
    path, base_url = recorded_chat
    transport = CassetteTransport(path, allow_playback_repeats=repeats)
    with backend_for(base_url, transport) as backend:
        backend.chat("Hi")
        ask: Callable[[], Any] = lambda: backend.chat("Hi").text  # noqa: E731
        if second == "replays":
            assert ask() == "echo: Hi"
        else:
            with pytest.raises(CassetteError, match="allow_playback_repeats=True"):
                ask()


def test_mode_all_re_records_and_drops_what_the_file_held(recorded_chat: tuple[Path, str]) -> None:
    path, _ = recorded_chat
    with LoopbackServer(OpenAIHandler("fresh")) as server:
        with backend_for(server.base_url, CassetteTransport(path, mode="all")) as backend:
            assert backend.chat("Hi").text == "fresh"
        assert len(server.requests) == 1
    (item,) = yaml.safe_load(path.read_text())["interactions"]
    assert "fresh" in item["response"]["body"]["string"]


@pytest.mark.parametrize(
    ("content", "complaint"),
    [
        ("llmclient_cassette: 1\ninteractions: []\n", "is a chat cassette"),
        ("version: 1\n", "has no 'interactions' list"),
        ("interactions:\n- request: {method: GET}\n  response: {}\n", "interaction 0 is malformed"),
    ],
)
def test_a_malformed_vcr_cassette_is_a_cassette_error(tmp_path: Path, content: str, complaint: str) -> None:
    (tmp_path / "bad.yaml").write_text(content)
    with pytest.raises(CassetteError, match=complaint):
        CassetteTransport(tmp_path / "bad.yaml")


def test_an_unknown_matcher_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="match_on"):
        CassetteTransport(tmp_path / "c.yaml", match_on=["method", "verb"])


def test_a_replay_miss_in_an_existing_cassette_offers_new_episodes_not_once(
    recorded_chat: tuple[Path, str],
) -> None:
    path, base_url = recorded_chat
    with httpx2.Client(transport=CassetteTransport(path)) as client, pytest.raises(CassetteError) as info:
        client.get(f"{base_url}/models")
    message = str(info.value)
    assert "record the new request with mode 'new_episodes'" in message
    assert "'once'" not in message


def test_an_empty_cassette_file_is_called_empty_and_records_in_mode_once(tmp_path: Path) -> None:
    path = tmp_path / "http.yaml"
    path.write_text("")
    with httpx2.Client(transport=CassetteTransport(path)) as client, pytest.raises(CassetteError) as info:
        client.get("http://127.0.0.1:9/v1/models")
    assert "holds no interactions (the file is empty)" in str(info.value)
    with (
        LoopbackServer(OpenAIHandler(echo)) as server,
        backend_for(server.base_url, CassetteTransport(path, mode="once")) as backend,
    ):
        assert backend.chat("Hi").text == "echo: Hi"
    assert len(yaml.safe_load(path.read_text())["interactions"]) == 1


@pytest.mark.parametrize(
    ("item", "complaint"),
    [
        (
            "- request: {method: GET}\n  response: {status: {code: 200}, body: {string: ''}}",
            "interaction 1 is malformed: request.uri must be a string",
        ),
        (
            "- request: {method: GET, uri: 'http://h/'}\n  response: {status: {code: OK}}",
            "interaction 1 is malformed: response.status.code must be a number, got 'OK'; "
            "response.body must be a mapping",
        ),
        ("- just a string", "interaction 1 is malformed: it must be a mapping"),
    ],
)
def test_a_malformed_vcr_interaction_is_named_with_what_is_wrong(
    tmp_path: Path, item: str, complaint: str
) -> None:
    good = "- request: {method: GET, uri: 'http://h/'}\n  response: {status: {code: 200}, body: {string: ''}}"
    (tmp_path / "bad.yaml").write_text(f"interactions:\n{good}\n{item}\nversion: 1\n")
    with pytest.raises(CassetteError) as info:
        CassetteTransport(tmp_path / "bad.yaml")
    assert complaint in str(info.value)
