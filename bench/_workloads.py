"""Workloads of the benchmarks in ``bench/``: training functions made of sleeps.

Spark workers import this module by name (``bench._workloads``), so the scripts put
the repository root on ``PYTHONPATH`` before Spark starts (see ``bench/_common.py``).
It imports only the standard library and, for :class:`BudgetedASHA`, maggy's ASHA.

Synthetic learning curves (``bench/optimizers.py``)
---------------------------------------------------
A configuration has three hyperparameters (:data:`CURVE_SPACE`):

* ``width`` and ``decay`` set the level the curve saturates at
  (:func:`base_level`, 1.0 at ``width=0.7, decay=0.35``, down to 0.2), and
  ``width`` sets the time of an epoch (:func:`epoch_seconds`, 0.02 to 0.08 s:
  wider models are slower);
* ``lr`` (log scale) sets the learning speed: a high ``lr`` learns fast but
  levels off lower, a low ``lr`` learns slowly (:func:`time_constant`), so a slow
  starter often ends higher than a fast one and the ranking after 1 or 3 epochs
  is imperfect (a Spearman correlation of about 0.5 with the final ranking after
  1 epoch, 0.8 after 3, 0.99 after 9).

The value after ``e`` epochs is ``level * (1 - exp(-e / tau))`` (:func:`curve_value`).
About 3 % of the space reaches 95 % of the best possible value at 27 epochs
(:func:`best_possible`).
"""

from __future__ import annotations

import math
import os
import random
import socket
import time
from typing import TYPE_CHECKING, Any

from maggy_core.examples.sleep import resumed_epoch
from maggy_core.optimizers import DONE, Decision, Suggestion
from maggy_core.optimizers._asha import ASHA

if TYPE_CHECKING:
    from maggy_core.reporter import Checkpoint, Reporter
    from maggy_core.searchspace import Searchspace

__all__ = [
    "CURVE_SPACE",
    "BudgetedASHA",
    "ablation_sleep",
    "ablation_seconds",
    "best_possible",
    "curve_value",
    "crossing_curve",
    "epoch_seconds",
    "resumable_curve",
    "run_config_for_budget",
]

CURVE_SPACE: dict[str, list[Any]] = {
    "width": ["DOUBLE", [0.0, 1.0]],
    "decay": ["DOUBLE", [0.0, 1.0]],
    "lr": ["DOUBLE", [1e-3, 1.0], "log"],
}
_LR_LO, _LR_HI = 1e-3, 1.0
_BEST_WIDTH, _BEST_DECAY = 0.7, 0.35  # inside the space: base_level is 1.0 there


def speed(lr: float) -> float:
    """``lr`` mapped to 0 (slowest, lr = 1e-3) .. 1 (fastest, lr = 1)."""
    return (math.log10(lr) - math.log10(_LR_LO)) / (math.log10(_LR_HI) - math.log10(_LR_LO))


def time_constant(s: float) -> float:
    """Epochs to reach 63 % of the level: 0.5 at the fastest, 5.5 at the slowest."""
    return 0.5 + 5.0 * (1.0 - s) ** 2


def lr_penalty(s: float) -> float:
    """Share of the level kept at speed ``s``: 1.0 at s = 0.4, 0.86 at s = 1."""
    return 1.0 - 0.4 * (s - 0.4) ** 2


def base_level(width: float, decay: float) -> float:
    """Level from ``width`` and ``decay``: 1.0 at (0.7, 0.35), 0.2 far from it."""
    d2 = (width - _BEST_WIDTH) ** 2 / 0.35 + (decay - _BEST_DECAY) ** 2 / 0.25
    return 0.2 + 0.8 * math.exp(-d2)


def epoch_seconds(width: float) -> float:
    """Seconds one epoch sleeps: 0.02 (width 0) .. 0.08 (width 1)."""
    return 0.02 + 0.06 * width


def curve_value(width: float, decay: float, lr: float, epochs: float) -> float:
    """The configuration's metric after ``epochs`` epochs."""
    s = speed(lr)
    level = base_level(width, decay) * lr_penalty(s)
    return level * (1.0 - math.exp(-epochs / time_constant(s)))


def best_possible(epochs: float) -> float:
    """The largest :func:`curve_value` over the space after ``epochs`` epochs.

    The value is ``base_level * (lr part)``: ``base_level`` peaks at 1.0 inside the
    space, and the ``lr`` part is maximised over a fine grid of speeds, then refined.
    """

    def lr_part(s: float) -> float:
        return lr_penalty(s) * (1.0 - math.exp(-epochs / time_constant(s)))

    n = 20000
    i = max(range(n + 1), key=lambda k: lr_part(k / n))
    lo, hi = max(0.0, (i - 1) / n), min(1.0, (i + 1) / n)
    for _ in range(60):  # golden-section search around the best grid point
        a, b = hi - (hi - lo) / 1.618033988749895, lo + (hi - lo) / 1.618033988749895
        if lr_part(a) < lr_part(b):
            lo = a
        else:
            hi = b
    return max(lr_part(i / n), lr_part((lo + hi) / 2))


def _train_epochs(width: float, decay: float, lr: float, epochs: int, report: Any) -> float:
    """Sleep ``epochs`` epochs of :func:`epoch_seconds` each, calling ``report`` after each."""
    step = epoch_seconds(width)
    value = 0.0
    for epoch in range(1, epochs + 1):
        time.sleep(step)
        value = curve_value(width, decay, lr, epoch)
        if report is not None:
            report(value, step=epoch)
    return value


def crossing_curve(
    width: float,
    decay: float,
    lr: float,
    reporter: Reporter,
    budget: float | None = None,
    epochs: int = 27,
) -> float:
    """Train for ``budget`` epochs (ASHA gives it) or ``epochs`` (random search).

    Broadcasts the curve after every epoch, like a real training loop would.

    Returns:
        The value after the last epoch.

    Raises:
        ValueError: The number of epochs is not positive.
    """
    n = math.ceil(budget if budget is not None else epochs)
    if n < 1:
        raise ValueError(f"the number of epochs must be positive, got {budget or epochs!r}")
    return _train_epochs(width, decay, lr, n, reporter.broadcast)


def resumable_curve(
    width: float,
    decay: float,
    lr: float,
    reporter: Reporter,
    budget: float,
    checkpoint: Checkpoint | None = None,
) -> float:
    """:func:`crossing_curve` for ASHA with checkpointed promotions: a trial given
    the checkpoint of its configuration's previous rung runs only the epochs past
    it; it saves ``{"epoch": e}`` when done.

    Returns:
        The value after the last epoch.
    """
    start = resumed_epoch(checkpoint)
    n = math.ceil(budget)
    step = epoch_seconds(width)
    value = curve_value(width, decay, lr, start)
    for epoch in range(start + 1, n + 1):
        time.sleep(step)
        value = curve_value(width, decay, lr, epoch)
        reporter.broadcast(value, step=epoch)
    reporter.save_checkpoint({"epoch": max(start, n)})
    return value


def run_config_for_budget(item: tuple[int, dict[str, Any], int]) -> dict[str, Any]:
    """One trial of the synchronous successive-halving baseline (a Spark ``map``).

    Args:
        item: ``(config id, params, budget in epochs)``.

    Returns:
        ``config``, ``budget``, ``params``, ``metric``, ``start`` (unix time),
        ``duration`` (seconds inside the training loop, as the engine measures it) and
        ``worker`` (the Python worker process that ran it).
    """
    config, params, budget = item
    start = time.time()
    t0 = time.perf_counter()
    metric = _train_epochs(params["width"], params["decay"], params["lr"], int(budget), None)
    return {
        "config": config,
        "budget": budget,
        "params": params,
        "metric": metric,
        "start": start,
        "duration": time.perf_counter() - t0,
        "worker": f"{socket.gethostname()}:{os.getpid()}",
    }


class BudgetedASHA(ASHA):
    """ASHA that stops suggesting once its trials' budgets add up to ``total_budget``.

    Exactly maggy's ASHA (``optimizer: asha``) otherwise: the benchmark names it
    ``bench._workloads:BudgetedASHA`` so that ASHA spends the same number of epochs
    as the methods it is compared with. A suggestion that would exceed the total is
    not made (the search ends instead), so ASHA never spends more than the others.

    Options: those of ASHA, and ``total_budget`` (epochs, > 0).
    """

    name = "asha"
    option_names = (*ASHA.option_names, "total_budget")

    def setup(self) -> None:
        self.total_budget = float(self.options.get("total_budget", math.inf))
        self.spent = 0.0
        super().setup()

    @classmethod
    def check(cls, searchspace: Searchspace, options: Any) -> list[tuple[str, str]]:
        problems = super().check(searchspace, options)
        total = options.get("total_budget", math.inf)
        if isinstance(total, bool) or not isinstance(total, (int, float)) or not total > 0:
            problems.append(
                ("optimizer.options.total_budget", f"must be a number > 0, got {total!r}")
            )
        return problems

    def suggest(self) -> Suggestion | Decision:
        if self.spent >= self.total_budget:
            return DONE
        decision = super().suggest()
        if isinstance(decision, Suggestion):
            budget = float(decision.budget or 0.0)
            if self.spent + budget > self.total_budget + 1e-9:
                self.spent = self.total_budget
                return DONE
            self.spent += budget
        return decision


# --------------------------------------------------------------------------- ablation


def ablation_seconds(ablated: str | None, seed: int, low: float = 0.3, high: float = 1.5) -> float:
    """Seconds an ablation trial sleeps: uniform in [low, high], fixed by the
    component left out and the repeat's seed."""
    return low + (high - low) * random.Random(f"{ablated}/{seed}").random()


def ablation_sleep(
    ablated: str | None,
    components: dict[str, bool],
    seed: int,
    reporter: Reporter,
    low: float = 0.3,
    high: float = 1.5,
    steps: int = 5,
) -> float:
    """An ablation trial that sleeps :func:`ablation_seconds` in ``steps`` parts.

    The metric is 0.5 plus a fixed contribution (0 to 0.05, from its name) of every
    component switched on, plus a little noise from the repeat's seed (the same
    for every trial of a repeat, so the comparison with the base trial is paired).

    Returns:
        The metric.
    """
    seconds = ablation_seconds(ablated, seed, low, high)
    score = 0.5 + sum(
        random.Random(name).uniform(0.0, 0.05) for name, on in components.items() if on
    )
    score += random.Random(seed).gauss(0.0, 0.005)
    for step in range(1, steps + 1):
        time.sleep(seconds / steps)
        reporter.broadcast(score * step / steps, step=step)
    return score


def batch_reports(x: float, steps: int, every: float, reporter: Reporter) -> float:
    """``bench/reports.py``: a trial that reports ``steps`` times as fast as it can
    (a training loop that broadcasts every batch), with reports held back for up to
    ``every`` seconds (``maggy_core.reporter.REPORT_EVERY``; 0 sends each one)."""
    from maggy_core import reporter as reporter_module

    reporter_module.REPORT_EVERY = every
    for step in range(steps):
        reporter.broadcast(x, step=step)
    return x
