"""The run's spending: the running total of what replies cost, and ``max_cost``, the budget.

A reply's cost is known only once it is back, so the budget is kept by not starting rows: before a
row starts, the cost of the rows in flight and of the new one is projected at the mean cost of a
row so far, and a run whose total would pass ``max_cost`` starts no more rows. Rows in flight
finish and are written, so the output stays resumable; the first rows of a run (started before any
cost is known) can pass the budget by at most ``concurrency`` rows.
"""

from __future__ import annotations

from llmclient.types import Usage


class Budget:
    """What a run has spent, and whether it may start another row.

    Args:
        max_cost: the most the run may spend, in the provider's unit; ``None`` for no limit.
    """

    def __init__(self, max_cost: float | None) -> None:
        self.max_cost = max_cost
        self.spent = 0.0
        """The total cost of the replies of this run (ok and failed rows alike: both were paid)."""
        self.priced = 0
        """Replies whose cost was known."""
        self.unpriced = 0
        """Replies that came back without a cost."""

    def charge(self, usage: Usage | None) -> None:
        """Add one reply's cost to the total (a reply without usage cost nothing we know of)."""
        if usage is None:
            return
        if usage.cost is None:
            self.unpriced += 1
        else:
            self.spent += usage.cost
            self.priced += 1

    def stop_reason(self, in_flight: int) -> str | None:
        """Why no new row may start with ``in_flight`` rows running; ``None`` while it may."""
        if self.max_cost is None:
            return None
        if self.unpriced:
            return (
                f"max_cost {self.max_cost:g} cannot be kept: the backend reported no cost for a reply; "
                f"set prices = {{ input_per_million = ..., output_per_million = ... }} in its config"
            )
        mean = self.spent / self.priced if self.priced else 0.0
        if self.spent + mean * (in_flight + 1) > self.max_cost:
            return (
                f"the cost reached {self.spent:.6g} of max_cost {self.max_cost:g}; rerun with a higher "
                f"max_cost (--max-cost) to continue where it stopped"
            )
        return None
