"""What ``tools=`` and ``tool_choice=`` accept, read into one form: :class:`Tool`.

``tools`` takes Python functions (their schema read from type hints and a Google-style docstring, by
:mod:`llmclient.tools.signatures`), JSON Schema tool dicts in the OpenAI shape
(``{"type": "function", "function": {"name", "description", "parameters"}}``, or the inner dict alone),
pydantic model classes (the model's schema; its docstring describes it) and :class:`Tool` objects.
``tool_choice`` is ``"auto"``, ``"none"``, ``"required"`` or a tool's name (OpenAI's
``{"type": "function", "function": {"name": ...}}`` is read as the name).

jsonschema and pydantic are imported only when a schema is checked, as in :mod:`llmclient.structured`.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from llmclient._settings import suggest
from llmclient.errors import InvalidRequestError

TOOL_CHOICE_MODES = ("auto", "none", "required")
"""The ``tool_choice`` values that are not a tool's name."""

_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_EMPTY_OBJECT: Mapping[str, Any] = {"type": "object", "properties": {}}


@dataclass(frozen=True, slots=True)
class Tool:
    """A tool the model may call: the one form every backend reads.

    Attributes:
        name: what the model calls it (letters, digits, ``_`` and ``-``, at most 64).
        description: what it does, for the model.
        parameters: the JSON Schema of its arguments (an object).
        function: the Python function that runs it, where one was given (:func:`llmclient.run_tools`
            calls it); not part of equality.
        model: the pydantic model class it was read from, where it was; not part of equality.
    """

    name: str
    description: str = ""
    parameters: Mapping[str, Any] = field(default_factory=lambda: dict(_EMPTY_OBJECT))
    function: Callable[..., Any] | None = field(default=None, compare=False, repr=False)
    model: type | None = field(default=None, compare=False, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """The tool in the OpenAI shape: what is sent, and what cassettes and resume keys record."""
        function: dict[str, Any] = {"name": self.name}
        if self.description:
            function["description"] = self.description
        function["parameters"] = dict(self.parameters)
        return {"type": "function", "function": function}

    def errors(self, arguments: Any) -> tuple[str, ...]:
        """What is wrong with ``arguments`` for this tool's schema, one line each; empty when they fit."""
        return _schema_errors(arguments, self.parameters)


def to_tools(value: Any) -> tuple[Tool, ...] | None:
    """Read ``tools=`` into :class:`Tool` objects; ``None`` (or an empty list) means no tools.

    Raises :class:`~llmclient.errors.InvalidRequestError` naming the tool at fault: something that is
    no tool, a function whose schema cannot be read, a bad name, a schema that is not a JSON Schema
    object, or two tools of one name.
    """
    if value is None:
        return None
    if isinstance(value, (str, bytes, Mapping)) or callable(value) or not hasattr(value, "__iter__"):
        raise InvalidRequestError(
            f"tools takes a list of tools (functions, tool dicts, pydantic models), got one "
            f"{type(value).__name__}: pass tools=[...]"
        )
    tools = tuple(to_tool(item, f"tools[{i}]") for i, item in enumerate(value))
    seen: set[str] = set()
    for tool in tools:
        if tool.name in seen:
            raise InvalidRequestError(f"tools holds two tools named {tool.name!r}; tool names must differ")
        seen.add(tool.name)
    return tools or None


def to_tool(value: Any, where: str = "tool") -> Tool:
    """Read one tool (see :func:`to_tools`); ``where`` names it in errors."""
    if isinstance(value, Tool):
        return value
    if isinstance(value, type) and hasattr(value, "model_json_schema"):  # a pydantic model class
        return _model_tool(value, where)
    if isinstance(value, Mapping):
        return _dict_tool(value, where)
    if callable(value) and not isinstance(value, type):
        return _function_tool(value, where)
    raise InvalidRequestError(
        f"{where} must be a Python function, a tool dict ({{'type': 'function', 'function': {{'name': ..., "
        f"'parameters': {{...}}}}}}), a pydantic model class or a llmclient.Tool, got {value!r}"
    )


def tool_choice(value: Any) -> str | None:
    """Read ``tool_choice=``: a mode, or the name of the tool that must be called."""
    if value is None or (isinstance(value, str) and value):
        return value
    if isinstance(value, Mapping):
        function = value.get("function")
        name = function.get("name") if isinstance(function, Mapping) else value.get("name")
        if isinstance(name, str) and name:
            return name
    raise InvalidRequestError(
        f"tool_choice must be 'auto', 'none', 'required' or a tool's name, got {value!r}"
    )


def check_tool_choice(choice: str | None, tools: tuple[Tool, ...] | None) -> None:
    """Refuse a ``tool_choice`` that cannot be met by ``tools``: a tool's name not among them, or
    ``"required"`` (or a name) with no tools at all.
    """
    if choice is None or choice in ("auto", "none"):
        return
    names = [tool.name for tool in tools or ()]
    if not names:
        raise InvalidRequestError(f"tool_choice={choice!r} needs tools, and none are given: pass tools=[...]")
    if choice != "required" and choice not in names:
        raise InvalidRequestError(
            f"tool_choice={choice!r} names no tool given{suggest(choice, names)}; the tools: "
            f"{', '.join(repr(n) for n in names)} (or 'auto', 'none', 'required')"
        )


# -- reading each kind ---------------------------------------------------------------------------------


def _checked_name(name: Any, where: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise InvalidRequestError(
            f"{where} has name {name!r}; a tool name is 1 to 64 letters, digits, '_' or '-'"
        )
    return name


def _checked_parameters(schema: Any, where: str) -> dict[str, Any]:
    """A JSON Schema of an object, checked against its own meta-schema so a typo fails before sending."""
    if schema is None:
        return dict(_EMPTY_OBJECT)
    if not isinstance(schema, Mapping) or schema.get("type", "object") != "object":
        raise InvalidRequestError(
            f"{where} parameters must be a JSON Schema of an object ({{'type': 'object', 'properties': "
            f"{{...}}}}), got {schema!r}"
        )
    try:
        text = json.dumps(schema, sort_keys=True)
    except (TypeError, ValueError) as exc:
        raise InvalidRequestError(f"{where} parameters are not plain JSON: {exc}") from None
    problem = _schema_problem(text)
    if problem:
        raise InvalidRequestError(f"{where} parameters are not a valid JSON Schema: {problem}")
    return dict(schema)


@functools.lru_cache(maxsize=256)
def _schema_problem(text: str) -> str:
    """Where the schema ``text`` breaks its meta-schema, or an empty string (cached: checked once)."""
    from jsonschema import exceptions, validators

    schema = json.loads(text)
    try:
        validators.validator_for(schema).check_schema(schema)
    except exceptions.SchemaError as exc:
        return f"at {'/'.join(str(p) for p in exc.path) or '(root)'}: {exc.message}"
    return ""


def _dict_tool(value: Mapping[str, Any], where: str) -> Tool:
    body = value.get("function") if value.get("type") == "function" else value
    if not isinstance(body, Mapping):
        raise InvalidRequestError(f"{where} of type 'function' needs a 'function' dict, got {value!r}")
    unknown = set(body) - {"name", "description", "parameters", "strict"}
    if unknown:
        raise InvalidRequestError(
            f"{where} has unknown key(s) {sorted(unknown)}; a tool dict holds name, description, parameters"
        )
    name = _checked_name(body.get("name"), where)
    description = body.get("description") or ""
    if not isinstance(description, str):
        raise InvalidRequestError(f"{where} description must be a string, got {description!r}")
    return Tool(name, description, _checked_parameters(body.get("parameters"), f"{where} ({name!r})"))


def _model_tool(model: type, where: str) -> Tool:
    schema = dict(model.model_json_schema())  # type: ignore[attr-defined]
    schema.pop("title", None)
    description = schema.pop("description", "") or ""
    name = _checked_name(model.__name__, where)
    return Tool(name, description, _checked_parameters(schema, f"{where} ({name!r})"), model=model)


def _function_tool(function: Callable[..., Any], where: str) -> Tool:
    from llmclient.tools.signatures import function_schema

    name = _checked_name(getattr(function, "__name__", None), where)
    description, parameters = function_schema(function, where=f"{where} ({name!r})")
    return Tool(name, description, parameters, function=function)


def _schema_errors(value: Any, schema: Mapping[str, Any]) -> tuple[str, ...]:
    from llmclient.structured import _schema_errors as errors  # the one schema check of replies

    return errors(value, schema)
