"""The early-stopping interface: should a running trial stop, given the reports so far?

The coordinator owns one rule and is its only caller, from one thread. It hands
the rule every live report of every running trial (:meth:`StoppingRule.report`,
which answers "stop this trial now?") and every trial that ends
(:meth:`StoppingRule.trial_ended`). A rule keeps only what it can rebuild by
replaying :meth:`~StoppingRule.trial_ended` over the ended trials of the journal,
so it has no state to save on its own.

Reports cost O(1) amortised in the number of steps and O(log n) in the number
of trials: the base class keeps each running trial's best value and running
average incrementally, so nothing walks a trial's history on every report.
"""

from __future__ import annotations

import bisect
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

from maggy_core.exceptions import SpecError
from maggy_core.trial import FrozenTrial, TrialStatus

DIRECTIONS = ("max", "min")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass
class _Live:
    """What the rule knows of a running trial (values signed: larger is better)."""

    best: float = float("-inf")
    total: float = 0.0
    count: int = 0
    averages: dict[int, float] = field(default_factory=dict)  # step -> running average


class StoppingRule(ABC):
    """Base class of every early-stopping rule.

    Subclasses set ``name`` (lower case, the spec's ``es_policy``) and
    ``option_names`` (the keyword options they take, from ``es_options``), and
    implement :meth:`decide`.

    The base class keeps, per step ``s``, the sorted running averages at ``s``
    (mean of a trial's values at steps ``<= s``) of the trials that FINISHED
    (:attr:`finished_at`) and of the trials still running (:attr:`running_at`),
    so a rule can compare a trial with finished trials only (the median rule)
    or with every trial seen at that step (the percentile rule). Values are
    kept with their sign flipped for ``"min"``: inside a rule, larger is better.

    Args:
        direction: ``"max"`` or ``"min"``: which way the metric is better.
        min_trials: Finished trials needed before the rule may stop anything (>= 0).
        interval: The rule acts only at steps that are multiples of it (>= 1).
        **options: Rule-specific options.

    Raises:
        SpecError: Naming every invalid argument.
    """

    name: ClassVar[str]
    option_names: ClassVar[tuple[str, ...]] = ()

    def __init__(self, *, direction: str, min_trials: int, interval: int, **options: Any) -> None:
        problems = self.check(options)
        if direction not in DIRECTIONS:
            problems.append(("direction", f"must be 'max' or 'min', got {direction!r}"))
        if not _is_int(min_trials) or min_trials < 0:
            problems.append(("es_min", f"must be an integer >= 0, got {min_trials!r}"))
        if not _is_int(interval) or interval < 1:
            problems.append(("es_interval", f"must be an integer >= 1, got {interval!r}"))
        if problems:
            raise SpecError(problems)
        self.direction = direction
        self.min_trials = min_trials
        self.interval = interval
        self.options = dict(options)
        self.sign = 1.0 if direction == "max" else -1.0
        self.finished = 0
        self.finished_at: dict[int, list[float]] = {}
        self.running_at: dict[int, list[float]] = {}
        self._live: dict[str, _Live] = {}

    @classmethod
    def check(cls, options: dict[str, Any]) -> list[tuple[str, str]]:
        """Problems with ``options`` as ``(field, message)`` pairs; subclasses extend it."""
        allowed = ", ".join(cls.option_names) or "none"
        return [
            (f"es_options.{key}", f"unknown option for {cls.name}; allowed: {allowed}")
            for key in options
            if key not in cls.option_names
        ]

    # ------------------------------------------------------------ called by the coordinator

    def report(self, trial_id: str, step: int, value: float) -> bool:
        """Take a live report of a running trial; answer whether to stop it now.

        Args:
            trial_id: The reporting trial.
            step: The step given to ``Reporter.broadcast``.
            value: The reported metric.

        Returns:
            True to stop the trial. The rule acts only at steps that are multiples
            of ``interval`` and once ``min_trials`` trials have finished.
        """
        live = self._live.get(trial_id)
        if live is None:
            live = self._live[trial_id] = _Live()
        signed = self.sign * value
        live.best = max(live.best, signed)
        live.total += signed
        live.count += 1
        average = live.total / live.count
        previous = live.averages.get(step)
        if previous is not None:  # a step reported twice keeps its last average
            _remove(self.running_at[step], previous)
        live.averages[step] = average
        bisect.insort(self.running_at.setdefault(step, []), average)
        if step % self.interval != 0 or self.finished < self.min_trials:
            return False
        return self.decide(step, live.best, average)

    def trial_ended(self, trial: FrozenTrial) -> None:
        """Forget a trial's live reports; a FINISHED trial's running averages
        become part of :attr:`finished_at`.

        Called once per trial that reaches a terminal state, also when the
        coordinator resumes from a journal (then without earlier live reports).
        """
        live = self._live.pop(trial.trial_id, None)
        if live is not None:
            for step, average in live.averages.items():
                _remove(self.running_at[step], average)
                if not self.running_at[step]:
                    del self.running_at[step]
        if trial.status is not TrialStatus.FINISHED:
            return
        self.finished += 1
        total, count, at_step = 0.0, 0, {}
        for step, value in sorted(trial.history, key=lambda report: report[0]):
            total, count = total + self.sign * value, count + 1
            at_step[step] = total / count
        for step, average in at_step.items():
            if step % self.interval == 0:
                bisect.insort(self.finished_at.setdefault(step, []), average)

    def asks(self) -> dict[str, Any] | None:
        """Where a worker should wait for the rule's verdict on a report, as JSON for
        the assignment (see ``maggy_core.reporter.asks_at``): ``{"every": k}`` (steps
        that are multiples of ``k``), ``{"rungs": [...], "max_step": m}`` (the first
        report at or past a rung, or past ``m``), or ``None`` (never: the rule never
        stops a trial).

        At those steps the worker waits, in the report's own round trip, for the
        coordinator's answer, so a trial the rule stops runs no further step. At the
        other steps it only reads the trial's stop flag: a rule that cannot stop a
        trial there costs no wait. This default asks at the steps :meth:`report`
        acts at (multiples of ``interval``).
        """
        return {"every": self.interval}

    # ------------------------------------------------------------ the rule itself

    @abstractmethod
    def decide(self, step: int, best: float, average: float) -> bool:
        """Whether a trial whose signed best value so far is ``best`` (and whose
        running average at ``step`` is ``average``) should stop at ``step``.

        Called only at steps that are multiples of ``interval`` once
        ``min_trials`` trials have finished; the trial's own average is already
        in ``running_at[step]``. Must be O(log n) or better.
        """


def _remove(values: list[float], value: float) -> None:
    i = bisect.bisect_left(values, value)
    if i < len(values) and values[i] == value:
        del values[i]


def quantile(values: list[float], q: float) -> float:
    """The ``q``-quantile (0..1) of sorted ``values``, interpolated linearly."""
    position = q * (len(values) - 1)
    low = int(position)
    high = min(low + 1, len(values) - 1)
    return values[low] + (values[high] - values[low]) * (position - low)
