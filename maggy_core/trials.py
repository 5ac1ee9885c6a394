"""The trial table: every trial of an experiment, the queue, the counts and the best.

Owned by the coordinator (one thread); nothing else holds a live trial. Every
operation is O(1) in the number of trials (dictionary look-ups, a deque, an
incremental best), so a trial costs the same whether it is the first or the
three-thousandth.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from typing import Any

from maggy_core.records import TrialRecord
from maggy_core.trial import TrialStatus

TERMINAL = (TrialStatus.FINISHED, TrialStatus.EARLY_STOPPED, TrialStatus.FAILED)


class TrialTable:
    """Trials by id, the trials waiting to run again, counts by status, the best.

    Args:
        direction: ``"max"`` or ``"min"``: which way the best trial lies.
    """

    def __init__(self, direction: str) -> None:
        self.sign = 1.0 if direction == "max" else -1.0
        self.trials: dict[str, TrialRecord] = {}
        self.queue: deque[str] = deque()  # trials to run again (lost workers, resume)
        self.counts = {s.value: 0 for s in TERMINAL}
        self.best: TrialRecord | None = None
        self.consecutive_failures = 0
        self._next_index = 0
        # When a running trial was told to stop (live bookkeeping, not journaled).
        self.stop_requested_at: dict[str, float] = {}

    def __len__(self) -> int:
        return len(self.trials)

    def get(self, trial_id: str) -> TrialRecord | None:
        return self.trials.get(trial_id)

    def ordered(self) -> list[TrialRecord]:
        """Every trial, by id (the order they were suggested in)."""
        return [self.trials[k] for k in sorted(self.trials)]

    def new(
        self, params: dict[str, Any], budget: float | None, info: dict[str, Any]
    ) -> TrialRecord:
        """Add a trial for a fresh suggestion (ids ``t0000``, ``t0001``, ...)."""
        trial = TrialRecord(
            f"t{self._next_index:04d}", dict(params), budget=budget, info=dict(info)
        )
        self._next_index += 1
        self.trials[trial.trial_id] = trial
        return trial

    def next_queued(self) -> TrialRecord | None:
        """The next trial waiting to run again, if any."""
        return self.trials[self.queue.popleft()] if self.queue else None

    def requeue(self, trial: TrialRecord, *, front: bool = True) -> None:
        """Put a trial back to run again (its worker was lost, or it never ran)."""
        trial.status = TrialStatus.PENDING
        self.stop_requested_at.pop(trial.trial_id, None)
        if front:
            self.queue.appendleft(trial.trial_id)
        else:
            self.queue.append(trial.trial_id)

    def start(self, trial: TrialRecord, worker: str) -> None:
        """A new attempt of ``trial`` goes to ``worker``."""
        trial.attempts += 1
        trial.status = TrialStatus.RUNNING
        trial.worker = worker
        trial.history = []
        trial.stop_reason = None
        self.stop_requested_at.pop(trial.trial_id, None)

    def mark_stop(self, trial: TrialRecord, at: float, reason: str) -> bool:
        """Note that a running trial was told to stop; False when it was already."""
        if trial.trial_id in self.stop_requested_at:
            return False
        self.stop_requested_at[trial.trial_id] = at
        trial.stop_reason = reason
        return True

    def stop_pending(self, trial: TrialRecord) -> bool:
        return trial.trial_id in self.stop_requested_at

    def finish(
        self,
        trial: TrialRecord,
        *,
        metric: float | None,
        metrics: dict[str, float],
        early: bool,
    ) -> None:
        """The trial returned: finished, or early-stopped (it said so, or it was
        told to stop before it returned)."""
        trial.metric = metric
        trial.metrics = metrics
        stopped = early or self.stop_pending(trial)
        trial.status = TrialStatus.EARLY_STOPPED if stopped else TrialStatus.FINISHED
        self.consecutive_failures = 0
        self._ended(trial)

    def fail(self, trial: TrialRecord, error: str, traceback: str | None = None) -> None:
        """The trial failed (it raised, or it cannot run again)."""
        trial.status = TrialStatus.FAILED
        trial.error, trial.traceback = error, traceback
        self.consecutive_failures += 1
        self._ended(trial)

    def _ended(self, trial: TrialRecord) -> None:
        self.stop_requested_at.pop(trial.trial_id, None)
        self.counts[trial.status.value] += 1
        self._update_best(trial)

    def _update_best(self, trial: TrialRecord) -> None:
        rank = trial.rank(self.sign)
        if rank is None:
            return
        best = self.best
        if best is None or rank > (best.rank(self.sign) or (False, -float("inf"))):
            self.best = trial

    def restore(self, trials: Iterable[TrialRecord]) -> tuple[list[TrialRecord], list[TrialRecord]]:
        """Load an earlier run's trials (from :func:`maggy_core.results.replay`):
        ended ones are kept, the others queued to run again, in id order.

        Returns:
            ``(kept, requeued)``.
        """
        kept, requeued = [], []
        for t in sorted(trials, key=lambda t: t.trial_id):
            self.trials[t.trial_id] = t
            self._next_index = max(self._next_index, int(t.trial_id.lstrip("t")) + 1)
            if t.status.is_terminal:
                self.counts[t.status.value] += 1
                self._update_best(t)
                kept.append(t)
            else:
                self.requeue(t, front=False)
                requeued.append(t)
        return kept, requeued

    def ended_count(self) -> int:
        return sum(self.counts.values())
