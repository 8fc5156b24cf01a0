"""Record a backend's replies once, replay them forever: ``RecordingBackend``, ``ReplayBackend``.

Both are :class:`~llmclient.backend.ChatBackend` s, so a pipeline runs on them unchanged: ``chat``,
``achat``, ``stream``, ``astream``, ``chat_many`` and ``achat_many`` all replay. Replay needs no model, no
network and no key, and imports neither torch, transformers nor an HTTP stack.

A replayed :class:`~llmclient.types.ChatResponse` equals the one recorded in every field but
``latency`` (the time the replay took). A replayed stream yields the recorded deltas. Requests the
inner backend refused (:class:`~llmclient.errors.InvalidRequestError` and its subclasses: a prompt over
the context window, a bad parameter) are recorded and raised again on replay; other failures (rate
limits, outages) are never recorded. A stream closed before its end is not recorded.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import fields, replace
from typing import TYPE_CHECKING, Any

from llmclient import __version__
from llmclient.backend import ChatBackend
from llmclient.errors import (
    CassetteError,
    ChatTemplateError,
    ConfigError,
    ContextWindowExceededError,
    InvalidRequestError,
    LLMClientError,
)
from llmclient.stream import StreamAccumulator
from llmclient.testing.cassette import (
    Cassette,
    Interaction,
    RecordMode,
    check_mode,
    may_record,
    record_hint,
)
from llmclient.types import (
    ChatRequest,
    ChatResponse,
    GenerationParams,
    StreamDelta,
    Usage,
    normalise_finish_reason,
)

if TYPE_CHECKING:
    from llmclient.config import BackendConfig

BackendSource = ChatBackend | Callable[[], ChatBackend]
"""A backend, or a function that builds one: called only when a reply must be recorded, so replay
never loads the model."""

CassetteLike = Cassette | str | os.PathLike[str]
"""A :class:`Cassette`, or the path of its file."""


# -- normalised requests and replies ---------------------------------------------------------------


def normalise_request(
    request: ChatRequest, *, backend: str | None, model: str | None, stream: bool
) -> dict[str, Any]:
    """The request as a cassette keys it: backend type, model, whether it streams, the messages, and the
    generation parameters that are set. ``backend`` or ``model`` left ``None`` are left out.
    """
    out: dict[str, Any] = {}
    if backend is not None:
        out["backend"] = backend
    if model is not None:
        out["model"] = model
    out["stream"] = stream
    out["messages"] = [m.to_dict() for m in request.messages]
    params: dict[str, Any] = {}
    for f in fields(request.params):
        value = getattr(request.params, f.name)
        if f.name == "extra":
            if value:
                params["extra"] = dict(value)
        elif value is not None:
            params[f.name] = list(value) if isinstance(value, tuple) else value
    out["params"] = params
    return out


def _usage_to_dict(usage: Usage) -> dict[str, int]:
    return {"prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens}


def _usage_from_dict(data: Any) -> Usage | None:
    if data is None:
        return None
    return Usage(prompt_tokens=int(data["prompt_tokens"]), completion_tokens=int(data["completion_tokens"]))


def _finish_reason(data: Mapping[str, Any]) -> Any:
    reason = data.get("finish_reason")
    if reason is not None and normalise_finish_reason(reason) != reason:
        raise ValueError(f"finish_reason {reason!r} is not one of llmclient's")
    return reason


def response_to_dict(reply: ChatResponse) -> dict[str, Any]:
    """A reply as a cassette holds it (everything but ``latency``; empty fields left out)."""
    out: dict[str, Any] = {"text": reply.text}
    if reply.finish_reason is not None:
        out["finish_reason"] = reply.finish_reason
    if reply.usage is not None:
        out["usage"] = _usage_to_dict(reply.usage)
    out["model"] = reply.model
    out["backend"] = reply.backend
    if reply.tool_calls is not None:
        out["tool_calls"] = reply.tool_calls
    if reply.details:
        out["details"] = dict(reply.details)
    return out


def response_from_dict(data: Mapping[str, Any]) -> ChatResponse:
    """The reply a cassette holds; :class:`CassetteError` if it is malformed."""
    try:
        return ChatResponse(
            text=str(data["text"]),
            finish_reason=_finish_reason(data),
            usage=_usage_from_dict(data.get("usage")),
            model=str(data.get("model", "")),
            backend=str(data.get("backend", "")),
            tool_calls=data.get("tool_calls"),
            details=dict(data.get("details") or {}),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise CassetteError(f"malformed recorded response {dict(data)!r}: {exc!r}") from exc


def deltas_to_dicts(deltas: Iterable[StreamDelta]) -> list[dict[str, Any]]:
    """Stream deltas as a cassette holds them: empty fields left out (but always the text), and
    ``details`` written only where they change from the previous delta's (``{}`` where they empty).
    """
    out: list[dict[str, Any]] = []
    previous: dict[str, Any] = {}
    for delta in deltas:
        item: dict[str, Any] = {"text": delta.text}
        if delta.finish_reason is not None:
            item["finish_reason"] = delta.finish_reason
        if delta.usage is not None:
            item["usage"] = _usage_to_dict(delta.usage)
        details = dict(delta.details)
        if details != previous:
            item["details"] = details
        previous = details
        out.append(item)
    return out


def deltas_from_dicts(items: Iterable[Mapping[str, Any]]) -> list[StreamDelta]:
    """The stream deltas a cassette holds (a delta without ``details`` has the previous delta's);
    :class:`CassetteError` if they are malformed.
    """
    out: list[StreamDelta] = []
    details: dict[str, Any] = {}
    for item in items:
        try:
            details = dict(item.get("details", details) or {})
            out.append(
                StreamDelta(
                    text=str(item.get("text", "")),
                    finish_reason=_finish_reason(item),
                    usage=_usage_from_dict(item.get("usage")),
                    details=details,
                )
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise CassetteError(f"malformed recorded stream delta {dict(item)!r}: {exc!r}") from exc
    return out


_RECORDED_ERRORS: dict[str, type[InvalidRequestError]] = {
    cls.__name__: cls for cls in (InvalidRequestError, ContextWindowExceededError, ChatTemplateError)
}
_ERROR_NUMBERS = ("prompt_tokens", "max_new_tokens", "context_window")


def error_to_dict(error: InvalidRequestError) -> dict[str, Any]:
    """A refused request as a cassette holds it: class, message, status and the provider's reason."""
    out: dict[str, Any] = {"type": type(error).__name__, "message": error.message}
    if error.status_code is not None:
        out["status_code"] = error.status_code
    if error.provider_reason is not None:
        out["provider_reason"] = error.provider_reason
    if isinstance(error, ContextWindowExceededError):
        out.update({k: getattr(error, k) for k in _ERROR_NUMBERS if getattr(error, k) is not None})
    return out


def error_from_dict(data: Mapping[str, Any]) -> InvalidRequestError:
    """The error a cassette holds, ready to raise; :class:`CassetteError` if it is malformed."""
    cls = _RECORDED_ERRORS.get(str(data.get("type")))
    if cls is None or not isinstance(data.get("message"), str):
        raise CassetteError(
            f"malformed recorded error {dict(data)!r}: 'type' must be one of {sorted(_RECORDED_ERRORS)} "
            f"and 'message' a string"
        )
    common = {"status_code": data.get("status_code"), "provider_reason": data.get("provider_reason")}
    if cls is ContextWindowExceededError:
        return ContextWindowExceededError(
            data["message"], **common, **{k: data.get(k) for k in _ERROR_NUMBERS}
        )
    return cls(data["message"], **common)


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _only(values: Iterable[Any]) -> str | None:
    """The one distinct non-empty string among ``values``, or ``None``."""
    found = {v for v in values if isinstance(v, str) and v}
    return found.pop() if len(found) == 1 else None


# -- replay ------------------------------------------------------------------------------------------


class ReplayBackend(ChatBackend):
    """Answers from a cassette only: no model, no network. A request with no recorded reply raises
    :class:`~llmclient.errors.CassetteError` showing the closest recorded request and what differs.

    ``backend_type`` and ``model`` are part of each request's key; left ``None`` they match whatever
    was recorded. ``name`` defaults to the backend name the replies were recorded under, so replayed
    replies carry it as recorded.
    """

    type_name = "replay"

    def __init__(
        self,
        cassette: CassetteLike,
        *,
        backend_type: str | None = None,
        model: str | None = None,
        name: str | None = None,
        defaults: GenerationParams | None = None,
    ) -> None:
        self.cassette = cassette if isinstance(cassette, Cassette) else Cassette(cassette)
        self.backend_type = backend_type
        self._model_key = model
        self._wildcards = tuple(k for k, v in (("backend", backend_type), ("model", model)) if v is None)
        recorded = self.cassette.interactions
        super().__init__(
            model=model or _only(i.request.get("model") for i in recorded) or "",
            name=name or _only((i.response or {}).get("backend") for i in recorded) or self.type_name,
            defaults=defaults,
        )

    def _find(self, request: ChatRequest, *, stream: bool) -> tuple[dict[str, Any], Interaction | None]:
        """The normalised request, and its recorded interaction where one replays."""
        wanted = normalise_request(request, backend=self.backend_type, model=self._model_key, stream=stream)
        if not self._replays():
            return wanted, None
        return wanted, self.cassette.find(wanted, also_ignore=self._wildcards)

    def _replays(self) -> bool:
        return True

    def _miss(self, wanted: Mapping[str, Any], mode: RecordMode = "none") -> CassetteError:
        return self.cassette.miss_error(
            wanted, also_ignore=self._wildcards, hint=record_hint(mode, self.cassette.existed)
        )

    def _reply_of(self, found: Interaction) -> ChatResponse:
        """The recorded reply; a recorded stream is joined by the usual stream rules."""
        if found.error is not None:
            raise error_from_dict(found.error)
        if found.response is not None:
            return response_from_dict(found.response)
        joined = StreamAccumulator(model=self.model, backend=self.name)
        for delta in self._deltas_of(found):
            joined.add(delta)
        return replace(joined.response(), latency=0.0)

    def _deltas_of(self, found: Interaction) -> list[StreamDelta]:
        """The recorded deltas; a recorded complete reply is one delta, as a backend without streaming."""
        if found.error is not None:
            raise error_from_dict(found.error)
        if found.stream is not None:
            return deltas_from_dicts(found.stream)
        reply = self._reply_of(found)
        details = {**reply.details, "model": reply.model}
        if reply.tool_calls:
            details["tool_calls"] = reply.tool_calls
        return [
            StreamDelta(
                text=reply.text, finish_reason=reply.finish_reason, usage=reply.usage, details=details
            )
        ]

    def _chat(self, request: ChatRequest) -> ChatResponse:
        wanted, found = self._find(request, stream=False)
        if found is None:
            raise self._miss(wanted)
        return self._reply_of(found)

    async def _achat(self, request: ChatRequest) -> ChatResponse:
        return self._chat(request)  # no I/O: no worker thread

    def _stream(self, request: ChatRequest) -> Iterator[StreamDelta]:
        wanted, found = self._find(request, stream=True)
        if found is None:
            raise self._miss(wanted)
        yield from self._deltas_of(found)

    async def _astream(self, request: ChatRequest) -> AsyncIterator[StreamDelta]:
        for delta in self._stream(request):
            yield delta


# -- recording ---------------------------------------------------------------------------------------


class RecordingBackend(ReplayBackend):
    """Wraps a real backend: replays what the cassette holds and records what it does not, as the
    record ``mode`` says (:data:`~llmclient.testing.cassette.RecordMode`; default ``new_episodes``).

    ``inner`` is a backend or a function that builds one; a function is called only when a reply must
    be recorded, so a replay that finds everything never loads the model. The key's backend type,
    model, the name and the defaults come from ``inner`` when it is a backend; pass them for a
    function, or the key matches whatever backend type and model were recorded. Closing this backend
    saves the cassette and closes the inner backend.
    """

    type_name = "recording"

    def __init__(
        self,
        inner: BackendSource,
        cassette: CassetteLike,
        *,
        mode: RecordMode = "new_episodes",
        backend_type: str | None = None,
        model: str | None = None,
        name: str | None = None,
        defaults: GenerationParams | None = None,
    ) -> None:
        self.mode = check_mode(mode)
        if isinstance(inner, ChatBackend):
            backend_type = backend_type or inner.type_name
            model = model or inner.model
            name = name or inner.name
            defaults = defaults or inner.defaults
            self._inner: ChatBackend | None = inner
        else:
            self._inner = None
        self._factory = inner
        self._build_lock = threading.Lock()
        super().__init__(cassette, backend_type=backend_type, model=model, name=name, defaults=defaults)
        if self.mode == "all":
            self.cassette.start_over()

    def _replays(self) -> bool:
        return self.mode != "all"

    def _recorder(self, wanted: Mapping[str, Any]) -> ChatBackend:
        """The inner backend to record with (built on first use), or the miss error if the mode
        does not record.
        """
        if not may_record(self.mode, self.cassette.existed):
            raise self._miss(wanted, self.mode)
        with self._build_lock:
            if self._inner is None:
                with _building_real_backend():
                    self._inner = self._factory() if callable(self._factory) else self._factory
            return self._inner

    def _for(self, inner: ChatBackend, request: ChatRequest) -> ChatRequest:
        """``request`` as the inner backend expects it: with its own defaults under the call's values."""
        return replace(request, params=inner.defaults.merged(request.params))

    def _record(
        self,
        request: ChatRequest,
        inner: ChatBackend,
        *,
        stream: bool,
        reply: ChatResponse | None = None,
        deltas: Sequence[StreamDelta] | None = None,
        error: InvalidRequestError | None = None,
    ) -> None:
        self.cassette.record(
            Interaction(
                request=normalise_request(
                    request,
                    backend=self.backend_type or inner.type_name,
                    model=self._model_key or inner.model,
                    stream=stream,
                ),
                response=None if reply is None else response_to_dict(replace(reply, backend=self.name)),
                stream=None if deltas is None else deltas_to_dicts(deltas),
                error=None if error is None else error_to_dict(error),
                recorded_at=_now(),
                llmclient_version=__version__,
            )
        )

    def _chat(self, request: ChatRequest) -> ChatResponse:
        wanted, found = self._find(request, stream=False)
        if found is not None:
            return self._reply_of(found)
        inner = self._recorder(wanted)
        try:
            reply = inner._chat(self._for(inner, request))
        except InvalidRequestError as exc:
            self._record(request, inner, stream=False, error=exc)
            raise
        self._record(request, inner, stream=False, reply=reply)
        return reply

    async def _achat(self, request: ChatRequest) -> ChatResponse:
        wanted, found = self._find(request, stream=False)
        if found is not None:
            return self._reply_of(found)
        inner = self._recorder(wanted)
        try:
            reply = await inner._achat(self._for(inner, request))
        except InvalidRequestError as exc:
            self._record(request, inner, stream=False, error=exc)
            raise
        self._record(request, inner, stream=False, reply=reply)
        return reply

    def _stream(self, request: ChatRequest) -> Iterator[StreamDelta]:
        wanted, found = self._find(request, stream=True)
        if found is not None:
            yield from self._deltas_of(found)
            return
        inner = self._recorder(wanted)
        source = inner._stream(self._for(inner, request))
        deltas: list[StreamDelta] = []
        try:
            for delta in source:
                deltas.append(delta)
                yield delta
        except InvalidRequestError as exc:
            if not deltas:
                self._record(request, inner, stream=True, error=exc)
            raise
        finally:  # also on an early close: the inner stream stops, and nothing is recorded
            close = getattr(source, "close", None)
            if close is not None:
                close()
        self._record(request, inner, stream=True, deltas=deltas)

    async def _astream(self, request: ChatRequest) -> AsyncIterator[StreamDelta]:
        wanted, found = self._find(request, stream=True)
        if found is not None:
            for delta in self._deltas_of(found):
                yield delta
            return
        inner = self._recorder(wanted)
        source = inner._astream(self._for(inner, request))
        deltas: list[StreamDelta] = []
        try:
            async for delta in source:
                deltas.append(delta)
                yield delta
        except InvalidRequestError as exc:
            if not deltas:
                self._record(request, inner, stream=True, error=exc)
            raise
        finally:
            aclose = getattr(source, "aclose", None)
            if aclose is not None:
                await aclose()
        self._record(request, inner, stream=True, deltas=deltas)

    async def _achat_many(
        self, requests: Sequence[ChatRequest], concurrency: int, return_exceptions: bool
    ) -> list[ChatResponse | LLMClientError]:
        """Replays what is recorded, then sends all the rest to the inner backend's own batch call
        (a local model batches them), recording each reply.
        """
        results: list[ChatResponse | LLMClientError | None] = [None] * len(requests)
        misses: list[tuple[int, dict[str, Any]]] = []
        for position, request in enumerate(requests):
            started = time.perf_counter()
            wanted, found = self._find(request, stream=False)
            if found is None:
                misses.append((position, wanted))
                continue
            try:
                results[position] = self._finish(self._reply_of(found), started)
            except InvalidRequestError as exc:
                results[position] = exc
        if misses and not may_record(self.mode, self.cassette.existed):
            for position, wanted in misses:
                results[position] = self._miss(wanted, self.mode)
        elif misses:
            inner = self._recorder(misses[0][1])
            sent = [self._for(inner, requests[position]) for position, _ in misses]
            answers = await inner._achat_many(sent, concurrency, True)
            for (position, _), answer in zip(misses, answers, strict=True):
                if isinstance(answer, ChatResponse):
                    self._record(requests[position], inner, stream=False, reply=answer)
                    answer = replace(answer, backend=self.name)
                elif isinstance(answer, InvalidRequestError):
                    self._record(requests[position], inner, stream=False, error=answer)
                results[position] = answer
        done = [r for r in results if r is not None]
        if not return_exceptions:
            failed = next((r for r in done if isinstance(r, LLMClientError)), None)
            if failed is not None:
                raise failed
        return done

    def _close(self) -> None:
        try:
            self.cassette.save()
        finally:
            if self._inner is not None:
                self._inner.close()

    async def _aclose(self) -> None:
        try:
            self.cassette.save()
        finally:
            if self._inner is not None:
                await self._inner.aclose()


def cassette(
    path: str | os.PathLike[str],
    backend: BackendSource | None = None,
    *,
    mode: RecordMode = "once",
    ignore: Iterable[str] = (),
    secrets: Iterable[str] = (),
    backend_type: str | None = None,
    model: str | None = None,
    name: str | None = None,
) -> ReplayBackend:
    """``backend`` behind the cassette at ``path``: a :class:`RecordingBackend` in ``mode``, or with no
    backend a :class:`ReplayBackend`.

    Use it as a context manager: closing it saves what was recorded::

        with cassette("tests/cassettes/summary.yaml", lambda: llmclient.load("local")) as backend:
            assert summarise(backend, text) == expected

    ``ignore`` names request fields left out of matching (``"seed"``, ``"params.extra.user"``);
    ``secrets`` are strings scrubbed from the file besides API-key-looking ones. ``backend_type``,
    ``model`` and ``name`` are as for :class:`RecordingBackend` and :class:`ReplayBackend`.
    """
    mode = check_mode(mode)
    tape = Cassette(path, ignore=ignore, secrets=secrets)
    if backend is not None:
        return RecordingBackend(backend, tape, mode=mode, backend_type=backend_type, model=model, name=name)
    if mode in ("new_episodes", "all"):
        raise ConfigError(f"record mode {mode!r} records replies: pass the backend to record them from")
    return ReplayBackend(tape, backend_type=backend_type, model=model, name=name)


class CassetteSession:
    """One cassette shared by every backend a test wraps: what the ``llm_cassette`` pytest fixture gives.

    :meth:`wrap` puts a backend (or a function building one) behind the cassette in the session's
    record mode; :meth:`load` does the same for ``llmclient.load(spec)``, building the backend only
    when a reply must be recorded. :meth:`close` closes the wrapped backends and saves the cassette.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        mode: RecordMode = "none",
        ignore: Iterable[str] = (),
        secrets: Iterable[str] = (),
    ) -> None:
        self.mode = check_mode(mode)
        self.cassette = Cassette(path, ignore=ignore, secrets=secrets)
        self._backends: list[ReplayBackend] = []

    @property
    def path(self) -> os.PathLike[str]:
        """The cassette file."""
        return self.cassette.path

    def wrap(
        self,
        backend: BackendSource | None = None,
        *,
        backend_type: str | None = None,
        model: str | None = None,
        name: str | None = None,
        defaults: GenerationParams | None = None,
    ) -> ReplayBackend:
        """``backend`` behind this session's cassette; with no backend, replay only."""
        wrapped = (
            ReplayBackend(self.cassette, backend_type=backend_type, model=model, name=name, defaults=defaults)
            if backend is None
            else RecordingBackend(
                backend,
                self.cassette,
                mode=self.mode,
                backend_type=backend_type,
                model=model,
                name=name,
                defaults=defaults,
            )
        )
        self._backends.append(wrapped)
        return wrapped

    def load(
        self, spec: str | Mapping[str, Any] | BackendConfig | None = None, **options: Any
    ) -> ReplayBackend:
        """``llmclient.load(spec, **options)`` behind this session's cassette, built only to record.

        The configuration is read now (cheaply), so the key's backend type and model, the name and
        the defaults are those configured.
        """
        import llmclient
        from llmclient.config import resolve

        config = resolve(spec)
        overrides = options.get("defaults")
        defaults = config.defaults
        if overrides:
            defaults = defaults.merged(
                GenerationParams.from_options(overrides, source="generation parameter in defaults")
            )
        return self.wrap(
            lambda: llmclient.load(config, **options),
            backend_type=options.get("type", config.type),
            model=options.get("model", config.model),
            name=options.get("name") or config.name or config.type,
            defaults=defaults,
        )

    def unused(self) -> list[Interaction]:
        """Interactions in the cassette that no request of this session replayed."""
        return self.cassette.unused()

    def close(self) -> None:
        """Close every wrapped backend and save the cassette."""
        try:
            for backend in self._backends:
                backend.close()
        finally:
            self.cassette.save()


# -- keeping real backends out of tests -------------------------------------------------------------

_building = 0
_building_lock = threading.Lock()


@contextlib.contextmanager
def _building_real_backend() -> Iterator[None]:
    """Marks the span in which a :class:`RecordingBackend` builds its inner backend to record."""
    global _building
    with _building_lock:
        _building += 1
    try:
        yield
    finally:
        with _building_lock:
            _building -= 1


class _BlockedFactory:
    """Stands in for an installed backend type's factory while real backends are blocked."""

    def __init__(self, type_name: str, reason: str) -> None:
        self.type_name = type_name
        self.reason = reason

    def __call__(self, config: BackendConfig) -> ChatBackend:
        if _building:
            from importlib.metadata import entry_points

            from llmclient.registry import ENTRY_POINT_GROUP

            (entry,) = entry_points(group=ENTRY_POINT_GROUP, name=self.type_name)
            backend: ChatBackend = entry.load()(config)
            return backend
        raise CassetteError(
            f"building a real backend (type {config.type!r}, model {config.model!r}) is blocked: "
            f"{self.reason}. Build it through a cassette instead (the llm_cassette fixture's "
            f"load(...) or wrap(lambda: ...)), which builds it only when a reply must be recorded."
        )


@contextlib.contextmanager
def block_real_backends(reason: str = "real backends are blocked here") -> Iterator[None]:
    """While active, ``llmclient.load()`` refuses to build backends of the installed types (those
    registered through the ``llmclient.backends`` entry points), raising :class:`CassetteError` with
    ``reason`` — except when a :class:`RecordingBackend` builds its inner backend to record a reply.

    Types registered at run time with :func:`llmclient.register` (test doubles) are left alone, and so
    are backends constructed directly: this guards the configuration path that pipelines use.
    """
    from importlib.metadata import entry_points

    from llmclient import registry

    guards: dict[str, _BlockedFactory] = {}
    for entry in entry_points(group=registry.ENTRY_POINT_GROUP):
        if entry.name not in registry._runtime and entry.name not in guards:
            guards[entry.name] = _BlockedFactory(entry.name, reason)
            registry.register(entry.name, guards[entry.name])
    try:
        yield
    finally:
        for type_name, guard in guards.items():
            if registry._runtime.get(type_name) is guard:
                registry.unregister(type_name)
