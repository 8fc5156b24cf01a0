"""What a reply cost: the provider's own figure where it reports one, else the configured prices.

OpenRouter reports an authoritative ``usage.cost`` on every reply (streams too, in the last chunk);
the wire codec reads it into :attr:`Usage.cost <llmclient.types.Usage.cost>` with
``cost_source = "provider"``. Where the provider reports none, a backend configured with
``prices = { input_per_million = ..., output_per_million = ... }`` gets a cost computed here (the one
place prices are applied), with ``cost_source = "config"``. Static price tables are wrong behind
routers, so a provider's figure always wins over the configured one.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, replace

from llmclient._settings import Settings
from llmclient.types import ChatResponse, Usage


@dataclass(frozen=True)
class Prices(Settings):
    """Per-token prices of a backend's model, in the unit you bill in (OpenRouter's is US dollars).

    Written as ``prices = { input_per_million = 0.15, output_per_million = 0.60 }`` in a backend's
    table; both or neither. Used only where the provider reports no cost of its own.
    """

    input_per_million: float | None = None
    """Price of one million prompt tokens."""
    output_per_million: float | None = None
    """Price of one million completion tokens."""

    @property
    def known(self) -> bool:
        """Whether prices were configured."""
        return self.input_per_million is not None and self.output_per_million is not None

    def problems(self) -> Iterator[tuple[str, str, str]]:
        """Each price a finite number of 0 or more; both given, or neither."""
        for name in ("input_per_million", "output_per_million"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value >= 0):
                yield name, "must be a price of 0 or more", f"Set {name} to the price of a million tokens"
        given = [n for n in ("input_per_million", "output_per_million") if getattr(self, n) is not None]
        if len(given) == 1:
            missing = "output_per_million" if given[0] == "input_per_million" else "input_per_million"
            yield given[0], f"is set without {missing}", f"Set {missing} too (0 if it is free)"

    def cost(self, usage: Usage) -> float:
        """What ``usage`` costs at these prices."""
        assert self.input_per_million is not None and self.output_per_million is not None
        return (
            usage.prompt_tokens * self.input_per_million + usage.completion_tokens * self.output_per_million
        ) / 1_000_000


NO_PRICES = Prices()
"""Prices not configured: the default of the ``prices`` setting."""


def priced_usage(usage: Usage | None, prices: Prices | None) -> Usage | None:
    """``usage`` with its cost from ``prices`` where the provider reported none."""
    if usage is None or usage.cost is not None or prices is None or not prices.known:
        return usage
    return replace(usage, cost=prices.cost(usage), cost_source="config")


def priced(reply: ChatResponse, prices: Prices | None) -> ChatResponse:
    """``reply`` with its usage priced (:func:`priced_usage`); the same object when nothing changes."""
    usage = priced_usage(reply.usage, prices)
    return reply if usage is reply.usage else replace(reply, usage=usage)
