"""The median stopping rule of MAGGY (and of Google Vizier)."""

from __future__ import annotations

from maggy_core.stopping._base import StoppingRule


class MedianRule(StoppingRule):
    """Stops a trial whose best value so far is worse than the median of the
    FINISHED trials' running averages at the same step.

    At a report of step ``s`` (the int given to ``Reporter.broadcast``), the rule
    acts only when ``s`` is a multiple of ``interval``, at least ``min_trials``
    trials have finished, and at least ``max(1, min_trials)`` of them reported
    step ``s`` too. A finished trial's running average at ``s`` is the mean of
    its values at steps ``<= s``. Steps are compared exactly: a finished trial
    that skipped step ``s`` does not count there. Running trials do not count
    (see the ``percentile`` rule for one that uses them). A median costs O(1).
    """

    name = "median"

    def decide(self, step: int, best: float, average: float) -> bool:
        averages = self.finished_at.get(step, [])
        n = len(averages)
        if n == 0 or n < self.min_trials:
            return False
        median = averages[n // 2] if n % 2 else (averages[n // 2 - 1] + averages[n // 2]) / 2
        return best < median
