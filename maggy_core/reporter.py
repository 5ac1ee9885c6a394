"""The ``Reporter`` handed to training functions.

A training function reports its learning curve with :meth:`Reporter.broadcast`;
each call sends the metric to the coordinator and, in the same round trip, reads
the trial's stop flag. When the coordinator has stopped the trial, ``broadcast``
raises :class:`~maggy_core.exceptions.EarlyStopException`, which ends the
training function; the worker records the trial as early-stopped and takes the
next one at once.
"""

from __future__ import annotations

import math
import numbers
import sys
from typing import TYPE_CHECKING, Any

from maggy_core.channel import clip
from maggy_core.exceptions import EarlyStopException

if TYPE_CHECKING:
    from maggy_core.channel import WorkerChannel


class Reporter:
    """Reports metrics and log lines of one trial.

    Args:
        channel: The worker's channel; ``None`` runs the reporter detached (for
            calling a training function by hand: broadcasts are only recorded).
        trial_id: The trial this reporter belongs to.
        attempt: Which run of the trial this is (1 for the first).
        params: The trial's hyperparameters.
    """

    def __init__(
        self,
        channel: WorkerChannel | None,
        trial_id: str = "t0000",
        attempt: int = 1,
        params: dict[str, Any] | None = None,
    ) -> None:
        self._channel = channel
        self.trial_id = trial_id
        self.attempt = attempt
        self.params = dict(params or {})
        self.history: list[tuple[int, float]] = []
        self.stopped = False

    @property
    def last_metric(self) -> float | None:
        return self.history[-1][1] if self.history else None

    def get_trial_id(self) -> str:
        """The trial's id (MAGGY 1.x name)."""
        return self.trial_id

    def broadcast(self, metric: float, step: int | None = None) -> None:
        """Report the current value of the optimisation metric.

        Args:
            metric: A finite number (the same quantity the function returns).
            step: A non-negative integer that grows over the trial (an epoch or a
                batch index). Default: one more than the last step.

        Raises:
            EarlyStopException: the coordinator stopped this trial; let it
                propagate out of the training function.
            ValueError: ``metric`` is not a finite number or ``step`` is not a
                non-negative integer.
        """
        if isinstance(metric, bool) or not isinstance(metric, numbers.Real):
            raise ValueError(f"broadcast: 'metric' must be a number, got {type(metric).__name__}")
        value = float(metric)
        if not math.isfinite(value):
            raise ValueError(f"broadcast: 'metric' must be finite, got {value}")
        if step is None:
            step = self.history[-1][0] + 1 if self.history else 0
        elif isinstance(step, bool) or not isinstance(step, numbers.Integral) or step < 0:
            raise ValueError(f"broadcast: 'step' must be a non-negative integer, got {step!r}")
        step = int(step)
        self.history.append((step, value))
        if self._channel is not None and self._channel.report(
            self.trial_id, self.attempt, step, value
        ):
            self.stopped = True
        if self.stopped:
            raise EarlyStopException(value)

    def log(self, msg: Any, jupyter: bool = False) -> None:
        """Write a line to the trial's log (kept in the results directory).

        Args:
            msg: Anything; it is turned into a string.
            jupyter: Accepted for MAGGY 1.x compatibility; ignored.
        """
        text = clip(str(msg))
        if self._channel is None:
            print(f"[{self.trial_id}] {text}", file=sys.stderr)
            return
        self._channel.send_log(self.trial_id, self.attempt, text)
