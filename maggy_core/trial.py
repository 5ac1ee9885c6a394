"""What crosses the coordinator's interfaces: trial states and frozen snapshots.

The coordinator is the only owner of live trial state. Optimisers and stopping
rules receive :class:`FrozenTrial` snapshots, never the live objects.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any


class TrialStatus(enum.StrEnum):
    """Lifecycle of a trial. Terminal states: FINISHED, EARLY_STOPPED, FAILED."""

    PENDING = "pending"
    RUNNING = "running"
    FINISHED = "finished"
    EARLY_STOPPED = "early_stopped"
    FAILED = "failed"

    @property
    def is_terminal(self) -> bool:
        return self in (TrialStatus.FINISHED, TrialStatus.EARLY_STOPPED, TrialStatus.FAILED)


def best_rank(status: str, metric: float, sign: float) -> tuple[bool, float]:
    """How ended trials rank for "best" (larger is better): finished above
    early-stopped, since a stopped trial's last value is a partial result, then by
    ``sign * metric`` (``sign`` 1 for ``direction: max``, -1 for ``min``). Failed
    trials and trials without a metric never rank."""
    return (status == TrialStatus.FINISHED, sign * metric)


@dataclass(frozen=True)
class FrozenTrial:
    """An immutable snapshot of one trial.

    Attributes:
        trial_id: Stable id, unique within the experiment (``"t0007"``).
        params: Hyperparameter values, JSON types only.
        status: Where the trial is in its lifecycle.
        metric: The final metric (the optimisation key) or ``None`` while running
            and for failed trials. For early-stopped trials, the last reported value.
        history: ``(step, value)`` pairs reported through ``Reporter.broadcast``.
        budget: Resource given to the trial by a multi-fidelity optimiser, if any.
        info: Optimiser-private data attached at suggestion time (e.g. a rung).
    """

    trial_id: str
    params: dict[str, Any]
    status: TrialStatus
    metric: float | None = None
    history: tuple[tuple[int, float], ...] = ()
    budget: float | None = None
    info: dict[str, Any] = field(default_factory=dict)
