"""The API reference shows the docstrings' Sphinx roles as code (docs/griffe_sphinx_roles.py), not as
literal ``:class:`` text, on the same docstring griffe hands mkdocstrings."""

from __future__ import annotations

import importlib.util

import pytest
from docs_blocks import ROOT

griffe = pytest.importorskip("griffe", reason="the docs extra: pip install -e '.[docs]'")


def test_roles_in_a_loaded_docstring_become_the_code_sphinx_would_show() -> None:
    path = ROOT / "docs" / "griffe_sphinx_roles.py"
    spec = importlib.util.spec_from_file_location("griffe_sphinx_roles", path)
    assert spec is not None and spec.loader is not None
    roles = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(roles)
    module = griffe.load(
        "llmclient.pipeline.results",
        search_paths=[ROOT],
        extensions=griffe.load_extensions(roles.SphinxRoles()),
    )
    finished = module["Finished"].docstring.value
    scan = module["ResultsFile.scan"].docstring.value
    assert ":class:" not in finished and ":func:" not in finished and ":meth:" not in scan
    assert "(`compact_key()`)" in finished  # :func:`~llmclient.pipeline.keys.compact_key`
    assert "`ResultsFile.scan()`" in finished  # :meth:`ResultsFile.scan`
