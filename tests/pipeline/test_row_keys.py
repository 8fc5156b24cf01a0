"""Row keys: the same bytes as every earlier release made, however the id is spelled."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from llmclient.pipeline import row_key
from llmclient.pipeline.keys import MissingIdFieldError, RowKeys, canonical_id, key_text

RUN = "0ba82e2e69b81dc226397b78"
"""A run fingerprint, as run_fingerprint makes them."""

# Made by the row-key code of 0.x before RowKeys (git show da7fdea:llmclient/pipeline/keys.py): a
# different key would make every rerun of an existing results file send every row again.
EARLIER_KEYS: list[tuple[Any, str]] = [
    (7, "f99fdc28271709f3c6971df6"),
    ("7", "f99fdc28271709f3c6971df6"),
    (7.0, "f99fdc28271709f3c6971df6"),
    (-3, "cc56fa38ef06121828c67dce"),
    (2**70, "5edc3cc769d904014c4624eb"),
    ('naïve "q"\n\t\\', "6be00b609c9a20c38db08263"),
    ("\ud800", "af841a2beb799555d2c1bb99"),
    (7.5, "07eb80e7eadc98164b20ef31"),
    (Decimal("7.50"), "07eb80e7eadc98164b20ef31"),
    (True, "944e00551512673a44210fd4"),
    ([1, "a"], "286dbfc7be13898899c81037"),
    ({"b": 1}, "74b0ab28d3bd7cdee91cdd94"),
    (float("nan"), "9f261c262a8761c040fcc3a4"),
]


@pytest.mark.parametrize(("row_id", "key"), EARLIER_KEYS, ids=[repr(i) for i, _ in EARLIER_KEYS])
def test_an_id_keys_its_row_as_earlier_releases_did(row_id: Any, key: str) -> None:
    got_id, slot = RowKeys("id", RUN).of(0, {"id": row_id, "t": "x"})
    assert got_id is row_id
    assert key_text(slot) == key == row_key({"id": canonical_id(row_id)}, RUN)


def test_without_an_id_field_the_whole_row_is_the_key_as_before() -> None:
    row = {"t": "é", "id": None, "n": [1, 2.5]}
    index, slot = RowKeys(None, RUN).of(3, row)
    assert (index, key_text(slot)) == (3, "28cae437bfc44de4b2946b01") and key_text(slot) == row_key(row, RUN)
    assert row_key({"missing id": "id", "row": row}, RUN) == "c64a713de14a1524f46d5884"


def test_an_id_field_that_needs_escaping_is_written_as_the_encoder_writes_it() -> None:
    field = 'order "no"\n'
    assert key_text(RowKeys(field, RUN).of(0, {field: 12})[1]) == row_key({field: "12"}, RUN)


@pytest.mark.parametrize("row", [{"t": "x"}, {"id": None}], ids=["absent", "null"])
def test_a_row_without_its_id_is_refused_naming_the_field(row: dict[str, Any]) -> None:
    with pytest.raises(MissingIdFieldError, match=r"row 4 has (no|a null) id field 'id'"):
        RowKeys("id", RUN).of(4, row)
