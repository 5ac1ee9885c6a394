"""The median stopping rule of MAGGY (and of Google Vizier)."""

from __future__ import annotations

import bisect
from typing import Any

from maggy_core.stopping._base import StoppingRule
from maggy_core.trial import FrozenTrial, TrialStatus


class MedianRule(StoppingRule):
    """Stops a trial whose best value so far is worse than the median of the
    finished trials' running averages at the same step.

    At a report of step ``s`` (the int given to ``Reporter.broadcast``), the rule
    acts only when ``s`` is a multiple of ``interval`` and at least ``min_trials``
    finished trials reported step ``s`` too. A finished trial's running average at
    ``s`` is the mean of its values at steps ``<= s``. Steps are compared exactly:
    a finished trial that skipped step ``s`` does not count there.

    Per step, the running averages are kept in a sorted list, so a median costs
    O(1) and a report O(1); a finished trial costs O(n) per step it reported.
    Values are stored with their sign flipped for ``"min"``, so larger is always
    better inside the rule.
    """

    name = "median"

    def __init__(self, *, direction: str, min_trials: int, interval: int, **options: Any) -> None:
        super().__init__(direction=direction, min_trials=min_trials, interval=interval, **options)
        self._sign = 1.0 if direction == "max" else -1.0
        self._averages: dict[int, list[float]] = {}

    def observe_finished(self, trial: FrozenTrial) -> None:
        """Record ``trial``'s running averages at its steps; ignore other statuses."""
        if trial.status is not TrialStatus.FINISHED:
            return
        total, count, at_step = 0.0, 0, {}
        for step, value in sorted(trial.history, key=lambda report: report[0]):
            total, count = total + value, count + 1
            at_step[step] = total / count  # a step reported twice keeps its last average
        for step, average in at_step.items():
            if step % self.interval == 0:
                bisect.insort(self._averages.setdefault(step, []), self._sign * average)

    def should_stop(self, trial: FrozenTrial) -> bool:
        if not trial.history:
            return False
        step = trial.history[-1][0]
        averages = self._averages.get(step, [])
        n = len(averages)
        if step % self.interval != 0 or n == 0 or n < self.min_trials:
            return False
        median = averages[n // 2] if n % 2 else (averages[n // 2 - 1] + averages[n // 2]) / 2
        best = max(self._sign * value for _, value in trial.history)
        return best < median
