"""Images in messages: the ``image_url`` content part, built from what a user has, and read back.

:func:`image` turns a path, raw bytes, a PIL image or a URL into the OpenAI content part
``{"type": "image_url", "image_url": {"url": ..., "detail": ...}}`` that every backend takes beside
text parts; files and bytes become ``data:`` URLs with the MIME type sniffed from their first bytes.
:func:`open_image` is the reverse, for backends that run a vision model themselves.

Pillow is imported only where a PIL image is encoded or decoded, and httpx2 only where
:func:`open_image` fetches an ``http(s)`` URL, so ``import llmclient`` stays light.
"""

from __future__ import annotations

import base64
import binascii
import os
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args
from urllib.parse import unquote_to_bytes, urlsplit

from llmclient.errors import InvalidRequestError, UnsupportedFeatureError

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

Detail = Literal["auto", "low", "high"]
"""How closely a hosted model looks at an image (OpenAI's ``detail``): ``low`` is cheaper."""

IMAGE_PART_SHAPE = "{'type': 'image_url', 'image_url': {'url': 'https://... or data:image/png;base64,...'}}"
"""The shape of an image part, as error messages show it."""

FETCH_TIMEOUT_S = 10.0
"""How long :func:`open_image` waits for an ``http(s)`` image before giving up."""

_DETAILS: frozenset[str] = frozenset(get_args(Detail))

# (offset, magic bytes, MIME type): the signatures of the image formats vision models take.
_MAGIC: tuple[tuple[int, bytes, str], ...] = (
    (0, b"\x89PNG\r\n\x1a\n", "image/png"),
    (0, b"\xff\xd8\xff", "image/jpeg"),
    (0, b"GIF87a", "image/gif"),
    (0, b"GIF89a", "image/gif"),
    (8, b"WEBP", "image/webp"),  # after b"RIFF" and the length
    (0, b"BM", "image/bmp"),
    (0, b"II*\x00", "image/tiff"),
    (0, b"MM\x00*", "image/tiff"),
    (4, b"ftypavif", "image/avif"),
    (4, b"ftypheic", "image/heic"),
)

_SUFFIX_TYPES: dict[str, str] = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".webp": "image/webp",
    ".bmp": "image/bmp",
    ".tif": "image/tiff",
    ".tiff": "image/tiff",
    ".avif": "image/avif",
    ".heic": "image/heic",
}

# PIL formats kept as they are when a PIL image is encoded; anything else becomes PNG.
_PIL_FORMATS: dict[str, str] = {
    "PNG": "image/png",
    "JPEG": "image/jpeg",
    "GIF": "image/gif",
    "WEBP": "image/webp",
}


def image(source: Any, detail: Detail = "auto", *, mime_type: str | None = None) -> dict[str, Any]:
    """An image content part for a message, from a path, bytes, a PIL image or a URL.

    ``source`` may be a path (``str`` or ``os.PathLike``; the file is read and sent as a ``data:``
    URL), raw bytes, a ``PIL.Image.Image`` (encoded as its own format where hosted models take it,
    else PNG), or an ``http(s)://`` or ``data:`` URL (kept as it is). ``mime_type`` names the type
    of a file or bytes whose first bytes do not tell it. ``detail`` is OpenAI's ``auto``/``low``/``high``.

    Put the part beside text parts::

        {"role": "user", "content": [{"type": "text", "text": "What is this?"}, llmclient.image("cat.png")]}

    Raises :class:`InvalidRequestError` for a missing file, a format that cannot be told, a string
    that is neither an existing file nor a URL, or a ``detail`` other than the three above.
    """
    if detail not in _DETAILS:
        raise InvalidRequestError(f"image detail must be one of {sorted(_DETAILS)}, got {detail!r}")
    if mime_type is not None and not (isinstance(mime_type, str) and mime_type.startswith("image/")):
        raise InvalidRequestError(f"mime_type must be an image type such as 'image/png', got {mime_type!r}")
    url = _url_of(source, mime_type)
    return {"type": "image_url", "image_url": {"url": url, "detail": detail}}


def _url_of(source: Any, mime_type: str | None) -> str:
    """The URL an image part carries for ``source``: a URL as it is, anything else as a data: URL."""
    if isinstance(source, str) and _scheme(source) in ("http", "https", "data"):
        if mime_type is not None:
            raise InvalidRequestError(
                "mime_type applies to a path, bytes or a PIL image; a URL carries its own type: leave it out"
            )
        if _scheme(source) == "data":
            decode_data_url(source)  # checked here rather than as a 400 from the server
        elif not urlsplit(source).netloc:
            raise InvalidRequestError(f"image URL {source!r} has no host; expected 'https://host/path.png'")
        return source
    if isinstance(source, (bytes, bytearray, memoryview)):
        return data_url(bytes(source), mime_type or sniff_mime_type(bytes(source), "the image bytes"))
    if _is_pil_image(source):
        data, pil_type = _encode_pil(source)
        return data_url(data, mime_type or pil_type)
    if isinstance(source, (str, os.PathLike)):
        path = _local_path(source)
        data = _read_file(path)
        return data_url(data, mime_type or sniff_mime_type(data, repr(str(path)), path.suffix))
    raise InvalidRequestError(
        "llmclient.image() takes a path, bytes, a PIL image or an http(s)/data: URL, "
        f"got {type(source).__name__}"
    )


def _scheme(url: str) -> str:
    """The lower-cased URL scheme of ``url``, or ``""`` (Windows drive letters are not schemes)."""
    head, sep, _ = url.partition(":")
    return head.lower() if sep and len(head) > 1 and head.isascii() and head.isalpha() else ""


def _local_path(source: str | os.PathLike[str]) -> Path:
    """The file a path or ``file://`` URL names; an error naming the fix for anything else."""
    text = os.fspath(source)
    if isinstance(source, str) and _scheme(text) == "file":
        from urllib.request import url2pathname

        return Path(url2pathname(urlsplit(text).path))
    if isinstance(source, str) and _scheme(text) and not Path(text).is_file():
        raise InvalidRequestError(
            f"image source {text[:80]!r} is neither an existing file nor an http(s)://, data: or file:// URL"
        )
    return Path(text).expanduser()


def _read_file(path: Path) -> bytes:
    """The bytes of an image file, with an error that names the path when it cannot be read."""
    if not path.is_file():
        what = "is a directory" if path.is_dir() else "names no existing file"
        raise InvalidRequestError(
            f"image source {str(path)!r} {what}; pass the path of an image file, its bytes, "
            f"a PIL image, or an http(s)/data: URL"
        )
    try:
        return path.read_bytes()
    except OSError as exc:
        raise InvalidRequestError(f"cannot read image file {str(path)!r}: {exc}") from exc


def sniff_mime_type(data: bytes, what: str = "the image", suffix: str = "") -> str:
    """The MIME type of image bytes from their magic number, else from the file ``suffix``."""
    for offset, magic, mime in _MAGIC:
        if data[offset : offset + len(magic)] == magic and (offset != 8 or data[:4] == b"RIFF"):
            return mime
    by_suffix = _SUFFIX_TYPES.get(suffix.lower())
    if by_suffix is not None and data:
        return by_suffix
    reason = (
        "is empty" if not data else "is not in a known image format (PNG, JPEG, GIF, WebP, BMP, TIFF, AVIF)"
    )
    raise InvalidRequestError(
        f"{what} {reason}; pass mime_type='image/png' (or the right type) if it is an image"
    )


def data_url(data: bytes, mime_type: str) -> str:
    """``data:<mime_type>;base64,<data>``: bytes as a URL a content part can carry."""
    return f"data:{mime_type};base64,{base64.b64encode(data).decode('ascii')}"


def decode_data_url(url: str) -> tuple[str, bytes]:
    """The MIME type and bytes of a ``data:`` URL; an error saying the expected form if it is not one."""
    head, sep, payload = url.partition(",")
    if not sep or not head.lower().startswith("data:"):
        raise InvalidRequestError(f"{url[:40]!r}... is not a data: URL; expected 'data:image/png;base64,...'")
    params = head[5:].split(";")
    mime = params[0].strip().lower() or "text/plain"
    if not mime.startswith("image/"):
        raise InvalidRequestError(
            f"data: URL holds {mime!r}, not an image; expected 'data:image/png;base64,...'"
        )
    if "base64" in (p.strip().lower() for p in params[1:]):
        try:
            return mime, base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise InvalidRequestError(f"data: URL with {mime} holds invalid base64: {exc}") from exc
    return mime, unquote_to_bytes(payload)


def _is_pil_image(source: Any) -> bool:
    """Whether ``source`` is a PIL image, found without importing Pillow (none exists unless it is)."""
    pil_image = sys.modules.get("PIL.Image")
    return pil_image is not None and isinstance(source, pil_image.Image)


def _encode_pil(picture: PILImage) -> tuple[bytes, str]:
    """A PIL image as file bytes and their MIME type: its own format where it is a web format, else PNG."""
    import io

    fmt = (picture.format or "").upper()
    if fmt == "MPO":  # a phone camera's JPEG with extra frames: its first frame, as JPEG
        fmt = "JPEG"
    if fmt not in _PIL_FORMATS or (fmt == "JPEG" and picture.mode not in ("RGB", "L", "CMYK")):
        fmt = "PNG"
    buffer = io.BytesIO()
    try:
        picture.save(buffer, format=fmt)
    except (OSError, ValueError) as exc:
        raise InvalidRequestError(
            f"cannot encode the PIL image (mode {picture.mode}) as {fmt}: {exc}"
        ) from exc
    return buffer.getvalue(), _PIL_FORMATS[fmt]


def image_url_of(part: Mapping[str, Any], where: str = "content part") -> str:
    """The URL of an ``image_url`` part, checked; an error showing the expected shape otherwise."""
    inner = part.get("image_url")
    url = inner.get("url") if isinstance(inner, Mapping) else None
    if part.get("type") != "image_url" or not isinstance(url, str) or not url:
        raise InvalidRequestError(
            f"{where} must be an image part like {IMAGE_PART_SHAPE}, got {part_repr(part)}"
        )
    detail = inner.get("detail") if isinstance(inner, Mapping) else None
    if detail is not None and detail not in _DETAILS:
        raise InvalidRequestError(
            f"{where}.image_url.detail must be one of {sorted(_DETAILS)}, got {detail!r}"
        )
    return url


def part_repr(part: Any) -> str:
    """``repr(part)`` cut short, so an error about a part holding a megabyte of base64 stays readable."""
    text = repr(part)
    return text if len(text) <= 200 else text[:200] + "...}"


def image_parts(message_or_content: Any) -> list[dict[str, Any]]:
    """The ``image_url`` parts of a message (a ``Message`` or a dict) or of its content; ``[]`` for text."""
    content = message_or_content
    if isinstance(content, Mapping):
        content = content.get("content")
    elif hasattr(content, "role") and hasattr(content, "content"):  # a Message, without importing messages
        content = content.content
    if not isinstance(content, list):
        return []
    return [p for p in content if isinstance(p, dict) and p.get("type") == "image_url"]


def has_images(messages: str | Iterable[Any]) -> bool:
    """Whether any message of a conversation holds an image part (a bare string prompt holds none)."""
    if isinstance(messages, str):
        return False
    return any(image_parts(m) for m in messages)


def refuse_images(messages: str | Iterable[Any], model_name: str) -> None:
    """Refuse a conversation with images for a text-only model: never a silent drop of the image.

    Raises :class:`~llmclient.errors.UnsupportedFeatureError` naming the model and what to load
    instead; the in-process backends (transformers, vLLM) call it before anything is queued.
    """
    if has_images(messages):
        raise UnsupportedFeatureError(
            f"model {model_name!r} is a text-only model and cannot see images; send text only, or load "
            f"a vision-language (image-text-to-text) model such as a LLaVA, SmolVLM or Qwen2-VL checkpoint"
        )


def image_scoring_refusal(where: str) -> UnsupportedFeatureError:
    """The error for scoring candidates after an image on ``where`` (a backend, a model): scoring
    reads the language model's logprobs of text alone, so the image would be ignored.
    """
    return UnsupportedFeatureError(
        f"scoring candidates after an image is not supported on {where}; use chat() with a "
        f"response_format (e.g. llmclient.Choice) instead"
    )


def open_image(part: Mapping[str, Any]) -> PILImage:
    """Decode an image part into a loaded PIL image, for backends that run a vision model locally.

    Reads ``data:`` URLs, ``file://`` URLs and local paths; fetches ``http(s)`` URLs with httpx2
    (``FETCH_TIMEOUT_S``). Raises :class:`InvalidRequestError` when the image cannot be had or decoded.
    """
    url = image_url_of(part, "the image part")
    scheme = _scheme(url)
    if scheme == "data":
        data = decode_data_url(url)[1]
    elif scheme in ("http", "https"):
        data = _fetch(url)
    else:
        data = _read_file(_local_path(url))
    return _decode(data, url)


def _fetch(url: str) -> bytes:
    """The bytes at an ``http(s)`` URL, or an error that says how to send the image without fetching."""
    import httpx2

    fix = "download it and pass llmclient.image(path) so the image travels inside the message"
    try:
        response = httpx2.get(url, timeout=FETCH_TIMEOUT_S, follow_redirects=True)
    except httpx2.HTTPError as exc:
        raise InvalidRequestError(
            f"cannot fetch image {url[:200]!r} ({type(exc).__name__}: {exc}); {fix}"
        ) from exc
    if response.status_code >= 400:
        raise InvalidRequestError(f"cannot fetch image {url[:200]!r} (HTTP {response.status_code}); {fix}")
    return response.content


def _decode(data: bytes, url: str) -> PILImage:
    """Image bytes decoded by Pillow (fully loaded, so a truncated file fails here, not in a processor)."""
    import io

    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError as exc:  # pragma: no cover - Pillow comes with the hf extra
        raise InvalidRequestError('reading images needs Pillow: pip install "llmclient[hf]"') from exc
    try:
        picture = Image.open(io.BytesIO(data))
        picture.load()
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise InvalidRequestError(f"cannot decode the image at {url[:80]!r}...: {exc}") from exc
    return picture
