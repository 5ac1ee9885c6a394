"""The early-stopping interface: should a running trial stop, given its reports?

The coordinator owns one rule and is its only caller, from one thread. A rule
keeps only what it can rebuild by replaying :meth:`StoppingRule.observe_finished`
over the finished trials in the journal, so it has no state to save on its own.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

from maggy_core.exceptions import SpecError
from maggy_core.trial import FrozenTrial

DIRECTIONS = ("max", "min")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class StoppingRule(ABC):
    """Base class of every early-stopping rule.

    Subclasses set ``name`` (lower case, the spec's ``es_policy``) and
    ``option_names`` (the keyword options they take).

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
        problems: list[tuple[str, str]] = []
        if direction not in DIRECTIONS:
            problems.append(("direction", f"must be 'max' or 'min', got {direction!r}"))
        if not _is_int(min_trials) or min_trials < 0:
            problems.append(("es_min", f"must be an integer >= 0, got {min_trials!r}"))
        if not _is_int(interval) or interval < 1:
            problems.append(("es_interval", f"must be an integer >= 1, got {interval!r}"))
        allowed = ", ".join(self.option_names) or "none"
        problems += [
            (f"es_policy.{key}", f"unknown option for {self.name}; allowed: {allowed}")
            for key in options
            if key not in self.option_names
        ]
        if problems:
            raise SpecError(problems)
        self.direction = direction
        self.min_trials = min_trials
        self.interval = interval
        self.options = dict(options)

    def observe_finished(self, trial: FrozenTrial) -> None:  # noqa: B027 - optional hook
        """Take note of a trial that finished normally (status FINISHED).

        Called once per finished trial with its whole history. Rules keep what they
        need incrementally; the default keeps nothing.
        """

    @abstractmethod
    def should_stop(self, trial: FrozenTrial) -> bool:
        """Whether to stop a running trial now.

        Called on every metric report, so it must be cheap: O(1) or O(log n) in the
        number of finished trials.

        Args:
            trial: Status RUNNING; ``history`` holds its reports so far, the last
                one just arrived.
        """
