"""Image parts reach an OpenAI-compatible server unchanged: the body the loopback server receives, for
every kind of source llmclient.image() takes, on every call path.
"""

from __future__ import annotations

import base64
import functools
import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from remote_support import Caller

import llmclient
from llmclient.backends.openai import OpenAICompatibleBackend
from llmclient.testing.server import LoopbackServer, OpenAIHandler


@functools.cache
def png_bytes() -> bytes:
    """A real PNG, made once."""
    buffer = io.BytesIO()
    Image.frombytes("RGB", (3, 2), bytes(range(18))).save(buffer, format="PNG")
    return buffer.getvalue()


def png_url() -> str:
    return "data:image/png;base64," + base64.b64encode(png_bytes()).decode()


def source_of(kind: str, tmp_path: Path) -> tuple[Any, str]:
    """A source of one kind, and the URL the server must see for it."""
    if kind == "path":
        path = tmp_path / "picture.png"
        path.write_bytes(png_bytes())
        return path, png_url()
    if kind == "str path":
        path = tmp_path / "picture.png"
        path.write_bytes(png_bytes())
        return str(path), png_url()
    if kind == "bytes":
        return png_bytes(), png_url()
    if kind == "PIL":
        opened = Image.open(io.BytesIO(png_bytes()))  # format PNG: encoded as PNG again
        return opened, "data:image/png;base64," + base64.b64encode(_png_of(opened)).decode()
    if kind == "https URL":
        return "https://example.com/cat.png", "https://example.com/cat.png"
    return png_url(), png_url()  # a data: URL


def _png_of(img: Image.Image) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, format="PNG")
    return buffer.getvalue()


KINDS = ["path", "str path", "bytes", "PIL", "https URL", "data URL"]


@pytest.mark.parametrize("kind", KINDS)
def test_each_source_kind_reaches_the_server_as_an_image_url_part(
    kind: str,
    tmp_path: Path,
    serve: Callable[..., LoopbackServer],
    make_backend: Callable[..., OpenAICompatibleBackend],
    call: Caller,
) -> None:
    server = serve(OpenAIHandler("A small picture."))
    backend = make_backend(server)
    source, url = source_of(kind, tmp_path)
    part = llmclient.image(source, "low")
    messages = [{"role": "user", "content": [{"type": "text", "text": "What is this?"}, part]}]
    assert call.chat(backend, messages).text == "A small picture."
    (request,) = server.requests
    assert request.json()["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is this?"},
                {"type": "image_url", "image_url": {"url": url, "detail": "low"}},
            ],
        }
    ]


def test_image_parts_go_out_unchanged_in_streams_and_batches(
    serve: Callable[..., LoopbackServer], make_backend: Callable[..., OpenAICompatibleBackend], call: Caller
) -> None:
    server = serve(OpenAIHandler("Two pictures."))
    backend = make_backend(server)
    first, second = llmclient.image(png_bytes()), llmclient.image("https://example.com/b.png", "high")
    messages = [
        {"role": "system", "content": "Compare."},
        {"role": "user", "content": [first, {"type": "text", "text": "and"}, second]},
    ]
    pieces, final = call.stream(backend, messages)
    assert "".join(pieces) == final.text == "Two pictures."
    assert [r.text for r in backend.chat_many([messages, messages])] == ["Two pictures."] * 2
    bodies = [r.json() for r in server.requests]
    assert len(bodies) == 3
    for body in bodies:
        assert body["messages"][1]["content"] == [first, {"type": "text", "text": "and"}, second]
    assert bodies[0]["stream"] is True


def test_a_message_object_carries_image_parts_as_dicts_do(
    serve: Callable[..., LoopbackServer], make_backend: Callable[..., OpenAICompatibleBackend]
) -> None:
    server = serve(OpenAIHandler("ok"))
    backend = make_backend(server)
    part = llmclient.image(png_bytes())
    backend.chat([llmclient.Message(role="user", content=[part])])
    assert server.requests[0].json()["messages"] == [{"role": "user", "content": [part]}]
