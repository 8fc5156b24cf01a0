"""Real OpenAI and OpenRouter replies, served over loopback, read by us and by the openai SDK alike.

The recordings live in tests/data/real-cassettes (other projects' VCR cassettes, copied with their licences;
tests/data/README.md names the source repositories and commits).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import openai
import pytest
from remote_support import API_KEY, Caller, Script

from llmclient.errors import AuthenticationError
from llmclient.testing.server import Reply

yaml = pytest.importorskip("yaml")

CASSETTES = Path(__file__).resolve().parents[1] / "data" / "real-cassettes"


def _interactions() -> list[Any]:
    if not CASSETTES.is_dir():
        return [pytest.param(None, marks=pytest.mark.skip(reason=f"{CASSETTES} not found (real recordings)"))]
    found = []
    for path in sorted(CASSETTES.rglob("*.yaml")):
        for index, item in enumerate(yaml.safe_load(path.read_text())["interactions"]):
            if item["request"]["uri"].endswith("/chat/completions"):
                found.append(pytest.param(item, id=f"{path.relative_to(CASSETTES)}#{index}"))
    return found


def _served(item: dict[str, Any]) -> Reply:
    response = item["response"]
    headers = {k.lower(): v[0] for k, v in (response.get("headers") or {}).items()}
    body = response["body"]["string"].encode()
    content_type = headers.get("content-type", "application/json")
    if "event-stream" in content_type:
        return Reply(
            status=response["status"]["code"],
            headers=[("content-type", content_type)],
            chunks=[body[i : i + 97] for i in range(0, len(body), 97)],
        )
    return Reply(status=response["status"]["code"], headers=[("content-type", content_type)], body=body)


def _sdk_read(base_url: str, stream: bool) -> dict[str, Any]:
    """What the openai SDK reads from the same reply: the oracle."""
    with openai.OpenAI(base_url=base_url, api_key=API_KEY, max_retries=0) as client:
        messages = [{"role": "user", "content": "Hi"}]
        if not stream:
            c = client.chat.completions.create(model="m", messages=messages)
            choice = c.choices[0]
            calls = [(t.id, t.function.name, t.function.arguments) for t in choice.message.tool_calls or []]
            return {
                "text": choice.message.content or "",
                "finish": choice.finish_reason,
                "usage": c.usage,
                "model": c.model,
                "calls": calls,
            }
        text, finish, usage, model = [], None, None, ""
        calls: dict[int, list[str]] = {}  # id, name, arguments
        for chunk in client.chat.completions.create(model="m", messages=messages, stream=True):
            model = chunk.model or model
            usage = chunk.usage or usage
            for choice in chunk.choices:
                text.append(choice.delta.content or "")
                finish = choice.finish_reason or finish
                for t in choice.delta.tool_calls or []:
                    call = calls.setdefault(t.index, ["", "", ""])
                    call[0] = t.id or call[0]
                    call[1] += (t.function and t.function.name) or ""
                    call[2] += (t.function and t.function.arguments) or ""
        return {
            "text": "".join(text),
            "finish": finish,
            "usage": usage,
            "model": model,
            "calls": [tuple(calls[i]) for i in sorted(calls)],
        }


def _raw_events(item: dict[str, Any]) -> list[dict[str, Any]]:
    body = item["response"]["body"]["string"]
    if '"chat.completion.chunk"' not in body:
        return [json.loads(body)]
    return [
        json.loads(line[5:])
        for line in body.splitlines()
        if line.startswith("data:") and "[DONE]" not in line
    ]


@pytest.mark.parametrize("item", _interactions())
def test_real_reply_reads_as_the_sdk_reads_it(
    serve, make_backend, call: Caller, item: dict[str, Any]
) -> None:
    request = json.loads(item["request"]["body"])
    stream = bool(request.get("stream"))
    server = serve(Script([_served(item)]))
    backend = make_backend(server)
    if stream:
        pieces, ours = call.stream(backend)
        assert "".join(pieces) == ours.text
    else:
        ours = call.chat(backend)
    oracle = _sdk_read(server.base_url, stream)

    assert ours.text == oracle["text"]
    assert ours.finish_reason == oracle["finish"]
    assert ours.model == oracle["model"]
    assert ours.usage is not None and oracle["usage"] is not None
    assert (ours.usage.prompt_tokens, ours.usage.completion_tokens, ours.usage.total_tokens) == (
        oracle["usage"].prompt_tokens,
        oracle["usage"].completion_tokens,
        oracle["usage"].total_tokens,
    )
    assert [(c.id, c.name, c.arguments) for c in ours.tool_calls] == oracle["calls"]

    events = _raw_events(item)
    if "openrouter.ai" in item["request"]["uri"]:
        assert ours.details["provider"] == next(e["provider"] for e in events if e.get("provider"))
        cost = next(e["usage"]["cost"] for e in events if (e.get("usage") or {}).get("cost") is not None)
        assert ours.details["cost"] == cost
        assert (ours.usage.cost, ours.usage.cost_source) == (cost, "provider")  # streamed and not
    else:
        assert ours.usage.cost is None  # OpenAI reports no cost
    assert ours.details["id"] == events[0]["id"]


def test_real_401_body_is_an_authentication_error(serve, make_backend, call: Caller) -> None:
    path = CASSETTES / "chatlas/tests/_vcr/test_parallel_chat_errors/test_parallel_chat_error_stop_mode.yaml"
    if not path.exists():
        pytest.skip(f"{path} not found (real recordings)")
    item = yaml.safe_load(path.read_text())["interactions"][0]
    server = serve(Script([_served(item)]))
    with pytest.raises(AuthenticationError) as info:
        call.chat(make_backend(server))
    assert info.value.status_code == 401
    assert info.value.provider_reason == "invalid_api_key"
