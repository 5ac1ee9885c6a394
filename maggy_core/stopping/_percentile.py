"""The percentile rule: keep the trials in the top p per cent at each step."""

from __future__ import annotations

from typing import Any

from maggy_core.stopping._base import StoppingRule


class PercentileRule(StoppingRule):
    """Stops a trial whose best value so far is outside the top ``percentile`` %
    of the running averages of every trial seen at the same step: finished ones
    and those still running (itself included).

    It sees live metrics from every running trial, so it can act while few trials
    have finished: with 8 workers and ``es_min: 2`` it compares a trial with up
    to 9 others. ``percentile: 50`` is a median rule over all trials;
    ``percentile: 25`` keeps only the best quarter (more aggressive).

    The rule acts at steps that are multiples of ``interval``, once ``min_trials``
    trials have finished and at least ``max(2, min_trials)`` trials reported the
    step. The cut-off is the ``(100 - percentile)``-th percentile (linear
    interpolation) of those running averages, found in O(log n) from the two
    sorted lists kept by the base class.

    Options:
        percentile: Per cent of trials to keep at each step, 0 < percentile < 100
            (default 50).
    """

    name = "percentile"
    option_names = ("percentile",)

    def __init__(self, *, direction: str, min_trials: int, interval: int, **options: Any) -> None:
        super().__init__(direction=direction, min_trials=min_trials, interval=interval, **options)
        self.percentile = float(options.get("percentile", 50.0))

    @classmethod
    def check(cls, options: dict[str, Any]) -> list[tuple[str, str]]:
        problems = super().check(options)
        p = options.get("percentile", 50.0)
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 < p < 100:
            problems.append(
                ("es_options.percentile", f"must be a number with 0 < percentile < 100, got {p!r}")
            )
        return problems

    def decide(self, step: int, best: float, average: float) -> bool:
        done = self.finished_at.get(step, [])
        live = self.running_at.get(step, [])
        n = len(done) + len(live)
        if n < max(2, self.min_trials):
            return False
        position = (1 - self.percentile / 100) * (n - 1)
        low = int(position)
        a = _kth(done, live, low)
        b = _kth(done, live, min(low + 1, n - 1))
        return best < a + (b - a) * (position - low)


def _kth(a: list[float], b: list[float], k: int) -> float:
    """The k-th smallest (0-based) of the union of sorted lists ``a`` and ``b``,
    in O(log(len(a) + len(b)))."""
    if len(a) > len(b):
        a, b = b, a
    low, high = max(0, k - len(b) + 1), min(k + 1, len(a))
    while low < high:  # i = how many of the k+1 smallest come from a
        i = (low + high) // 2
        if a[i] < b[k - i]:
            low = i + 1
        else:
            high = i
    i = low
    candidates = []
    if i > 0:
        candidates.append(a[i - 1])
    if k - i >= 0:
        candidates.append(b[k - i])
    return max(candidates)
