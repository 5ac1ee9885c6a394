"""Typed records: one definition of everything the engine writes down.

A trial as the journal and ``result.json`` hold it (:class:`TrialRecord`), the
journal's records (:class:`ExperimentRecord`, :class:`TrialStarted`,
:class:`TrialEnded`, :class:`StopRequested`, :class:`Resumed`, :class:`Ended`), and
the result (:class:`Result`, with :class:`BestTrial` and :class:`WorkerRecord`).
The coordinator, the journal's reader, the plugin, the CLI and the operator all
use these; nobody else reads these shapes by key.

Plain dataclasses with ``to_json`` (a dict of JSON types) and ``from_json``
rather than msgspec or pydantic: the shapes are small and flat, the hot path
(a journal line per transition) is one ``json.dumps`` of a dict either way, and
readers must accept what older versions wrote. ``from_json`` therefore takes
missing fields as their defaults and ignores unknown ones (an older journal
carries an ``optimizer`` state, a newer one may carry fields this version does not
know); writers only ever add fields, never rename one, so every earlier reader
keeps working.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from maggy_core.trial import FrozenTrial, TrialStatus, best_rank

__all__ = [
    "BestTrial",
    "Ended",
    "ExperimentRecord",
    "JournalRecord",
    "Origin",
    "Result",
    "Resumed",
    "StopRequested",
    "TrialEnded",
    "TrialRecord",
    "TrialStarted",
    "WorkerRecord",
    "record_from_json",
]


def _known(cls: type, data: Mapping[str, Any]) -> dict[str, Any]:
    """The entries of ``data`` that are fields of the dataclass ``cls``."""
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in data.items() if k in names}


def _number(value: Any) -> bool:
    """Whether ``value`` is a finite number (not a bool)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


@dataclass
class TrialRecord:
    """One trial, as ``trial_ended`` journal records and ``result.json`` hold it.

    Mutable: the coordinator's trial table owns one per trial and updates it as the
    trial moves on; everybody else gets a copy (:meth:`to_json`) or a
    :class:`~maggy_core.trial.FrozenTrial` (:meth:`frozen`).

    Attributes:
        trial_id: ``"t0007"``, unique within the experiment.
        params: Hyperparameter values (JSON).
        status: Where the trial is in its lifecycle.
        metric: The final metric; for early-stopped trials the last reported value;
            ``None`` while running and for failed trials.
        metrics: The other numbers the training function returned.
        history: ``[step, value]`` pairs of its live reports, in report order.
        budget: Resource given by a multi-fidelity optimiser, if any.
        info: Optimiser-private data attached at suggestion time.
        attempts: How often it was started (a lost worker's trial runs again).
        worker: The worker that ran its last attempt.
        start: Unix time its last attempt started (the worker's clock).
        duration: Seconds its last attempt ran.
        error: ``"Type: message"`` of a failed trial.
        traceback: The traceback of a failed trial.
        stop_reason: Why it was stopped early, when someone or something asked:
            ``"stopped from the UI by alice"``, ``"stopping rule median at step 4"``.
    """

    trial_id: str
    params: dict[str, Any]
    status: TrialStatus = TrialStatus.PENDING
    metric: float | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    history: list[tuple[int, float]] = field(default_factory=list)
    budget: float | None = None
    info: dict[str, Any] = field(default_factory=dict)
    attempts: int = 0
    worker: str | None = None
    start: float | None = None
    duration: float | None = None
    error: str | None = None
    traceback: str | None = None
    stop_reason: str | None = None

    def frozen(self) -> FrozenTrial:
        """The immutable snapshot optimisers and stopping rules receive."""
        return FrozenTrial(
            self.trial_id,
            dict(self.params),
            self.status,
            self.metric,
            tuple(self.history),
            self.budget,
            dict(self.info),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "trial_id": self.trial_id,
            "params": self.params,
            "status": self.status.value,
            "metric": self.metric,
            "metrics": self.metrics,
            "history": [list(h) for h in self.history],
            "budget": self.budget,
            "info": self.info,
            "attempts": self.attempts,
            "worker": self.worker,
            "start": self.start,
            "duration": self.duration,
            "error": self.error,
            "traceback": self.traceback,
            "stop_reason": self.stop_reason,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TrialRecord:
        values = _known(cls, data)
        values["status"] = TrialStatus(data.get("status", "pending"))
        values["history"] = [(int(s), float(v)) for s, v in data.get("history") or []]
        values["params"] = dict(data.get("params") or {})
        values["metrics"] = dict(data.get("metrics") or {})
        values["info"] = dict(data.get("info") or {})
        values["attempts"] = int(data.get("attempts") or 0)
        return cls(**values)

    def rank(self, sign: float) -> tuple[bool, float] | None:
        """Its rank for "best" (see :func:`~maggy_core.trial.best_rank`), or
        ``None`` when it cannot be the best (failed, no metric, not ended)."""
        if self.status not in (TrialStatus.FINISHED, TrialStatus.EARLY_STOPPED):
            return None
        if not _number(self.metric):
            return None
        return best_rank(self.status, float(self.metric or 0.0), sign)


@dataclass(frozen=True)
class Origin:
    """Where an experiment came from; every field ``None`` outside Airflow."""

    dag_id: str | None = None
    task_id: str | None = None
    run_id: str | None = None
    map_index: int | None = None

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> Origin:
        """Read the four fields from a mapping (missing ones are ``None``).

        Raises:
            ValueError: a field has the wrong type (the message names it).
        """
        values = _known(cls, data or {})
        for name in ("dag_id", "task_id", "run_id"):
            if values.get(name) is not None and not isinstance(values[name], str):
                raise ValueError(f"origin.{name}: must be a string or null, got {values[name]!r}")
        index = values.get("map_index")
        if index is not None and (isinstance(index, bool) or not isinstance(index, int)):
            raise ValueError(f"origin.map_index: must be an integer or null, got {index!r}")
        return cls(**values)


# ------------------------------------------------------------------ the journal


@dataclass(frozen=True, kw_only=True)
class JournalRecord:
    """One line of ``journal.jsonl``: ``{"type": ..., "time": ..., fields...}``."""

    type: ClassVar[str]
    time: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {"type": self.type, **dataclasses.asdict(self)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> JournalRecord:
        return cls(**_known(cls, data))


@dataclass(frozen=True, kw_only=True)
class ExperimentRecord(JournalRecord):
    """Opens every run of an experiment (the first, and each resume).

    ``seed`` is the seed in force: the spec's, or the one the first run drew, which
    a resume keeps so that the optimiser continues the same sequence.
    """

    type: ClassVar[str] = "experiment"
    experiment_id: str
    epoch: int = 1
    spec: dict[str, Any] = field(default_factory=dict)
    seed: int | None = None
    dag_id: str | None = None
    task_id: str | None = None
    run_id: str | None = None
    map_index: int | None = None

    @property
    def origin(self) -> Origin:
        return Origin(self.dag_id, self.task_id, self.run_id, self.map_index)


@dataclass(frozen=True, kw_only=True)
class TrialStarted(JournalRecord):
    """A trial (attempt) was handed to a worker."""

    type: ClassVar[str] = "trial_started"
    trial_id: str
    attempt: int
    params: dict[str, Any]
    budget: float | None = None
    info: dict[str, Any] = field(default_factory=dict)
    worker: str | None = None


@dataclass(frozen=True, kw_only=True)
class TrialEnded(JournalRecord):
    """A trial reached a terminal state."""

    type: ClassVar[str] = "trial_ended"
    trial_id: str
    trial: TrialRecord

    def to_json(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "time": self.time,
            "trial_id": self.trial_id,
            "trial": self.trial.to_json(),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TrialEnded:
        return cls(
            time=data.get("time", 0.0),
            trial_id=data["trial_id"],
            trial=TrialRecord.from_json(data["trial"]),
        )


@dataclass(frozen=True, kw_only=True)
class StopRequested(JournalRecord):
    """Someone asked one trial to stop. ``outcome`` is ``"stopping"`` when the
    trial was running (it ends early_stopped, with ``reason`` as its
    ``stop_reason``) or ``"ignored"`` (not running; ``detail`` says why)."""

    type: ClassVar[str] = "stop_requested"
    trial_id: str
    reason: str
    outcome: str
    detail: str = ""


@dataclass(frozen=True, kw_only=True)
class Resumed(JournalRecord):
    """A run resumed the experiment: ended trials kept, unfinished ones queued."""

    type: ClassVar[str] = "resumed"
    kept: int
    requeued: int


@dataclass(frozen=True, kw_only=True)
class Ended(JournalRecord):
    """A run ended (written after ``result.json``)."""

    type: ClassVar[str] = "ended"
    status: str
    reason: str = ""


_RECORDS: dict[str, type[JournalRecord]] = {
    cls.type: cls
    for cls in (ExperimentRecord, TrialStarted, TrialEnded, StopRequested, Resumed, Ended)
}


def record_from_json(data: Mapping[str, Any]) -> JournalRecord | None:
    """The typed record of one decoded journal line; ``None`` for a type this
    version does not know (a newer writer's), which readers skip.

    Raises:
        KeyError, TypeError, ValueError: a known type with missing or bad fields.
    """
    cls = _RECORDS.get(str(data.get("type")))
    return None if cls is None else cls.from_json(data)


# ------------------------------------------------------------------ the result


@dataclass(frozen=True)
class BestTrial:
    """The best trial of an experiment, as ``result.json`` names it."""

    trial_id: str
    params: dict[str, Any]
    metric: float | None
    status: str

    @classmethod
    def of(cls, trial: TrialRecord) -> BestTrial:
        return cls(trial.trial_id, dict(trial.params), trial.metric, trial.status.value)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class WorkerRecord:
    """What one worker did."""

    worker: str
    host: str = ""
    pid: int = 0
    trials: int = 0
    busy: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "busy": round(self.busy, 6)}


#: The part of a result that an Airflow XCom carries (and ``meta``'s ``summary``).
SUMMARY_KEYS = (
    "experiment_id",
    "name",
    "status",
    "reason",
    "direction",
    "optimization_key",
    "num_trials",
    "counts",
    "best",
    "duration",
    "results_dir",
    "dag_id",
    "task_id",
    "run_id",
    "map_index",
)


def best_of(trials: list[TrialRecord], direction: str) -> TrialRecord | None:
    """The best of ``trials`` (see :meth:`TrialRecord.rank`), or ``None``."""
    sign = 1.0 if direction == "max" else -1.0
    best: TrialRecord | None = None
    best_rank_: tuple[bool, float] | None = None
    for t in trials:
        rank = t.rank(sign)
        if rank is not None and (best_rank_ is None or rank > best_rank_):
            best, best_rank_ = t, rank
    return best


@dataclass
class Result:
    """``result.json``: an experiment's outcome and every trial.

    ``makespan``, ``spark`` and ``ablation`` are filled by the runner after the
    coordinator's loop; ``engine`` holds the engine's own measurements.
    """

    experiment_id: str
    name: str | None
    status: str
    reason: str
    direction: str
    optimization_key: str
    counts: dict[str, int]
    best: BestTrial | None
    trials: list[TrialRecord]
    started: float | None = None
    ended: float | None = None
    duration: float | None = None
    results_dir: str | None = None
    workers: list[WorkerRecord] = field(default_factory=list)
    spec: dict[str, Any] | None = None
    engine: dict[str, Any] = field(default_factory=dict)
    origin: Origin = field(default_factory=Origin)
    makespan: float | None = None
    spark: dict[str, Any] | None = None
    ablation: dict[str, Any] | None = None

    @property
    def num_trials(self) -> int:
        """How many trials ended."""
        return sum(1 for t in self.trials if t.status.is_terminal)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "experiment_id": self.experiment_id,
            "name": self.name,
            "status": self.status,
            "reason": self.reason,
            "direction": self.direction,
            "optimization_key": self.optimization_key,
            "num_trials": self.num_trials,
            "counts": dict(self.counts),
            "best": None if self.best is None else self.best.to_json(),
            "started": self.started,
            "ended": self.ended,
            "duration": self.duration,
            "results_dir": self.results_dir,
            **self.origin.to_json(),
            "workers": [w.to_json() for w in self.workers],
            "spec": self.spec,
            "engine": self.engine,
        }
        for name in ("makespan", "spark", "ablation"):
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        out["trials"] = [t.to_json() for t in self.trials]
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Result:
        best = data.get("best")
        return cls(
            **{
                **_known(cls, data),
                "best": None if not best else BestTrial(**_known(BestTrial, best)),
                "trials": [TrialRecord.from_json(t) for t in data.get("trials") or []],
                "workers": [
                    WorkerRecord(**_known(WorkerRecord, w)) for w in data.get("workers") or []
                ],
                "counts": dict(data.get("counts") or {}),
                "engine": dict(data.get("engine") or {}),
                "origin": Origin.from_json(data),
            }
        )

    def summary(self) -> dict[str, Any]:
        """The small part of the result an Airflow XCom carries."""
        return summarize(self.to_json())


def summarize(result: Mapping[str, Any]) -> dict[str, Any]:
    """The small part of a ``result.json`` (as data) that an XCom carries; for an
    ablation study, also its table (one row per component)."""
    summary = {k: result.get(k) for k in SUMMARY_KEYS}
    ablation = result.get("ablation")
    if isinstance(ablation, dict) and "components" in ablation:
        from maggy_core.ablation.report import summary_table

        summary["ablation"] = summary_table(ablation)
    return summary
