"""llmclient.image(): content parts from paths, bytes, PIL images and URLs; reading them back with
open_image(); and messages that check the shape of image parts.
"""

from __future__ import annotations

import base64
import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

import llmclient
from llmclient import InvalidRequestError, Message
from llmclient.images import decode_data_url, has_images, image_parts, open_image, sniff_mime_type
from llmclient.messages import to_messages
from llmclient.testing.server import LoopbackServer, Reply, Request


def picture(size: tuple[int, int] = (6, 4)) -> Image.Image:
    """A small RGB image whose pixels differ, so a decode that mangles them shows."""
    width, height = size
    pixels = bytes(
        ((x * 40 + c * 90) ^ (y * 60)) % 256 for y in range(height) for x in range(width) for c in range(3)
    )
    return Image.frombytes("RGB", size, pixels)


def encoded(img: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, format=fmt)
    return buffer.getvalue()


def url_of(part: dict[str, Any]) -> str:
    url: str = part["image_url"]["url"]
    return url


# -- building parts ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "mime"),
    [("PNG", "image/png"), ("JPEG", "image/jpeg"), ("GIF", "image/gif"), ("WEBP", "image/webp")],
)
def test_a_file_becomes_a_data_url_with_the_type_its_bytes_say(tmp_path: Path, fmt: str, mime: str) -> None:
    data = encoded(picture(), fmt)
    path = tmp_path / "picture.bin"  # the suffix says nothing: the magic number decides
    path.write_bytes(data)
    part = llmclient.image(path)
    assert part == {"type": "image_url", "image_url": {"url": url_of(part), "detail": "auto"}}
    assert decode_data_url(url_of(part)) == (mime, data)
    assert llmclient.image(str(path), "low")["image_url"]["detail"] == "low"


def test_the_file_suffix_decides_where_the_bytes_carry_no_known_magic_number(tmp_path: Path) -> None:
    path = tmp_path / "scan.tiff"
    path.write_bytes(b"\x00\x01 not a real header")
    assert decode_data_url(url_of(llmclient.image(path)))[0] == "image/tiff"
    assert sniff_mime_type(encoded(picture(), "BMP")) == "image/bmp"


def test_bytes_are_sniffed_and_mime_type_overrides_what_cannot_be_told() -> None:
    png = encoded(picture(), "PNG")
    assert url_of(llmclient.image(png)).startswith("data:image/png;base64,")
    assert url_of(llmclient.image(bytearray(png))) == url_of(llmclient.image(png))
    raw = b"\x01\x02\x03 raw pixels"
    assert decode_data_url(url_of(llmclient.image(raw, mime_type="image/x-raw"))) == ("image/x-raw", raw)


def test_a_pil_image_keeps_its_web_format_and_anything_else_becomes_png(tmp_path: Path) -> None:
    jpeg_path = tmp_path / "p.jpg"
    picture().save(jpeg_path)
    with Image.open(jpeg_path) as opened:
        assert decode_data_url(url_of(llmclient.image(opened)))[0] == "image/jpeg"
    fresh = picture()  # no format: made in memory
    mime, data = decode_data_url(url_of(llmclient.image(fresh)))
    assert mime == "image/png"
    assert Image.open(io.BytesIO(data)).tobytes() == fresh.tobytes()
    bmp = Image.open(io.BytesIO(encoded(picture(), "BMP")))
    assert decode_data_url(url_of(llmclient.image(bmp)))[0] == "image/png"


def test_urls_are_kept_as_they_are() -> None:
    https = "https://example.com/cat.png?size=large"
    assert llmclient.image(https, "high") == {
        "type": "image_url",
        "image_url": {"url": https, "detail": "high"},
    }
    data = "data:image/png;base64," + base64.b64encode(encoded(picture(), "PNG")).decode()
    assert url_of(llmclient.image(data)) == data


@pytest.mark.parametrize(
    ("source", "kwargs", "complaint"),
    [
        ("no/such/picture.png", {}, "names no existing file; pass the path of an image file"),
        ("ftp://example.com/cat.png", {}, r"neither an existing file nor an http\(s\)://, data: or file://"),
        (b"just some text", {}, "not in a known image format .*pass mime_type='image/png'"),
        (b"", {}, "is empty"),
        (12, {}, "takes a path, bytes, a PIL image or an http\\(s\\)/data: URL, got int"),
        (
            "https://example.com/a.png",
            {"detail": "medium"},
            "detail must be one of \\['auto', 'high', 'low'\\]",
        ),
        ("https://example.com/a.png", {"mime_type": "image/png"}, "a URL carries its own type"),
        (b"\x89PNG\r\n\x1a\n", {"mime_type": "text/plain"}, "mime_type must be an image type"),
        ("data:text/plain;base64,aGk=", {}, "holds 'text/plain', not an image"),
        ("data:image/png;base64,!!notbase64", {}, "invalid base64"),
        ("https:///nohost.png", {}, "has no host"),
    ],
)
def test_bad_sources_are_refused_with_the_fix(source: Any, kwargs: dict[str, Any], complaint: str) -> None:
    with pytest.raises(InvalidRequestError, match=complaint):
        llmclient.image(source, **kwargs)


def test_a_directory_is_not_an_image(tmp_path: Path) -> None:
    with pytest.raises(InvalidRequestError, match="is a directory"):
        llmclient.image(tmp_path)


# -- finding image parts ----------------------------------------------------------------------------


def test_image_parts_and_has_images_find_the_image_parts_of_messages() -> None:
    part = llmclient.image("https://example.com/a.png")
    content = [{"type": "text", "text": "What is it?"}, part]
    assert image_parts(content) == [part]
    assert image_parts({"role": "user", "content": content}) == [part]
    assert image_parts(Message(role="user", content=content)) == [part]
    assert image_parts("plain text") == [] and image_parts(Message(role="user", content="hi")) == []
    assert has_images([{"role": "system", "content": "Be terse."}, {"role": "user", "content": content}])
    assert not has_images("What is it?") and not has_images([{"role": "user", "content": "x"}])


# -- messages check image parts ---------------------------------------------------------------------


def test_messages_take_image_parts_beside_text_and_text_stays_the_text_only() -> None:
    part = llmclient.image(encoded(picture(), "PNG"), "low")
    (message,) = to_messages([{"role": "user", "content": [{"type": "text", "text": "Describe"}, part]}])
    assert message.content == [{"type": "text", "text": "Describe"}, part]
    assert message.text == "Describe"
    assert message.to_dict()["content"][1] is part


@pytest.mark.parametrize(
    ("part", "complaint"),
    [
        ({"type": "image", "source": {"data": "..."}}, r"has type 'image'; images go in the OpenAI shape"),
        ({"type": "input_image", "image_url": "https://x/a.png"}, r"has type 'input_image'"),
        (
            {"type": "image_url", "image_url": {}},
            r"content\[1\] must be an image part like \{'type': 'image_url'",
        ),
        ({"type": "image_url", "image_url": "https://x/a.png"}, r"must be an image part like"),
        (
            {"type": "image_url", "image_url": {"url": "https://x/a.png", "detail": "max"}},
            r"detail must be one of",
        ),
        ({"type": "text"}, r"content\[1\] is a text part without a string 'text'"),
        ("just a string", r"must be a content part like .*llmclient.image"),
    ],
)
def test_a_malformed_part_is_refused_with_the_shape_expected(part: Any, complaint: str) -> None:
    content = [{"type": "text", "text": "Describe"}, part]
    with pytest.raises(InvalidRequestError, match=complaint):
        to_messages([{"role": "user", "content": content}])
    with pytest.raises(InvalidRequestError, match=complaint):
        to_messages([Message(role="user", content=content)])


def test_the_error_for_a_huge_malformed_part_stays_short() -> None:
    part = {"type": "image", "data": "A" * 1_000_000}
    with pytest.raises(InvalidRequestError) as info:
        to_messages([{"role": "user", "content": [part]}])
    assert len(str(info.value)) < 600


# -- reading parts back ----------------------------------------------------------------------------


def test_open_image_decodes_data_urls_files_and_file_urls(tmp_path: Path) -> None:
    img = picture()
    path = tmp_path / "p.png"
    img.save(path)
    for part in (
        llmclient.image(img),
        llmclient.image(path),
        {"type": "image_url", "image_url": {"url": path.as_uri()}},
        {"type": "image_url", "image_url": {"url": str(path)}},
    ):
        opened = open_image(part)
        assert (opened.size, opened.tobytes()) == (img.size, img.tobytes())


def test_open_image_fetches_an_http_url() -> None:
    png = encoded(picture(), "PNG")

    def serve(request: Request) -> Reply:
        if request.path == "/cat.png":
            return Reply(headers=[("Content-Type", "image/png")], body=png)
        return Reply(status=404, body=b"not here")

    with LoopbackServer(serve) as server:
        assert open_image(llmclient.image(f"{server.url}/cat.png")).size == (6, 4)
        with pytest.raises(InvalidRequestError, match=r"cannot fetch image .*404.*llmclient.image\(path\)"):
            open_image(llmclient.image(f"{server.url}/gone.png"))
        url = server.url
    with pytest.raises(InvalidRequestError, match=r"cannot fetch image .*ConnectError"):
        open_image(llmclient.image(f"{url}/cat.png"))  # the server is gone: offline


def test_open_image_refuses_bytes_that_are_no_image() -> None:
    part = llmclient.image(b"\x89PNG\r\n\x1a\n then garbage")  # the magic number lies
    with pytest.raises(InvalidRequestError, match="cannot decode the image"):
        open_image(part)
    with pytest.raises(InvalidRequestError, match="must be an image part like"):
        open_image({"type": "text", "text": "hi"})


def test_building_an_image_part_from_a_file_imports_neither_pillow_nor_httpx2(tmp_path: Path) -> None:
    path = tmp_path / "p.png"
    picture().save(path)
    probe = (
        f"import json, sys, llmclient; llmclient.image({str(path)!r}); llmclient.image(b'GIF89a...')\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules} & {'PIL', 'httpx2'})))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert json.loads(done.stdout) == []
