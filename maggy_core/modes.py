"""What kind of experiment a spec is: a search, or an ablation study.

The mode is chosen once, from the spec (:func:`mode_of`), and everything that
differs between the two kinds lives in its :class:`Mode`: checking the training
function before Spark starts, building the optimiser (or ablator), what the
workers are given for each trial, and what happens after the last trial. The
runner, the worker and the CLI call the mode; none of them asks which kind of
experiment it runs.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from maggy_core.exceptions import SpecError
from maggy_core.loading import check_signature, load_callable

if TYPE_CHECKING:
    from maggy_core.optimizers import Optimizer
    from maggy_core.spec import ExperimentSpec
    from maggy_core.stopping import StoppingRule
    from maggy_core.storage import Storage


class Mode(ABC):
    """The parts of running an experiment that depend on its kind.

    Implementations are stateless; one instance per kind.
    """

    name: ClassVar[str]

    @abstractmethod
    def check(self, spec: ExperimentSpec, train_fn: Callable[..., Any]) -> None:
        """Check, before Spark starts, that ``train_fn`` fits the experiment.

        Raises:
            SpecError: naming the field and what is allowed.
        """

    @abstractmethod
    def optimizer(self, spec: ExperimentSpec, seed: int | None) -> Optimizer:
        """A fresh optimiser (or ablator) for the experiment, seeded with ``seed``."""

    def check_optimizer(self, spec: ExperimentSpec) -> None:
        """Surface, before Spark starts, the errors building the optimiser would raise.

        Raises:
            SpecError: naming the field and what is allowed.
        """
        self.optimizer(spec, spec.seed)

    @abstractmethod
    def describe(self, spec: ExperimentSpec) -> str:
        """A few words for logs: what is searched and how."""

    def worker_block(self, spec: ExperimentSpec) -> dict[str, Any] | None:
        """JSON the workers need beyond the launch's own fields (None: nothing)."""
        return None

    def injections(
        self, block: Mapping[str, Any] | None, params: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Extra keyword arguments of one trial's training function, in the worker."""
        return {}

    #: The key of ``result.json`` the mode's analysis goes under (None: it has none).
    analysis_key: ClassVar[str | None] = None

    def finish(
        self,
        spec: ExperimentSpec,
        result: dict[str, Any],
        *,
        results_root: Path | Storage,
        experiment_dir: Path | Storage,
    ) -> None:
        """After the last trial, before ``result.json`` is written: the mode's
        :meth:`analyse` goes under :attr:`analysis_key`. The trials are kept
        whatever the analysis does: one that raises leaves ``{"error": ...}``."""
        if self.analysis_key is None:
            return
        try:
            result[self.analysis_key] = self.analyse(spec, result, results_root, experiment_dir)
        except Exception as exc:
            import logging

            logging.getLogger("maggy").exception("the %s analysis failed", self.name)
            result[self.analysis_key] = {"error": f"{type(exc).__name__}: {exc}"}

    def analyse(
        self,
        spec: ExperimentSpec,
        result: dict[str, Any],
        root: Path | Storage,
        folder: Path | Storage,
    ) -> dict[str, Any]:
        """The analysis of the ended experiment (``root``: the results' root,
        ``folder``: the experiment's); only modes with an :attr:`analysis_key`."""
        raise NotImplementedError


def stopping_rule(spec: ExperimentSpec) -> StoppingRule:
    """The spec's stopping rule (the same for every mode)."""
    from maggy_core.stopping import get_stopping_rule

    return get_stopping_rule(
        spec.es_policy,
        direction=spec.direction,
        min_trials=spec.es_min,
        interval=spec.es_interval,
        options=spec.es_options,
    )


class SearchMode(Mode):
    """Hyperparameter search: the optimiser suggests points of the search space."""

    name = "search"

    def check(self, spec: ExperimentSpec, train_fn: Callable[..., Any]) -> None:
        problems = check_signature(train_fn, spec.searchspace.names(), spec.train_kwargs)
        if problems:
            raise SpecError(problems)

    def optimizer(self, spec: ExperimentSpec, seed: int | None) -> Optimizer:
        from maggy_core.optimizers import get_optimizer

        return get_optimizer(
            spec.optimizer.name,
            spec.searchspace,
            num_trials=spec.num_trials,
            direction=spec.direction,
            seed=seed,
            options=spec.optimizer.options,
        )

    def describe(self, spec: ExperimentSpec) -> str:
        return (
            f"{len(spec.searchspace)} parameters, {spec.num_trials} trials, "
            f"optimizer {spec.optimizer.name}"
        )


class StudyMode(Mode):
    """An ablation study: the ablator's fixed plan of trials, then the analysis."""

    name = "study"
    analysis_key = "ablation"

    def check(self, spec: ExperimentSpec, train_fn: Callable[..., Any]) -> None:
        from maggy_core.ablation.study import INJECTED, check_dataset_columns

        problems = check_signature(train_fn, [], [*spec.train_kwargs, *INJECTED])
        problems += _check_generators(spec)
        if problems:
            raise SpecError(problems)
        if spec.ablation is not None:
            check_dataset_columns(spec.ablation)

    def optimizer(self, spec: ExperimentSpec, seed: int | None) -> Optimizer:
        from maggy_core.ablation.ablators import get_ablator

        study, ablator = spec.ablation, spec.ablator
        if study is None or ablator is None:
            raise SpecError.one("ablation", "a study needs its ablation block and ablator")
        return get_ablator(
            ablator.name,
            study.plan(),
            direction=spec.direction,
            seed=seed,
            options=ablator.options,
            alpha=study.alpha,
            confidence=study.confidence,
        )

    def check_optimizer(self, spec: ExperimentSpec) -> None:
        """Nothing: validating the spec checked the ablator's options and counted its
        trials (:func:`maggy_core.ablation.ablators.planned_trials`); the ablator is
        built once, for the run."""

    def describe(self, spec: ExperimentSpec) -> str:
        study, ablator = spec.ablation, spec.ablator
        components = len(study.plan()) if study is not None else 0
        name = ablator.name if ablator is not None else "loco"
        return f"{components} components, {spec.num_trials} trials, ablator {name}"

    def worker_block(self, spec: ExperimentSpec) -> dict[str, Any] | None:
        """The study's block, with the table's path made absolute (Spark workers
        do not run in the driver's directory) and ``features: {auto_groups: t}``
        replaced by the groups the driver made: the workers get the plan, and do
        not group the table's columns again."""
        if spec.ablation is None:
            return None
        block = spec.ablation.to_dict()
        if isinstance(spec.ablation.features, Mapping):
            block["features"] = [
                list(c.members) for c in spec.ablation.plan() if c.kind == "feature"
            ]
        if block["dataset"] is not None:
            block["dataset"] = str(Path(block["dataset"]).expanduser().resolve())
        return block

    def injections(
        self, block: Mapping[str, Any] | None, params: Mapping[str, Any]
    ) -> dict[str, Any]:
        return _study_context(block).injections(params.get("ablated"))

    def analyse(
        self,
        spec: ExperimentSpec,
        result: dict[str, Any],
        root: Path | Storage,
        folder: Path | Storage,
    ) -> dict[str, Any]:
        """The study's analysis (:func:`maggy_core.ablation.report.finish_study`)."""
        from maggy_core.ablation.report import finish_study

        if spec.ablation is None:
            raise SpecError.one("ablation", "a study needs its ablation block")
        return finish_study(
            spec.ablation,
            result,
            name=spec.name,
            direction=spec.direction,
            results_root=root,
            experiment_dir=folder,
        )


MODES: dict[str, Mode] = {m.name: m for m in (SearchMode(), StudyMode())}


def mode_of(spec: ExperimentSpec) -> Mode:
    """The mode of a spec: a study when it has an ``ablation`` block."""
    return MODES["study" if spec.ablation is not None else "search"]


def mode_named(name: str) -> Mode:
    """The mode of a launch (its ``mode`` field)."""
    try:
        return MODES[name]
    except KeyError:
        raise SpecError.one("mode", f"must be one of {', '.join(MODES)}, got {name!r}") from None


def _check_generators(spec: ExperimentSpec) -> list[tuple[str, str]]:
    """The study's ``module:function`` paths must import in the driver too."""
    study = spec.ablation
    if study is None:
        return []
    paths = {
        "ablation.base_model": study.base_model,
        "ablation.dataset_generator": study.dataset_generator,
        **{f"ablation.custom_models.{k}": v for k, v in study.custom_models.items()},
    }
    problems = []
    for where, path in paths.items():
        if path is None:
            continue
        try:
            load_callable(path)
        except SpecError as err:
            problems += [(where, message) for _, message in err.problems]
    return problems


_CONTEXTS: dict[str, Any] = {}


def _study_context(block: Mapping[str, Any] | None) -> Any:
    """The worker's TrialContext of the study (kept, so the table is read once)."""
    import json

    from maggy_core.ablation.study import AblationSpec, TrialContext

    key = json.dumps(block, sort_keys=True)
    context = _CONTEXTS.get(key)
    if context is None:
        _CONTEXTS.clear()
        context = _CONTEXTS[key] = TrialContext(AblationSpec.parse(dict(block or {})))
    return context
