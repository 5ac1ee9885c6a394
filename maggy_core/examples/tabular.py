"""A Keras classifier on a table a pipeline wrote: the nightly example's training function.

The table is scikit-learn's bundled breast-cancer data (569 rows, 30 numeric
features and a ``label`` column; it ships with the package, nothing is
downloaded), written to Parquet by :func:`write_dataset`, the upstream task of the
``nightly_ablation`` DAG. :func:`train` reads whatever table it is given, so the
same code serves any table with numeric features and a binary label.

TensorFlow, pandas and scikit-learn are imported inside the functions only.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from maggy_core.reporter import Reporter

LABEL = "label"


def load_table() -> Any:
    """The breast-cancer table as a pandas DataFrame (a ``dataset_generator``)."""
    from sklearn.datasets import load_breast_cancer

    frame = load_breast_cancer(as_frame=True).frame.rename(columns={"target": LABEL})
    frame.columns = [c.replace(" ", "_") for c in frame.columns]
    return frame


def write_dataset(
    path: str, *, noise: float = 0.0, seed: int = 0, signal_only: list[str] | None = None
) -> str:
    """Write the breast-cancer table to ``path`` (Parquet) and return the path.

    Args:
        path: Where to write; parent folders are made.
        noise: Standard deviation of Gaussian noise added to the (standardised)
            features, to make a night's data differ from another's.
        seed: Seed of the noise and of the shuffles.
        signal_only: If given, every other feature column is shuffled (its rows
            permuted on their own), so only these columns still carry the signal:
            a night whose data drifted, for the nightly study to notice.
    """
    import numpy as np
    from sklearn.datasets import load_breast_cancer

    frame = load_breast_cancer(as_frame=True).frame.rename(columns={"target": LABEL})
    features = [c for c in frame.columns if c != LABEL]
    if noise:
        rng = np.random.default_rng(seed)
        scale = frame[features].std().to_numpy()
        frame[features] = (
            frame[features] + rng.normal(0, noise, (len(frame), len(features))) * scale
        )
    frame.columns = [c.replace(" ", "_") for c in frame.columns]
    if signal_only:
        rng = np.random.default_rng(seed)
        missing = [c for c in signal_only if c not in frame.columns]
        if missing:
            raise ValueError(
                f"signal_only: no column {missing[0]!r}; columns: {list(frame.columns)}"
            )
        for column in frame.columns:
            if column != LABEL and column not in signal_only:
                frame[column] = rng.permutation(frame[column].to_numpy())
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(path, index=False)
    return path


def train(
    data: str,
    lr: float,
    units: int,
    reporter: Reporter,
    dropout: float = 0.0,
    epochs: int = 8,
    batch_size: int = 32,
    seed: int = 0,
) -> dict[str, float]:
    """Train Dense(units, relu) -> Dropout -> Dense(1, sigmoid) on the table at ``data``.

    Validation accuracy is broadcast after every epoch (step = epoch).

    Returns:
        ``{"accuracy": ..., "loss": ...}`` on the held-out quarter of the rows.
    """
    import pandas as pd
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    from maggy_core.examples._keras import fit_and_report, fresh_keras

    frame = pd.read_parquet(data)
    x = frame.drop(columns=[LABEL]).to_numpy("float32")
    y = frame[LABEL].to_numpy("float32")
    x_train, x_val, y_train, y_val = train_test_split(
        x, y, test_size=0.25, random_state=0, stratify=y
    )
    scaler = StandardScaler().fit(x_train)
    x_train, x_val = scaler.transform(x_train), scaler.transform(x_val)

    keras = fresh_keras(seed)
    model = keras.Sequential(
        [
            keras.Input(shape=(x.shape[1],)),
            keras.layers.Dense(int(units), activation="relu", name="dense_1"),
            keras.layers.Dropout(float(dropout)),
            keras.layers.Dense(1, activation="sigmoid", name="output"),
        ]
    )
    model.compile(
        optimizer=keras.optimizers.Adam(float(lr)), loss="binary_crossentropy", metrics=["accuracy"]
    )
    return fit_and_report(
        model, (x_train, y_train), (x_val, y_val), reporter, epochs=epochs, batch_size=batch_size
    )


# ---------------------------------------------------------------- the ablation study


def base_model(input_dim: int = 30) -> Any:
    """The nightly study's base model: ``dense_1`` (32) -> ``dense_2`` (16) ->
    ``dense_3`` (16) -> ``output`` (1, sigmoid), on ``input_dim`` features."""
    import keras  # the trial set Keras up (fresh_keras) before it asks for a model

    return keras.Sequential(
        [
            keras.Input(shape=(int(input_dim),)),
            keras.layers.Dense(32, activation="relu", name="dense_1"),
            keras.layers.Dense(16, activation="relu", name="dense_2"),
            keras.layers.Dense(16, activation="relu", name="dense_3"),
            keras.layers.Dense(1, activation="sigmoid", name="output"),
        ],
        name="base",
    )


def ablation_train(
    dataset_function: Callable[[], Any],
    model_function: Callable[..., Any],
    components: dict[str, bool],
    seed: int,
    reporter: Reporter,
    epochs: int = 6,
    lr: float = 0.01,
) -> dict[str, float]:
    """One trial of the nightly ablation study.

    Reads the table without the left-out features (``dataset_function``), builds
    the model without the left-out layers (``model_function(input_dim=...)``),
    and standardises the features only while the ``scaling`` switch is on. The
    split, the weights and the batches depend on ``seed`` only, so the trials of
    one repeat differ only in what they leave out.

    Returns:
        ``{"accuracy": ..., "loss": ...}`` on the held-out quarter.
    """
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    from maggy_core.examples._keras import fit_and_report, fresh_keras

    frame = dataset_function()
    x = frame.drop(columns=[LABEL]).to_numpy("float32")
    y = frame[LABEL].to_numpy("float32")
    x_train, x_val, y_train, y_val = train_test_split(
        x, y, test_size=0.25, random_state=seed % 2**31, stratify=y
    )
    if components.get("scaling", True):
        scaler = StandardScaler().fit(x_train)
        x_train, x_val = scaler.transform(x_train), scaler.transform(x_val)
    keras = fresh_keras(seed)
    model = model_function(input_dim=x.shape[1])
    model.compile(
        optimizer=keras.optimizers.Adam(float(lr)), loss="binary_crossentropy", metrics=["accuracy"]
    )
    return fit_and_report(
        model, (x_train, y_train), (x_val, y_val), reporter, epochs=epochs, batch_size=32
    )
