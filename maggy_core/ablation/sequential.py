"""Paired statistics that stay valid when the number of repeats is decided as results come in.

An adaptive study (``ablator: {name: loco, repeats: {min: 3, max: 30, precision:
0.01}}``) gives more repeats to the components whose effect is still open and stops
the others. Looking at a t-test after every repeat and stopping at the first
"significant" one would make the p-values lie: with 28 looks at a useless
component, a plain t-test at 5 % says "significant" far more often than one night
in twenty. So the study is a *group-sequential design with an alpha-spending
function*:

- **Looks.** A component is analysed only after a fixed schedule of pair counts,
  ``min, ceil(1.5 * min), ...`` up to ``max`` (:meth:`Repeats.looks`; 3, 5, 8, 12,
  18, 27, 30 for ``min 3, max 30``). Between two looks nothing is decided, which is
  also what lets the plan schedule the whole next group of repeats at once, with no
  barrier.
- **Spending.** Look ``k`` (after ``n_k`` pairs) spends the share ``w_k = (n_k -
  n_{k-1}) / max`` of the error rate (``n_0 = 0``): the linear spending function
  ``alpha * t`` of Lan and DeMets, ``t = n / max`` the information fraction. The
  shares sum to 1.
- **The bound.** At look ``k`` the interval is the paired t interval at level ``1 -
  (1 - confidence) * w_k`` and the test rejects when the t-test's p-value is below
  ``alpha * w_k``. Whatever the stopping rule, the chance that *any* look's interval
  misses the true effect is at most ``sum_k (1 - confidence) * w_k = 1 -
  confidence`` (a union bound), so the interval at the look where the component
  stopped covers with at least ``confidence``, and the *always-valid p-value*
  ``min_k p_k / w_k`` is a valid p-value at any stopping time. The union bound
  does not need the joint law of the t statistics at the looks (which depends on the
  unknown variance), at the price of being a little conservative.

With ``repeats: k`` (or ``min == max``) there is a single look with ``w = 1``: the
ordinary paired t-test and t interval. The analysis runs after the study with the
same schedule, so the numbers it reports are the ones the plan decided on. A
stopped study (a budget, failed trials) analyses a component that ended between
two looks as the next look, with that look's share, so every look is still used at
most once.

The t quantities come from :func:`scipy.stats.ttest_1samp` (p-value and
``confidence_interval``), which assume roughly normal paired differences, as the
fixed-repeat analysis always did.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from maggy_core.exceptions import SpecError

__all__ = ["GROWTH", "LookStats", "Repeats", "holm_adjust", "paired_t", "sequential_stats"]

#: Each look has about this many times the pairs of the one before.
GROWTH = 1.5
#: The most repeats a component may get (fixed or adaptive): a plan stays bounded.
MAX_REPEATS = 10_000


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class Repeats:
    """How many paired repeats each component gets.

    Attributes:
        min: Repeats every component (and the base) starts with.
        max: Repeats a component gets at most; ``min == max`` is a fixed plan.
        precision: An undecided component whose interval's half-width is at most
            this stops as "precise enough"; ``None``: never (only decided or max).
    """

    min: int
    max: int
    precision: float | None = None

    @property
    def adaptive(self) -> bool:
        return self.max > self.min

    @classmethod
    def parse(cls, value: Any, field: str = "ablator.repeats") -> Repeats:
        """Read ``repeats``: an integer (fixed) or ``{min, max, precision}``.

        Raises:
            SpecError: Under ``field`` (``field.min`` ...), naming what is allowed.
        """
        if _is_int(value):
            if value < 1:
                raise SpecError.one(field, f"must be an integer >= 1, got {value!r}")
            if value > MAX_REPEATS:
                raise SpecError.one(field, f"must be at most {MAX_REPEATS:,}, got {value:,}")
            return cls(value, value)
        if not isinstance(value, Mapping):
            raise SpecError.one(
                field, f"must be an integer >= 1 or {{min, max, precision}}, got {value!r}"
            )
        problems: list[tuple[str, str]] = []
        unknown = [str(k) for k in value if k not in ("min", "max", "precision")]
        problems += [(f"{field}.{k}", "unknown key; allowed: min, max, precision") for k in unknown]
        low, high, precision = value.get("min", 2), value.get("max"), value.get("precision")
        if not _is_int(low) or low < 2:
            problems.append((f"{field}.min", f"must be an integer >= 2, got {low!r}"))
        if not _is_int(high) or (_is_int(low) and high < low):
            problems.append((f"{field}.max", f"must be an integer >= min, got {high!r}"))
        elif cast(int, high) > MAX_REPEATS:
            problems.append((f"{field}.max", f"must be at most {MAX_REPEATS:,}, got {high:,}"))
        if precision is not None and (
            isinstance(precision, bool)
            or not isinstance(precision, int | float)
            or not 0 < precision < math.inf
        ):
            problems.append((f"{field}.precision", f"must be a positive number, got {precision!r}"))
        if problems:
            raise SpecError(problems)
        return cls(cast(int, low), cast(int, high), None if precision is None else float(precision))

    def to_dict(self) -> dict[str, Any] | int:
        """The spec's form: an integer for a fixed plan."""
        if not self.adaptive and self.precision is None:
            return self.min
        return {"min": self.min, "max": self.max, "precision": self.precision}

    def looks(self) -> tuple[int, ...]:
        """The pair counts after which a component is analysed, ascending, ending at max."""
        out = [self.min]
        while out[-1] < self.max:
            out.append(min(self.max, max(out[-1] + 1, math.ceil(out[-1] * GROWTH))))
        return tuple(out)

    def weights(self) -> tuple[float, ...]:
        """Each look's share of the error rate (linear spending); they sum to 1."""
        looks = self.looks()
        return tuple((n - prev) / self.max for prev, n in zip((0, *looks), looks, strict=False))


def holm_adjust(p_values: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values, in the order given.

    With the p-values sorted ascending as ``p_(1) <= ... <= p_(m)``, the adjusted value
    of ``p_(i)`` is ``max_{j <= i} min(1, (m - j + 1) * p_(j))``. Rejecting where the
    adjusted value is below ``alpha`` controls the family-wise error rate at ``alpha``
    for any dependence between the tests, which is why always-valid p-values can go
    into it.

    Args:
        p_values: Raw p-values in ``[0, 1]``.

    Returns:
        The adjusted p-values, one per input, in input order.
    """
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def paired_t(
    deltas: Sequence[float], level: float
) -> tuple[float | None, float | None, float | None, float | None, float | None]:
    """``(mean, std, ci_low, ci_high, p_value)`` of a one-sample t-test of ``deltas``
    against 0, with the t interval at ``level`` (SciPy's ``ttest_1samp``).

    The mean is ``None`` without values; the rest is ``None`` for fewer than two. Equal
    values (std 0, e.g. a deterministic training function) leave the t statistic
    undefined: the interval collapses to the mean and the p-value is 0.0 if the mean
    is non-zero, else 1.0.
    """
    n = len(deltas)
    if n == 0:
        return None, None, None, None, None
    if all(d == deltas[0] for d in deltas):
        mean = float(deltas[0])
        if n < 2:
            return mean, None, None, None, None
        return mean, 0.0, mean, mean, (0.0 if mean != 0.0 else 1.0)
    mean = math.fsum(deltas) / n
    if n < 2:
        return mean, None, None, None, None
    result = _ttest(tuple(float(d) for d in deltas))
    interval = result.confidence_interval(confidence_level=level)
    std = math.sqrt(math.fsum((d - mean) ** 2 for d in deltas) / (n - 1))
    return mean, std, float(interval.low), float(interval.high), float(result.pvalue)


def _p_value(deltas: Sequence[float]) -> float | None:
    """The p-value of :func:`paired_t`, without its interval."""
    if len(deltas) < 2:
        return None
    if all(d == deltas[0] for d in deltas):
        return 0.0 if deltas[0] != 0.0 else 1.0
    return float(_ttest(tuple(float(d) for d in deltas)).pvalue)


@functools.lru_cache(maxsize=1024)
def _ttest(deltas: tuple[float, ...]) -> Any:
    """SciPy's one-sample t-test against 0, kept for the other levels of the same
    look (a look's p-value and its interval come from one test)."""
    from scipy import stats  # lazy: scipy is slow to import

    with warnings.catch_warnings():
        # Nearly equal values (a model that hardly varies) make SciPy warn about
        # precision; the t statistic is still the right one to report.
        warnings.filterwarnings("ignore", "Precision loss", RuntimeWarning)
        return stats.ttest_1samp(deltas, 0.0)


@dataclass(frozen=True)
class LookStats:
    """A component's paired statistics at its latest look.

    Attributes:
        n: Pairs used.
        look: 1-based index of the look these pairs count as.
        mean, std: Of the paired differences.
        ci_low, ci_high: The look's interval (at ``1 - (1 - confidence) * w_look``).
        p_value: The always-valid p-value ``min over looks <= look of p_k / w_k``.
        half_width: Half the interval's width (``None`` without an interval).
    """

    n: int
    look: int
    mean: float | None
    std: float | None
    ci_low: float | None
    ci_high: float | None
    p_value: float | None
    half_width: float | None


def sequential_stats(
    deltas: Sequence[float], repeats: Repeats | None, confidence: float
) -> LookStats:
    """The statistics of ``deltas`` (paired differences in repeat order) under the
    group-sequential design of ``repeats`` (see the module docstring).

    ``deltas`` may be shorter than a look (a stopped study: counted as the next look)
    but its first ``n_k`` values are what look ``k`` saw. ``repeats=None`` is a single
    look at ``len(deltas)``: the plain paired t-test.
    """
    n = len(deltas)
    looks = repeats.looks() if repeats is not None else (max(n, 1),)
    weights = repeats.weights() if repeats is not None else (1.0,)
    last = next((k for k, size in enumerate(looks) if size >= n), len(looks) - 1)
    p_value: float | None = None
    for k in range(last + 1):
        size = n if k == last else looks[k]
        p_k = _p_value(deltas[:size])
        if p_k is not None:
            p_value = min(1.0, p_k / weights[k], 1.0 if p_value is None else p_value)
    level = 1.0 - (1.0 - confidence) * weights[last]
    mean, std, ci_low, ci_high, _ = paired_t(deltas, level)
    half = None if ci_low is None or ci_high is None else (ci_high - ci_low) / 2.0
    return LookStats(n, last + 1, mean, std, ci_low, ci_high, p_value, half)
