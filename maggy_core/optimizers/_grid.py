"""Grid search: every point of the search space's grid, in order."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from maggy_core.optimizers._base import DONE, Decision, Optimizer, Suggestion
from maggy_core.searchspace import Searchspace
from maggy_core.trial import FrozenTrial


class GridSearch(Optimizer):
    """Suggests the points of :meth:`Searchspace.grid` in its order, then DONE.

    It runs ``min(num_trials, grid size)`` trials: with fewer trials than points it
    stops part-way through the grid, where the first parameters have not varied
    yet, so prefer ``num_trials >= grid size`` (or random search). Points are
    computed from their index, so a large grid is never listed in memory. Every
    parameter needs a finite grid: a DOUBLE needs a ``step``. It takes no options.
    """

    name = "gridsearch"

    def setup(self) -> None:
        self._axes = [(name, p.grid_values()) for name, p in self.searchspace.items()]
        self._total = min(self.num_trials, math.prod(len(values) for _, values in self._axes))
        self._index = 0

    @classmethod
    def check(cls, searchspace: Searchspace, options: Mapping[str, Any]) -> list[tuple[str, str]]:
        problems = super().check(searchspace, options)
        for name, p in searchspace.items():
            if not p.griddable:
                problems.append(
                    (
                        f"searchspace.{name}",
                        "gridsearch needs a finite grid but this DOUBLE has no step; add one "
                        "(e.g. ['DOUBLE', [0.0, 1.0], {'step': 0.1}]) or use DISCRETE",
                    )
                )
        return problems

    def _point(self, index: int) -> dict[str, Any]:
        # Mixed-radix decoding, last parameter fastest, as itertools.product.
        point: dict[str, Any] = {}
        for name, values in reversed(self._axes):
            index, digit = divmod(index, len(values))
            point[name] = values[digit]
        return {name: point[name] for name, _ in self._axes}

    def suggest(self) -> Suggestion | Decision:
        if self._index >= self._total:
            return DONE
        self._index += 1
        return Suggestion(self._point(self._index - 1))

    def observe(self, trial: FrozenTrial) -> None:
        """Grid search learns nothing from results."""

    def resume(self, trials: Sequence[FrozenTrial]) -> None:
        """The next point follows from how many were suggested."""
        self._index = min(len(trials), self._total)
