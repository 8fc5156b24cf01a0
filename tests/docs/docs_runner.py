"""Runs the blocks of one page, as a reader would, in a working folder of its own.

Python blocks share one namespace per page, in this process (so a page can build a backend in one
block and use it in the next, as its reader does), except those marked ``own-process``; shell blocks
run in ``bash -e -o pipefail``, with this environment's ``llmclient`` first on ``PATH`` and no
terminal on stdin.

Hosted providers are reached through the loopback server (``OPENAI_BASE_URL`` and
``OPENROUTER_BASE_URL`` point at it, with fake keys), so a block that names ``openai:gpt-4o-mini``
runs with the same code. Claims are checked only for statements that sent the loopback server
nothing: its replies are a stand-in's, not a model's.
"""

from __future__ import annotations

import builtins
import io
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from docs_blocks import ROOT, SHELLS, Block, claims, holds, statements

import llmclient
from llmclient.testing.server import LoopbackServer

SAMPLE_ROWS = 3
"""Rows of examples/orders.jsonl in a page's working folder: the real file, cut short, so a page that
runs a dataset through the embedded model does it in seconds."""

SHELL_TIMEOUT = 300.0

INSTALLS = re.compile(r"\bpip3? (install|uninstall)\b|-m (pip|venv)\b|\b(apt-get|docker)\b")
"""Commands a test must never run: a block with one is refused unless the page marks it no-run."""


def working_folder(folder: Path) -> Path:
    """``folder`` with a copy of examples/ (orders.jsonl cut to :data:`SAMPLE_ROWS` rows)."""
    examples = folder / "examples"
    shutil.copytree(ROOT / "examples", examples, ignore=shutil.ignore_patterns("results-*", "__pycache__"))
    rows = (ROOT / "examples" / "orders.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
    (examples / "orders.jsonl").write_text("".join(rows[:SAMPLE_ROWS]), encoding="utf-8")
    return folder


def loopback_environment(server: LoopbackServer) -> dict[str, str]:
    """The variables that send hosted providers to ``server``, with keys that are not real."""
    return {
        "OPENAI_BASE_URL": server.base_url,
        "OPENAI_API_KEY": "sk-docs-test",
        "OPENROUTER_BASE_URL": server.base_url,
        "OPENROUTER_API_KEY": "sk-or-docs-test",
    }


@dataclass
class PageRun:
    """The blocks of one page, run in order, and the claims that did not hold."""

    folder: Path
    server: LoopbackServer
    namespace: dict[str, Any] = field(default_factory=lambda: {"__name__": "__docs__"})
    broken: list[str] = field(default_factory=list)

    def run(self, blocks: list[Block]) -> None:
        """Write the page's ``file:`` blocks, then run its other blocks in order."""
        for block in blocks:
            if block.file is not None:
                (self.folder / block.file).write_text(block.code, encoding="utf-8")
        for block in blocks:
            if not block.runs or block.file is not None:
                continue
            if block.lang in SHELLS:
                self._shell(block.where, ["bash", "-e", "-o", "pipefail", "-c", block.shell_script()])
            elif block.own_process is not None:
                self._shell(block.where, [sys.executable, "-c", block.code])
            else:
                self._python(block)

    def _python(self, block: Block) -> None:
        printed: dict[int, list[tuple[str, bool]]] = {}
        for statement in statements(block):
            self.namespace["print"] = _recording_print(block.page, printed, self.server)
            exec(statement, self.namespace)
        for line, claim in claims(block).items():
            out = printed.get(line, [])
            if any(stand_in for _, stand_in in out) or len(out) > 1:
                continue  # after a loopback stand-in's reply, or in a loop: nothing to compare
            if not out or not holds(out[0][0], claim):
                self.broken.append(f"{block.page}:{line}: printed {out!r}; its comment says {claim!r}")

    def _shell(self, where: str, command: list[str]) -> None:
        if INSTALLS.search(command[-1]):
            raise AssertionError(f"{where} installs packages: mark it <!-- no-run: installs packages -->")
        env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
        done = subprocess.run(
            command,
            cwd=self.folder,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=SHELL_TIMEOUT,
            check=False,
        )
        if done.returncode != 0:
            raise AssertionError(
                f"{where} exited {done.returncode}\n--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}"
            )

    def close(self) -> None:
        """Close every backend the page left open, as the reader's process would on exit."""
        for value in self.namespace.values():
            if isinstance(value, llmclient.ChatBackend):
                value.close()


def stand_in_reply(body: dict[str, Any]) -> str:
    """What the loopback server answers: a value of the requested JSON Schema; one word (a label, to
    a one-token call: candidate scoring on a hosted API reads the first token's alternatives); else a
    short text.
    """
    schema = (body.get("response_format") or {}).get("json_schema", {}).get("schema")
    if schema is not None:
        return json.dumps(_example(schema))
    one_token = 1 in (body.get("max_tokens"), body.get("max_completion_tokens"))
    return "positive" if one_token else "Paris."


def _example(schema: dict[str, Any]) -> Any:
    if "enum" in schema or "const" in schema:
        return schema.get("enum", [schema.get("const")])[0]
    kind = schema.get("type")
    if kind == "object":
        return {name: _example(sub) for name, sub in schema.get("properties", {}).items()}
    examples = {"string": "ramen", "boolean": True, "integer": 1, "number": 1.0, "array": [], "null": None}
    return examples.get(kind if isinstance(kind, str) else "null")


def _recording_print(
    page: str, printed: dict[int, list[tuple[str, bool]]], server: LoopbackServer
) -> Callable[..., None]:
    """``print``, which also records what each call on ``page`` printed, by its line, and whether
    the loopback stand-in had answered anything by then (in this statement).
    """
    sent = len(server.requests)

    def recording(*values: object, **options: Any) -> None:
        if options.get("file") is not None:
            builtins.print(*values, **options)
            return
        out = io.StringIO()
        builtins.print(*values, **{**options, "file": out})
        sys.stdout.write(out.getvalue())
        caller = sys._getframe(1)
        if caller.f_code.co_filename == page:
            printed.setdefault(caller.f_lineno, []).append((out.getvalue(), len(server.requests) > sent))

    return recording
