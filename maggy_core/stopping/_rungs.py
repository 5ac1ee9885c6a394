"""Rung-based stopping: asynchronous successive halving (``asha``) and Hyperband's
brackets on top of it (``hyperband``), for any optimiser.

A trial is compared with other trials only when it reaches a rung, the steps
``min_step * reduction_factor**k`` below ``max_step``. There the rule records the
trial's value (the first report at a step at or past the rung) and stops the trial
unless it is in the top ``1/reduction_factor`` of the values recorded at that rung
so far: asynchronously, no trial waits for a rung to fill. A trial that reports a
step past ``max_step`` has run its budget and is stopped there too.

"The top ``1/reduction_factor``" is the rule of Optuna's successive-halving pruner
(and of the ASHA paper): with ``n`` values recorded at a rung, the trial's own
included, it continues when fewer than ``max(1, n // reduction_factor)`` of them are
strictly better than its value. The first trial at a rung therefore always
continues, and the second only if it is the better one.

With the ``asha`` optimiser the budget is the optimiser's (``budget``); this rule is
what lets a model-based optimiser (``tpe`` + ``asha`` is the BOHB-like pairing) or
random search spend most epochs on promising configurations.
"""

from __future__ import annotations

import bisect
import math
import re
import zlib
from dataclasses import dataclass, field
from typing import Any, ClassVar

from maggy_core.stopping._base import StoppingRule, _remove
from maggy_core.trial import FrozenTrial

_DEFAULTS: dict[str, Any] = {"min_step": 1, "max_step": 27, "reduction_factor": 3}
_TRIAL_NUMBER = re.compile(r"\D*(\d+)$")


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def rung_steps(min_step: float, max_step: float, reduction_factor: float) -> list[float]:
    """The rungs ``min_step * reduction_factor**k`` strictly below ``max_step``
    (integers stay integers); the first one is ``min_step``."""
    out: list[float] = []
    k = 0
    while True:
        value = min_step * reduction_factor**k
        if value >= max_step * (1 - 1e-12):
            return out
        out.append(int(round(value)) if abs(value - round(value)) < 1e-9 else value)
        k += 1


@dataclass
class _Climb:
    """A running trial on its way up the rungs of its bracket."""

    bracket: int
    next_rung: int  # index into the rule's rungs
    recorded: list[tuple[int, float]] = field(default_factory=list)  # (rung, signed value)


class ASHARule(StoppingRule):
    """Asynchronous successive halving as a stopping rule (``es_policy: asha``).

    Options:
        min_step: The first rung (> 0, default 1).
        max_step: The step a trial runs to (> min_step, default 27); no rung at or
            above it.
        reduction_factor: Keep the top ``1/reduction_factor`` at each rung (> 1,
            default 3).

    ``es_min`` and ``es_interval`` do not apply: the rungs say when the rule acts,
    and it acts from the first trial on. Each report costs O(1) unless it crosses a
    rung, where a binary search in the rung's sorted values decides (O(log n), plus
    the list insertion); nothing walks a trial's history.

    Contract: values are kept signed (larger is better), so ``direction: min`` only
    flips the sign. What a trial recorded stays recorded when it ends (finished or
    stopped: both were real observations at that rung); a trial whose reports become
    void (its worker was lost and it runs again) takes its values back. A rule
    rebuilt by replaying :meth:`trial_ended` over a journal's ended trials records
    the same values from their histories.
    """

    name = "asha"
    option_names: ClassVar[tuple[str, ...]] = ("min_step", "max_step", "reduction_factor")

    def __init__(self, *, direction: str, min_trials: int, interval: int, **options: Any) -> None:
        super().__init__(direction=direction, min_trials=min_trials, interval=interval, **options)
        opts = {**_DEFAULTS, **options}
        self.min_step = opts["min_step"]
        self.max_step = opts["max_step"]
        self.eta = float(opts["reduction_factor"])
        self.rungs = rung_steps(self.min_step, self.max_step, self.eta)
        self.brackets = self._brackets(options)
        # recorded[bracket][rung]: sorted signed values recorded there.
        self.recorded: list[list[list[float]]] = [
            [[] for _ in self.rungs] for _ in range(self.brackets)
        ]
        self._climbs: dict[str, _Climb] = {}

    def _brackets(self, options: dict[str, Any]) -> int:
        return 1

    @classmethod
    def check(cls, options: dict[str, Any]) -> list[tuple[str, str]]:
        problems = super().check(options)
        opts = {**_DEFAULTS, **options}
        low, high, eta = opts["min_step"], opts["max_step"], opts["reduction_factor"]
        if not _number(low) or low <= 0:
            problems.append(("es_options.min_step", f"must be a number > 0, got {low!r}"))
        if not _number(high) or (_number(low) and high <= low):
            problems.append(("es_options.max_step", f"must be a number > min_step, got {high!r}"))
        if not _number(eta) or eta <= 1:
            problems.append(("es_options.reduction_factor", f"must be a number > 1, got {eta!r}"))
        return problems

    # ------------------------------------------------------------ called by the coordinator

    def bracket_of(self, trial_id: str) -> int:
        """The bracket of a trial: round-robin by the number in its id (``t0007``
        -> 7), so a replayed journal puts every trial back where it was."""
        if self.brackets == 1:
            return 0
        match = _TRIAL_NUMBER.match(trial_id)
        number = int(match.group(1)) if match else zlib.crc32(trial_id.encode())
        return number % self.brackets

    def report(self, trial_id: str, step: int, value: float) -> bool:
        climb = self._climbs.get(trial_id)
        if climb is None:
            bracket = self.bracket_of(trial_id)
            climb = self._climbs[trial_id] = _Climb(bracket, bracket)
        if step > self.max_step:
            return True  # it has run its max_step
        return self._climb(climb, step, self.sign * value)

    def asks(self) -> dict[str, Any] | None:
        # Only the first report at or past a rung (or past max_step) can stop a trial.
        return {"rungs": list(self.rungs), "max_step": self.max_step}

    def _climb(self, climb: _Climb, step: int, signed: float) -> bool:
        """Record ``signed`` at every rung ``step`` reached first; whether the
        trial is outside the top 1/eta at the highest of them."""
        stop = False
        while climb.next_rung < len(self.rungs) and step >= self.rungs[climb.next_rung]:
            values = self.recorded[climb.bracket][climb.next_rung]
            bisect.insort(values, signed)
            climb.recorded.append((climb.next_rung, signed))
            climb.next_rung += 1
            keep = max(1, int(len(values) / self.eta))
            better = len(values) - bisect.bisect_right(values, signed)
            stop = better >= keep
        return stop

    def trial_ended(self, trial: FrozenTrial) -> None:
        climb = self._climbs.pop(trial.trial_id, None)
        if not trial.status.is_terminal:
            if climb is not None:  # its reports are void: the trial runs again
                for rung, signed in climb.recorded:
                    _remove(self.recorded[climb.bracket][rung], signed)
            return
        if climb is not None:
            return  # its values were recorded live
        bracket = self.bracket_of(trial.trial_id)
        replay = _Climb(bracket, bracket)
        for step, value in sorted(trial.history, key=lambda report: report[0]):
            if step > self.max_step:
                break
            self._climb(replay, step, self.sign * value)

    def decide(self, step: int, best: float, average: float) -> bool:
        return False  # unused: report decides at the rungs


class HyperbandRule(ASHARule):
    """Hyperband's brackets over ASHA rungs (``es_policy: hyperband``).

    Trials go round-robin (by trial number) to ``brackets`` brackets; bracket
    ``b`` has the rungs of ``asha`` from the ``b``-th on, and its trials compete
    only with each other. Bracket 0 is ``asha``; the last bracket of the default
    (one more than the number of rungs) stops nothing before ``max_step``: the
    hedge against early values that rank badly.

    Options: those of ``asha``, and ``brackets`` (1 .. rungs + 1, default rungs + 1).
    """

    name = "hyperband"
    option_names = (*ASHARule.option_names, "brackets")

    def _brackets(self, options: dict[str, Any]) -> int:
        return int(options.get("brackets", len(self.rungs) + 1))

    @classmethod
    def check(cls, options: dict[str, Any]) -> list[tuple[str, str]]:
        problems = super().check(options)
        if "brackets" in options and not problems:
            opts = {**_DEFAULTS, **options}
            top = len(rung_steps(opts["min_step"], opts["max_step"], opts["reduction_factor"])) + 1
            b = options["brackets"]
            if isinstance(b, bool) or not isinstance(b, int) or not 1 <= b <= top:
                problems.append(
                    (
                        "es_options.brackets",
                        f"must be an integer from 1 to the number of rungs + 1 ({top}), got {b!r}",
                    )
                )
        return problems
