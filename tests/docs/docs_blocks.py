"""The fenced code blocks of README.md and docs/*.md, and the conventions that say how each one runs.

Every ``python``, ``bash``, ``sh`` and ``console`` block runs in the test suite, unless the markdown
says why not, visibly, on the line before its fence:

- ``<!-- no-run: REASON -->``: the block is not run (an install command, a placeholder, a GPU or a
  cluster it needs); the reason is required.
- ``<!-- file: NAME -->``: the block (any language) is a file the page's code reads; it is written
  to ``NAME`` in the page's working folder before any block of the page runs.
- ``<!-- own-process: REASON -->``: a python block run in a process of its own (it sets something
  process-wide, such as OpenTelemetry's global providers); its claims are not checked.

What a block's comments claim is checked where a block prints (see :func:`claims`): a comment at the
end of a ``print(...)`` line, or the comment lines right below a top-level one, is what it prints.
"""

from __future__ import annotations

import ast
import re
import textwrap
from dataclasses import dataclass
from pathlib import Path
from types import CodeType

ROOT = Path(__file__).resolve().parents[2]

FENCE = re.compile(r"^(?P<indent>[ \t]*)```(?P<lang>[\w+-]*)[ \t]*$")
DIRECTIVE = re.compile(r"^\s*<!--\s*(?P<kind>[\w-]+)\s*:\s*(?P<value>.*?)\s*-->\s*$")
KINDS = ("no-run", "file", "own-process")
SHELLS = ("bash", "sh", "console")
RUNNABLE = ("python", *SHELLS)


@dataclass(frozen=True)
class Block:
    """One fenced block: where it is, its language, its code, and what its directive says."""

    page: str
    line: int
    lang: str
    code: str
    no_run: str | None = None
    file: str | None = None
    own_process: str | None = None

    @property
    def where(self) -> str:
        """``page:line`` of the opening fence."""
        return f"{self.page}:{self.line}"

    @property
    def runs(self) -> bool:
        """Whether the collector runs this block (as code, or by writing it as a file)."""
        return self.file is not None or (self.lang in RUNNABLE and self.no_run is None)

    def shell_script(self) -> str:
        """The commands of a shell block; in a ``console`` block, the lines after ``$ `` only."""
        if self.lang != "console":
            return self.code
        return "\n".join(line[2:] for line in self.code.splitlines() if line.startswith("$ "))


def pages() -> list[Path]:
    """README.md and every page in docs/."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def blocks(path: Path) -> list[Block]:
    """The fenced blocks of one page, in order; a directive that precedes no fence is an error."""
    page = path.relative_to(ROOT).as_posix()
    lines = path.read_text(encoding="utf-8").splitlines()
    found: list[Block] = []
    directive: tuple[str, str, int] | None = None
    index = 0
    while index < len(lines):
        said = DIRECTIVE.match(lines[index])
        if said and said.group("kind") in KINDS:
            if directive is not None:
                raise ValueError(f"{page}:{directive[2]}: a directive with no fence after it")
            directive = (said.group("kind"), said.group("value"), index + 1)
            index += 1
            continue
        fence = FENCE.match(lines[index])
        if fence is None:
            if directive is not None and lines[index].strip():
                raise ValueError(f"{page}:{directive[2]}: a directive with no fence right after it")
            index += 1
            continue
        end = index + 1
        while end < len(lines) and not re.match(r"^\s*```\s*$", lines[end]):
            end += 1
        code = textwrap.dedent("\n".join(lines[index + 1 : end])) + "\n"
        kind, value = (directive or ("", ""))[:2]
        if kind and not value:
            raise ValueError(f"{page}:{index + 1}: {kind} needs a value (a reason, or a file name)")
        found.append(
            Block(
                page,
                index + 1,
                fence.group("lang"),
                code,
                no_run=value if kind == "no-run" else None,
                file=value if kind == "file" else None,
                own_process=value if kind == "own-process" else None,
            )
        )
        directive = None
        index = end + 1
    if directive is not None:
        raise ValueError(f"{page}:{directive[2]}: a directive with no fence after it")
    return found


def statements(block: Block) -> list[CodeType]:
    """A python block as its top-level statements, each compiled so that tracebacks (and the
    line numbers :func:`claims` uses) are the page's own, and without this module's ``__future__``
    imports (postponed annotations would break a pydantic model defined in a block).
    """
    tree = ast.parse("\n" * block.line + block.code, filename=block.page)
    module = [ast.Module(body=[node], type_ignores=[]) for node in tree.body]
    return [compile(one, block.page, "exec", dont_inherit=True) for one in module]


def claims(block: Block) -> dict[int, str]:
    """What a python block's comments say it prints, by the page line of the ``print`` call.

    A one-line ``print(...)`` call claims the comment at the end of its line; a top-level one with
    none claims the comment lines right below it (each ``# `` stripped, joined with newlines). A
    comment that starts with ``e.g.`` is an illustration and claims nothing.
    """
    source = "\n" * block.line + block.code
    lines = source.splitlines()
    tree = ast.parse(source, filename=block.page)
    top = {id(node.value) for node in tree.body if isinstance(node, ast.Expr)}
    found: dict[int, str] = {}
    for call in ast.walk(tree):
        is_print = isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id == "print"
        if not is_print or call.end_lineno != call.lineno:
            continue
        tail = lines[call.lineno - 1][call.end_col_offset or 0 :].strip()
        claim = tail[1:].strip() if tail.startswith("#") else ""
        if not tail and id(call) in top:
            below = []
            for following in lines[call.lineno :]:
                if not following.startswith("#"):
                    break
                below.append(following[2:] if following.startswith("# ") else following[1:])
            claim = "\n".join(below)
        if claim and not claim.startswith("e.g."):
            found[call.lineno] = claim
    return found


def holds(printed: str, claim: str) -> bool:
    """Whether ``printed`` is what ``claim`` says: the same text; or the claim goes on after it
    with prose (``True: greedy is deterministic``); or what the claim puts before ``: `` starts the
    printed line; ``...`` in a claim stands for any text.
    """
    printed = printed.rstrip("\n")
    if printed == claim:
        return True
    if claim.startswith(printed) and claim[len(printed)] in ":,;( " and printed:
        return True
    head = claim.split(": ", 1)[0]
    if head != claim and printed.startswith(head + " "):
        return True
    if "..." in claim:
        pattern = ".*".join(re.escape(part.strip()) for part in claim.split("..."))
        return re.match(pattern, printed, re.S) is not None
    return False
