"""Keras callbacks that report a training's metrics to maggy (MAGGY 1.x names).

This module imports Keras at module level, so only training code that uses Keras
imports it (``from maggy_core.callbacks import KerasEpochEnd`` inside the training
function); the engine never does.

Example::

    def train(lr, reporter):
        import keras
        from maggy_core.callbacks import KerasEpochEnd
        ...
        model.fit(x, y, validation_data=(xv, yv), callbacks=[KerasEpochEnd(reporter)])

:class:`~maggy_core.exceptions.EarlyStopException`, raised by
``reporter.broadcast`` when the coordinator stops the trial, propagates out of
``model.fit`` and ends the training function, as it should.

Continuing a promoted trial (ASHA) from its configuration's previous rung::

    def train(lr, budget, reporter, checkpoint=None):
        ...
        keep = KerasCheckpoint(reporter)
        start = keep.restore(model, checkpoint)   # 0 without a checkpoint
        model.fit(x, y, epochs=int(budget), initial_epoch=start, callbacks=[keep, ...])
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import keras

if TYPE_CHECKING:
    from maggy_core.reporter import Checkpoint, Reporter

__all__ = ["KerasBatchEnd", "KerasCheckpoint", "KerasEpochEnd"]


def _metric(logs: Mapping[str, Any] | None, metric: str, where: str) -> float:
    """``logs[metric]`` as a float, or a ValueError naming the keys there are."""
    logs = logs or {}
    if metric not in logs:
        raise ValueError(
            f"{where}: metric {metric!r} is not in the Keras logs; available: {sorted(logs)}"
            " (validation metrics such as 'val_accuracy' need validation data in fit())"
        )
    return float(logs[metric])


class KerasBatchEnd(keras.callbacks.Callback):
    """Broadcasts ``logs[metric]`` at the end of every training batch.

    The step is a running count of batches seen by this callback (0, 1, 2, ...),
    continued across epochs and across calls of ``fit``.

    Args:
        reporter: The reporter handed to the training function.
        metric: A key of the batch logs, e.g. ``"loss"`` or ``"accuracy"``.
    """

    def __init__(self, reporter: Reporter, metric: str = "loss") -> None:
        super().__init__()
        self.reporter = reporter
        self.metric = metric
        self.step = 0

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        value = _metric(logs, self.metric, "KerasBatchEnd")
        self.reporter.broadcast(value, step=self.step)
        self.step += 1


class KerasEpochEnd(keras.callbacks.Callback):
    """Broadcasts ``logs[metric]`` at the end of every epoch, with the epoch as step.

    Args:
        reporter: The reporter handed to the training function.
        metric: A key of the epoch logs, e.g. ``"val_accuracy"`` (needs validation
            data in ``fit``) or ``"loss"``.
    """

    def __init__(self, reporter: Reporter, metric: str = "val_accuracy") -> None:
        super().__init__()
        self.reporter = reporter
        self.metric = metric

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        value = _metric(logs, self.metric, "KerasEpochEnd")
        self.reporter.broadcast(value, step=epoch)


class KerasCheckpoint(keras.callbacks.Callback):
    """Saves the model's weights into the trial's checkpoint at the end of every
    epoch, and restores them for a trial that continues an earlier one.

    The weights go to ``reporter.checkpoint_path()/<weights>`` (Keras's own file
    format, written by the training function's process, never sent anywhere), and
    ``{"epoch": e}`` (epochs done) to ``reporter.save_checkpoint``, so the next rung's
    trial of the same configuration starts at epoch ``e``.

    Args:
        reporter: The reporter handed to the training function.
        weights: File name of the weights in the checkpoint directory.
    """

    def __init__(self, reporter: Reporter, weights: str = "model.weights.h5") -> None:
        super().__init__()
        self.reporter = reporter
        self.weights = weights

    def restore(self, model: Any, checkpoint: Checkpoint | None) -> int:
        """Load ``checkpoint``'s weights into ``model``; the epoch to continue from
        (``fit``'s ``initial_epoch``), 0 when there is nothing to restore."""
        if checkpoint is None:
            return 0
        path = os.path.join(checkpoint.path, self.weights)
        epoch = checkpoint.data.get("epoch") if isinstance(checkpoint.data, dict) else None
        if not os.path.exists(path) or not isinstance(epoch, int) or epoch < 0:
            return 0
        model.load_weights(path)
        return epoch

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.model.save_weights(os.path.join(self.reporter.checkpoint_path(), self.weights))
        self.reporter.save_checkpoint({"epoch": epoch + 1})
