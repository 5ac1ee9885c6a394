"""Training functions that only sleep and report a synthetic learning curve.

No dependencies beyond the standard library: they test and time the engine itself
(scheduling, reporting, early stopping, failures) without any machine learning.

The curve of a trial is ``quality * (1 - exp(-3 * step / steps))`` for
``step = 1 .. steps``: it rises quickly, then levels off just below ``quality``
(95 % of it at the last step). Trials of higher quality are better at every step,
so a median stopping rule stops the low-quality ones.
"""

from __future__ import annotations

import math
import numbers
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from maggy_core.reporter import Checkpoint, Reporter

__all__ = ["budgeted", "curve", "default_quality", "noop", "resumed_epoch", "train"]


def _curve_value(quality: float, step: int, steps: int) -> float:
    return quality * (1.0 - math.exp(-3.0 * step / steps))


def default_quality(hparams: dict[str, Any]) -> float:
    """``1 / (1 + sum of squares of the numeric hyperparameters)``.

    Booleans and non-numbers are ignored. The best value, 1.0, is at all numeric
    hyperparameters equal to zero (and when there are none), so an optimiser's
    progress is easy to see.
    """
    total = 0.0
    for value in hparams.values():
        if isinstance(value, numbers.Real) and not isinstance(value, bool):
            total += float(value) ** 2
    return 1.0 / (1.0 + total)


def train(
    seconds: float,
    reporter: Reporter,
    steps: int = 10,
    quality: float | None = None,
    fail: bool = False,
    **hparams: Any,
) -> float:
    """Sleep ``seconds`` in ``steps`` equal parts, broadcasting the curve after each.

    Args:
        seconds: Total time to sleep.
        reporter: The trial's reporter (injected by the engine).
        steps: How many parts (and broadcasts).
        quality: Level of the curve; by default :func:`default_quality` of the
            other hyperparameters (those caught by ``**hparams``).
        fail: If truthy, raise ``RuntimeError("boom")`` before sleeping, to test
            failed trials.
        **hparams: Any other hyperparameters.

    Returns:
        The last value broadcast.

    Raises:
        RuntimeError: ``fail`` is truthy.
        ValueError: ``steps`` is less than 1 or ``seconds`` is negative.
    """
    if fail:
        raise RuntimeError("boom")
    steps = int(steps)
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    if seconds < 0:
        raise ValueError(f"seconds must not be negative, got {seconds}")
    level = default_quality(hparams) if quality is None else float(quality)
    value = 0.0
    for step in range(1, steps + 1):
        time.sleep(seconds / steps)
        value = _curve_value(level, step, steps)
        reporter.broadcast(value, step=step)
    return value


def noop(reporter: Reporter, **hparams: Any) -> float:
    """Return 0.0 at once: measures the engine's overhead per trial."""
    return 0.0


def curve(
    quality: float,
    reporter: Reporter,
    steps: int = 20,
    step_seconds: float = 0.02,
    **hparams: Any,
) -> float:
    """Broadcast the curve of level ``quality`` for ``steps`` steps, ``step_seconds`` apart.

    Trials with a low ``quality`` are the ones a median stopping rule stops.

    Returns:
        The last value broadcast, ``quality * (1 - exp(-3))`` when not stopped.

    Raises:
        ValueError: ``steps`` is less than 1.
    """
    steps = int(steps)
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    value = 0.0
    for step in range(1, steps + 1):
        time.sleep(step_seconds)
        value = _curve_value(float(quality), step, steps)
        reporter.broadcast(value, step=step)
    return value


def budgeted(
    budget: float,
    reporter: Reporter,
    step_seconds: float = 0.01,
    rate: float = 3.0,
    checkpoint: Checkpoint | None = None,
    **hparams: Any,
) -> float:
    """A learning curve trained for ``budget`` epochs (for ASHA and Hyperband).

    Broadcasts ``quality * (1 - exp(-epoch / rate))`` for ``epoch = 1 .. budget``
    (rounded up), ``step_seconds`` apart, where ``quality`` is
    :func:`default_quality` of the other hyperparameters. A longer budget always
    gives a higher value and the ranking of configurations is the same at every
    budget, so successive halving must find the best one.

    It saves ``{"epoch": e}`` as its checkpoint after every epoch, and a trial
    given a checkpoint (an ASHA promotion) continues after its epoch: only the
    added epochs run.

    Returns:
        The value at the last epoch.

    Raises:
        ValueError: ``budget`` is missing or not positive.
    """
    if budget is None or budget <= 0:
        raise ValueError(f"budget must be a positive number of epochs, got {budget!r}")
    level = default_quality(hparams)
    done = resumed_epoch(checkpoint)
    value = level * (1.0 - math.exp(-done / rate))
    for epoch in range(done + 1, math.ceil(budget) + 1):
        time.sleep(step_seconds)
        value = level * (1.0 - math.exp(-epoch / rate))
        reporter.broadcast(value, step=epoch)
        reporter.save_checkpoint({"epoch": epoch})
    return value


def resumed_epoch(checkpoint: Checkpoint | None) -> int:
    """The epoch a checkpoint saved as ``{"epoch": e}`` reached; 0 without one."""
    if checkpoint is None or not isinstance(checkpoint.data, dict):
        return 0
    epoch = checkpoint.data.get("epoch", 0)
    return epoch if isinstance(epoch, int) and epoch > 0 else 0
