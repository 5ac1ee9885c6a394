"""The experiment spec: one serialisable, validated description of an experiment.

A spec is written as YAML or JSON (or a dict) and read with :func:`load_spec` or
:meth:`ExperimentSpec.from_dict`. Field names follow MAGGY 1.x's
``HyperparameterOptConfig``, which :func:`HyperparameterOptConfig` still builds.
Every problem in a spec is reported at once in one
:class:`~maggy_core.exceptions.SpecError`, each under its dotted field path::

    name: nightly-hpo
    train_fn: maggy_core.examples.digits:train
    searchspace:
      lr: [DOUBLE, [0.0001, 0.1], log]
      units: [INTEGER, [16, 256]]
    optimizer: randomsearch        # or {name: gridsearch, options: {}}
    num_trials: 20
    direction: max
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from maggy_core.ablation.sequential import MAX_REPEATS
from maggy_core.ablation.study import AblationSpec, AblationStudy
from maggy_core.exceptions import SpecError
from maggy_core.optimizers import resolve_optimizer
from maggy_core.searchspace import Searchspace, check_nesting
from maggy_core.stopping import available_stopping_rules, get_stopping_rule

_ID = re.compile(r"[A-Za-z0-9._-]{1,100}")
#: Upper bounds of the counts in a spec: validation (and everything after it) stays
#: bounded in time and memory whatever the input; a count above one is refused
#: with a message naming the field and the maximum.
MAX_TRIALS = 1_000_000
MAX_WORKERS = 10_000
MIN_HB_INTERVAL = 0.01
_OPTIMIZER_KEYS = ("name", "options")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_int(
    problems: list[tuple[str, str]],
    name: str,
    value: Any,
    minimum: int,
    maximum: int | None = None,
) -> None:
    if not _is_int(value) or value < minimum:
        problems.append((name, f"must be an integer >= {minimum}, got {value!r}"))
    elif maximum is not None and value > maximum:
        problems.append((name, f"must be at most {maximum:,}, got {value:,}"))


def _check_id(problems: list[tuple[str, str]], name: str, value: Any) -> None:
    if not isinstance(value, str) or not _ID.fullmatch(value):
        problems.append((name, f"must be 1-100 letters, digits, '-', '_' or '.', got {value!r}"))


def _is_import_path(value: str) -> bool:
    module, sep, attr = value.partition(":")
    parts = module.split(".")
    return bool(sep) and attr.isidentifier() and all(p.isidentifier() for p in parts)


@dataclass(frozen=True)
class OptimizerSpec:
    """Which optimiser to use, and its options.

    Attributes:
        name: A registered name (see ``maggy_core.optimizers.available_optimizers``),
            stored lower case, or a ``"module:Class"`` import path, kept as given.
        options: Keyword options for the optimiser, JSON types only.

    Raises:
        SpecError: Under ``optimizer.name`` / ``optimizer.options`` if either has
            the wrong type. Whether the optimiser exists is checked by
            :class:`ExperimentSpec`.
    """

    name: str = "randomsearch"
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        problems = []
        if not isinstance(self.name, str) or not self.name:
            problems.append(("optimizer.name", f"must be a non-empty string, got {self.name!r}"))
        elif ":" not in self.name:
            object.__setattr__(self, "name", self.name.lower())
        try:
            # A JSON round trip makes options compare equal after serialisation.
            options = json.loads(json.dumps(self.options, allow_nan=False))
        except (TypeError, ValueError):
            options = None
        if not isinstance(options, dict):
            problems.append(("optimizer.options", "must be a mapping of JSON values"))
        else:
            object.__setattr__(self, "options", options)
        if problems:
            raise SpecError(problems)

    @classmethod
    def parse(cls, value: Any, field: str = "optimizer", *, flat: bool = False) -> OptimizerSpec:
        """Read ``"name"``, ``{"name": ..., "options": {...}}`` or an OptimizerSpec:
        the one parser of every ``{name, options}`` field (``optimizer``,
        ``es_policy``, ``ablator``).

        Args:
            value: The field's value.
            field: The field's name, for errors (``es_policy.options``, ...).
            flat: Also take options beside ``name`` (``{name: loco, repeats: 5}``,
                the ablator's MAGGY 1.x form); nested ``options`` win.

        Raises:
            SpecError: Under ``field`` when the form is wrong.
        """
        try:
            return cls._parse(value, flat)
        except SpecError as err:
            if field == "optimizer":
                raise
            raise SpecError(
                [(field + f.removeprefix("optimizer"), m) for f, m in err.problems]
            ) from None

    @classmethod
    def _parse(cls, value: Any, flat: bool) -> OptimizerSpec:
        if isinstance(value, OptimizerSpec):
            return value
        if isinstance(value, str):
            return cls(value)
        if isinstance(value, Mapping):
            unknown = [str(k) for k in value if k not in _OPTIMIZER_KEYS]
            nested = value.get("options") or {}
            if "name" in value and (flat or not unknown):
                if not isinstance(nested, Mapping):
                    raise SpecError.one("optimizer.options", "must be a mapping of JSON values")
                beside = {k: v for k, v in value.items() if k not in _OPTIMIZER_KEYS}
                return cls(value["name"], {**beside, **nested})
            message = "takes only the keys name (required) and options (a mapping)"
            if unknown and not flat:
                message += f"; unknown: {', '.join(unknown)}; put them under options"
            raise SpecError.one("optimizer", message)
        raise SpecError.one("optimizer", "must be a name or {name: ..., options: {...}}")

    def to_dict(self) -> dict[str, Any]:
        """``{"name": ..., "options": {...}}``."""
        return {"name": self.name, "options": dict(self.options)}


@dataclass(frozen=True, kw_only=True)
class ExperimentSpec:
    """A validated hyperparameter-optimisation experiment.

    Construction validates and normalises every field and raises one SpecError
    listing all problems. Build it from data with :meth:`from_dict` (which also
    rejects unknown keys) and change it with :meth:`replace`.

    Attributes:
        name: 1-100 letters, digits, ``-``, ``_``, ``.``.
        train_fn: ``"module:function"``; ``None`` only when the function is handed
            over directly (``lagom``).
        searchspace: The hyperparameters (a Searchspace, or its dict form). The
            spec holds its own copy.
        optimizer: An OptimizerSpec, a name or ``{name, options}``.
        num_trials: How many trials to run (>= 1).
        direction: ``"max"`` or ``"min"``.
        optimization_key: The name of the metric to optimise.
        es_policy: Early-stopping rule name (``"median"``, ``"percentile"``,
            ``"none"``); ``None`` or ``False`` mean ``"none"``. Also read as
            ``{name: ..., options: {...}}``, which fills ``es_options``.
        es_options: Options of the rule, e.g. ``{percentile: 25}``.
        es_min: Finished trials needed before early stopping acts (>= 0).
        es_interval: Early stopping acts at steps that are multiples of it (>= 1).
        hb_interval: Seconds between worker heartbeats (> 0).
        workers: Parallel workers (Spark tasks) (>= 1).
        seed: Seed of the optimiser, 0 <= seed < 2**32, or ``None``.
        max_consecutive_failures: Failed trials in a row that end the experiment.
        max_attempts: How often a trial is run when its worker dies (>= 1).
        experiment_id: Id of the run (as ``name``), or ``None`` to make one.
        description: Free text.
        train_kwargs: Fixed keyword arguments given to ``train_fn`` in every
            trial (JSON values, e.g. the path of a dataset a pipeline wrote); a
            name may not also be a hyperparameter.
        ablation: An ablation study instead of a search (see
            :mod:`maggy_core.ablation.study`); then ``searchspace`` stays empty,
            ``num_trials`` follows from the plan and ``es_policy`` is ``none``.
        ablator: How the study plans its trials: ``"loco"`` (the default) or
            ``{name: loco, repeats: 5}``; stored as an OptimizerSpec.
    """

    name: str = "experiment"
    train_fn: str | None = None
    searchspace: Searchspace = field(default_factory=Searchspace)
    optimizer: OptimizerSpec = field(default_factory=OptimizerSpec)
    num_trials: int = 10
    direction: str = "max"
    optimization_key: str = "metric"
    es_policy: str = "median"
    es_options: dict[str, Any] = field(default_factory=dict)
    es_min: int = 5
    es_interval: int = 1
    hb_interval: float = 1.0
    workers: int = 2
    seed: int | None = None
    max_consecutive_failures: int = 5
    max_attempts: int = 3
    experiment_id: str | None = None
    description: str = ""
    train_kwargs: dict[str, Any] = field(default_factory=dict)
    ablation: AblationSpec | None = None
    ablator: OptimizerSpec | None = None

    def __post_init__(self) -> None:
        values, problems = _validate({f.name: getattr(self, f.name) for f in _FIELDS})
        if problems:
            raise SpecError(problems)
        for key, value in values.items():
            object.__setattr__(self, key, value)

    @classmethod
    def from_dict(cls, data: Any, *, require_train_fn: bool = True) -> ExperimentSpec:
        """Build a spec from a mapping (parsed YAML or JSON, or :meth:`to_dict`).

        Args:
            data: Field name -> value; ``searchspace`` is required.
            require_train_fn: Whether ``train_fn`` must be given (False when the
                function is handed over directly, as in ``lagom``).

        Raises:
            SpecError: Listing every problem: unknown keys (with a suggestion),
                missing fields, invalid values.
        """
        if not isinstance(data, Mapping):
            raise SpecError.one("", f"a spec must be a mapping, got {type(data).__name__}")
        check_nesting(data, "")
        names = [f.name for f in _FIELDS]
        problems = []
        for key in data:
            if key not in names:
                close = difflib.get_close_matches(str(key), names, n=1)
                hint = f"did you mean {close[0]!r}? " if close else ""
                problems.append((str(key), f"unknown key; {hint}allowed: {', '.join(names)}"))
        known = {k: v for k, v in data.items() if k in names}
        if known.get("ablation") is not None:
            # A study's size follows from its plan, and every trial runs to its end.
            known.setdefault("num_trials", None)
            known.setdefault("es_policy", "none")
        if require_train_fn and known.get("train_fn") is None:
            problems.append(("train_fn", "is required: 'module:function'"))
        values, more = _validate({**_defaults(), **known})
        if problems or more:
            raise SpecError(problems + more)
        return cls._validated(values)

    @classmethod
    def _validated(cls, values: Mapping[str, Any]) -> ExperimentSpec:
        """A spec from values :func:`_validate` has just checked and normalised,
        without checking them again (a spec is validated once)."""
        spec = object.__new__(cls)
        for f in _FIELDS:
            object.__setattr__(spec, f.name, values[f.name])
        return spec

    def to_dict(self) -> dict[str, Any]:
        """The spec as JSON-able data that :meth:`from_dict` reads back equal."""
        out = {f.name: getattr(self, f.name) for f in _FIELDS}
        out["searchspace"] = self.searchspace.to_dict()
        out["optimizer"] = self.optimizer.to_dict()
        out["ablation"] = None if self.ablation is None else self.ablation.to_dict()
        out["ablator"] = None if self.ablator is None else self.ablator.to_dict()
        return out

    def replace(self, **changes: Any) -> ExperimentSpec:
        """A validated copy with ``changes`` applied (same forms as :meth:`from_dict`).

        Raises:
            SpecError: If a key is unknown or the result is invalid.
        """
        return ExperimentSpec.from_dict({**self.to_dict(), **changes}, require_train_fn=False)


_FIELDS = dataclasses.fields(ExperimentSpec)


def _defaults() -> dict[str, Any]:
    """Fresh default values of every field but the required searchspace."""
    return {
        f.name: f.default_factory() if callable(f.default_factory) else f.default
        for f in _FIELDS
        if f.name != "searchspace"
    }


def _validate(values: dict[str, Any]) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """Check and normalise every field of a spec.

    Returns:
        The normalised values and every problem found, as ``(field, message)``.
    """
    problems: list[tuple[str, str]] = []
    out = dict(values)
    _check_id(problems, "name", values["name"])
    train_fn = values["train_fn"]
    if train_fn is not None and not (isinstance(train_fn, str) and _is_import_path(train_fn)):
        problems.append(("train_fn", f"must be 'module:function', got {train_fn!r}"))

    space: Searchspace | None = None
    _validate_ablation(values, out, problems)
    if values.get("ablation") is not None:
        if "searchspace" in values and _raw_space(values):
            problems.append(
                ("searchspace", "an ablation study takes no searchspace; search first, then ablate")
            )
        out["searchspace"] = Searchspace()
    elif "searchspace" not in values:
        problems.append(("searchspace", "is required: name -> [TYPE, VALUES]"))
    else:
        try:
            raw = values["searchspace"]
            space = Searchspace.from_dict(raw.to_dict() if isinstance(raw, Searchspace) else raw)
            out["searchspace"] = space
        except SpecError as err:
            problems += err.problems

    try:
        optimizer = OptimizerSpec.parse(values["optimizer"])
        out["optimizer"] = optimizer
        optimizer_cls = resolve_optimizer(optimizer.name)
        if space is not None:
            problems += optimizer_cls.check(space, optimizer.options)
    except SpecError as err:
        problems += err.problems

    if values.get("ablation") is None:
        _check_int(problems, "num_trials", values["num_trials"], 1, MAX_TRIALS)
    direction = values["direction"]
    if isinstance(direction, str) and direction.lower() in ("max", "min"):
        out["direction"] = direction.lower()
    else:
        problems.append(("direction", f"must be 'max' or 'min', got {direction!r}"))
    key = values["optimization_key"]
    if not isinstance(key, str) or not key:
        problems.append(("optimization_key", f"must be a non-empty string, got {key!r}"))

    policy = values["es_policy"]
    policy = "none" if policy is None or policy is False else policy
    es_options = values["es_options"]
    if not isinstance(es_options, Mapping):
        problems.append(("es_options", f"must be a mapping of option -> value, got {es_options!r}"))
        es_options = {}
    if isinstance(policy, Mapping):
        try:
            named = OptimizerSpec.parse(policy, "es_policy")
            es_options, policy = {**es_options, **named.options}, named.name
        except SpecError as err:
            problems += err.problems
            policy = "none"
    rules = available_stopping_rules()
    out["es_options"] = dict(es_options)
    if isinstance(policy, str) and policy.lower() in rules:
        out["es_policy"] = policy.lower()
        try:
            get_stopping_rule(
                policy, direction="max", min_trials=0, interval=1, options=dict(es_options)
            )
        except SpecError as err:
            problems += err.problems
    else:
        problems.append(("es_policy", f"must be one of {', '.join(rules)}, got {policy!r}"))
    _check_int(problems, "es_min", values["es_min"], 0)
    _check_int(problems, "es_interval", values["es_interval"], 1)
    hb = values["hb_interval"]
    if isinstance(hb, bool) or not isinstance(hb, (int, float)) or not (0 < hb < math.inf):
        problems.append(("hb_interval", f"must be a number of seconds > 0, got {hb!r}"))
    elif hb < MIN_HB_INTERVAL:
        problems.append(("hb_interval", f"must be at least {MIN_HB_INTERVAL} s, got {hb!r}"))
    else:
        out["hb_interval"] = float(hb)
    _check_int(problems, "workers", values["workers"], 1, MAX_WORKERS)
    seed = values["seed"]
    if seed is not None and not (_is_int(seed) and 0 <= seed < 2**32):
        problems.append(("seed", f"must be null or an integer in [0, 2**32), got {seed!r}"))
    _check_int(problems, "max_consecutive_failures", values["max_consecutive_failures"], 1)
    _check_int(problems, "max_attempts", values["max_attempts"], 1)
    if values["experiment_id"] is not None:
        _check_id(problems, "experiment_id", values["experiment_id"])
    if not isinstance(values["description"], str):
        problems.append(("description", "must be a string"))
    kwargs = values["train_kwargs"]
    if not isinstance(kwargs, Mapping) or not all(isinstance(k, str) for k in kwargs):
        problems.append(
            ("train_kwargs", f"must be a mapping of name -> JSON value, got {kwargs!r}")
        )
    else:
        try:
            out["train_kwargs"] = json.loads(json.dumps(dict(kwargs), allow_nan=False))
        except (TypeError, ValueError) as err:
            problems.append(
                ("train_kwargs", f"values must be JSON (str, number, bool, list, dict): {err}")
            )
        for name in kwargs:
            if space is not None and name in space:
                problems.append(
                    (f"train_kwargs.{name}", "is also a hyperparameter; give it one place")
                )
    return out, problems


def _raw_space(values: Mapping[str, Any]) -> Any:
    raw = values["searchspace"]
    return raw.to_dict() if isinstance(raw, Searchspace) else raw


def _validate_ablation(
    values: Mapping[str, Any], out: dict[str, Any], problems: list[tuple[str, str]]
) -> AblationSpec | None:
    """Check ``ablation``, ``ablator``, and what a study implies for
    ``num_trials`` and ``es_policy``; fill ``out``. Returns the study or None."""
    from maggy_core.ablation.ablators import planned_trials

    raw, ablator = values.get("ablation"), values.get("ablator")
    if raw is None:
        if ablator is not None:
            problems.append(("ablator", "needs an ablation block: ablation: {features: ...}"))
        return None
    study: AblationSpec | None = None
    try:
        study = AblationSpec.parse(raw)
        out["ablation"] = study
    except SpecError as err:
        problems += err.problems
    try:
        named = OptimizerSpec.parse("loco" if ablator is None else ablator, "ablator", flat=True)
        name, options = named.name, named.options
        raw_repeats = options.get("repeats")
        repeats = raw_repeats if isinstance(raw_repeats, int) and raw_repeats is not True else 0
        if repeats > MAX_REPEATS:
            # Refused before the plan (repeats x components trials) is made.
            raise SpecError.one(
                "ablator.repeats", f"must be at most {MAX_REPEATS:,}, got {repeats:,}"
            )
        if study is not None and repeats > 0:
            planned = (len(study.plan()) + 1) * repeats
            if planned > MAX_TRIALS:
                raise SpecError.one(
                    "ablator.repeats",
                    f"makes a plan of {planned:,} trials; at most {MAX_TRIALS:,} (num_trials)",
                )
        seed = values.get("seed")
        # Counted, not planned: the ablator is built once, by the run.
        most = planned_trials(
            name,
            study.plan() if study is not None else [],
            seed=seed if _is_int(seed) else 0,
            options=options,
        )
        out["ablator"] = named
        wanted = values.get("num_trials")
        if study is None:
            pass
        elif wanted is None:
            out["num_trials"] = most
        elif wanted != most:
            problems.append(
                ("num_trials", f"the ablation plan has {most} trials; leave num_trials out")
            )
    except SpecError as err:
        problems += err.problems
    policy = values.get("es_policy")
    if policy not in (None, False, "none"):
        problems.append(
            ("es_policy", "must be none for an ablation study: every trial runs to its end")
        )
    return study


def load_spec(path: str | Path, *, require_train_fn: bool = True) -> ExperimentSpec:
    """Read a spec from a ``.yaml``, ``.yml`` or ``.json`` file.

    Raises:
        SpecError: If the file is missing, unreadable, not YAML/JSON, not a mapping
            at the top level, or not a valid spec.
    """
    import yaml

    path = Path(path)
    if path.suffix.lower() not in (".yaml", ".yml", ".json"):
        raise SpecError.one("", f"{path}: a spec file must end in .yaml, .yml or .json")
    try:
        text = path.read_text(encoding="utf-8")
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except OSError as err:
        raise SpecError.one("", f"{path}: cannot read the spec: {err.strerror or err}") from None
    except (ValueError, yaml.YAMLError) as err:
        raise SpecError.one("", f"{path}: cannot parse the spec: {err}") from None
    if not isinstance(data, Mapping):
        raise SpecError.one("", f"{path}: the top level must be a mapping of field -> value")
    return ExperimentSpec.from_dict(data, require_train_fn=require_train_fn)


def HyperparameterOptConfig(  # noqa: N802 - MAGGY 1.x's name
    num_trials: int,
    optimizer: str | Mapping[str, Any],
    searchspace: Searchspace | Mapping[str, Any],
    optimization_key: str = "metric",
    direction: str = "max",
    es_interval: int = 1,
    es_min: int = 10,
    es_policy: str = "median",
    name: str = "HPOptimization",
    description: str = "",
    hb_interval: float = 1,
    **more: Any,
) -> ExperimentSpec:
    """MAGGY 1.x's config, returned as an :class:`ExperimentSpec`.

    Args:
        num_trials, optimizer, searchspace, ...: As in MAGGY 1.x; ``optimizer`` is
            a name or ``{name, options}``.
        **more: Any other :class:`ExperimentSpec` field (``workers``, ``seed``,
            ``train_fn``, ...).

    Raises:
        SpecError: Listing every problem.
    """
    return ExperimentSpec.from_dict(
        {
            "num_trials": num_trials,
            "optimizer": optimizer,
            "searchspace": searchspace,
            "optimization_key": optimization_key,
            "direction": direction,
            "es_interval": es_interval,
            "es_min": es_min,
            "es_policy": es_policy,
            "name": name,
            "description": description,
            "hb_interval": hb_interval,
            **more,
        },
        require_train_fn=False,
    )


def AblationConfig(  # noqa: N802 - MAGGY 1.x's name
    ablation_study: AblationStudy | AblationSpec | Mapping[str, Any],
    ablator: str | Mapping[str, Any] = "loco",
    direction: str = "max",
    name: str = "ablationStudy",
    description: str = "",
    hb_interval: float = 1,
    **more: Any,
) -> ExperimentSpec:
    """MAGGY 1.x's ablation config, returned as an :class:`ExperimentSpec`.

    Args:
        ablation_study: The study.
        ablator: ``"loco"`` or ``{"name": "loco", "repeats": 5}``.
        direction, name, description, hb_interval: As in the spec.
        **more: Any other spec field (``workers``, ``seed``, ``optimization_key``, ...).

    Raises:
        SpecError: Listing every problem.
    """
    study = AblationSpec.parse(ablation_study)
    return ExperimentSpec.from_dict(
        {
            "ablation": study.to_dict(),
            "ablator": ablator,
            "direction": direction,
            "name": name,
            "description": description,
            "hb_interval": hb_interval,
            **more,
        },
        require_train_fn=False,
    )
