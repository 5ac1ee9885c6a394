"""Model-based search through Optuna's ask-and-tell interface.

Registered names:

- ``tpe``: Optuna's ``TPESampler`` (tree-structured Parzen estimator).
- ``gp``: Optuna's ``GPSampler`` (Gaussian process; needs PyTorch).
- ``cmaes``: Optuna's ``CmaEsSampler`` (CMA-ES; needs the ``cmaes`` package).
- ``optuna``: any other sampler of ``optuna.samplers``, named by the option
  ``sampler`` (``QMCSampler``, ``NSGAIISampler``, ``RandomSampler``, ...;
  ``TPESampler``, Optuna's default, when not given).

Every other option is passed to the sampler's constructor and checked against its
signature; options that take Python objects (callables, samplers) cannot come from a
spec. The spec's ``seed`` seeds the sampler (an option ``seed`` is refused). Optuna
is imported only when one of these optimisers is checked or built, so importing
``maggy_core`` stays light.

How the search maps onto Optuna:

- The space: DOUBLE -> ``FloatDistribution(lo, hi, log, step)``, INTEGER ->
  ``IntDistribution(lo, hi, log, step)``, DISCRETE and CATEGORICAL ->
  ``CategoricalDistribution(values)``. A stepped DOUBLE is suggested on the
  space's own grid (``0.3``, not Optuna's ``0.30000000000000004``).
- One in-memory study. Every suggestion is one ``study.ask()``; the trial stays
  RUNNING until :meth:`observe`, so samplers that consider running trials (TPE with
  ``constant_liar``, Optuna 5's default; GP's batch acquisition) spread parallel
  suggestions out instead of proposing one point to every idle worker.
- Results: FINISHED -> COMPLETE with the metric; FAILED (or a NaN metric) -> FAIL;
  EARLY_STOPPED -> the model learns from it too, in the way its sampler can:
  TPE (and any sampler but GP and CMA-ES) gets its reports as intermediate values,
  then PRUNED: TPE ranks pruned trials below complete ones, the further a trial got
  the better, then by its value at the step it reached, which is what a stopped
  trial tells (it was worse than others at that step) without taking a partial
  value for a final one. GP and CMA-ES ignore pruned trials (CMA-ES's
  ``consider_pruned_trials`` still needs a complete trial to know the space), so
  they are told a stopped trial as COMPLETE with its last value at the step it
  reached: a pessimistic estimate of where its curve would have ended. Without
  this, under aggressive stopping (``es_policy: asha``) most trials would teach
  those models nothing.
- Repeatability: each ``ask`` uses a fresh sampler seeded from ``(seed, trial
  number)`` (QMC keeps the seed itself: it indexes one low-discrepancy sequence),
  and what samplers store in the study (CMA-ES's optimiser, QMC's counter) is
  copied into the suggestion's ``info``. A suggestion therefore depends only on
  the seed and the trials in the study, which is what makes :meth:`resume` continue
  exactly as an uninterrupted search would.
"""

from __future__ import annotations

import contextlib
import copy
import decimal
import importlib
import importlib.util
import inspect
import json
import logging
import random
import re
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from maggy_core.exceptions import SpecError
from maggy_core.optimizers._base import DONE, Decision, Optimizer, Suggestion
from maggy_core.searchspace import CATEGORICAL, DOUBLE, INTEGER, Parameter, Searchspace
from maggy_core.trial import FrozenTrial, TrialStatus

if TYPE_CHECKING:
    from optuna.distributions import BaseDistribution

log = logging.getLogger(__name__)

#: Sampler classes that need a package besides Optuna: (module, what, extra).
_NEEDS: dict[str, tuple[str, str, str]] = {
    "GPSampler": ("torch", "PyTorch", "gp"),
    "CmaEsSampler": ("cmaes", "the cmaes package", "optuna"),
}
#: Samplers whose seed selects one fixed sequence that trials index into: they get
#: the same seed on every ask (a per-trial seed would turn QMC into random search).
_SEQUENCE_SEEDED = frozenset({"QMCSampler"})
#: Samplers this optimiser refuses, and why.
_REFUSED: dict[str, str] = {
    "GridSampler": (
        "repeats the space as a grid and stops Optuna's own optimize loop when done; "
        "use the gridsearch optimizer"
    ),
    "BruteForceSampler": (
        "stops Optuna's own optimize loop when done, which this ask-and-tell search "
        "does not run; use the gridsearch optimizer"
    ),
}
#: Names allowed in the annotation of a constructor parameter a spec can set.
_JSON_ANNOTATION = frozenset(
    {
        "None",
        "bool",
        "int",
        "float",
        "str",
        "dict",
        "list",
        "tuple",
        "Any",
        "Sequence",
        "Mapping",
        "Literal",
        "Optional",
        "Union",
        "GridValueType",
    }
)
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_STUDY_NAME = "maggy"
#: The sampler of ``optuna`` without a ``sampler`` option: Optuna's own default.
_DEFAULT_SAMPLER = "TPESampler"
_STATES = ("running", "complete", "pruned", "fail")
#: Samplers that ignore PRUNED trials: they are told a stopped trial as COMPLETE.
_PRUNED_UNSEEN = frozenset({"GPSampler", "CmaEsSampler"})


def _module_available(name: str) -> bool:
    """Whether ``name`` can be imported, without importing it (tests patch this)."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


_quietened = False


def _import_optuna() -> Any:
    """Import Optuna, with its per-trial INFO logging turned down to warnings (once)."""
    global _quietened
    optuna = importlib.import_module("optuna")
    if not _quietened:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        _quietened = True
    return optuna


@contextlib.contextmanager
def _quiet(deprecations: bool = False) -> Iterator[None]:
    """Silence Optuna's ExperimentalWarnings (QMC, GP, ...) for the block.

    With ``deprecations``, FutureWarnings too: a sampler is built for every ask,
    and its deprecation warnings were shown once already, when the spec was checked.
    """
    from optuna.exceptions import ExperimentalWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        if deprecations:
            warnings.simplefilter("ignore", FutureWarning)
        yield


def _sampler_classes() -> dict[str, type]:
    """The concrete sampler classes of ``optuna.samplers``, by class name."""
    samplers = _import_optuna().samplers
    out: dict[str, type] = {}
    for name in getattr(samplers, "__all__", dir(samplers)):
        obj = getattr(samplers, name, None)
        if (
            inspect.isclass(obj)
            and issubclass(obj, samplers.BaseSampler)
            and not inspect.isabstract(obj)
        ):
            out[name] = obj
    return out


def _json_settable(param: inspect.Parameter) -> bool:
    """Whether a constructor parameter takes values a JSON spec can give."""
    annotation = param.annotation
    if annotation is inspect.Parameter.empty:
        return True
    text = annotation if isinstance(annotation, str) else inspect.formatannotation(annotation)
    return set(_IDENTIFIER.findall(text)) <= _JSON_ANNOTATION


def _constructor_params(cls: type) -> list[inspect.Parameter]:
    """The keyword parameters of a sampler's constructor (not self, not *args)."""
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return [
        p
        for p in inspect.signature(cls).parameters.values()
        if p.name != "self" and p.kind in kinds
    ]


def _unusable_reason(cls: type) -> str | None:
    """Why a sampler cannot be built from a spec, or ``None`` if it can."""
    if cls.__name__ in _REFUSED:
        return _REFUSED[cls.__name__]
    needs_object = [
        p.name
        for p in _constructor_params(cls)
        if p.default is inspect.Parameter.empty and not _json_settable(p)
    ]
    if needs_object:
        return f"needs Python objects ({', '.join(needs_object)}), which a spec cannot give"
    return None


def _usable_samplers() -> list[str]:
    return sorted(n for n, c in _sampler_classes().items() if _unusable_reason(c) is None)


def _derive_seed(seed: int, number: int | str) -> int:
    """A seed for trial ``number``: distinct per trial, the same in every process.

    Also a valid NumPy seed whatever the spec's seed (negative, or above 2**32).
    """
    return random.Random(f"{seed}/{number}").randrange(2**31)


def _finite_or_inf(value: Any) -> bool:
    """A number Optuna accepts as a trial value (anything but NaN)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value


def _grid_top(param: Parameter) -> float:
    """The highest value of a stepped DOUBLE's grid, computed as Optuna does.

    Optuna rounds ``hi`` down to ``lo + k * step`` in decimal arithmetic on the
    numbers' shortest reprs (and warns when it has to); doing it first keeps the
    warning away and the grid the same.
    """
    lo, hi = param.values
    d_lo, d_step = decimal.Decimal(str(lo)), decimal.Decimal(str(param.step))
    d_range = decimal.Decimal(str(hi)) - d_lo
    return float((d_range // d_step) * d_step + d_lo)


def _distribution(param: Parameter) -> BaseDistribution:
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    lo, hi = param.values if param.type in (DOUBLE, INTEGER) else (None, None)
    if param.type == DOUBLE:
        if param.step is None:
            return FloatDistribution(lo, hi, log=param.log)
        return FloatDistribution(lo, _grid_top(param), step=param.step)
    if param.type == INTEGER:
        step = int(param.step or 1)
        return IntDistribution(lo, lo + (param.grid_size() - 1) * step, log=param.log, step=step)
    return CategoricalDistribution(param.values)


def _on_grid(param: Parameter, raw: float) -> float:
    """A stepped DOUBLE's value as the space writes it: ``lo + k * step``, 12 digits."""
    lo, hi = param.values
    step = float(param.step)  # type: ignore[arg-type]
    k = min(max(round((raw - lo) / step), 0), param.grid_size() - 1)
    return min(max(float(f"{lo + k * step:.12g}"), lo), hi)


def _outcome(
    trial: FrozenTrial, stopped_complete: bool = False
) -> tuple[str, float | None, list[tuple[int, float]]]:
    """What Optuna is told about a terminal trial: (state, value, intermediate values).

    The value of a pruned trial is its last intermediate value, as Optuna's ``tell``
    sets it; the intermediate values keep the first report of each step, as
    Optuna's ``Trial.report`` does. With ``stopped_complete`` (samplers that ignore
    pruned trials), an early-stopped trial is COMPLETE with that last value.
    """
    if trial.status is TrialStatus.FINISHED:
        if _finite_or_inf(trial.metric):
            return "complete", float(trial.metric), []  # type: ignore[arg-type]
        return "fail", None, []
    if trial.status is TrialStatus.EARLY_STOPPED:
        steps: dict[int, float] = {}
        for step, value in trial.history:
            steps.setdefault(int(step), float(value))
        if not steps and _finite_or_inf(trial.metric):
            steps[0] = float(trial.metric)  # type: ignore[arg-type]
        history = sorted(steps.items())
        last = steps[max(steps)] if steps else None
        if stopped_complete:
            if last is None or not _finite_or_inf(last):
                return "fail", None, []
            return "complete", last, []
        return "pruned", (last if _finite_or_inf(last) else None), history
    return "fail", None, []


@dataclass
class _Record:
    """One trial of the study, as kept in the state: what was suggested and its result."""

    params: dict[str, Any]
    info: dict[str, Any]
    state: str = "running"
    value: float | None = None
    history: list[tuple[int, float]] = field(default_factory=list)
    trial_id: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "trial_id": self.trial_id,
            "params": dict(self.params),
            "state": self.state,
            "value": self.value,
            "history": [[step, value] for step, value in self.history],
            "info": self.info,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> _Record:
        state = data["state"]
        if state not in _STATES:
            raise ValueError(f"unknown trial state {state!r}")
        value = data.get("value")
        return cls(
            params=dict(data["params"]),
            info=dict(data.get("info") or {}),
            state=state,
            value=None if value is None else float(value),
            history=[(int(s), float(v)) for s, v in data.get("history") or ()],
            trial_id=data.get("trial_id"),
        )

    @classmethod
    def from_trial(cls, trial: FrozenTrial, stopped_complete: bool = False) -> _Record:
        record = cls(params=dict(trial.params), info=dict(trial.info), trial_id=trial.trial_id)
        if trial.status.is_terminal:
            record.state, record.value, record.history = _outcome(trial, stopped_complete)
        return record


class _OptunaSearch(Optimizer):
    """Common base of the Optuna optimisers; see the module docstring.

    Contract (beyond :class:`~maggy_core.optimizers.Optimizer`'s):
        - Each suggestion's ``info`` holds ``{"optuna_trial": n}`` (the Optuna trial
          number) plus what the sampler stored with the trial; :meth:`observe`
          finds the trial by it (or by trial id or params for trials rebuilt by
          :meth:`resume`).
        - :meth:`resume` rebuilds the study from the journal's trials (its only
          persistence: the state holds every trial, so nothing is journaled).
        - With the same space, seed and options, the same observations in the same
          order give the same suggestions, in one process or across a resume.
    """

    #: The class in ``optuna.samplers``; ``None``: the option ``sampler`` names it.
    sampler_class: ClassVar[str | None] = None

    def setup(self) -> None:
        self._optuna = _import_optuna()
        kwargs = dict(self.options)
        name = self.sampler_class or kwargs.pop("sampler", _DEFAULT_SAMPLER)
        self._sampler_name: str = name
        self._sampler_cls = _sampler_classes()[name]
        params = {p.name: p for p in _constructor_params(self._sampler_cls)}
        # A fresh sampler per ask would repeat Optuna's fallback warning on every
        # trial; it is logged once below instead. (TPE's default is None: deprecated.)
        warn = params.get("warn_independent_sampling")
        if warn is not None and warn.default is True:
            kwargs.setdefault("warn_independent_sampling", False)
        self._stopped_complete = name in _PRUNED_UNSEEN
        self._sampler_kwargs = kwargs
        self._takes_seed = "seed" in params
        self._distributions = {n: _distribution(p) for n, p in self.searchspace.items()}
        self._neutral = self._optuna.samplers.RandomSampler(seed=0)
        self._count = 0
        self._records: list[_Record] = []
        self._rebuild([])
        if name == "CmaEsSampler":
            others = [n for n, p in self.searchspace.items() if p.type not in (DOUBLE, INTEGER)]
            if others:
                log.warning(
                    "%s: CMA-ES models numbers only; it samples %s at random",
                    self.name,
                    ", ".join(others),
                )

    # ------------------------------------------------------------------ checks

    @classmethod
    def _label(cls, sampler: str | None) -> str:
        return cls.name if cls.sampler_class else f"{cls.name} ({sampler})"

    @classmethod
    def check(cls, searchspace: Searchspace, options: Mapping[str, Any]) -> list[tuple[str, str]]:
        """Problems with the space or the options for this sampler.

        Reports, each as ``(field, message)``: a missing Optuna, PyTorch (gp) or
        cmaes package; an unknown or unusable ``sampler`` (optuna); unknown
        options and ``seed`` as an option; a space the sampler cannot handle
        (cmaes without numeric parameters; CATEGORICAL values Optuna cannot tell
        apart); options the sampler's constructor rejects.
        """
        problems = super().check(searchspace, {})
        if not _module_available("optuna"):
            problems.append(
                (
                    "optimizer.name",
                    f"{cls.name} needs Optuna; install it: pip install 'maggy-airflow[optuna]'",
                )
            )
            return problems
        options = dict(options)
        sampler = cls.sampler_class or cls._check_sampler_option(options.pop("sampler", None))
        if isinstance(sampler, tuple):
            return [*problems, sampler]
        label = cls._label(sampler)
        missing = cls._check_needs(sampler)
        if missing:
            problems.append(missing)
        sampler_cls = _sampler_classes()[sampler]
        problems += cls._check_options(sampler_cls, label, options)
        problems += cls._check_space(sampler, label, searchspace)
        if not problems:
            problems += cls._check_construction(sampler_cls, label, options)
        return problems

    @classmethod
    def _check_sampler_option(cls, sampler: Any) -> str | tuple[str, str]:
        where = "optimizer.options.sampler"
        if sampler is None:
            return _DEFAULT_SAMPLER
        hint = f"; allowed: {', '.join(_usable_samplers())}"
        classes = _sampler_classes()
        if not isinstance(sampler, str) or sampler not in classes:
            return (where, f"unknown Optuna sampler {sampler!r}{hint}")
        reason = _unusable_reason(classes[sampler])
        if reason is not None:
            return (where, f"{sampler} {reason}")
        return sampler

    @classmethod
    def _check_needs(cls, sampler: str) -> tuple[str, str] | None:
        if sampler not in _NEEDS:
            return None
        module, what, extra = _NEEDS[sampler]
        if _module_available(module):
            return None
        install = f"install it: pip install 'maggy-airflow[{extra}]'"
        if cls.sampler_class:
            return ("optimizer.name", f"{cls.name} needs {what} (Optuna's {sampler}); {install}")
        return ("optimizer.options.sampler", f"{sampler} needs {what}; {install}")

    @classmethod
    def _check_options(
        cls, sampler_cls: type, label: str, options: Mapping[str, Any]
    ) -> list[tuple[str, str]]:
        params = {p.name: p for p in _constructor_params(sampler_cls)}
        allowed = [n for n, p in params.items() if n != "seed" and _json_settable(p)]
        if not cls.sampler_class:
            allowed.insert(0, "sampler")
        problems = []
        for key in options:
            where = f"optimizer.options.{key}"
            if key == "seed":
                problems.append((where, "is not an option: the spec's seed seeds the sampler"))
            elif key in params and not _json_settable(params[key]):
                annotation = params[key].annotation
                problems.append(
                    (where, f"takes a Python object ({annotation}), which a spec cannot give")
                )
            elif key not in params:
                message = f"unknown option for {label}; allowed: {', '.join(allowed)}"
                problems.append((where, message))
        return problems

    @classmethod
    def _check_space(
        cls, sampler: str, label: str, searchspace: Searchspace
    ) -> list[tuple[str, str]]:
        problems = []
        for name, p in searchspace.items():
            if p.type != CATEGORICAL:
                continue
            flags = [v for v in p.values if isinstance(v, bool)]
            clash = [v for v in p.values if not isinstance(v, bool) and any(v == f for f in flags)]
            if clash:
                problems.append(
                    (
                        f"searchspace.{name}",
                        f"{label}: Optuna cannot tell {flags[0]!r} from {clash[0]!r} among "
                        "CATEGORICAL values; use strings",
                    )
                )
        if sampler == "CmaEsSampler" and len(searchspace) > 0:
            numeric = [n for n, p in searchspace.items() if p.type in (DOUBLE, INTEGER)]
            if not numeric:
                problems.append(
                    (
                        "optimizer.name",
                        f"{label} needs at least one DOUBLE or INTEGER hyperparameter: CMA-ES "
                        f"models numbers only and would sample {', '.join(searchspace.names())} "
                        "at random; use tpe or gp",
                    )
                )
        return problems

    @classmethod
    def _check_construction(
        cls, sampler_cls: type, label: str, options: Mapping[str, Any]
    ) -> list[tuple[str, str]]:
        kwargs = dict(options)
        if "seed" in {p.name for p in _constructor_params(sampler_cls)}:
            kwargs["seed"] = 0
        try:
            with _quiet():
                sampler_cls(**kwargs)
        except Exception as err:  # any rejection is a problem of the spec
            return [("optimizer.options", f"{label}: Optuna's {sampler_cls.__name__} says: {err}")]
        return []

    # ------------------------------------------------------------------ the study

    def _new_sampler(self, number: int) -> Any:
        kwargs = dict(self._sampler_kwargs)
        if self._takes_seed:
            sequence = self._sampler_name in _SEQUENCE_SEEDED
            kwargs["seed"] = _derive_seed(self._seed, "sequence" if sequence else number)
        return self._sampler_cls(**kwargs)

    def _to_optuna(self, record: _Record) -> dict[str, Any]:
        """A record's params as the study holds them (raw values where they differ)."""
        missing = [n for n in self._distributions if n not in record.params]
        if missing:
            raise ValueError(f"params lack {', '.join(missing)}")
        raw = record.info.get("optuna_params") or {}
        return {n: raw.get(n, record.params[n]) for n in self._distributions}

    def _to_user(self, raw: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """Optuna's params as JSON values in the space, and the raw ones that differ."""
        params: dict[str, Any] = {}
        differing: dict[str, Any] = {}
        for name, p in self.searchspace.items():
            value = raw[name]
            if p.type == DOUBLE:
                value = float(value) if p.step is None else _on_grid(p, float(value))
            elif p.type == INTEGER:
                value = int(value)
            params[name] = value
            if p.type == DOUBLE and p.step is not None and value != float(raw[name]):
                differing[name] = float(raw[name])
        return params, differing

    def _rebuild(self, records: Sequence[_Record]) -> None:
        """Make a fresh study holding ``records``, in order, as trials 0, 1, ..."""
        optuna = self._optuna
        states = optuna.trial.TrialState
        storage = optuna.storages.InMemoryStorage()
        with _quiet():
            study = optuna.create_study(
                storage=storage,
                sampler=self._neutral,
                study_name=_STUDY_NAME,
                direction="maximize" if self.direction == "max" else "minimize",
            )
            study_id = storage.get_study_id_from_name(_STUDY_NAME)
            for record in records:
                state = states[record.state.upper()]
                value = record.value if state in (states.COMPLETE, states.PRUNED) else None
                intermediate = dict(record.history) if state == states.PRUNED else None
                frozen = optuna.trial.create_trial(
                    state=state,
                    value=value,
                    params=self._to_optuna(record),
                    distributions=self._distributions,
                    system_attrs=dict(record.info.get("optuna_attrs") or {}),
                    intermediate_values=intermediate,
                )
                study.add_trial(frozen)
                for key, attr in (record.info.get("optuna_study_attrs") or {}).items():
                    storage.set_study_system_attr(study_id, key, attr)
        self._storage, self._study, self._study_id = storage, study, study_id
        self._records = list(records)

    def _trial_id(self, number: int) -> int:
        return int(self._storage.get_trial_id_from_study_id_trial_number(self._study_id, number))

    # ------------------------------------------------------------------ interface

    def suggest(self) -> Suggestion | Decision:
        """The next point of the sampler, kept RUNNING in the study until observed."""
        if self._count >= self.num_trials:
            return DONE
        number = len(self._records)
        before = self._storage.get_study_system_attrs(self._study_id)
        with _quiet(deprecations=True):
            self._study.sampler = self._new_sampler(number)
            try:
                trial = self._study.ask(self._distributions)
            except BaseException:
                # Ask may have added a trial before failing; drop it with the study.
                self._rebuild(self._records)
                raise
            finally:
                self._study.sampler = self._neutral
        if trial.number != number:  # pragma: no cover - the study is ours alone
            raise RuntimeError(f"Optuna numbered trial {trial.number}, expected {number}")
        after = self._storage.get_study_system_attrs(self._study_id)
        changed = {k: v for k, v in after.items() if k not in before or before[k] != v}
        params, raw = self._to_user(trial.params)
        info: dict[str, Any] = {"optuna_trial": number}
        attrs = self._storage.get_trial_system_attrs(self._trial_id(number))
        if attrs:
            info["optuna_attrs"] = attrs
        if changed:
            info["optuna_study_attrs"] = changed
        if raw:
            info["optuna_params"] = raw
        if self.seed is None:
            info["optuna_seed"] = self._seed
        info = json.loads(json.dumps(info))
        self._records.append(_Record(params=params, info=info))
        self._count += 1
        # Copies: what the coordinator holds must not alias the study's records.
        return Suggestion(dict(params), info=copy.deepcopy(info))

    def _find(self, trial: FrozenTrial) -> int | None:
        """The study's trial number for ``trial``, if it is one still running."""
        running = [
            i
            for i, r in enumerate(self._records)
            if r.state == "running" and r.trial_id in (None, trial.trial_id)
        ]
        number = trial.info.get("optuna_trial") if isinstance(trial.info, Mapping) else None
        if (
            type(number) is int
            and number in running
            and self._records[number].params == trial.params
        ):
            return number
        for i in running:
            if self._records[i].trial_id == trial.trial_id:
                return i
        for i in running:
            if self._records[i].params == trial.params:
                return i
        return None

    def observe(self, trial: FrozenTrial) -> None:
        """Tell the study how ``trial`` ended (COMPLETE, PRUNED with reports, or FAIL).

        A trial this optimiser does not know as running (suggested by another
        optimiser, say) is added to the study as a finished trial, so the model
        still learns from it; a trial observed twice is ignored after the first.
        """
        if not trial.status.is_terminal:
            raise ValueError(f"observe takes a terminal trial, got {trial.status.value}")
        state, value, history = _outcome(trial, self._stopped_complete)
        number = self._find(trial)
        if number is None:
            if any(r.trial_id == trial.trial_id for r in self._records):
                log.warning("%s: trial %s observed twice; ignored", self.name, trial.trial_id)
                return
            self._add_foreign(trial, state, value, history)
            return
        record = self._records[number]
        record.trial_id = trial.trial_id
        states = self._optuna.trial.TrialState
        trial_id = self._trial_id(number)
        with _quiet():
            for step, reported in history:
                self._storage.set_trial_intermediate_value(trial_id, step, reported)
            self._study.tell(
                number,
                value if state == "complete" else None,
                state=states[state.upper()],
            )
        record.state, record.value, record.history = state, value, history

    def _add_foreign(
        self, trial: FrozenTrial, state: str, value: float | None, history: list[tuple[int, float]]
    ) -> None:
        try:
            self.searchspace.validate_params(trial.params)
        except SpecError:
            log.warning("%s: trial %s is outside the space; ignored", self.name, trial.trial_id)
            return
        record = _Record(
            params=dict(trial.params),
            info={},
            state=state,
            value=value,
            history=history,
            trial_id=trial.trial_id,
        )
        self._rebuild([*self._records, record])

    def resume(self, trials: Sequence[FrozenTrial]) -> None:
        """Rebuild the study from an earlier run's trials, in suggestion order.

        Terminal trials are added with their results, PENDING ones as running
        trials (observed later, found by trial id); every one counts as suggested.
        The sampler state each suggestion recorded in its ``info`` is restored, so
        the search continues as if it had not stopped.

        Raises:
            SpecError: Under ``optimizer_state`` if a trial's params do not fit the space.
        """
        if self.seed is None:
            seeds = [t.info["optuna_seed"] for t in trials if "optuna_seed" in t.info]
            if seeds:
                self._seed = int(seeds[0])
        try:
            self._rebuild([_Record.from_trial(t, self._stopped_complete) for t in trials])
        except (KeyError, TypeError, ValueError) as err:
            raise SpecError.one(
                "optimizer_state", f"cannot resume from the trials: {err}"
            ) from None
        self._count = len(trials)


class TPESearch(_OptunaSearch):
    """Tree-structured Parzen estimator: Optuna's ``TPESampler``.

    Options: those of ``TPESampler`` a spec can give (``n_startup_trials``,
    ``n_ei_candidates``, ``multivariate``, ``group``, ``constant_liar``,
    ``consider_endpoints``, ...). ``constant_liar`` (default true) makes running
    trials count as bad, so parallel suggestions spread out.
    """

    name = "tpe"
    sampler_class = "TPESampler"


class GPSearch(_OptunaSearch):
    """Gaussian-process Bayesian optimisation: Optuna's ``GPSampler``; needs PyTorch.

    Options: ``n_startup_trials``, ``deterministic_objective``. Running trials
    enter its batch acquisition function (qLogEI), so parallel suggestions spread out.
    """

    name = "gp"
    sampler_class = "GPSampler"


class CmaEsSearch(_OptunaSearch):
    """CMA-ES: Optuna's ``CmaEsSampler``; needs the ``cmaes`` package.

    It models the DOUBLE and INTEGER parameters and samples DISCRETE and
    CATEGORICAL ones at random; a space without numeric parameters is refused.
    Options: ``x0``, ``sigma0``, ``n_startup_trials``, ``popsize``,
    ``restart_strategy``, ``use_separable_cma``, ``with_margin``, ``lr_adapt``, ...
    """

    name = "cmaes"
    sampler_class = "CmaEsSampler"


class OptunaSearch(_OptunaSearch):
    """Any sampler of ``optuna.samplers``, named by the option ``sampler``.

    Example: ``{"name": "optuna", "options": {"sampler": "QMCSampler", "scramble":
    true}}``; without ``sampler`` it uses ``TPESampler``, as Optuna does. The other
    options go to the sampler's constructor. GridSampler and BruteForceSampler are
    refused (use ``gridsearch``), as are samplers that need Python objects
    (PartialFixedSampler).
    """

    name = "optuna"
