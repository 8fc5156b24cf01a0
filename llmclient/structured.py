"""Structured output: what ``response_format`` accepts, one meaning on every backend, and the check
every reply passes.

``response_format`` takes a pydantic model class, a JSON Schema dict, :data:`JSON` (any JSON object),
:class:`Choice` (one of some strings) or :class:`Regex` (text matching a pattern). Each becomes an
:class:`OutputFormat`, the one form backends read: the local backend compiles it into a grammar that
constrains decoding, the remote backend sends it as the provider's ``response_format`` field. Whatever
produced the text, :meth:`OutputFormat.parse` checks it the same way and gives ``reply.parsed``;
a reply that does not pass raises :class:`~llmclient.errors.StructuredOutputError` with the raw text.

jsonschema and pydantic are imported only when a schema is checked: ``import llmclient`` stays light,
and pydantic stays optional.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Literal

from llmclient.errors import InvalidRequestError, StructuredOutputError

if TYPE_CHECKING:
    from llmclient.types import ChatResponse

Kind = Literal["json_schema", "json_object", "choice", "regex"]
"""What an :class:`OutputFormat` asks for."""

WRAPPER_KEY = "value"
"""The one property of the object a remote backend asks for when the target is a :class:`Choice` or
a :class:`Regex` (OpenAI's strict mode wants an object at the root); :meth:`OutputFormat.parse`
unwraps it, so ``parsed`` is the bare string on every backend."""


class JsonObject:
    """The type of :data:`JSON`: any JSON object, no schema."""

    def __repr__(self) -> str:
        return "llmclient.JSON"


JSON = JsonObject()
"""``response_format=llmclient.JSON``: the reply is a JSON object, of any shape; ``parsed`` is a dict."""


class Choice:
    """``response_format=Choice(["yes", "no"])``: the reply is exactly one of ``options``.

    ``parsed`` is the chosen string. On a local model decoding is constrained to the options; a remote
    model is sent a strict schema with an enum.
    """

    def __init__(self, options: Iterable[str]) -> None:
        chosen = tuple(options) if not isinstance(options, str) else ()
        if not chosen or not all(isinstance(o, str) and o for o in chosen):
            raise InvalidRequestError(
                f"Choice takes a list of non-empty strings, got {options!r}: Choice(['yes', 'no'])"
            )
        if len(set(chosen)) != len(chosen):
            raise InvalidRequestError(f"Choice options must differ, got {list(chosen)!r}")
        self.options = chosen

    def __repr__(self) -> str:
        return f"Choice({list(self.options)!r})"


class Regex:
    """``response_format=Regex("[0-9]{4}-[0-9]{2}-[0-9]{2}")``: the whole reply matches ``pattern``.

    ``parsed`` is the text. A local model is constrained to the pattern; a remote model is sent a
    strict schema with a string ``pattern`` (the provider decides how far it honours it).
    """

    def __init__(self, pattern: str) -> None:
        if not isinstance(pattern, str) or not pattern:
            raise InvalidRequestError(f"Regex takes a non-empty pattern string, got {pattern!r}")
        try:
            re.compile(pattern)
        except re.error as exc:
            raise InvalidRequestError(f"Regex pattern {pattern!r} does not compile: {exc}") from exc
        self.pattern = pattern

    def __repr__(self) -> str:
        return f"Regex({self.pattern!r})"


class OutputFormat:
    """A checked ``response_format``: the one form every backend reads.

    Attributes:
        kind: ``json_schema``, ``json_object``, ``choice`` or ``regex``.
        schema: the JSON Schema (``json_schema``), else ``None``.
        name: a name for the schema (the model class's name, the schema's ``title``, or ``"output"``).
        choices: the options (``choice``).
        pattern: the pattern (``regex``).
        model: the pydantic model class, where one was given: ``parsed`` is an instance of it.
    """

    __slots__ = ("_key", "choices", "kind", "model", "name", "pattern", "schema")

    def __init__(
        self,
        kind: Kind,
        *,
        schema: Mapping[str, Any] | None = None,
        name: str = "output",
        choices: tuple[str, ...] = (),
        pattern: str | None = None,
        model: type | None = None,
    ) -> None:
        self.kind = kind
        self.schema = schema
        self.name = name
        self.choices = choices
        self.pattern = pattern
        self.model = model
        self._key = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    # -- identity ---------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The format as plain JSON: what cassettes and resume keys record."""
        out: dict[str, Any] = {"type": self.kind}
        if self.kind == "json_schema":
            out["name"] = self.name
            out["schema"] = self.schema
        elif self.kind == "choice":
            out["choices"] = list(self.choices)
        elif self.kind == "regex":
            out["pattern"] = self.pattern
        return out

    @property
    def digest(self) -> str:
        """A short hash of the canonical JSON: equal formats share it (grammar caches key on it)."""
        return hashlib.sha256(self._key.encode()).hexdigest()[:16]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, OutputFormat) and other._key == self._key and other.model is self.model

    def __hash__(self) -> int:
        return hash(self._key)

    def __repr__(self) -> str:
        return f"OutputFormat({self._key})"

    # -- what is sent ------------------------------------------------------------------------------

    def json_schema(self) -> dict[str, Any] | None:
        """The JSON Schema a reply must match, with choices and patterns as schemas of a string;
        ``None`` for :data:`JSON`.
        """
        if self.kind == "json_schema":
            return dict(self.schema or {})
        if self.kind == "choice":
            return {"type": "string", "enum": list(self.choices)}
        if self.kind == "regex":
            return {"type": "string", "pattern": self.pattern}
        return None

    # -- what comes back ---------------------------------------------------------------------------

    def parse(self, text: str, *, finish_reason: str | None = None) -> Any:
        """The validated value of ``text``, or :class:`StructuredOutputError` saying what is wrong.

        A reply cut by ``max_new_tokens`` (``finish_reason == "length"``) says so: the fix is a
        larger ``max_new_tokens``, not a different prompt.
        """
        try:
            return self._parse(text)
        except StructuredOutputError as exc:
            if finish_reason == "length":
                raise StructuredOutputError(
                    f"the reply was cut by max_new_tokens before it was complete {self._what()}: "
                    f"raise max_new_tokens ({exc.message})",
                    text=text,
                    errors=exc.errors,
                    finish_reason=finish_reason,
                ) from None
            exc.finish_reason = finish_reason
            raise

    def attach(self, reply: ChatResponse) -> ChatResponse:
        """``reply`` with ``parsed`` set, or :class:`StructuredOutputError` carrying the reply."""
        try:
            parsed = self.parse(reply.text, finish_reason=reply.finish_reason)
        except StructuredOutputError as exc:
            exc.reply = reply
            raise
        return replace(reply, parsed=parsed)

    def _what(self) -> str:
        return {
            "json_schema": f"JSON for schema {self.name!r}",
            "json_object": "a JSON object",
            "choice": f"one of {list(self.choices)!r}",
            "regex": f"text matching {self.pattern!r}",
        }[self.kind]

    def _fail(self, text: str, errors: tuple[str, ...]) -> StructuredOutputError:
        shown = text if len(text) <= 200 else text[:200] + "..."
        return StructuredOutputError(
            f"the reply is not {self._what()}: {'; '.join(errors)} (reply: {shown!r})",
            text=text,
            errors=errors,
        )

    def _parse(self, text: str) -> Any:
        if self.kind in ("choice", "regex"):
            return self._parse_string(text)
        try:
            value = json.loads(text)
        except ValueError as exc:
            raise self._fail(text, (f"invalid JSON: {exc}",)) from None
        if self.kind == "json_object":
            if not isinstance(value, dict):
                raise self._fail(text, (f"a JSON {type(value).__name__}, not an object",))
            return value
        if self.model is not None:
            return self._validate_model(text)
        errors = _schema_errors(value, self.schema or {})
        if errors:
            raise self._fail(text, errors)
        return value

    def _parse_string(self, text: str) -> str:
        candidates = [text, text.strip()]
        try:  # a remote backend asked for {"value": ...} (strict mode wants an object at the root)
            wrapped = json.loads(text)
        except ValueError:
            wrapped = None
        inner = wrapped.get(WRAPPER_KEY) if isinstance(wrapped, dict) and len(wrapped) == 1 else None
        if isinstance(inner, str):
            candidates.append(inner)
        elif isinstance(wrapped, str):
            candidates.append(wrapped)
        for candidate in candidates:
            if self.kind == "choice" and candidate in self.choices:
                return candidate
            if self.kind == "regex" and re.fullmatch(self.pattern or "", candidate):
                return candidate
        raise self._fail(text, (f"not {self._what()}",))

    def _validate_model(self, text: str) -> Any:
        from pydantic import ValidationError

        assert self.model is not None
        try:
            return self.model.model_validate_json(text)  # type: ignore[attr-defined]
        except ValidationError as exc:
            errors = tuple(
                f"{'.'.join(str(p) for p in e['loc']) or '(root)'}: {e['msg']}" for e in exc.errors()
            )
            raise self._fail(text, errors) from None


def output_format(value: Any) -> OutputFormat:
    """Read what a user passed as ``response_format`` into an :class:`OutputFormat`.

    Accepted: a pydantic model class, a JSON Schema dict, OpenAI's own ``response_format`` dicts
    (``{"type": "json_schema", "json_schema": {...}}``, ``{"type": "json_object"}``), :data:`JSON`,
    :class:`Choice`, :class:`Regex`, or an :class:`OutputFormat`. Anything else is an
    :class:`~llmclient.errors.InvalidRequestError` that lists these.
    """
    if isinstance(value, OutputFormat):
        return value
    if isinstance(value, JsonObject):
        return OutputFormat("json_object")
    if isinstance(value, Choice):
        return OutputFormat("choice", choices=value.options)
    if isinstance(value, Regex):
        return OutputFormat("regex", pattern=value.pattern)
    if isinstance(value, type) and hasattr(value, "model_json_schema"):  # a pydantic model class
        schema = value.model_json_schema()
        return OutputFormat("json_schema", schema=schema, name=value.__name__, model=value)
    if isinstance(value, Mapping):
        return _from_mapping(value)
    raise InvalidRequestError(
        f"response_format must be a pydantic model class, a JSON Schema dict, llmclient.JSON, "
        f"llmclient.Choice([...]) or llmclient.Regex(...), got {value!r}"
    )


def _from_mapping(value: Mapping[str, Any]) -> OutputFormat:
    kind = value.get("type")
    if kind == "json_object" and set(value) == {"type"}:
        return OutputFormat("json_object")
    if kind == "json_schema" and isinstance(value.get("json_schema"), Mapping):
        inner = value["json_schema"]
        schema = inner.get("schema")
        if not isinstance(schema, Mapping):
            raise InvalidRequestError(
                "response_format json_schema has no 'schema' dict: "
                "{'type': 'json_schema', 'json_schema': {'name': ..., 'schema': {...}}}"
            )
        return _schema_format(schema, str(inner.get("name") or schema.get("title") or "output"))
    return _schema_format(value, str(value.get("title") or "output"))


def _schema_format(schema: Mapping[str, Any], name: str) -> OutputFormat:
    """A JSON Schema, checked against its own meta-schema so a typo fails before anything is sent."""
    try:
        json.dumps(schema)
    except (TypeError, ValueError) as exc:
        raise InvalidRequestError(f"response_format schema is not plain JSON: {exc}") from None
    from jsonschema import exceptions, validators

    try:
        validators.validator_for(schema).check_schema(schema)
    except exceptions.SchemaError as exc:
        where = "/".join(str(p) for p in exc.path) or "(root)"
        raise InvalidRequestError(
            f"response_format is not a valid JSON Schema at {where}: {exc.message}"
        ) from None
    return OutputFormat("json_schema", schema=dict(schema), name=_schema_name(name))


def _schema_name(name: str) -> str:
    """A schema name as OpenAI accepts it: letters, digits, ``_`` and ``-``, at most 64."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", name)[:64] or "output"


def _schema_errors(value: Any, schema: Mapping[str, Any]) -> tuple[str, ...]:
    from jsonschema import validators

    validator = validators.validator_for(schema)(schema)
    return tuple(
        f"{'/'.join(str(p) for p in error.absolute_path) or '(root)'}: {error.message}"
        for error in sorted(validator.iter_errors(value), key=lambda e: list(map(str, e.absolute_path)))
    )
