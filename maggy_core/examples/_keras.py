"""What the Keras examples share: a quiet, fresh Keras, and fit-and-report."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from maggy_core.reporter import Reporter


def fresh_keras(seed: int | None) -> Any:
    """Keras (TensorFlow backend, C++ start-up messages off unless the user set
    otherwise), with the previous trial's graph dropped (a Spark worker runs many
    trials in one process) and, if given, every random generator seeded."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    import keras

    keras.backend.clear_session()
    if seed is not None:
        keras.utils.set_random_seed(int(seed))
    return keras


def fit_and_report(
    model: Any,
    train: tuple[Any, Any],
    val: tuple[Any, Any],
    reporter: Reporter,
    *,
    epochs: int,
    batch_size: int,
) -> dict[str, float]:
    """Fit ``model`` (compiled with an ``accuracy`` metric), broadcasting the
    validation accuracy after every epoch, and return the final validation
    ``{"accuracy", "loss"}``. A stop of the trial ends ``fit`` through the
    callback's ``EarlyStopException``."""
    from maggy_core.callbacks import KerasEpochEnd

    history = model.fit(
        *train,
        validation_data=val,
        epochs=int(epochs),
        batch_size=int(batch_size),
        verbose=0,
        callbacks=[KerasEpochEnd(reporter, metric="val_accuracy")],
    )
    return {
        "accuracy": float(history.history["val_accuracy"][-1]),
        "loss": float(history.history["val_loss"][-1]),
    }


def warm_up() -> None:
    """Import TensorFlow and Keras (the modules' ``maggy_preload``), so a worker's
    first trial does not pay TensorFlow's import. No warm-up fit: measured on two
    loaded cores, a tiny fit before the first trial cost more (27-28 s for import,
    fit and data against 22 s for import and a whole 5-epoch trial) than it saved
    (after the import alone, the first trial took 1.35x a later one)."""
    fresh_keras(None)
