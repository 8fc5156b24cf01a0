"""Tool calls arriving in pieces: the fragments streams carry, merged into whole calls.

A stream delta carries tool-call fragments in ``details["tool_calls"]``, in the OpenAI chunk shape:
``[{"index": 0, "id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{"}}]``.
Both backends yield them so (the local backend too), and :class:`CallFragments` merges them, by rules
that survive what real servers send:

- ``index`` keys a call, but a fragment with a new ``id`` starts a new call even under an index already
  seen (Ollama sends every parallel call under ``index: 0``, each with its own id);
- without ``index``, a fragment continues the latest call;
- a name equal to the call's name so far is a repeat, not a piece (servers that send the full name in
  every fragment); a different one continues it under an index (a name sent in pieces) and starts a
  new call without one;
- a fragment with a name (and arguments, or a new name) arriving when the call's arguments are already
  a whole JSON value starts a new call (parallel calls without ids);
- ``arguments`` sent as a JSON object (not a string) are the whole arguments;
- ids may come on the first fragment only, on a later one, or never, or empty: a missing id is filled
  in by the base class (``call_<n>``) once the reply is whole.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from llmclient.tools.calls import ToolCall, arguments_text


@dataclass
class _Call:
    """One call being assembled."""

    order: tuple[int, int]
    index: int | None
    id: str = ""
    name: str = ""
    arguments: str = ""

    def complete(self) -> bool:
        """Whether the arguments so far are a whole JSON value."""
        if not self.arguments.strip():
            return False
        try:
            json.loads(self.arguments)
        except ValueError:
            return False
        return True


class CallFragments:
    """Merges tool-call fragments, delta by delta, into the calls of one reply."""

    def __init__(self) -> None:
        self._calls: list[_Call] = []
        self._by_id: dict[str, _Call] = {}
        self._by_index: dict[int, _Call] = {}

    def __bool__(self) -> bool:
        return bool(self._calls)

    def add(self, fragments: Any) -> None:
        """Take the fragments of one delta (a list of dicts; a lone dict is taken as a list of one)."""
        items: Iterable[Any] = [fragments] if isinstance(fragments, Mapping) else fragments or ()
        for fragment in items:
            if isinstance(fragment, Mapping):
                self._merge(fragment)

    def calls(self) -> list[ToolCall]:
        """The calls so far, ordered by index, then by arrival (ids may still be empty)."""
        ordered = sorted(self._calls, key=lambda c: c.order)
        return [ToolCall(id=c.id, name=c.name, arguments=c.arguments) for c in ordered]

    def _merge(self, fragment: Mapping[str, Any]) -> None:
        function = fragment.get("function")
        body: Mapping[str, Any] = function if isinstance(function, Mapping) else {}
        call_id = _text(fragment.get("id"))
        index = fragment.get("index")
        index = index if isinstance(index, int) and not isinstance(index, bool) else None
        name = _text(body.get("name"))
        raw = body.get("arguments")
        call = self._route(call_id, index, name, raw)
        if call_id and not call.id:
            call.id = call_id
            self._by_id[call_id] = call
        if name and name != call.name:
            call.name += name
        if isinstance(raw, Mapping) or (raw is not None and not isinstance(raw, str)):
            call.arguments = arguments_text(body)  # an object: the whole arguments
        elif raw:
            call.arguments += raw

    def _route(self, call_id: str, index: int | None, name: str, raw: Any) -> _Call:
        """The call a fragment belongs to: found by id, by index, or the latest; or a new one."""
        if call_id and call_id in self._by_id:
            return self._by_id[call_id]
        latest = self._calls[-1] if self._calls else None
        current = self._by_index.get(index) if index is not None else latest
        if current is None:
            return self._new(index)
        if call_id and current.id and current.id != call_id:
            return self._new(index)  # another call under the same index (Ollama)
        if name and current.name and (name != current.name or raw) and current.complete():
            return self._new(index)  # the next call, from a server that sends no ids
        if index is None and name and current.name and name != current.name and not call_id:
            return self._new(index)
        return current

    def _new(self, index: int | None) -> _Call:
        call = _Call(order=(index if index is not None else 0, len(self._calls)), index=index)
        self._calls.append(call)
        if index is not None:
            self._by_index[index] = call
        return call


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""
