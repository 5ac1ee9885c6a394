"""The optimiser interface: suggest trials, observe their results, save and restore.

The coordinator owns an optimiser and is its only caller: every method is called
from the coordinator's thread, never concurrently, so implementations need no
locks. Optimisers see trials only as :class:`~maggy_core.trial.FrozenTrial`
snapshots and never reach into the coordinator.
"""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from maggy_core.exceptions import SpecError
from maggy_core.searchspace import Searchspace
from maggy_core.trial import FrozenTrial

DIRECTIONS = ("max", "min")


@dataclass(frozen=True)
class Suggestion:
    """A trial to run.

    Attributes:
        params: Hyperparameter values, JSON types only, inside the search space.
        budget: Resource for a multi-fidelity optimiser (epochs, say); ``None`` when
            the optimiser does not use budgets.
        info: Optimiser-private data, JSON types only; returned on the trial's
            :class:`~maggy_core.trial.FrozenTrial` so ``observe`` can use it.
    """

    params: dict[str, Any]
    budget: float | None = None
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Decision:
    """An answer of :meth:`Optimizer.suggest` that is not a trial: WAIT or DONE."""

    name: str

    def __repr__(self) -> str:
        return self.name


#: Nothing to suggest now, but there will be once running trials report.
WAIT = Decision("WAIT")
#: The search is over: no more suggestions, ever.
DONE = Decision("DONE")


class Optimizer(ABC):
    """Base class of every optimiser.

    Contract:
        - Only the coordinator calls these methods, from one thread, never
          concurrently.
        - Whenever a worker is idle, the coordinator calls :meth:`suggest` until it
          returns :data:`WAIT` or :data:`DONE`. The optimiser counts its
          suggestions and answers ``DONE`` once it has made ``num_trials`` (or has
          no more to make); the coordinator itself waits for running trials.
        - :meth:`observe` is called once per trial when it reaches a terminal state
          (finished, early stopped, failed).
        - Resume after a crash has one path: a fresh instance, built with the
          same arguments (the seed included: the runner fixes one per
          experiment), gets :meth:`resume` with the journal's trials, and rebuilds
          its state from them. Nothing of the optimiser is journaled, so a
          transition costs O(1) however large its state grows.

    Subclasses set ``name`` (lower case, used in specs) and ``option_names`` (the
    keyword options their constructor takes), check their options in :meth:`check`
    and build their state in :meth:`setup`; they keep this constructor, so every
    optimiser takes the same arguments and checks them the same way.

    Args:
        searchspace: The space to search; must not be empty.
        num_trials: How many trials to suggest at most (>= 1).
        direction: ``"max"`` or ``"min"``: which way the metric is better.
        seed: Seed for the optimiser's randomness; ``None`` for a fresh one.
        **options: Optimiser-specific options, from the spec's ``optimizer.options``.

    Raises:
        SpecError: If an argument or option is invalid (see :meth:`check`).
    """

    name: ClassVar[str]
    option_names: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self,
        searchspace: Searchspace,
        *,
        num_trials: int,
        direction: str,
        seed: int | None,
        **options: Any,
    ) -> None:
        problems = type(self).check(searchspace, options)
        if isinstance(num_trials, bool) or not isinstance(num_trials, int) or num_trials < 1:
            problems.append(("num_trials", f"must be an integer >= 1, got {num_trials!r}"))
        if direction not in DIRECTIONS:
            problems.append(("direction", f"must be 'max' or 'min', got {direction!r}"))
        if problems:
            raise SpecError(problems)
        self.searchspace = searchspace
        self.num_trials = num_trials
        self.direction = direction
        self.seed = seed
        self.options = dict(options)
        # Without a seed, one is drawn now and kept, so that a resumed optimiser
        # (rebuilt from its trials with this seed) continues the same sequence.
        self._seed = seed if seed is not None else random.SystemRandom().randrange(2**32)
        self.setup()

    def setup(self) -> None:  # noqa: B027 - optional hook: most optimisers have state
        """Build the implementation's own state, after the arguments were checked and
        kept (``searchspace``, ``num_trials``, ``direction``, ``seed``, ``options``,
        and ``_seed``, the seed drawn when ``seed`` is ``None``). Implementations
        override this instead of the constructor, so they share its signature and
        checks."""

    @classmethod
    def check(cls, searchspace: Searchspace, options: Mapping[str, Any]) -> list[tuple[str, str]]:
        """Problems that would keep this optimiser from running on ``searchspace``.

        Called by spec validation before anything runs. Subclasses extend it
        (calling ``super().check``) with their own demands on the space or options.

        Returns:
            ``(field, message)`` pairs, e.g. ``("optimizer.options.foo", "...")``;
            empty when all is well.
        """
        problems: list[tuple[str, str]] = []
        if len(searchspace) == 0:
            problems.append(("searchspace", "is empty; give at least one hyperparameter"))
        allowed = ", ".join(cls.option_names) if cls.option_names else "none"
        label = getattr(cls, "name", cls.__name__)
        problems += [
            (f"optimizer.options.{key}", f"unknown option for {label}; allowed: {allowed}")
            for key in options
            if key not in cls.option_names
        ]
        return problems

    @abstractmethod
    def suggest(self) -> Suggestion | Decision:
        """The next trial to run, or :data:`WAIT` (not now) or :data:`DONE` (never)."""

    @abstractmethod
    def observe(self, trial: FrozenTrial) -> None:
        """Take note of a trial that reached a terminal state.

        Args:
            trial: Status FINISHED, EARLY_STOPPED or FAILED; ``metric`` is ``None``
                for a failed trial. Must not be kept beyond what the optimiser needs.
        """

    def resume(self, trials: Sequence[FrozenTrial]) -> None:
        """Rebuild the search from an earlier run's trials.

        Called once on a fresh instance, before any other call, with every trial
        the earlier run suggested, in the order it suggested them (trial ids
        ascending). Terminal trials carry their status, metric and history;
        trials that had not ended have status PENDING: the coordinator runs them
        again with the same params, budget and info, and :meth:`observe` is
        called for them later, as for any trial. Afterwards the optimiser must
        behave as if it had made those suggestions and seen those results.

        The default replays the run: one :meth:`suggest` per trial and an
        :meth:`observe` of each terminal one, in order. That is exact for an
        optimiser whose suggestions follow from its arguments and what it
        observed (random and grid search, a fixed plan); others override it.
        """
        for trial in trials:
            self.suggest()
            if trial.status.is_terminal:
                self.observe(trial)
