"""Asynchronous successive halving (ASHA), and Hyperband-style brackets on top of it.

ASHA (Li et al., 2020) runs configurations at a small budget and promotes the best
``1/reduction_factor`` of each rung to the next, larger budget as soon as the
rung holds enough results, without waiting for the rung to fill: no worker ever
waits for a barrier. Budgets: ``resource_min * reduction_factor**k`` for rungs
``k = 0, 1, ...`` up to ``resource_max``. The budget reaches the training
function as ``budget`` (and as ``hparams["budget"]``). A promoted configuration
continues from the checkpoint its previous rung's trial saved: the trial's info
names that trial (``checkpoint``), and the training function receives its
checkpoint as the argument ``checkpoint`` (``None`` if it saved none), so a
promotion costs only the added budget when the function resumes from it.

New configurations are drawn at random, or with ``sampler: tpe`` proposed by Optuna's
TPE from every configuration's rungs so far (BOHB's idea: a model proposes, successive
halving decides; here with promotions that continue from their checkpoints).
"""

from __future__ import annotations

import math
import numbers
import random
from collections.abc import Mapping, Sequence
from typing import Any

from maggy_core.optimizers._base import DONE, WAIT, Decision, Optimizer, Suggestion
from maggy_core.searchspace import Searchspace
from maggy_core.trial import FrozenTrial, TrialStatus

_DEFAULTS = {"resource_min": 1, "resource_max": 27, "reduction_factor": 3}
#: Where new configurations come from (the option ``sampler``).
SAMPLERS = ("random", "tpe")


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


class ASHA(Optimizer):
    """Asynchronous successive halving (``optimizer: asha``).

    ``num_trials`` counts configurations: the search starts that many and promotes
    them as far as the rungs allow, so the number of trials is larger (about
    ``num_trials * 1.5`` with ``reduction_factor: 3``). Whenever a worker is free,
    the optimiser promotes, from the highest rung down, a configuration in the top
    ``1/reduction_factor`` of its rung that was not promoted yet; when there is
    none, it starts a new random configuration at the lowest budget; once
    ``num_trials`` configurations have started, it answers WAIT while trials that
    may earn a promotion still run, and DONE when none does.

    A promotion's ``info`` names the trial of the same configuration at the rung
    below (``checkpoint``); the worker hands that trial's checkpoint to the new
    one (see ``maggy_core.reporter``). Rungs rank by the final metric, larger is
    better for ``direction: max`` and smaller for ``min``; failed trials are not
    ranked, early-stopped ones rank by their last value.

    With ``brackets: B > 1`` (``optimizer: hyperband`` sets B to the number of
    rungs), new configurations go round-robin to B brackets; bracket ``b``
    starts its configurations at rung ``b``, so some run long from the start:
    Hyperband's hedge against a small budget that ranks badly.

    A resumed run rebuilds the rungs from the trials' ``info`` (bracket, rung,
    configuration) and metrics (:meth:`resume`).

    Options:
        resource_min: Budget of the lowest rung (> 0, default 1).
        resource_max: Largest budget (> resource_min, default 27).
        reduction_factor: Keep the top 1/reduction_factor of a rung (> 1, default 3).
        brackets: Number of Hyperband brackets (1 .. number of rungs, default 1).
        sampler: Where new configurations come from: ``random`` (default) or ``tpe``.
            With ``tpe``, each new configuration is Optuna's ``TPESampler``'s proposal
            given every configuration so far as one trial: COMPLETE with its value at
            the largest budget if it got there, else PRUNED with its value at each rung
            it reached (TPE ranks those by the highest rung, then the value: the
            furthest-promoted configurations are its good ones), RUNNING while its
            first trial runs (so parallel proposals spread out).
        sampler_options: Options of ``TPESampler`` (those of the ``tpe`` optimiser:
            ``n_startup_trials``, ``multivariate``, ``constant_liar``, ...).
    """

    name = "asha"
    option_names = (
        "resource_min",
        "resource_max",
        "reduction_factor",
        "brackets",
        "sampler",
        "sampler_options",
    )

    def setup(self) -> None:
        opts = {**_DEFAULTS, **self.options}
        self.budgets = _budgets(
            opts["resource_min"], opts["resource_max"], opts["reduction_factor"]
        )
        self.eta = float(opts["reduction_factor"])
        self.brackets = int(opts.get("brackets", self._default_brackets()))
        self.sign = 1.0 if self.direction == "max" else -1.0
        self._proposer: Any = None
        if opts.get("sampler", "random") == "tpe":
            from maggy_core.optimizers._optuna import TPESearch

            self._proposer = TPESearch(
                self.searchspace,
                num_trials=1,
                direction=self.direction,
                seed=self._seed,
                **dict(opts.get("sampler_options") or {}),
            )
        self._reset()

    def _default_brackets(self) -> int:
        return 1

    def _reset(self) -> None:
        self.count = 0
        self.configs: list[dict[str, Any]] = []
        # Per bracket and rung: config -> signed metric of its ended trial there.
        self.results: list[list[dict[int, float]]] = [
            [{} for _ in self.budgets] for _ in range(self.brackets)
        ]
        # Per bracket and rung: configs promoted out of that rung.
        self.promoted: list[list[set[int]]] = [
            [set() for _ in self.budgets] for _ in range(self.brackets)
        ]
        self.history: list[list[Any]] = []  # [bracket, rung, config, signed metric|None, ended]
        self.pending = 0  # suggested trials not observed yet
        # (bracket, rung, config) -> id of the trial that ran it: its checkpoint
        # goes to the configuration's promotion.
        self.trial_ids: dict[tuple[int, int, int], str] = {}

    @classmethod
    def check(cls, searchspace: Searchspace, options: Mapping[str, Any]) -> list[tuple[str, str]]:
        problems = super().check(searchspace, options)
        if "budget" in searchspace:
            problems.append(
                (
                    "searchspace.budget",
                    f"{cls.name} gives the training function 'budget'; rename it",
                )
            )
        opts = {**_DEFAULTS, **options}
        low, high, eta = opts["resource_min"], opts["resource_max"], opts["reduction_factor"]
        if not _is_number(low) or low <= 0:
            problems.append(
                ("optimizer.options.resource_min", f"must be a number > 0, got {low!r}")
            )
        if not _is_number(high) or (_is_number(low) and high <= low):
            problems.append(
                ("optimizer.options.resource_max", f"must be a number > resource_min, got {high!r}")
            )
        if not _is_number(eta) or eta <= 1:
            problems.append(
                ("optimizer.options.reduction_factor", f"must be a number > 1, got {eta!r}")
            )
        problems += _check_sampler(searchspace, options)
        if "brackets" in options and not problems:
            rungs = len(_budgets(low, high, eta))
            b = options["brackets"]
            if isinstance(b, bool) or not isinstance(b, int) or not 1 <= b <= rungs:
                problems.append(
                    (
                        "optimizer.options.brackets",
                        f"must be an integer from 1 to the number of rungs ({rungs}), got {b!r}",
                    )
                )
        return problems

    # ------------------------------------------------------------ suggest / observe

    def suggest(self) -> Suggestion | Decision:
        promotion = self._promotion()
        info: dict[str, Any] = {}
        if promotion is not None:
            bracket, rung, config = promotion
            self.promoted[bracket][rung - 1].add(config)
            previous = self.trial_ids.get((bracket, rung - 1, config))
            if previous:
                info["checkpoint"] = previous
        elif len(self.configs) >= self.num_trials:
            return WAIT if self.pending > 0 else DONE
        else:
            config = len(self.configs)
            bracket = config % self.brackets
            rung = bracket
            self.configs.append(self._new_config(config))
        self.count += 1
        self.pending += 1
        self.history.append([bracket, rung, config, None, False])
        info.update(bracket=bracket, rung=rung, config=config)
        return Suggestion(dict(self.configs[config]), budget=self.budgets[rung], info=info)

    def _new_config(self, config: int) -> dict[str, Any]:
        """Configuration number ``config``: random, or TPE's proposal given the rest."""
        if self._proposer is None:
            return self.searchspace.sample(random.Random(f"{self._seed}/asha/{config}"))
        from maggy_core.optimizers._optuna import _Record

        # One trial per configuration, rebuilt for every new one (O(configurations)
        # per new configuration; promotions ask nothing). A configuration's state
        # changes as it climbs the rungs, which a study's finished trial cannot.
        # A configuration a resume found no trial for ({}) is left out.
        records = [
            _Record(params=dict(c), info={}, **self._config_outcome(i))
            for i, c in enumerate(self.configs)
            if c
        ]
        self._proposer._rebuild(records)
        self._proposer._count = 0
        suggestion = self._proposer.suggest()
        if not isinstance(suggestion, Suggestion):  # pragma: no cover - count reset above
            raise RuntimeError(f"TPE answered {suggestion!r} for a new configuration")
        return dict(suggestion.params)

    def _config_outcome(self, config: int) -> dict[str, Any]:
        """Configuration ``config`` as a trial for TPE: its state, value and rungs."""
        bracket = config % self.brackets
        top = len(self.budgets) - 1
        history = [
            (rung, self.sign * self.results[bracket][rung][config])
            for rung in range(bracket, top + 1)
            if config in self.results[bracket][rung]
        ]
        if history and history[-1][0] == top:
            return {"state": "complete", "value": history[-1][1]}
        if history:
            return {"state": "pruned", "value": history[-1][1], "history": history}
        running = any(r[2] == config and not r[4] for r in self.history)
        return {"state": "running" if running else "fail"}

    def _promotion(self) -> tuple[int, int, int] | None:
        """The (bracket, next rung, config) to promote, highest rung first."""
        top = len(self.budgets) - 1
        for rung in range(top - 1, -1, -1):
            for bracket in range(min(rung + 1, self.brackets)):
                done = self.results[bracket][rung]
                keep = int(len(done) / self.eta)
                if keep == 0:
                    continue
                ranked = sorted(done, key=lambda c: (-done[c], c))[:keep]
                for config in ranked:
                    if config not in self.promoted[bracket][rung]:
                        return bracket, rung + 1, config
        return None

    def observe(self, trial: FrozenTrial) -> None:
        info = trial.info
        try:
            bracket, rung, config = int(info["bracket"]), int(info["rung"]), int(info["config"])
        except (KeyError, TypeError, ValueError):
            return  # not one of ours (a trial run again after a resume is)
        self.trial_ids[(bracket, rung, config)] = trial.trial_id
        signed = None
        if trial.status is not TrialStatus.FAILED and trial.metric is not None:
            signed = self.sign * trial.metric
            self.results[bracket][rung][config] = signed
        for record in reversed(self.history):
            if record[:3] == [bracket, rung, config] and not record[4]:
                record[3], record[4] = signed, True
                self.pending -= 1
                break

    # ------------------------------------------------------------ resume and state

    def resume(self, trials: Sequence[FrozenTrial]) -> None:
        self._reset()
        for trial in trials:
            self.count += 1
            info = trial.info
            if not {"bracket", "rung", "config"} <= info.keys():
                continue
            bracket, rung, config = int(info["bracket"]), int(info["rung"]), int(info["config"])
            while len(self.configs) <= config:
                self.configs.append({})
            self.configs[config] = dict(trial.params)
            if rung > bracket:
                self.promoted[bracket][rung - 1].add(config)
            self.history.append([bracket, rung, config, None, False])
            self.pending += 1
            if trial.status.is_terminal:
                self.observe(trial)


class Hyperband(ASHA):
    """ASHA with Hyperband's brackets (``optimizer: hyperband``): as many brackets
    as rungs unless ``brackets`` says otherwise."""

    name = "hyperband"

    def _default_brackets(self) -> int:
        return len(self.budgets)


def _check_sampler(searchspace: Searchspace, options: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Problems with the options ``sampler`` and ``sampler_options``."""
    where = "optimizer.options"
    sampler = options.get("sampler", "random")
    if sampler not in SAMPLERS:
        return [(f"{where}.sampler", f"must be one of {', '.join(SAMPLERS)}, got {sampler!r}")]
    sampler_options = options.get("sampler_options")
    if sampler_options is None:
        return []
    if not isinstance(sampler_options, Mapping):
        return [(f"{where}.sampler_options", f"must be a mapping, got {sampler_options!r}")]
    if sampler != "tpe":
        return [(f"{where}.sampler_options", "applies only with sampler: tpe")]
    from maggy_core.optimizers._optuna import TPESearch

    return [
        (field.replace(f"{where}.", f"{where}.sampler_options.", 1), message)
        for field, message in TPESearch.check(searchspace, sampler_options)
        if field != "searchspace"  # said once, by ASHA's own check
    ]


def _budgets(low: float, high: float, eta: float) -> list[float]:
    """``low * eta**k`` for every k with a budget <= high (a little float slack);
    integers stay integers, so ``budget`` can be a number of epochs."""
    rungs = int(math.floor(math.log(high / low) / math.log(eta) + 1e-9)) + 1
    out: list[float] = []
    for k in range(rungs):
        value = low * eta**k
        out.append(int(round(value)) if abs(value - round(value)) < 1e-9 else value)
    return out
