"""A small Keras MLP on scikit-learn's handwritten digits: the demo's training function.

The data is ``sklearn.datasets.load_digits()`` (1,797 8x8 images that ship inside
scikit-learn: nothing is downloaded), scaled to [0, 1] and split once into a
training and a validation set with a fixed seed, so every trial sees the same data.

TensorFlow, Keras and scikit-learn are imported inside :func:`train` only: importing
this module takes milliseconds, and only the Spark workers that run a trial pay for
TensorFlow's import (a few seconds, once per Python worker).

Use it as ``train_fn: maggy_core.examples.digits:train`` with hyperparameters
``lr``, ``units`` and ``activation`` (see ``examples/digits-hpo.yaml``).
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

    from maggy_core.reporter import Reporter

#: Share of the data held out for validation, and the seed of that split.
VALIDATION_SHARE = 0.25
SPLIT_SEED = 0


@functools.cache
def load_data() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The digits data as ``(x_train, y_train, x_val, y_val)``, cached per process.

    Features are float32 in [0, 1] (pixel values are 0..16); labels are int 0..9.
    The split is stratified and seeded, so it is the same in every worker.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype("float32")
    x_train, x_val, y_train, y_val = train_test_split(
        x, y, test_size=VALIDATION_SHARE, random_state=SPLIT_SEED, stratify=y
    )
    return x_train, y_train, x_val, y_val


def maggy_preload() -> None:
    """Called by each worker before its first trial (``maggy_core.worker.preload``):
    TensorFlow's and Keras's import and the data, so the first trial costs about
    what later ones do."""
    from maggy_core.examples._keras import warm_up

    warm_up()
    load_data()


def train(
    lr: float,
    units: int,
    activation: str,
    reporter: Reporter,
    epochs: int = 5,
    batch_size: int = 64,
    seed: int | None = None,
) -> dict[str, float]:
    """Train Input(64) -> Dense(units, activation) -> Dense(10, softmax) with Adam(lr).

    Validation accuracy is broadcast at the end of every epoch (step = epoch), so a
    stopping rule can end a poor trial early: the
    :class:`~maggy_core.exceptions.EarlyStopException` raised by ``broadcast``
    propagates out of ``fit`` and out of this function.

    Args:
        lr: Adam's learning rate.
        units: Width of the hidden layer.
        activation: Activation of the hidden layer, e.g. ``"relu"`` or ``"tanh"``.
        reporter: The trial's reporter (injected by the engine).
        epochs: Passes over the training data.
        batch_size: Examples per gradient step.
        seed: If given, seeds Python, NumPy and the backend (weights, shuffling),
            which makes a trial repeatable.

    Returns:
        ``{"accuracy": ..., "loss": ...}``: validation accuracy and loss after the
        last epoch.
    """
    # Quiet TensorFlow's C++ start-up messages; keep the user's choice if set.
    from maggy_core.examples._keras import fit_and_report, fresh_keras

    keras = fresh_keras(seed)
    x_train, y_train, x_val, y_val = load_data()
    model = keras.Sequential(
        [
            keras.Input(shape=(x_train.shape[1],)),
            keras.layers.Dense(int(units), activation=activation),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=float(lr)),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    reporter.log(f"digits: lr={lr} units={units} activation={activation} epochs={epochs}")
    result = fit_and_report(
        model, (x_train, y_train), (x_val, y_val), reporter, epochs=epochs, batch_size=batch_size
    )
    accuracy, loss = result["accuracy"], result["loss"]
    reporter.log(f"digits: val_accuracy={accuracy:.4f} val_loss={loss:.4f}")
    return result
