"""The Keras callbacks, on a tiny model, with a detached reporter."""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
keras = pytest.importorskip("keras")

from maggy_core.callbacks import KerasBatchEnd, KerasEpochEnd  # noqa: E402
from maggy_core.exceptions import EarlyStopException  # noqa: E402
from maggy_core.reporter import Reporter  # noqa: E402


class StopAfter(Reporter):
    """A detached reporter whose trial the coordinator stops after ``n`` reports."""

    def __init__(self, n: int) -> None:
        super().__init__(None)
        self.n = n

    def broadcast(self, metric, step=None):
        self.stopped = len(self.history) + 1 >= self.n
        super().broadcast(metric, step)


def fit(callback, epochs=3):
    keras.utils.set_random_seed(0)
    x = np.random.default_rng(0).normal(size=(64, 4)).astype("float32")
    y = (x[:, 0] > 0).astype("float32")
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1, activation="sigmoid")])
    model.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"])
    return model.fit(
        x, y, validation_split=0.25, epochs=epochs, batch_size=16, verbose=0, callbacks=[callback]
    )


def test_epoch_end_broadcasts_every_epoch():
    reporter = Reporter(None)
    history = fit(KerasEpochEnd(reporter, metric="val_accuracy"))
    assert [s for s, _ in reporter.history] == [0, 1, 2]
    assert [v for _, v in reporter.history] == pytest.approx(history.history["val_accuracy"])


def test_batch_end_counts_batches_across_epochs():
    reporter = Reporter(None)
    fit(KerasBatchEnd(reporter, metric="loss"), epochs=2)
    assert [s for s, _ in reporter.history] == list(range(6))  # 48 rows / 16 = 3 batches, 2 epochs


def test_a_missing_metric_names_what_there_is():
    with pytest.raises(ValueError, match="val_auc.*val_accuracy"):
        fit(KerasEpochEnd(Reporter(None), metric="val_auc"))


def test_a_stop_ends_fit():
    reporter = StopAfter(2)
    with pytest.raises(EarlyStopException):
        fit(KerasEpochEnd(reporter, metric="val_accuracy"), epochs=10)
    assert len(reporter.history) == 2


def test_keras_checkpoint_saves_weights_and_a_promotion_continues_from_them(tmp_path) -> None:
    from maggy_core.callbacks import KerasCheckpoint
    from maggy_core.reporter import load_checkpoint

    first = Reporter(None, "t0001", checkpoint_root=tmp_path)
    keep = KerasCheckpoint(first)
    history = fit(keep, epochs=2)
    model = keep.model
    assert len(history.history["loss"]) == 2
    checkpoint = load_checkpoint(tmp_path, "t0001")
    assert checkpoint is not None and checkpoint.data == {"epoch": 2}
    assert os.path.exists(os.path.join(checkpoint.path, "model.weights.h5"))

    later = Reporter(None, "t0005", checkpoint_root=tmp_path)
    fresh = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1, activation="sigmoid")])
    again = KerasCheckpoint(later)
    assert again.restore(fresh, checkpoint) == 2
    for a, b in zip(fresh.get_weights(), model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert again.restore(fresh, None) == 0
