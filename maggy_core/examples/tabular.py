"""A Keras classifier on a table a pipeline wrote: the nightly example's training function.

The table is scikit-learn's bundled breast-cancer data (569 rows, 30 numeric
features and a ``label`` column; it ships with the package, nothing is
downloaded), written to Parquet by :func:`write_dataset`, the upstream task of the
``nightly_ablation`` DAG. :func:`train` reads whatever table it is given, so the
same code serves any table with numeric features and a binary label.

TensorFlow, pandas and scikit-learn are imported inside the functions only.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from maggy_core.reporter import Reporter

LABEL = "label"


def write_dataset(path: str, *, noise: float = 0.0, seed: int = 0) -> str:
    """Write the breast-cancer table to ``path`` (Parquet) and return the path.

    Args:
        path: Where to write; parent folders are made.
        noise: Standard deviation of Gaussian noise added to the (standardised)
            features, to make a night's data differ from another's.
        seed: Seed of the noise.
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
