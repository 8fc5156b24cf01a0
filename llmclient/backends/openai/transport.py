"""The HTTP seam of the remote backend: the async transports, and the one place transport errors are mapped.

Sync requests go through an ``httpx2.Client`` on httpx2's own transport, which mounts proxies from
the environment. Async requests go straight to an httpx2 async transport, with no ``AsyncClient``
in between (that layer adds a quarter to each request and nothing the backend uses): by default
:class:`AiohttpTransport`, because httpx2's own async transport reaches well under half the
throughput of aiohttp with many requests in flight (docs/architecture.md). A user's own
``httpx2.AsyncClient`` is put behind the same seam by :class:`ClientTransport`, so the backend has
one async function that sends. Tests, cassette recording and users' clients (proxies, auth,
certificates) all plug in here.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import weakref
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import aiohttp
import httpx2

from llmclient.backends.openai.credentials import public_url
from llmclient.errors import BackendUnavailableError, LLMClientError, TimeoutError

if TYPE_CHECKING:
    from llmclient.backends.openai.settings import OpenAICompatibleSettings


@runtime_checkable
class LearnsSecrets(Protocol):
    """A transport that keeps what passes through it (a cassette recorder such as
    :class:`~llmclient.testing.CassetteTransport`): the backend hands it its credentials, so they are
    scrubbed by value from everything it keeps, whatever header or query parameter carried them.
    """

    def add_secrets(self, secrets: tuple[str, ...]) -> None:
        """Scrub ``secrets`` from everything kept from now on."""


_AIOHTTP_ERRORS: tuple[tuple[type[BaseException], type[httpx2.TransportError]], ...] = (
    (aiohttp.ClientProxyConnectionError, httpx2.ProxyError),
    (aiohttp.ClientHttpProxyError, httpx2.ProxyError),
    (aiohttp.ConnectionTimeoutError, httpx2.ConnectTimeout),
    (aiohttp.SocketTimeoutError, httpx2.ReadTimeout),
    (aiohttp.ServerTimeoutError, httpx2.ReadTimeout),
    (asyncio.TimeoutError, httpx2.ReadTimeout),
    (aiohttp.ClientConnectorError, httpx2.ConnectError),
    (aiohttp.ClientPayloadError, httpx2.RemoteProtocolError),
    (aiohttp.ServerDisconnectedError, httpx2.RemoteProtocolError),
    (aiohttp.InvalidURL, httpx2.UnsupportedProtocol),
    (aiohttp.ClientOSError, httpx2.ReadError),
    (aiohttp.ClientConnectionError, httpx2.NetworkError),
    (aiohttp.ClientError, httpx2.TransportError),
)


# aiohttp has already decompressed the body: httpx2 must not see these, or it decodes a second time.
_DECODED_HEADERS = (b"content-encoding", b"content-length")


def _outgoing_headers(request: httpx2.Request) -> list[tuple[str, str]]:
    """The request's headers less those the sending layer sets itself from the URL and body."""
    return [(k, v) for k, v in request.headers.multi_items() if k not in ("host", "content-length")]


@contextlib.contextmanager
def _aiohttp_errors_as_httpx2() -> Iterator[None]:
    try:
        yield
    except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
        for source, target in _AIOHTTP_ERRORS:
            if isinstance(exc, source):
                raise target(str(exc) or type(exc).__name__) from exc
        raise


class _AiohttpBody(httpx2.AsyncByteStream):
    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with _aiohttp_errors_as_httpx2():
            async for chunk in self._response.content.iter_any():
                yield chunk

    async def aclose(self) -> None:
        self._response.release()


class AiohttpTransport(httpx2.AsyncBaseTransport):
    """An httpx2 async transport that sends requests with aiohttp.

    It keeps one aiohttp session per event loop, so a backend used from ``asyncio.run`` twice,
    or from sync code through its private loop, never touches a session bound to another loop.

    Args:
        verify: as in httpx2: ``True``, ``False``, a CA bundle path or an ``ssl.SSLContext``.
        cert: a client certificate, as in httpx2.
        proxy: a proxy URL; with ``trust_env`` the usual ``HTTPS_PROXY``/``NO_PROXY`` apply too.
        trust_env: read proxy settings from the environment, as httpx2 and aiohttp do.
        max_connections: the most connections open at once (size it to the concurrency asked for).
        keepalive_expiry: seconds an idle connection is kept.
    """

    def __init__(
        self,
        *,
        verify: ssl.SSLContext | str | bool = True,
        cert: Any = None,
        proxy: str | None = None,
        trust_env: bool = True,
        max_connections: int = 100,
        keepalive_expiry: float = 15.0,
    ) -> None:
        self._ssl: ssl.SSLContext | bool = (
            verify
            if isinstance(verify, ssl.SSLContext) or verify is False
            else httpx2.create_ssl_context(verify=verify, cert=cert, trust_env=trust_env)
        )
        self._proxy = proxy
        self._trust_env = trust_env
        self._proxies: dict[tuple[str, str], str | None] = {}
        self._max_connections = max_connections
        self._keepalive_expiry = keepalive_expiry
        self._sessions: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopSession] = (
            weakref.WeakKeyDictionary()
        )
        self._timeouts: dict[tuple[float | None, float | None], aiohttp.ClientTimeout] = {}

    async def _session(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        owned = self._sessions.get(loop)
        if owned is not None and not owned.session.closed:
            return owned.session
        connector = aiohttp.TCPConnector(
            limit=self._max_connections, keepalive_timeout=self._keepalive_expiry, ssl=self._ssl
        )
        session = aiohttp.ClientSession(
            connector=connector,
            trust_env=False,  # read once in _proxy_for: aiohttp would read it on every request
            auto_decompress=True,
            skip_auto_headers=("User-Agent",),
        )
        owned = _LoopSession(session)
        await owned.register()
        self._sessions[loop] = owned
        return session

    def _timeout(self, request: httpx2.Request) -> aiohttp.ClientTimeout:
        spec = request.extensions.get("timeout") or {}
        key = (spec.get("connect"), spec.get("read"))
        timeout = self._timeouts.get(key)
        if timeout is None:
            timeout = aiohttp.ClientTimeout(total=None, sock_connect=key[0], sock_read=key[1])
            self._timeouts[key] = timeout
        return timeout

    def _proxy_for(self, url: httpx2.URL) -> str | None:
        if self._proxy is not None or not self._trust_env:
            return self._proxy
        key = (url.scheme, url.host)
        if key not in self._proxies:
            import urllib.request

            proxies = urllib.request.getproxies()
            bypass = urllib.request.proxy_bypass(url.host) if url.host else True
            self._proxies[key] = None if bypass else proxies.get(url.scheme)
        return self._proxies[key]

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        """Send ``request`` with aiohttp; the body is streamed back as the response's stream."""
        session = await self._session()
        headers = _outgoing_headers(request)
        with _aiohttp_errors_as_httpx2():
            response = await session.request(
                request.method,
                str(request.url),
                headers=headers,
                data=request.content or None,
                allow_redirects=False,
                timeout=self._timeout(request),
                proxy=self._proxy_for(request.url),
            )
        return httpx2.Response(
            status_code=response.status,
            headers=[(k, v) for k, v in response.raw_headers if k.lower() not in _DECODED_HEADERS],
            stream=_AiohttpBody(response),
            request=request,
            extensions={"http_version": b"HTTP/1.1"},
        )

    async def aclose(self) -> None:
        """Close the session of the running loop, and those of other loops that still run."""
        current = asyncio.get_running_loop()
        for loop, owned in list(self._sessions.items()):
            if loop is current:
                await owned.close()
            else:
                owned.close_from_elsewhere(loop)
        self._sessions.clear()

    def close_sync(self) -> None:
        """Close every session from sync code, on whichever loop owns it."""
        for loop, owned in list(self._sessions.items()):
            owned.close_from_elsewhere(loop)
        self._sessions.clear()


class _LoopSession:
    """An aiohttp session tied to the life of its event loop.

    A session must be closed on its own loop, and users do call ``asyncio.run`` several times with
    one backend. So each session is guarded by a started async generator: ``asyncio.run`` (and
    ``asyncio.Runner``) close every live async generator before closing the loop, which runs the
    generator's ``finally`` and closes the session there, on the right loop, before it is gone.
    """

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self.session = session
        self._guard = self._close_at_loop_shutdown()

    async def _close_at_loop_shutdown(self) -> AsyncGenerator[None, None]:
        try:
            yield
        finally:
            await self.session.close()

    async def register(self) -> None:
        """Start the guard, which enrols it with the running loop's async-generator hooks."""
        await self._guard.__anext__()

    async def close(self) -> None:
        """Close the session now, on the running loop (its own)."""
        await self._guard.aclose()

    def close_from_elsewhere(self, loop: asyncio.AbstractEventLoop) -> None:
        """Close from another thread or from outside any loop."""
        if self.session.closed:
            return
        with contextlib.suppress(RuntimeError):
            if asyncio.get_running_loop() is loop:  # on the loop itself (a collection there): no waiting
                loop.create_task(self.close())
                return
        if loop.is_running():
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(self.close(), loop).result(timeout=5)
        elif not loop.is_closed():
            loop.run_until_complete(self.close())


class ClientTransport(httpx2.AsyncBaseTransport):
    """A user's ``httpx2.AsyncClient`` as an async transport, so it sits behind the one async seam.

    Each request is rebuilt on the client (its headers, auth, cookies and timeout apply) and sent
    streaming. Closing this transport leaves the client open: it belongs to whoever made it.
    """

    def __init__(self, client: httpx2.AsyncClient) -> None:
        self._client = client

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        """Send ``request`` through the client; the body is streamed back."""
        headers = _outgoing_headers(request)
        built = self._client.build_request(
            request.method, request.url, content=request.content, headers=headers
        )
        return await self._client.send(built, stream=True)

    async def aclose(self) -> None:
        """Leave the client open: it is the caller's."""


def sync_client(
    settings: OpenAICompatibleSettings, transport: httpx2.BaseTransport | None, timeout: httpx2.Timeout
) -> httpx2.Client:
    """The backend's own sync client: on ``transport`` where given, else on httpx2's transports
    (which mount proxies from the environment), sized and secured as ``settings`` say.
    """
    if transport is not None:
        return httpx2.Client(transport=transport, timeout=timeout)
    limits = httpx2.Limits(
        max_connections=settings.max_connections, max_keepalive_connections=settings.max_connections
    )
    # httpx2 builds its own transports, so proxies from the environment are mounted too
    return httpx2.Client(
        verify=settings.verify,
        cert=settings.cert,
        trust_env=settings.trust_env,
        limits=limits,
        proxy=settings.proxy,
        timeout=timeout,
    )


def map_transport_error(exc: httpx2.HTTPError) -> LLMClientError:
    """The llmclient error for an httpx2 transport failure (timeouts, refused connections, resets)."""
    detail = str(exc) or type(exc).__name__
    url = ""
    with contextlib.suppress(RuntimeError):
        url = f" to {public_url(str(exc.request.url.copy_with(query=None)))}"
    if isinstance(exc, httpx2.TimeoutException):
        return TimeoutError(
            f"request{url} timed out ({type(exc).__name__}: {detail}); "
            f"raise the backend's timeout setting if the model is slow"
        )
    return BackendUnavailableError(f"request{url} failed: {type(exc).__name__}: {detail}")
