"""Images in recorded tests: large data: URLs are stored once beside the cassette, named by content hash,
the YAML holding a reference; replay matches on the hash. Both levels: chat cassettes and VCR ones.
"""

from __future__ import annotations

import base64
import hashlib
import io
import random
from pathlib import Path
from typing import Any

import pytest
import yaml
from PIL import Image

import llmclient
from llmclient import CassetteError, UnsupportedFeatureError
from llmclient.backends.openai import OpenAICompatibleBackend
from llmclient.retry import RetryPolicy
from llmclient.testing import CassetteTransport, cassette
from llmclient.testing.cassettes.blobs import BLOB_MIN_CHARS, blobs_folder
from llmclient.testing.cassettes.vcr import DEFAULT_MATCH_ON
from llmclient.testing.server import LoopbackServer, OpenAIHandler, json_reply

API_KEY = "sk-test-5e4d3c2b1a09-SECRET"


def noise_png(seed: int, size: int = 80) -> bytes:
    """A PNG of random pixels: it does not compress, so its data: URL is well over the blob threshold."""
    pixels = random.Random(seed).randbytes(size * size * 3)
    buffer = io.BytesIO()
    Image.frombytes("RGB", (size, size), pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def ask(png: bytes, question: str = "What is this?") -> list[dict[str, Any]]:
    return [{"role": "user", "content": [{"type": "text", "text": question}, llmclient.image(png)]}]


def remote(base_url: str, **kwargs: Any) -> OpenAICompatibleBackend:
    return OpenAICompatibleBackend(
        model="vision-model", base_url=base_url, api_key=API_KEY, retry=RetryPolicy(max_attempts=1), **kwargs
    )


def blob_name(png: bytes) -> str:
    return f"{hashlib.sha256(png).hexdigest()}.png"


@pytest.fixture
def server() -> Any:
    with LoopbackServer(OpenAIHandler("A noisy square.")) as srv:
        yield srv


# -- chat cassettes ---------------------------------------------------------------------------------


def test_a_recorded_image_is_stored_once_beside_the_cassette_and_replays_by_hash(
    tmp_path: Path, server: LoopbackServer
) -> None:
    path = tmp_path / "vision.yaml"
    png = noise_png(1)
    assert len(base64.b64encode(png)) > 4 * BLOB_MIN_CHARS
    with cassette(path, remote(server.base_url), mode="once") as backend:
        first = backend.chat(ask(png))
        backend.chat(ask(png, "And now?"))  # the same image again: the same blob
    assert first.text == "A noisy square."
    text = path.read_text()
    assert base64.b64encode(png).decode()[:100] not in text
    assert len(text) < 3000  # the image is 4x the threshold; the YAML stays small
    url = yaml.safe_load(text)["interactions"][0]["request"]["messages"][0]["content"][1]["image_url"]["url"]
    assert url == f"blob:{blob_name(png)}"
    assert [p.name for p in blobs_folder(path).iterdir()] == [blob_name(png)]
    assert (blobs_folder(path) / blob_name(png)).read_bytes() == png

    with cassette(path) as replay:  # the server is not asked again
        assert replay.chat(ask(png)).text == "A noisy square."
        assert replay.chat(ask(png, "And now?")).text == "A noisy square."
    assert len(server.requests) == 2


def test_a_changed_image_does_not_match_and_the_miss_shows_both_hashes(
    tmp_path: Path, server: LoopbackServer
) -> None:
    path = tmp_path / "vision.yaml"
    with cassette(path, remote(server.base_url), mode="once") as backend:
        backend.chat(ask(noise_png(1)))
    other = noise_png(2)
    with cassette(path) as replay, pytest.raises(CassetteError) as info:
        replay.chat(ask(other))
    message = str(info.value)
    assert "content[1].image_url.url" in message
    assert blob_name(noise_png(1))[:20] in message and blob_name(other)[:20] in message
    assert len(message) < 2000  # no base64 in the report


def test_a_small_image_stays_inline(tmp_path: Path, server: LoopbackServer) -> None:
    path = tmp_path / "tiny.yaml"
    tiny = noise_png(3, size=4)
    with cassette(path, remote(server.base_url), mode="once") as backend:
        backend.chat(ask(tiny))
    assert base64.b64encode(tiny).decode() in path.read_text()
    assert not blobs_folder(path).exists()
    with cassette(path) as replay:
        assert replay.chat(ask(tiny)).text == "A noisy square."


def test_an_older_cassette_with_the_image_inline_still_replays(
    tmp_path: Path, server: LoopbackServer
) -> None:
    path = tmp_path / "old.yaml"
    png = noise_png(4)
    with cassette(path, remote(server.base_url), mode="once") as backend:
        backend.chat(ask(png))
    inline = "data:image/png;base64," + base64.b64encode(png).decode()
    path.write_text(path.read_text().replace(f"blob:{blob_name(png)}", inline))  # as written before blobs
    for blob in blobs_folder(path).iterdir():
        blob.unlink()
    assert inline in path.read_text()
    with cassette(path) as replay:
        assert replay.chat(ask(png)).text == "A noisy square."
        with pytest.raises(CassetteError):
            replay.chat(ask(noise_png(5)))


# -- VCR cassettes ----------------------------------------------------------------------------------


def test_http_cassettes_keep_request_bodies_small_and_match_bodies_by_image_hash(
    tmp_path: Path, server: LoopbackServer
) -> None:
    path = tmp_path / "http.yaml"
    png = noise_png(6)
    with remote(server.base_url, transport=CassetteTransport(path, mode="once")) as backend:
        assert backend.chat(ask(png)).text == "A noisy square."
    text = path.read_text()
    assert len(text) < 4000 and base64.b64encode(png).decode()[:100] not in text
    body = yaml.safe_load(text)["interactions"][0]["request"]["body"]
    assert f'"url":"blob:{blob_name(png)}"' in body.replace(" ", "")
    assert (blobs_folder(path) / blob_name(png)).read_bytes() == png

    by_body = [*DEFAULT_MATCH_ON, "body"]
    with remote(server.base_url, transport=CassetteTransport(path, match_on=by_body)) as backend:
        assert backend.chat(ask(png)).text == "A noisy square."
    with (
        remote(server.base_url, transport=CassetteTransport(path, match_on=by_body)) as backend,
        pytest.raises(
            CassetteError, match=r"body\.messages\[0\]\.content\[1\]\.image_url\.url: recorded 'blob:"
        ),
    ):
        backend.chat(ask(noise_png(7)))
    assert len(server.requests) == 1


def test_a_recorded_refusal_of_images_replays_as_unsupported_feature_error(tmp_path: Path) -> None:
    path = tmp_path / "refused.yaml"
    body = {"error": {"message": "Invalid content type. image_url is only supported by certain models."}}
    with (
        LoopbackServer(lambda request: json_reply(body, status=400)) as refusing,
        cassette(path, remote(refusing.base_url), mode="once") as backend,
        pytest.raises(UnsupportedFeatureError) as live,
    ):
        backend.chat(ask(noise_png(8)))
    with cassette(path) as replay, pytest.raises(UnsupportedFeatureError) as replayed:
        replay.chat(ask(noise_png(8)))
    assert (replayed.value.message, replayed.value.status_code) == (live.value.message, 400)
