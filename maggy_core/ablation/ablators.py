"""Ablators: which trials an ablation study runs.

An ablator is an optimiser to the coordinator (it suggests trials until DONE), so
ablation trials are scheduled exactly like HPO trials: asynchronously, no trial
waits on another. A trial's params are ``{"ablated": <component, [a, b] for a pair,
or None>, "repeat": r, "seed": s}``.

Seeds: repeat ``r`` of every component uses the same seed as repeat ``r`` of the
base trial (and a different one from other repeats), so each component's effect
is a paired comparison with the base.

Persistence: an ablator keeps nothing but what it suggested and what it observed,
so a resumed one is rebuilt by :meth:`Ablator.resume` from the journal's trials,
in order. The study's seed travels in every trial's ``info``, so even a study
that drew its seed resumes with the same one. Every decision of :class:`LOCO` is
a function of the results observed so far (not of the order they came in), so a
resumed study decides as the first run would have.
"""

from __future__ import annotations

import importlib
import itertools
import math
import random
import time
from abc import abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, cast

from maggy_core.ablation.sequential import LookStats, Repeats, sequential_stats
from maggy_core.ablation.study import Component
from maggy_core.exceptions import SpecError
from maggy_core.optimizers import DONE, WAIT, Decision, Optimizer, Suggestion
from maggy_core.trial import FrozenTrial, TrialStatus

#: Kinds of components that can be left out together in an interaction pair
#: (a custom model replaces the whole model, so it does not combine).
PAIRABLE = ("feature", "layer", "layer_group", "component")


class Ablator(Optimizer):
    """Base class of ablators: by default a fixed plan of trials, suggested in order.

    Subclasses set ``name`` and ``option_names`` and implement :meth:`plan`; an
    adaptive one overrides :meth:`suggest`, :meth:`observe` and :meth:`resume`
    instead. A user's ablator is named in the spec as ``"module:Class"``.

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
        self._planned: list[dict[str, Any]] | None = None
        self.num_trials = self.count_trials()
        self._count = 0
        self._started: float | None = None  # the monotonic clock at the first suggestion
        self._spent_before = 0.0  # seconds the earlier runs of a resumed study took

    def check_options(self, options: Mapping[str, Any]) -> list[tuple[str, str]]:
        """Problems with the options, as ``(field, message)``; extend in subclasses."""
        return []

    @property
    def _plan(self) -> list[dict[str, Any]]:
        """The plan, made when first needed (once per seed)."""
        if self._planned is None:
            self._planned = self.plan()
        return self._planned

    def count_trials(self) -> int:
        """``num_trials``: the most trials the study runs (by default its plan's
        length; an adaptive ablator that does not follow a plan counts them
        without making one)."""
        return len(self._plan)

    def repeat_seed(self, repeat: int) -> int:
        """The seed of repeat ``repeat``: the same for every component."""
        return random.Random(f"{self.seed}/repeat/{repeat}").randrange(2**31)

    def trial(self, ablated: str | list[str] | None, repeat: int) -> Suggestion:
        """The suggestion of one trial; the study's seed goes into its ``info``."""
        params = {"ablated": ablated, "repeat": repeat, "seed": self.repeat_seed(repeat)}
        return Suggestion(params, info={"study_seed": self.seed})

    def elapsed(self) -> float:
        """Seconds the study has run, earlier runs included (see :meth:`resume`)."""
        now = 0.0 if self._started is None else time.monotonic() - self._started
        return self._spent_before + now

    @abstractmethod
    def plan(self) -> list[dict[str, Any]]:
        """Every trial's params, in the order to run them (an upper bound for an
        adaptive ablator, which sets ``num_trials`` from it)."""

    def suggest(self) -> Suggestion | Decision:
        if self._count >= len(self._plan):
            return DONE
        params = self._plan[self._count]
        self._count += 1
        return Suggestion(dict(params), info={"study_seed": self.seed})

    def observe(self, trial: FrozenTrial) -> None:
        """A fixed plan learns nothing from results."""

    def resume(self, trials: Sequence[FrozenTrial]) -> None:
        """Continue after the ``trials`` an earlier run suggested (in order): take the
        study's seed from their ``info`` and skip as much of the plan."""
        self._take_seed(trials)
        self._count = min(len(trials), len(self._plan))

    def _take_seed(self, trials: Sequence[FrozenTrial]) -> None:
        seeds = {t.info.get("study_seed") for t in trials if "study_seed" in t.info}
        if len(seeds) > 1:
            raise SpecError.one("ablator", f"the journal's trials disagree on the seed: {seeds}")
        if seeds:
            (seed,) = seeds
            if isinstance(seed, bool) or not isinstance(seed, int):
                raise SpecError.one("ablator", f"the journal's study seed is malformed: {seed!r}")
            if seed != self.seed:
                self.seed, self._planned = seed, None  # the plan follows the seed


def _parse_budget(value: Any) -> tuple[dict[str, float], list[tuple[str, str]]]:
    if not isinstance(value, Mapping) or len(value) != 1:
        return {}, [("ablator.budget", f"must be {{trials: N}} or {{seconds: S}}, got {value!r}")]
    ((key, amount),) = value.items()
    if key == "trials" and not isinstance(amount, bool) and isinstance(amount, int) and amount >= 1:
        return {"trials": amount}, []
    if (
        key == "seconds"
        and not isinstance(amount, bool)
        and isinstance(amount, int | float)
        and 0 < amount < math.inf
    ):
        return {"seconds": float(amount)}, []
    if key not in ("trials", "seconds"):
        return {}, [("ablator.budget", f"unknown key {key!r}; allowed: trials, seconds")]
    what = "an integer >= 1" if key == "trials" else "a positive number"
    return {}, [(f"ablator.budget.{key}", f"must be {what}, got {amount!r}")]


def loco_options(options: Mapping[str, Any]) -> tuple[Repeats, dict[str, float], int]:
    """LOCO's options, validated: ``(repeats, budget, interactions)``.

    Raises:
        SpecError: Every problem, under ``ablator.<option>``.
    """
    problems: list[tuple[str, str]] = []
    repeats = Repeats(1, 1)
    try:
        repeats = Repeats.parse(options.get("repeats", 1))
    except SpecError as err:
        problems += err.problems
    budget: dict[str, float] = {}
    if options.get("budget") is not None:
        budget, found = _parse_budget(options["budget"])
        problems += found
    top_k = options.get("interactions", 0)
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 0 or top_k == 1:
        problems.append(
            ("ablator.interactions", f"must be 0 (none) or an integer >= 2, got {top_k!r}")
        )
        top_k = 0
    if top_k and repeats.min < 2:
        problems.append(("ablator.interactions", "needs at least 2 repeats per pair: repeats >= 2"))
    if problems:
        raise SpecError(problems)
    return repeats, budget, top_k


#: The order in which open components get repeats under :meth:`LOCO._plan_more`: the
#: ones projected to be decided, then the ones projected to be precise, then the rest.
_RANK = {"decided": 0, "precise": 1, "none": 2}


def _nearest(entry: tuple[int, int | None, float, int, str, int]) -> tuple[Any, ...]:
    """Sort key of an open component: how it would settle, at which look (the
    sooner the nearer), its p-value now, its place in the study."""
    rank, settle, p_value, index, _, _ = entry
    return (rank, math.inf if settle is None else settle, p_value, index)


class LOCO(Ablator):
    """Leave one component out: the base trial plus one trial per component.

    Options (``ablator: {name: loco, ...}``):

    - ``repeats``: ``k`` paired repeats of everything, or ``{min, max, precision}``:
      every component starts with ``min``; then the components still undecided get
      more, a group at a time up to the looks of the sequential design
      (:mod:`maggy_core.ablation.sequential`), until each is *decided* (its
      always-valid p-value is below ``alpha / m`` for ``m`` components), *precise*
      (its interval's half-width is at most ``precision``) or at ``max``.
    - ``budget``: ``{trials: N}`` or ``{seconds: S}``: no trial is started past it;
      it goes to the open components nearest a decision first, and the trials each
      needs to be settled are kept for it (:meth:`_plan_more`). A resumed study
      counts the earlier runs' trials and seconds (each suggestion's ``info``
      carries the study's ``elapsed`` seconds into the journal).
    - ``interactions``: ``k``: once every component stopped, the pairs of the
      ``k`` most helpful pairable ones (not custom models) are left out together,
      ``min`` paired repeats each, without waiting for singles still running.

    The plan runs repeat 0 of everything, then repeat 1, and so on, so a study
    stopped early still has complete pairs. It answers WAIT while its next
    decision depends on trials still running, and suggests the next group of
    every open component as soon as its look is complete, without waiting for the
    others.

    Args:
        alpha: The study's significance level (``ablation.alpha``).
        confidence: The level of its intervals (``ablation.confidence``).
    """

    name = "loco"
    option_names = ("repeats", "budget", "interactions")

    def __init__(
        self,
        components: Sequence[Component],
        *,
        direction: str,
        seed: int | None,
        alpha: float = 0.05,
        confidence: float = 0.95,
        **options: Any,
    ) -> None:
        self.repeats, self.budget, self.top_k = loco_options(
            {k: v for k, v in options.items() if k in self.option_names}
        )
        self.alpha, self.confidence = alpha, confidence
        super().__init__(components, direction=direction, seed=seed, **options)
        names = [c.name for c in self.components]
        self._names = names
        self._sign = 1.0 if direction == "max" else -1.0
        # (arm -> repeat -> metric or None for an unusable trial); an arm is None
        # (the base), a component's name, or "a&b" for a pair.
        self._seen: dict[str | None, dict[int, float | None]] = {}
        self._scheduled: dict[str | None, int] = {None: 0, **{n: 0 for n in names}}
        self._queue: list[Suggestion] = []
        self._in_flight = 0
        self._suggested = 0
        self._pairs: list[tuple[str, str]] | None = None
        self._looks: dict[tuple[str, int], LookStats] = {}
        self._p_now: dict[str, float] = {}  # each component's p-value at the last status
        self._queue_upto(self.repeats.min)

    def check_options(self, options: Mapping[str, Any]) -> list[tuple[str, str]]:
        return []  # validated by loco_options before the base class runs

    def plan(self) -> list[dict[str, Any]]:
        """The most single-component trials the study can run: all of them to ``max``
        (the study schedules itself and never makes this list; it is the bound
        :meth:`count_trials` counts)."""
        out = []
        for r in range(self.repeats.max):
            seed = self.repeat_seed(r)
            for ablated in [None, *(c.name for c in self.components)]:
                out.append({"ablated": ablated, "repeat": r, "seed": seed})
        return out

    def count_trials(self) -> int:
        return self.most_trials(self.components, self.repeats, self.budget, self.top_k)

    @staticmethod
    def most_trials(
        components: Sequence[Component], repeats: Repeats, budget: Mapping[str, float], top_k: int
    ) -> int:
        """``num_trials``: the plan's trials, the pairs', within the trial budget;
        counted, not planned."""
        pairable = sum(1 for c in components if c.kind in PAIRABLE)
        pairs = math.comb(min(top_k, pairable), 2) * repeats.min
        most = repeats.max * (1 + len(components)) + pairs
        return min(most, int(budget["trials"])) if "trials" in budget else most

    # ------------------------------------------------------------ scheduling

    def _queue_upto(self, target: int, names: Sequence[str] | None = None) -> None:
        """Queue repeats up to ``target`` (exclusive) of ``names`` (default all), with
        the base's repeat first, repeat-major so pairs complete early."""
        names = self._names if names is None else names
        for r in range(target):
            wanted = [n for n in names if self._scheduled[n] <= r]
            if not wanted:
                continue
            if self._scheduled[None] <= r:
                self._push(None, r)
            for n in wanted:
                self._push(n, r)

    def _push(self, arm: str | None, r: int) -> None:
        self._scheduled[arm] = max(self._scheduled.get(arm, 0), r + 1)
        ablated = list(arm.split("&")) if arm is not None and "&" in arm else arm
        self._queue.append(self.trial(ablated, r))

    def _out_of_budget(self) -> bool:
        if "trials" in self.budget and self._suggested >= self.budget["trials"]:
            return True
        seconds = self.budget.get("seconds")
        return seconds is not None and self.elapsed() >= seconds

    def suggest(self) -> Suggestion | Decision:
        if self._started is None:
            self._started = time.monotonic()
        if self._out_of_budget():
            return DONE
        if not self._queue:
            if not self.repeats.adaptive and not self.top_k:
                return DONE  # a fixed plan, all suggested: nothing is left to decide
            self._plan_more()
        if self._queue:
            self._suggested += 1
            self._in_flight += 1
            suggestion = self._queue.pop(0)
            # The study's clock travels in the journal, so a resumed study counts the
            # earlier runs' seconds against its budget.
            suggestion.info["elapsed"] = round(self.elapsed(), 3)
            return suggestion
        return WAIT if self._in_flight else DONE

    def _plan_more(self) -> None:
        """Queue what every open component's latest look asks for, the one nearest a
        decision first; or the interaction pairs once every component has stopped.

        *Nearest a decision* comes from a projection (:meth:`_settling_look`): the
        first later look that would settle the component if its mean and spread
        stayed what its latest look saw. The components it would decide come first
        (a decision is what a study is for), then those it would find precise, then
        those no look up to ``max`` would settle; within each, the earlier look,
        then the smaller p-value.

        Without a budget, a component whose latest complete look left it open is
        scheduled through its next look, and, unless that look will probably settle
        it, through the look after: one group runs ahead while the next look
        completes, so workers do not idle at each look, and a component about to be
        decided gets no repeats it will not need. The target is a function of the
        component's own results only, so the plan is the same whatever order trials
        end in (and after a resume).

        With a budget, repeats are spent where they settle something: each open
        component gets its next look only (no group runs ahead on credit, so the
        budget is not committed before the other components' looks are in), in the
        order above, and the trials it is projected to need until it is settled (its
        own and the base's) are kept for it; a component that could not be settled
        within the trials left after that gives way, while trials are still running,
        to the ones whose looks are still to come in. Once nothing is running, what
        is left goes to the nearest ones anyway. (A seconds budget does not say how
        many trials are left: the order and the next-look rule apply, not the reserve.)
        """
        status = self.status()
        looks = self.repeats.looks()
        left = self._trials_left()
        wanted = []
        for i, name in enumerate(self._names):
            if status[name] != "open":
                continue
            pairs = self._pairs_of(name)
            reached = [k for k, n in enumerate(looks) if n <= len(pairs)]
            settle, how = None, "none"
            if not reached:
                target = looks[0]
            else:
                k = reached[-1]
                settle, how = self._settling_look(name, pairs, k)
                if self.budget:
                    target = looks[k + 1]
                else:
                    target = looks[min(k + (1 if settle == k + 1 else 2), len(looks) - 1)]
            wanted.append((_RANK[how], settle, self._p_now.get(name, 1.0), i, name, target))
        for _, settle, _, _, name, target in sorted(wanted, key=_nearest):
            need = 0 if settle is None else self._trials_to(name, looks[settle])
            if left is not None and self._in_flight and need > left:
                continue  # it cannot be settled within the budget: keep it for others
            before = len(self._queue)
            lost = self._lost(name)  # repeats that ended without a usable pair
            self._queue_upto(min(self.repeats.max, target + lost), [name])
            if left is not None:
                # What it needs to be settled is kept for it, beyond the look queued now.
                left -= max(len(self._queue) - before, need)
        if self._queue or any(s == "open" for s in status.values()) or self._pairs is not None:
            return
        if self.top_k:
            # Every component has stopped: the pairs follow at once, without waiting
            # for the last singles still running (they cannot change the ranking,
            # which reads each component's look where it stopped).
            self._pairs = self._choose_pairs()
            for r in range(self.repeats.min):
                for a, b in self._pairs:
                    self._push(f"{a}&{b}", r)

    def _trials_left(self) -> int | None:
        """Trials the trial budget still allows (``None``: no trial budget)."""
        if "trials" not in self.budget:
            return None
        return max(0, int(self.budget["trials"]) - self._suggested)

    def _trials_to(self, name: str, n: int) -> int:
        """Trials to schedule, the component's and the base's, until both reach ``n``."""
        return max(0, n - self._scheduled[name]) + max(0, n - self._scheduled[None])

    def _settling_look(self, name: str, pairs: list[float], k: int) -> tuple[int | None, str]:
        """The first look after ``k`` that would settle the component if its mean and
        spread stayed what look ``k`` saw, and how: ``"decided"`` (the interval it
        would have there, at the decision's level, excludes zero) or ``"precise"``
        (it is narrow enough); ``(None, "none")`` when no look up to ``max`` would."""
        looks, weights = self.repeats.looks(), self.repeats.weights()
        if k + 1 >= len(looks):
            return None, "none"
        s = self._look(name, pairs, looks[k])
        if s.mean is None or s.std is None:
            return None, "none"
        from scipy import stats  # lazy: scipy is slow to import

        m = max(1, len(self._names))
        for j in range(k + 1, len(looks)):
            n = looks[j]
            sem = s.std / math.sqrt(n)
            decide = float(stats.t.ppf(1 - self.alpha * weights[j] / (2 * m), n - 1)) * sem
            if abs(s.mean) > decide:
                return j, "decided"
            if self.repeats.precision is not None:
                level = (1 - self.confidence) * weights[j] / 2
                if float(stats.t.ppf(1 - level, n - 1)) * sem <= self.repeats.precision:
                    return j, "precise"
        return None, "none"

    def _lost(self, name: str) -> int:
        """Repeats of the component that ended without a usable pair (a failed trial,
        its own or the base's)."""
        seen, base = self._seen.get(name, {}), self._seen.get(None, {})
        return sum(
            1
            for r in range(self._scheduled[name])
            if r in seen and r in base and (seen[r] is None or base[r] is None)
        )

    def _look_complete(self, name: str) -> bool:
        """Whether every scheduled repeat of the component, and of the base, ended."""
        seen, base = self._seen.get(name, {}), self._seen.get(None, {})
        return all(r in seen and r in base for r in range(self._scheduled[name]))

    def _choose_pairs(self) -> list[tuple[str, str]]:
        """The pairs of the ``top_k`` most helpful pairable components, ranked by
        their mean effect at the look where each stopped (:meth:`_stopping_look`):
        fixed once it stopped, so the pairs do not depend on trials still running
        or on the order trials end in."""
        means = {n: self._stopping_look(n).mean for n in self._names}
        kinds = {c.name: c.kind for c in self.components}
        ranked = sorted(
            (n for n in self._names if kinds[n] in PAIRABLE and means[n] is not None),
            key=lambda n: -(means[n] or 0.0),
        )
        return list(itertools.combinations(ranked[: self.top_k], 2))

    def _stopping_look(self, name: str) -> LookStats:
        """The statistics of the first look that stopped the component (decided,
        precise, or at ``max``), or of its latest look if none did."""
        looks, m = self.repeats.looks(), max(1, len(self._names))
        pairs = self._pairs_of(name)
        latest = sequential_stats([], self.repeats, self.confidence)
        for n in looks:
            if n > len(pairs):
                break
            latest = self._look(name, pairs, n)
            p_value = 1.0 if latest.p_value is None else latest.p_value
            precise = (
                self.repeats.precision is not None
                and latest.half_width is not None
                and latest.half_width <= self.repeats.precision
            )
            if p_value * m < self.alpha or precise or n >= self.repeats.max:
                break
        return latest

    # ------------------------------------------------------------ results

    def observe(self, trial: FrozenTrial) -> None:
        self._in_flight = max(0, self._in_flight - 1)
        self._record(trial)

    def _record(self, trial: FrozenTrial) -> None:
        ablated = trial.params.get("ablated")
        arm = "&".join(ablated) if isinstance(ablated, list) else ablated
        metric = trial.metric
        usable = (
            trial.status is TrialStatus.FINISHED
            and isinstance(metric, int | float)
            and not isinstance(metric, bool)
            and math.isfinite(metric)
        )
        self._seen.setdefault(arm, {})[int(trial.params.get("repeat", 0))] = (
            float(metric) if usable and metric is not None else None
        )

    def _pairs_of(self, name: str) -> list[float]:
        """The component's paired differences in repeat order, up to the first repeat
        that has not ended (a later one that ended first waits its turn, so the
        looks see the same pairs whatever order trials end in)."""
        seen, base = self._seen.get(name, {}), self._seen.get(None, {})
        out = []
        for r in range(self._scheduled[name]):
            if r not in seen or r not in base:
                break
            a, b = base[r], seen[r]
            if a is not None and b is not None:
                out.append(self._sign * (a - b))
        return out

    def status(self) -> dict[str, str]:
        """Each component's state now: ``open``, ``decided``, ``precise`` or ``max``.

        A function of the component's own results observed so far, judged at its
        latest complete look (fewer pairs than ``min``: open). *Decided* is its
        always-valid p-value below ``alpha / m`` (Bonferroni over the ``m``
        components): unlike Holm's step-down it does not depend on how far the other
        components have got, so decisions do not depend on the order trials end in;
        and since Holm's adjusted p-value is never above Bonferroni's, a component
        decided here is significant in the final (Holm) analysis too.
        """
        looks = self.repeats.looks()
        m = max(1, len(self._names))
        out = {}
        for name in self._names:
            pairs = self._pairs_of(name)
            reached = [n for n in looks if n <= len(pairs)]
            s = self._look(name, pairs, reached[-1]) if reached else None
            p_value = 1.0 if s is None or s.p_value is None else s.p_value
            self._p_now[name] = p_value
            if s is None:
                out[name] = "open"
            elif p_value * m < self.alpha:
                out[name] = "decided"
            elif (
                self.repeats.precision is not None
                and s.half_width is not None
                and s.half_width <= self.repeats.precision
            ):
                out[name] = "precise"
            elif s.n >= self.repeats.max or (
                self._scheduled[name] >= self.repeats.max and self._look_complete(name)
            ):
                out[name] = "max"
            else:
                out[name] = "open"
        return out

    def _look(self, name: str, pairs: list[float], n: int) -> LookStats:
        """The statistics of the component's look at ``n`` pairs (fixed once reached:
        the first ``n`` pairs in repeat order never change), cached."""
        key = (name, n)
        if key not in self._looks:
            self._looks[key] = sequential_stats(pairs[:n], self.repeats, self.confidence)
        return self._looks[key]

    def resume(self, trials: Sequence[FrozenTrial]) -> None:
        """Rebuild from an earlier run's trials: what was suggested, and the results
        of those that ended (pending ones are observed later, as they end again)."""
        self._take_seed(trials)
        self._spent_before = max(
            (
                float(t.info["elapsed"])
                for t in trials
                if isinstance(t.info.get("elapsed"), int | float)
                and not isinstance(t.info.get("elapsed"), bool)
                and math.isfinite(t.info["elapsed"])
            ),
            default=0.0,
        )
        self._queue = []
        self._scheduled = {None: 0, **{n: 0 for n in self._names}}
        for t in trials:
            ablated = t.params.get("ablated")
            arm = "&".join(ablated) if isinstance(ablated, list) else ablated
            r = int(t.params.get("repeat", 0))
            self._scheduled[arm] = max(self._scheduled.get(arm, 0), r + 1)
            if isinstance(ablated, list):
                self._pairs = self._pairs or []
                pair = (str(ablated[0]), str(ablated[1]))
                if pair not in self._pairs:
                    self._pairs.append(pair)
            if t.status.is_terminal:
                self._record(t)
            else:
                self._in_flight += 1
        self._suggested = len(trials)
        # Trials of the first pass that the earlier run had not suggested yet.
        self._queue_upto(self.repeats.min)
        if self._pairs is not None:
            for r in range(self.repeats.min):
                for a, b in self._pairs:
                    if self._scheduled.get(f"{a}&{b}", 0) <= r:
                        self._push(f"{a}&{b}", r)


_ABLATORS: dict[str, type[Ablator]] = {"loco": LOCO}


def ablator_class(name: str) -> type[Ablator]:
    """The ablator registered as ``name`` or imported from ``"module:Class"``.

    Raises:
        SpecError: Under ``ablator`` for an unknown name or a class that is not an
            :class:`Ablator`.
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
    return cast("type[Ablator]", cls)


def planned_trials(
    name: str,
    components: Sequence[Component],
    *,
    seed: int | None,
    options: Mapping[str, Any] | None = None,
) -> int:
    """The most trials the study can run (its ``num_trials``), with the options
    checked. LOCO counts them without being built (the ablator is built once, for
    the run); another ablator is built to ask it.

    Raises:
        SpecError: As :func:`get_ablator`.
    """
    cls = ablator_class(name)
    options = dict(options or {})
    if cls is LOCO:  # the same checks, in the same order, as LOCO's constructor
        counted = LOCO.most_trials(
            components, *loco_options({k: v for k, v in options.items() if k in LOCO.option_names})
        )
        allowed = ", ".join(LOCO.option_names)
        unknown = [
            (f"ablator.{k}", f"unknown option for {LOCO.name}; allowed: {allowed}")
            for k in options
            if k not in LOCO.option_names
        ]
        if unknown:
            raise SpecError(unknown)
        return counted
    return get_ablator(name, components, direction="max", seed=seed, options=options).num_trials


def get_ablator(
    name: str,
    components: Sequence[Component],
    *,
    direction: str,
    seed: int | None,
    options: Mapping[str, Any] | None = None,
    alpha: float = 0.05,
    confidence: float = 0.95,
) -> Ablator:
    """Build the ablator registered as ``name`` or imported from ``"module:Class"``.

    ``alpha`` and ``confidence`` (the study's) go to ablators that decide as they
    go (:class:`LOCO`).

    Raises:
        SpecError: Under ``ablator`` for an unknown name or a class that is not an
            :class:`Ablator`; under ``ablator.<option>`` for a bad option.
    """
    cls = ablator_class(name)
    extra = {"alpha": alpha, "confidence": confidence} if issubclass(cls, LOCO) else {}
    return cls(components, direction=direction, seed=seed, **extra, **dict(options or {}))
