"""From a ``response_format`` to an llguidance grammar, checked before anything is generated.

JSON Schemas go through llguidance's JSON compiler (objects closed, JSON laid out on one line),
``llmclient.JSON`` is a schema of any object, a ``Choice`` is a lark grammar of its options as
string literals, a ``Regex`` is llguidance's regex grammar (Rust ``regex`` syntax). A format
llguidance cannot honour, or honours only with a warning that a constraint was dropped, raises
:class:`~llmclient.errors.UnsupportedFeatureError` naming the part of the schema (a JSON pointer)
and the fix. This module imports llguidance only when it compiles, and never torch.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from llmclient.errors import UnsupportedFeatureError
from llmclient.structured import OutputFormat

if TYPE_CHECKING:
    from llguidance import LLTokenizer

JSON_OPTIONS: dict[str, Any] = {"whitespace_flexible": False, "key_separator": ": ", "item_separator": ", "}
"""How llguidance lays JSON out: on one line, as ``json.dumps`` writes it (``{"a": 1, "b": [2, 3]}``).
Free whitespace lets a small model spend its tokens on blank lines, and breaks ``": false"`` into
odd pieces (a whitespace token, then a newline, then the value). A schema's own top-level
``"x-guidance"`` key overrides this."""

ANY_OBJECT: dict[str, Any] = {"type": "object"}
"""The schema of ``llmclient.JSON``: any JSON object."""

FORMATS = ("date-time", "time", "date", "duration", "email", "hostname", "ipv4", "ipv6", "uuid", "uri")
"""The string ``format`` values llguidance constrains; any other is refused."""

_FIXES = {
    "oneOf": "use anyOf (llguidance turns oneOf into anyOf only where the options provably exclude "
    "each other)",
    "format": f"use one of the formats llguidance knows ({', '.join(FORMATS)}) or a pattern",
    "minProperties": "list the properties in 'properties' and mark them required",
    "maxProperties": "list the properties in 'properties' and mark them required",
    "uniqueItems": "drop uniqueItems (for a pydantic set[...] field, use list[...]); the reply is "
    "still checked against the whole schema",
    "pattern": "write the pattern without look-around, backreferences or \\b (llguidance uses Rust "
    "regex syntax: see docs/structured.md)",
    "regex": "write the pattern without look-around, backreferences or \\b (llguidance uses Rust "
    "regex syntax: see docs/structured.md)",
}
_DEFAULT_FIX = (
    "remove it or rewrite the schema without it, or use a backend that supports it; the local "
    "backend does not fall back to unconstrained text"
)


@dataclass(frozen=True)
class Grammar:
    """A format compiled for llguidance.

    Attributes:
        digest: the format's digest (what the caches key on).
        text: the grammar in llguidance's serialised form.
        label: the format in words, for messages.
    """

    digest: str
    text: str
    label: str


def grammar_text(fmt: OutputFormat, tokenizer: LLTokenizer | None) -> str:
    """The llguidance grammar of ``fmt``, validated (against the model's tokens once they are
    known): an error, or a warning that a constraint was dropped, is refused.
    """
    try:
        from llguidance import LLMatcher
    except ImportError as exc:
        raise UnsupportedFeatureError(
            "response_format on a local model needs llguidance, which is not installed: "
            'pip install "llmclient[hf]"'
        ) from exc
    if fmt.kind == "choice":
        # JSON string literals are valid lark literals: quotes, backslashes, newlines escaped.
        text = LLMatcher.grammar_from_lark(
            "start: " + " | ".join(json.dumps(o, ensure_ascii=False) for o in fmt.choices)
        )
    elif fmt.kind == "regex":
        text = LLMatcher.grammar_from_regex(fmt.pattern or "")
    else:
        schema = ANY_OBJECT if fmt.kind == "json_object" else closed(fmt.schema or {})
        try:
            text = LLMatcher.grammar_from_json_schema(schema, defaults=JSON_OPTIONS)  # type: ignore[arg-type]
        except ValueError as exc:
            raise _unsupported(fmt, str(exc)) from None
    failed, messages = LLMatcher.validate_grammar_with_warnings(text, tokenizer)
    if failed or messages:
        raise _unsupported(fmt, messages[0] if messages else "the grammar does not compile")
    return text


_OPEN = frozenset(
    {
        "additionalProperties",
        "patternProperties",
        "unevaluatedProperties",
        "$ref",
        "not",
        "if",
        "dependentSchemas",
    }
)
_BRANCHES = ("anyOf", "oneOf")


def closed(schema: Mapping[str, Any]) -> dict[str, Any]:
    """``schema`` with its objects closed: an object that lists ``properties`` and says nothing of
    other keys gets ``additionalProperties: false``.

    Every reply of the closed schema is valid under the original, and a small model no longer
    invents keys (``"rating_category": ...``) until ``max_new_tokens`` cuts it; the hosted backend's
    strict mode closes objects the same way. Objects combined with others are left as they are
    (closing one side of an intersection would forbid the other side's keys): the members of an
    ``anyOf``/``oneOf`` next to object keywords, objects with combinators of their own, and the whole
    schema where it uses ``allOf``. ``additionalProperties: true`` keeps an object open.
    """
    if any("allOf" in node for _, node in _walk(schema, "#")):
        return dict(schema)
    return _close(schema, combined=False)


def _close(node: Mapping[str, Any], *, combined: bool) -> dict[str, Any]:
    own_object = "properties" in node or "required" in node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _SCHEMA_MAPS and isinstance(value, Mapping):
            out[key] = {name: _sub(sub, combined=False) for name, sub in value.items()}
        elif key in _VALUES:
            out[key] = value
        elif key in _BRANCHES and isinstance(value, list):
            out[key] = [_sub(sub, combined=own_object) for sub in value]
        else:
            out[key] = _sub(value, combined=False)
    if "properties" in out and not combined and not (_OPEN | set(_BRANCHES)) & set(out):
        out["additionalProperties"] = False
    return out


def _sub(value: Any, *, combined: bool) -> Any:
    if isinstance(value, Mapping):
        return _close(value, combined=combined)
    if isinstance(value, list):
        return [_sub(item, combined=combined) for item in value]
    return value


def _unsupported(fmt: OutputFormat, message: str) -> UnsupportedFeatureError:
    """The error for a format llguidance refuses: what, where in the schema, and the fix."""
    reason = _reason(message)
    if fmt.kind == "regex":
        return UnsupportedFeatureError(
            f"response_format Regex({fmt.pattern!r}) cannot be constrained on a local model: {reason}. "
            f"Fix: {_FIXES['regex']}"
        )
    keyword, shown, where = _culprit(fmt.schema or {}, reason)
    fix = _FIXES.get(keyword, _DEFAULT_FIX)
    place = f" at {where}" if where else ""
    return UnsupportedFeatureError(
        f"response_format {label(fmt)} cannot be constrained on a local model: llguidance does not "
        f"support {shown or 'a part of it'}{place} ({reason}). Fix: {fix}"
    )


def _reason(message: str) -> str:
    """Llguidance's message in one line: its first line, with the regex parser's ``error:`` line."""
    lines = [line.strip() for line in message.strip().splitlines() if line.strip()] or ["unknown error"]
    detail = next((line[len("error:") :].strip() for line in lines if line.startswith("error:")), "")
    return f"{lines[0].rstrip(':')}: {detail}" if detail else lines[0]


def _culprit(schema: Mapping[str, Any], reason: str) -> tuple[str, str, str]:
    """The keyword llguidance complains about, the keyword as shown, and where it first occurs in
    ``schema`` as a JSON pointer (``#/properties/when``).
    """
    keys = re.search(r"Unimplemented keys: \[(.*?)\]", reason)
    fmt = re.search(r"Unknown format: (\S+)", reason)
    matches: Callable[[Mapping[str, Any]], bool]
    if keys:
        names = re.findall(r'"([^"]+)"', keys.group(1))
        keyword = names[0] if names else ""
        matches = lambda node: keyword in node  # noqa: E731
    elif fmt:
        keyword = "format"
        matches = lambda node: node.get("format") == fmt.group(1)  # noqa: E731
    elif "regex" in reason:
        keyword = "pattern"
        matches = lambda node: isinstance(node.get("pattern"), str) and _regex_fails(node["pattern"])  # noqa: E731
    else:
        keyword = next((k for k in ("oneOf", "minProperties", "maxProperties") if k in reason), "")
        matches = lambda node: keyword in node  # noqa: E731
    if not keyword:
        return "", "", ""
    for path, node in _walk(schema, "#"):
        if matches(node):
            return keyword, f"'{keyword}': {json.dumps(node[keyword])}"[:120], path
    return keyword, f"'{keyword}'", ""


def _regex_fails(pattern: str) -> bool:
    from llguidance import LLMatcher

    failed, _ = LLMatcher.validate_grammar_with_warnings(LLMatcher.grammar_from_regex(pattern))
    return failed


_SCHEMA_MAPS = frozenset({"properties", "patternProperties", "$defs", "definitions", "dependentSchemas"})
_VALUES = frozenset({"enum", "const", "default", "examples"})


def _walk(node: Any, path: str) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """Every subschema of a schema with its JSON pointer, parents first (property names and
    example values are not mistaken for keywords).
    """
    if isinstance(node, list):
        for index, value in enumerate(node):
            yield from _walk(value, f"{path}/{index}")
    if not isinstance(node, Mapping):
        return
    yield path, node
    for key, value in node.items():
        if key in _SCHEMA_MAPS and isinstance(value, Mapping):
            for name, sub in value.items():
                yield from _walk(sub, f"{path}/{key}/{name}")
        elif key not in _VALUES:
            yield from _walk(value, f"{path}/{key}")


def label(fmt: OutputFormat) -> str:
    """``fmt`` in words, for messages: ``schema 'Order'``, ``Choice(['yes', 'no'])``."""
    if fmt.kind == "json_schema":
        return f"schema {fmt.name!r}"
    return {"json_object": "llmclient.JSON", "choice": f"Choice({list(fmt.choices)!r})"}.get(
        fmt.kind, f"Regex({fmt.pattern!r})"
    )
