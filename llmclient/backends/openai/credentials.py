"""Which configured values are credentials, and the base URL without them.

Pure functions over settings values. A credential is the API key, the value of a header that
carries one (the known names below, and any the user names in ``secret_headers``), the token
after an ``Authorization`` scheme, a password in the base URL and a key in its query string.
Values shorter than :data:`MIN_SECRET_LENGTH` are not secrets: local servers are given dummy
keys (``"x"``, ``"EMPTY"``, ``"ollama"``), and masking those would mangle the server's own text
("Une***pected").
"""

from __future__ import annotations

import json
import urllib.parse
from base64 import b64encode
from collections.abc import Iterable, Mapping

from llmclient.errors import LLMClientError, redact

MIN_SECRET_LENGTH = 8
"""Values shorter than this are dummy keys, never masked."""

SECRET_HEADERS = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "api-key",
        "x-api-key",
        "x-goog-api-key",
        "ocp-apim-subscription-key",
    }
)
"""Headers whose value is a credential wherever they are configured (compared lower-case)."""

_QUERY_KEYS = frozenset({"key", "api-key", "api_key", "apikey", "token", "access_token", "code", "sig"})


def credentials(
    api_key: str | None,
    headers: Mapping[str, str],
    secret_headers: Iterable[str],
    base_url: str | None,
) -> tuple[str, ...]:
    """Every secret of these settings, longest first (so a key inside a header value is masked
    whole), without duplicates or dummy values.
    """
    named = SECRET_HEADERS | {name.lower() for name in secret_headers}
    found: list[str] = [api_key or ""]
    for name, value in headers.items():
        if name.lower() in named:
            found.append(value)
            scheme, _, token = value.strip().partition(" ")
            if token and scheme.isalpha():
                found.append(token.strip())
    if base_url:
        parts = urllib.parse.urlsplit(base_url)
        if parts.password:  # and the Basic credentials an HTTP client makes of it
            pair = f"{urllib.parse.unquote(parts.username or '')}:{urllib.parse.unquote(parts.password)}"
            found += [urllib.parse.unquote(parts.password), parts.password, b64encode(pair.encode()).decode()]
        for key, value in urllib.parse.parse_qsl(parts.query):
            if key.lower() in _QUERY_KEYS:
                found.append(value)
    kept = {value for value in found if len(value) >= MIN_SECRET_LENGTH}
    return tuple(sorted(kept, key=len, reverse=True))


def public_url(url: str) -> str:
    """``url`` without a user or password, and with credential query values masked."""
    parts = urllib.parse.urlsplit(url)
    netloc = parts.netloc.rpartition("@")[2]
    query = urllib.parse.urlencode(
        [
            (key, "***" if key.lower() in _QUERY_KEYS else value)
            for key, value in urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
        ],
        safe="*",
    )
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc, query=query))


def split_userinfo(url: str) -> tuple[str, str | None]:
    """``url`` without ``user:password@``, and the ``Authorization`` value (Basic) they stood for.

    The backend sends that header itself, so the URL it logs and reports carries no password.
    """
    parts = urllib.parse.urlsplit(url)
    if "@" not in parts.netloc:
        return url, None
    user = urllib.parse.unquote(parts.username or "")
    password = urllib.parse.unquote(parts.password or "")
    pair = b64encode(f"{user}:{password}".encode()).decode()
    return urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2])), f"Basic {pair}"


def masked(error: LLMClientError, secrets: tuple[str, ...]) -> LLMClientError:
    """``error`` with every secret replaced by ``***`` in its message, body and headers (in place)."""
    if not secrets:
        return error
    error.message = redact(error.message, secrets)
    error.args = (error.message, *error.args[1:])
    if isinstance(error.body, str):
        error.body = redact(error.body, secrets)
    elif error.body is not None:
        error.body = json.loads(redact(json.dumps(error.body, default=str), secrets))
    error.headers = {name: redact(value, secrets) for name, value in error.headers.items()}
    if error.provider_reason:
        error.provider_reason = redact(error.provider_reason, secrets)
    return error
