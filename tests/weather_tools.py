"""The two tools the real-model tool tests give both in-process engines (``hf:smollm2`` and vLLM):
one module, so the schemas they render, and the greedy calls compared between engines, are the same.
"""

from __future__ import annotations

from typing import Literal


def get_weather(city: str, unit: Literal["C", "F"] = "C") -> str:
    """Current weather for a city.

    Args:
        city: the city's name.
        unit: the temperature unit.
    """
    return f"21{unit} and sunny in {city}"


def get_time() -> str:
    """The current time."""
    return "12:00"
