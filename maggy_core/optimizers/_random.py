"""Random search: independent samples from the search space."""

from __future__ import annotations

import json
import random
from collections.abc import Mapping, Sequence
from typing import Any

from maggy_core.optimizers._base import DONE, Decision, Optimizer, Suggestion
from maggy_core.trial import FrozenTrial

# How often to redraw a point already suggested before accepting the repeat.
_MAX_REDRAWS = 100


def _key(params: Mapping[str, Any]) -> str:
    return json.dumps(params, sort_keys=True)


class RandomSearch(Optimizer):
    """Suggests ``num_trials`` points drawn at random, then DONE.

    When the space is finite (no DOUBLE without step), a point already suggested is
    redrawn (up to 100 times) until the space is exhausted, so small spaces are not
    sampled twice needlessly. It takes no options.

    The i-th suggestion draws from a generator seeded with ``(seed, i)``, so the
    state is the seed and a count (plus the points seen, in a finite space), and a
    resume rebuilds it from the trials: the same seed continues the very same
    sequence.
    """

    name = "randomsearch"

    def setup(self) -> None:
        self._count = 0
        finite = all(p.griddable for _, p in self.searchspace.items())
        self._size = self.searchspace.grid_size() if finite else None
        self._seen: set[str] = set()

    def suggest(self) -> Suggestion | Decision:
        if self._count >= self.num_trials:
            return DONE
        rng = random.Random(f"{self._seed}/{self._count}")
        params = self.searchspace.sample(rng)
        if self._size is not None and len(self._seen) < self._size:
            for _ in range(_MAX_REDRAWS):
                if _key(params) not in self._seen:
                    break
                params = self.searchspace.sample(rng)
            self._seen.add(_key(params))
        self._count += 1
        return Suggestion(params)

    def observe(self, trial: FrozenTrial) -> None:
        """Random search learns nothing from results."""

    def resume(self, trials: Sequence[FrozenTrial]) -> None:
        """The count and the points seen follow from the trials (no redraws)."""
        self._count = len(trials)
        if self._size is not None:
            self._seen = {_key(t.params) for t in trials}
