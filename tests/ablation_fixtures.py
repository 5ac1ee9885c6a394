"""Importable helpers of the ablation tests (``tests/unit/test_ablation_study.py`` and
``tests/integration/test_ablation.py``).

Studies name their generators, ablators and training functions as
``"module:function"``, so these live at module level of a module that both the
driver and the Spark workers can import: pytest puts ``tests/`` on ``sys.path``
(``tests/conftest.py`` lives there), and the integration tests ship this file to
the workers with ``SparkContext.addPyFile``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from maggy_core.ablation.ablators import Ablator

LABEL = "label"
#: The columns of :func:`write_signal_table` besides the label.
FEATURES = ("signal", "noise_a", "noise_b")


# ---------------------------------------------------------------- tables


def small_table() -> Any:
    """A six-row table: a, b, c and the label y."""
    import pandas as pd

    return pd.DataFrame(
        {
            "a": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
            "b": [0.5, 0.1, 0.4, 0.3, 0.2, 0.6],
            "c": [10, 20, 30, 40, 50, 60],
            "y": [0, 1, 0, 1, 0, 1],
        }
    )


def table_generator() -> Any:
    """A ``dataset_generator``: :func:`small_table`."""
    return small_table()


def not_a_table() -> Any:
    """A broken ``dataset_generator``: returns a list of rows."""
    return [[1, 2, 3, 0]]


def table_without_c() -> Any:
    """A ``dataset_generator`` whose table lacks a column the study names (c)."""
    return small_table().drop(columns=["c"])


def write_signal_table(path: Path, *, rows: int = 400, seed: int = 0, shuffle_signal: bool = False):
    """Write a table where ``signal`` carries the label and ``noise_a``/``noise_b`` do not.

    ``label = signal + 0.3 * N(0, 1) > 0``. With ``shuffle_signal`` the signal column
    is permuted after the label was made, so it no longer says anything about it
    (the other columns stay as they were).
    """
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    signal = rng.normal(0.0, 1.0, rows)
    label = (signal + 0.3 * rng.normal(0.0, 1.0, rows) > 0).astype("int64")
    frame = pd.DataFrame(
        {
            "signal": signal,
            "noise_a": rng.normal(0.0, 1.0, rows),
            "noise_b": rng.normal(5.0, 3.0, rows),
            LABEL: label,
        }
    )
    if shuffle_signal:
        frame["signal"] = rng.permutation(frame["signal"].to_numpy())
    frame.to_parquet(path, index=False)
    return path


#: The columns of :func:`write_graded_table` besides the label, strongest first.
GRADED = ("strong", "small", "useless")


def write_graded_table(path: Path, *, rows: int = 3000, seed: int = 0) -> Path:
    """Write a table where ``strong`` carries most of the label, ``small`` a little
    and ``useless`` nothing: ``label = 2 strong + 0.6 small + 0.5 N(0, 1) > 0``.

    With :func:`fit_logistic`, leaving out ``strong`` costs about 0.35 accuracy,
    ``small`` about 0.035 (paired sd about 0.01 across seeds), ``useless`` nothing.
    """
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    strong, small, useless = (rng.normal(0.0, 1.0, rows) for _ in range(3))
    label = (2.0 * strong + 0.6 * small + 0.5 * rng.normal(0.0, 1.0, rows) > 0).astype("int64")
    frame = pd.DataFrame({"strong": strong, "small": small, "useless": useless, LABEL: label})
    frame.to_parquet(path, index=False)
    return path


# ---------------------------------------------------------------- models


def small_model(input_dim: int = 4) -> Any:
    """A custom model of a study: ``small_1`` (4) -> ``small_out`` (1)."""
    import keras

    return keras.Sequential(
        [
            keras.Input(shape=(int(input_dim),)),
            keras.layers.Dense(4, activation="relu", name="small_1"),
            keras.layers.Dense(1, activation="sigmoid", name="small_out"),
        ],
        name="small",
    )


# ---------------------------------------------------------------- training functions


def fit_logistic(
    dataset_function: Callable[[], Any], components: dict[str, bool], seed: int
) -> dict[str, float]:
    """Logistic regression on every column but the label; accuracy on a held-out 30 %.

    The split depends on ``seed`` only, so the trials of one repeat differ only in
    what they leave out. The ``scaling`` switch standardises the features.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    frame = dataset_function()
    x = frame.drop(columns=[LABEL]).to_numpy("float64")
    y = frame[LABEL].to_numpy()
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=0.3, random_state=seed % 2**31, stratify=y
    )
    if components.get("scaling", True):
        scaler = StandardScaler().fit(x_train)
        x_train, x_test = scaler.transform(x_train), scaler.transform(x_test)
    model = LogisticRegression(max_iter=1000).fit(x_train, y_train)
    return {"accuracy": float(model.score(x_test, y_test))}


def train_some_injections(dataset_function: Callable[[], Any], seed: int) -> float:
    """Takes only some of the injected names: allowed."""
    return float(len(dataset_function()) + seed)


def train_unknown_argument(dataset_function: Callable[[], Any], learning_rate: float) -> float:
    """Requires an argument nobody gives: refused before Spark starts."""
    return learning_rate


# ---------------------------------------------------------------- ablators


class FirstOnly(Ablator):
    """A user's ablator: the base and the first component only, ``repeats`` times."""

    name = "first-only"
    option_names = ("repeats",)

    def plan(self) -> list[dict[str, Any]]:
        out = []
        for r in range(int(self.options.get("repeats", 1))):
            seed = self.repeat_seed(r)
            for ablated in (None, self.components[0].name):
                out.append({"ablated": ablated, "repeat": r, "seed": seed})
        return out


class NotAnAblator:
    """Has a plan, but is no :class:`Ablator`."""

    def plan(self) -> list[dict[str, Any]]:
        return []
