"""Every code block of README.md and docs/ runs as written, and prints what its comments say.

One test per page: its blocks run in order (docs_runner.py), against the embedded SmolLM2 or, for
hosted providers, the loopback server; a block that cannot run says why in the markdown
(docs_blocks.py). A new page is collected without any change here.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from docs_blocks import ROOT, blocks, pages
from docs_runner import PageRun, loopback_environment, stand_in_reply, working_folder

from llmclient.testing.server import LoopbackServer, OpenAIHandler

pytestmark = pytest.mark.slow

RUN = [path for path in pages() if any(block.runs for block in blocks(path))]

NAMESPACE_CLAIMS: dict[str, Any] = {
    "docs/concepts.md": lambda ns: (
        ns["greedy"][0] == ns["greedy"][1]
        and ns["sampled"][0] == ns["sampled"][2]
        and ns["reply"].finish_reason == "length"
        and ns["mine"] == ns["theirs"].tolist()
    ),
}
"""What a page's comments claim about values it does not print, checked on its namespace."""


@pytest.fixture(scope="module")
def server() -> Iterator[LoopbackServer]:
    with LoopbackServer(OpenAIHandler(stand_in_reply)) as running:
        yield running


@pytest.fixture
def page_run(server: LoopbackServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[PageRun]:
    for name in ("LLMCLIENT_BACKEND", "LLMCLIENT_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    for name, value in loopback_environment(server).items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(working_folder(tmp_path))
    run = PageRun(tmp_path, server)
    try:
        yield run
    finally:
        run.close()


@pytest.mark.parametrize("path", RUN, ids=[p.relative_to(ROOT).as_posix() for p in RUN])
def test_the_page_runs_as_written(path: Path, page_run: PageRun) -> None:
    page_run.run(blocks(path))
    assert page_run.broken == []
    page = path.relative_to(ROOT).as_posix()
    if page in NAMESPACE_CLAIMS:
        assert NAMESPACE_CLAIMS[page](page_run.namespace)


def test_every_page_parses() -> None:
    for path in pages():
        blocks(path)  # raises on a directive that is not right above a fence, or a no-run without a reason


def test_a_directive_must_sit_right_above_a_fence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import docs_blocks

    monkeypatch.setattr(docs_blocks, "ROOT", tmp_path)
    page = tmp_path / "page.md"
    page.write_text("<!-- no-run: installs -->\n\nSome prose.\n\n```bash\npip install x\n```\n")
    with pytest.raises(ValueError, match="no fence right after it"):
        blocks(page)
    page.write_text("<!-- no-run: -->\n```bash\npip install x\n```\n")
    with pytest.raises(ValueError, match="needs a value"):
        blocks(page)


def test_a_comment_that_says_the_wrong_output_fails_its_page(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, page_run: PageRun
) -> None:
    import docs_blocks

    monkeypatch.setattr(docs_blocks, "ROOT", tmp_path)
    page = tmp_path / "page.md"
    page.write_text(
        "```python\n"
        "print(1 + 1)  # 2: the sum\n"
        "try:\n"
        "    1 / 0\n"
        "except ZeroDivisionError as error:\n"
        "    print(error)  # division by ...\n"
        "print([1, 2])\n"
        "# [1, 3]\n"
        "for n in (1, 2):\n"
        "    print(n)  # one line per number\n"
        "if False:\n"
        "    print('never')  # never\n"
        "```\n"
    )
    page_run.run(blocks(page))
    assert [claim.split(":")[1] for claim in page_run.broken] == ["7", "12"]


def test_an_install_command_not_marked_no_run_is_refused_not_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, page_run: PageRun
) -> None:
    import docs_blocks

    monkeypatch.setattr(docs_blocks, "ROOT", tmp_path)
    page = tmp_path / "page.md"
    page.write_text("```bash\npython3 -m venv .venv && touch ran\n```\n")
    with pytest.raises(AssertionError, match="installs packages: mark it <!-- no-run"):
        page_run.run(blocks(page))
    assert not (page_run.folder / "ran").exists()
