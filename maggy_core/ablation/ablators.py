"""Ablators: which trials an ablation study runs.

An ablator is an optimiser to the coordinator (it suggests trials until DONE),
so ablation trials are scheduled exactly like HPO trials: asynchronously, no
trial waits on another. It plans every trial up front; a trial's params are
``{"ablated": <component or None>, "repeat": r, "seed": s}``.

Seeds: repeat ``r`` of every component uses the same seed as repeat ``r`` of
the base trial (and a different one from other repeats), so each component's
effect is a paired comparison with the base.
"""

from __future__ import annotations

import importlib
import random
from abc import abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from maggy_core.ablation.study import Component
from maggy_core.exceptions import SpecError
from maggy_core.optimizers import DONE, Decision, Optimizer, Suggestion
from maggy_core.trial import FrozenTrial


class Ablator(Optimizer):
    """Base class of ablators: a fixed plan of trials, suggested in order.

    Subclasses set ``name`` and ``option_names`` and implement :meth:`plan`. A
    user's ablator is named in the spec as ``"module:Class"``.

    Args:
        components: The study's components, in order.
        direction: ``"max"`` or ``"min"``.
        seed: Seed the repeats' seeds derive from; ``None`` draws one.
        **options: The ablator's options (``ablator: {name: ..., <option>: ...}``).

    Raises:
        SpecError: Under ``ablator.<option>`` for an unknown or invalid option.
    """

    name: ClassVar[str] = "ablator"
    option_names: ClassVar[tuple[str, ...]] = ()

    def __init__(  # not Optimizer's: an ablator has components, not a search space
        self,
        components: Sequence[Component],
        *,
        direction: str,
        seed: int | None,
        **options: Any,
    ) -> None:
        allowed = ", ".join(self.option_names) or "none"
        problems = [
            (f"ablator.{key}", f"unknown option for {self.name}; allowed: {allowed}")
            for key in options
            if key not in self.option_names
        ]
        problems += self.check_options(options)
        if problems:
            raise SpecError(problems)
        self.components = list(components)
        self.direction = direction
        self.seed = seed if seed is not None else random.SystemRandom().randrange(2**32)
        self.options = dict(options)
        self._plan = self.plan()
        self.num_trials = len(self._plan)
        self._count = 0

    def check_options(self, options: Mapping[str, Any]) -> list[tuple[str, str]]:
        """Problems with the options, as ``(field, message)``; extend in subclasses."""
        return []

    def repeat_seed(self, repeat: int) -> int:
        """The seed of repeat ``repeat``: the same for every component."""
        return random.Random(f"{self.seed}/repeat/{repeat}").randrange(2**31)

    @abstractmethod
    def plan(self) -> list[dict[str, Any]]:
        """Every trial's params, in the order to run them."""

    def suggest(self) -> Suggestion | Decision:
        if self._count >= len(self._plan):
            return DONE
        params = self._plan[self._count]
        self._count += 1
        return Suggestion(dict(params))

    def observe(self, trial: FrozenTrial) -> None:
        """A fixed plan learns nothing from results."""

    def state_dict(self) -> dict[str, Any]:
        return {"optimizer": self.name, "seed": self.seed, "count": self._count}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        try:
            self.seed = int(state["seed"])
            self._count = int(state["count"])
        except (KeyError, TypeError, ValueError) as err:
            raise SpecError.one("optimizer_state", f"is malformed: {err!r}") from None
        self._plan = self.plan()


class LOCO(Ablator):
    """Leave one component out: the base trial plus one trial per component,
    each ``repeats`` times (``ablator: {name: loco, repeats: 5}``).

    The plan runs repeat 0 of everything, then repeat 1, and so on, so a study
    stopped early still has complete pairs.
    """

    name = "loco"
    option_names = ("repeats",)

    def check_options(self, options: Mapping[str, Any]) -> list[tuple[str, str]]:
        repeats = options.get("repeats", 1)
        if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
            return [("ablator.repeats", f"must be an integer >= 1, got {repeats!r}")]
        return []

    def plan(self) -> list[dict[str, Any]]:
        out = []
        for r in range(int(self.options.get("repeats", 1))):
            seed = self.repeat_seed(r)
            for ablated in [None, *(c.name for c in self.components)]:
                out.append({"ablated": ablated, "repeat": r, "seed": seed})
        return out


_ABLATORS: dict[str, type[Ablator]] = {"loco": LOCO}


def get_ablator(
    name: str,
    components: Sequence[Component],
    *,
    direction: str,
    seed: int | None,
    options: Mapping[str, Any] | None = None,
) -> Ablator:
    """Build the ablator registered as ``name`` or imported from ``"module:Class"``.

    Raises:
        SpecError: Under ``ablator`` for an unknown name or a class that is not an
            :class:`Ablator`; under ``ablator.<option>`` for a bad option.
    """
    cls: Any = _ABLATORS.get(name.lower()) if ":" not in name else None
    if ":" in name:
        module, _, attr = name.partition(":")
        try:
            cls = getattr(importlib.import_module(module), attr, None)
        except ImportError as err:
            raise SpecError.one(
                "ablator", f"cannot import {module!r} for {name!r}: {err}"
            ) from None
        if not (isinstance(cls, type) and issubclass(cls, Ablator)):
            raise SpecError.one(
                "ablator", f"{name!r} is not a subclass of maggy_core.ablation.Ablator"
            )
    if cls is None:
        raise SpecError.one(
            "ablator",
            f"unknown ablator {name!r}; allowed: {', '.join(_ABLATORS)} or 'module:Class'",
        )
    return cls(components, direction=direction, seed=seed, **dict(options or {}))
