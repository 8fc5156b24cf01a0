"""Secret scrubbing: nothing that looks like an API key, and no secret a cassette knows, reaches a file.

Chat cassettes scrub every string of a recorded interaction (and of a request before matching, so a
request carrying a key still finds its reply), and learn the credentials of the backend they record
from (:attr:`llmclient.backend.ChatBackend.credentials`), to scrub them by value whatever their
shape. HTTP cassettes also blank the values of secret headers (:func:`is_secret_header`), secret query
parameters (:data:`SECRET_QUERY_KEYS`) and the password of a URL, and learn each of them, to scrub it
wherever else it appears. Secrets shorter than 8 characters are never scrubbed by value: dummy keys
such as ``"x"``, ``"EMPTY"`` or ``"ollama"`` would mangle ordinary words.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

SCRUBBED = "**scrubbed**"
"""What a secret is replaced with in a cassette."""

SECRET_HEADERS = frozenset(
    {"authorization", "proxy-authorization", "api-key", "x-api-key", "cookie", "set-cookie"}
)
"""Headers whose values never reach a cassette (compared lower-cased), besides those that
:func:`is_secret_header` recognises by the words in their name."""

_SECRET_HEADER_WORDS = re.compile(
    r"(?:^|[-_])(?:api[-_]?key|key|token|secret|password|passwd|credentials?|auth)(?:$|[-_])", re.IGNORECASE
)

SECRET_QUERY_KEYS = frozenset(
    {"api-key", "api_key", "apikey", "key", "token", "access_token", "auth_token", "password", "secret"}
)
"""Query parameters whose values never reach a cassette (compared lower-cased)."""


def is_secret_header(name: str, extra: Iterable[str] = ()) -> bool:
    """Whether the header ``name`` carries a credential: one of :data:`SECRET_HEADERS` or ``extra``, or a
    name made of a credential word (``x-goog-api-key``, ``x-auth-token``, ``ocp-apim-subscription-key``).
    """
    lowered = name.lower()
    return lowered in SECRET_HEADERS or lowered in extra or bool(_SECRET_HEADER_WORDS.search(lowered))


KEY_PATTERNS: tuple[re.Pattern[str], ...] = (
    re.compile(r"\bsk-[A-Za-z0-9_\-]{16,}"),  # OpenAI, OpenRouter (sk-or-v1-...), Anthropic (sk-ant-...)
    re.compile(r"\bhf_[A-Za-z0-9]{30,}"),  # Hugging Face access tokens
    re.compile(r"\bAIza[0-9A-Za-z_\-]{35}"),  # Google API keys
)
"""API-key-looking strings scrubbed from every string that is recorded, wherever it appears."""

_MIN_SECRET_LENGTH = 8  # shorter "secrets" (a test key such as "test") would scrub ordinary words


class Scrubber:
    """Replaces secrets with :data:`SCRUBBED`: API-key-looking strings, and the literal secrets it knows.

    Literal secrets are given up front or learned while recording (the value of an ``Authorization``
    header, say), so a key echoed in a body is scrubbed even when it does not look like a key.
    """

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets: tuple[str, ...] = ()
        self._lock = threading.Lock()
        for secret in secrets:
            self.learn(secret)

    def learn(self, secret: str) -> None:
        """Scrub ``secret`` from now on (ignored when shorter than 8 characters)."""
        secret = secret.strip()
        if len(secret) < _MIN_SECRET_LENGTH or secret == SCRUBBED:
            return
        with self._lock:
            if secret not in self._secrets:  # longest first, so a secret containing another goes whole
                self._secrets = tuple(sorted({*self._secrets, secret}, key=len, reverse=True))

    def learn_all(self, secrets: Iterable[str]) -> None:
        """:meth:`learn` each of ``secrets``."""
        for secret in secrets:
            self.learn(secret)

    def uri(self, uri: str) -> str:
        """``uri`` with the values of secret query parameters and the password of its user info
        replaced (and learned, to be scrubbed elsewhere too), then scrubbed as :meth:`text`.
        """
        parts = urlsplit(uri)
        netloc, query = parts.netloc, parts.query
        if "@" in netloc:
            userinfo, _, host = netloc.rpartition("@")
            user, colon, password = userinfo.partition(":")
            if colon and password:
                self.learn(unquote(password))
                netloc = f"{user}:{SCRUBBED}@{host}"
        if query:
            pairs = []
            for pair in query.split("&"):
                name, equals, value = pair.partition("=")
                if equals and value and unquote(name).lower() in SECRET_QUERY_KEYS:
                    self.learn(unquote(value))
                    self.learn(value)
                    pair = f"{name}={SCRUBBED}"
                pairs.append(pair)
            query = "&".join(pairs)
        if (netloc, query) != (parts.netloc, parts.query):
            uri = urlunsplit(parts._replace(netloc=netloc, query=query))
        return self.text(uri)

    def text(self, value: str) -> str:
        """``value`` with every secret replaced."""
        for secret in self._secrets:
            if secret in value:
                value = value.replace(secret, SCRUBBED)
        for pattern in KEY_PATTERNS:
            value = pattern.sub(SCRUBBED, value)
        return value

    def value(self, value: Any) -> Any:
        """A copy of a JSON-shaped ``value`` with every string in it scrubbed."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, Mapping):
            return {k: self.value(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self.value(v) for v in value]
        return value
