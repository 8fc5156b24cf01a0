"""GenerationParams: one meaning on every backend, checked before anything is sent."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmclient import GenerationParams, InvalidRequestError


def params(**options: Any) -> GenerationParams:
    return GenerationParams.from_options(options)


# -- values accepted ----------------------------------------------------------------------------


def test_valid_options_are_kept() -> None:
    p = params(max_new_tokens=64, temperature=0.7, top_p=0.9, top_k=40, stop=["\n\n", "END"], seed=7)
    assert p == GenerationParams(
        max_new_tokens=64, temperature=0.7, top_p=0.9, top_k=40, stop=("\n\n", "END"), seed=7
    )


def test_no_options_leave_every_value_unset() -> None:
    p = params()
    assert p == GenerationParams()
    assert p.max_new_tokens is None and p.temperature is None and p.stop is None
    assert p.extra == {}


def test_a_single_stop_string_becomes_a_tuple() -> None:
    assert params(stop="END").stop == ("END",)


@pytest.mark.parametrize(
    "options",
    [{"temperature": 0}, {"temperature": 2.5}, {"top_p": 1}, {"top_p": 1e-6}, {"top_k": 1}, {"seed": -3}],
)
def test_boundary_values_are_accepted(options: dict[str, Any]) -> None:
    params(**options)


def test_extra_passes_backend_fields_through_untouched() -> None:
    assert params(extra={"repetition_penalty": 1.1}).extra == {"repetition_penalty": 1.1}


def test_extra_none_means_no_extra() -> None:
    assert params(extra=None).extra == {}


# -- values refused: the error names the parameter and the value --------------------------------


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"temperature": -1}, r"temperature must be >= 0, got -1"),
        ({"temperature": "hot"}, r"temperature must be a number, got 'hot'"),
        ({"temperature": float("nan")}, r"temperature must be a number, got nan"),
        ({"top_p": 0}, r"top_p must be in \(0, 1\], got 0"),
        ({"top_p": 1.5}, r"top_p must be in \(0, 1\], got 1.5"),
        ({"top_k": 0}, r"top_k must be >= 1, got 0"),
        ({"top_k": 2.0}, r"top_k must be an integer, got 2.0"),
        ({"max_new_tokens": 0}, r"max_new_tokens must be >= 1, got 0"),
        ({"max_new_tokens": 1.5}, r"max_new_tokens must be an integer, got 1.5"),
        ({"max_new_tokens": True}, r"max_new_tokens must be an integer, got True"),
        ({"max_tokens": -5}, r"max_new_tokens must be >= 1, got -5"),
        ({"stop": ""}, r"stop must be a non-empty string or a list of them, got \(''.*\)"),
        ({"stop": [1]}, r"stop must be a non-empty string or a list of them, got \[1\]"),
        ({"stop": ["ok", ""]}, r"stop must be .*got \['ok', ''\]"),
        ({"stop": 5}, r"stop must be .*got 5"),
        ({"seed": "x"}, r"seed must be an integer, got 'x'"),
        ({"seed": False}, r"seed must be an integer, got False"),
        ({"extra": ["not", "a", "dict"]}, r"extra must be a dict"),
    ],
)
def test_a_bad_value_names_the_parameter_and_the_value(options: dict[str, Any], expected: str) -> None:
    with pytest.raises(InvalidRequestError, match=expected):
        params(**options)


def test_validate_checks_directly_built_params() -> None:
    with pytest.raises(InvalidRequestError, match="top_k must be >= 1, got -2"):
        GenerationParams(top_k=-2).validate()


# -- names --------------------------------------------------------------------------------------


def test_max_tokens_is_an_alias_of_max_new_tokens() -> None:
    assert params(max_tokens=32) == params(max_new_tokens=32)


def test_max_tokens_none_is_ignored() -> None:
    assert params(max_tokens=None, max_new_tokens=8).max_new_tokens == 8


def test_max_tokens_and_max_new_tokens_together_are_an_error() -> None:
    with pytest.raises(InvalidRequestError, match="both max_tokens and max_new_tokens"):
        params(max_tokens=10, max_new_tokens=20)


def test_max_length_is_refused_with_the_hint_to_use_max_new_tokens() -> None:
    with pytest.raises(InvalidRequestError, match=r"'max_length'.*only new tokens: use max_new_tokens"):
        params(max_length=100)


def test_do_sample_gets_the_temperature_hint() -> None:
    with pytest.raises(InvalidRequestError, match=r"'do_sample'.*temperature=0 for greedy"):
        params(do_sample=False)


@pytest.mark.parametrize(
    ("typo", "meant"),
    [("temprature", "temperature"), ("top_pp", "top_p"), ("max_new_token", "max_new_tokens")],
)
def test_a_typo_suggests_the_parameter_meant(typo: str, meant: str) -> None:
    with pytest.raises(
        InvalidRequestError, match=rf"unknown generation parameter '{typo}'; did you mean '{meant}'\?"
    ):
        params(**{typo: 1})


def test_an_unrelated_unknown_name_points_at_extra() -> None:
    with pytest.raises(InvalidRequestError, match=r"'repetition_penalty'.*go in extra="):
        params(repetition_penalty=1.1)


def test_the_source_names_where_the_options_came_from() -> None:
    with pytest.raises(InvalidRequestError, match="unknown setting in defaults 'temprature'"):
        GenerationParams.from_options({"temprature": 1}, source="setting in defaults")


# -- merging and greedy -------------------------------------------------------------------------


def test_merged_lets_per_call_values_override_defaults() -> None:
    defaults = params(max_new_tokens=128, temperature=0, stop="END")
    merged = defaults.merged(params(temperature=0.8, seed=1))
    assert merged == GenerationParams(max_new_tokens=128, temperature=0.8, stop=("END",), seed=1)


def test_merged_keeps_defaults_where_the_call_sets_nothing() -> None:
    defaults = params(max_new_tokens=128, temperature=0)
    assert defaults.merged(GenerationParams()) == defaults


def test_merged_merges_extra_with_per_call_keys_winning() -> None:
    defaults = params(extra={"a": 1, "b": 2})
    merged = defaults.merged(params(extra={"b": 3, "c": 4}))
    assert merged.extra == {"a": 1, "b": 3, "c": 4}
    assert defaults.extra == {"a": 1, "b": 2}  # the defaults are not changed


def test_merged_does_not_change_either_side() -> None:
    defaults = params(temperature=0)
    override = params(temperature=1)
    defaults.merged(override)
    assert defaults.temperature == 0 and override.temperature == 1


@pytest.mark.parametrize(("temperature", "greedy"), [(0, True), (0.0, True), (0.7, False), (None, False)])
def test_greedy_means_temperature_zero(temperature: float | None, greedy: bool) -> None:
    assert GenerationParams(temperature=temperature).greedy is greedy


# -- merging, for any values --------------------------------------------------------------------

_maybe_int = st.none() | st.integers(min_value=1, max_value=10_000)
_maybe_temperature = st.none() | st.floats(min_value=0, max_value=5)
_maybe_top_p = st.none() | st.floats(min_value=0.01, max_value=1)
_maybe_stop = st.none() | st.lists(st.text(min_size=1, max_size=5), min_size=1, max_size=3)
_options = st.fixed_dictionaries(
    {},
    optional={
        "max_new_tokens": _maybe_int,
        "temperature": _maybe_temperature,
        "top_p": _maybe_top_p,
        "top_k": _maybe_int,
        "stop": _maybe_stop,
        "seed": st.none() | st.integers(),
    },
)


@settings(max_examples=60, deadline=None)
@given(default_options=_options, call_options=_options)
def test_merged_takes_each_value_from_the_call_when_set_else_from_the_defaults(
    default_options: dict[str, Any], call_options: dict[str, Any]
) -> None:
    defaults, call = params(**default_options), params(**call_options)
    merged = defaults.merged(call)
    for name in ("max_new_tokens", "temperature", "top_p", "top_k", "stop", "seed"):
        expected = getattr(call, name) if getattr(call, name) is not None else getattr(defaults, name)
        assert getattr(merged, name) == expected
