"""``lagom``: run an experiment from a PySpark program or notebook (MAGGY 1.x)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from maggy_core.spec import ExperimentSpec


def lagom(
    train_fn: Callable[..., Any] | str, config: ExperimentSpec, **options: Any
) -> dict[str, Any]:
    """Run ``config`` with ``train_fn`` on the active SparkSession (or a new one).

    Args:
        train_fn: The training function, or ``"module:function"``. A callable is
            shipped to the executors by Spark itself.
        config: An :class:`ExperimentSpec`, e.g. from ``HyperparameterOptConfig``.
        **options: Passed to :func:`maggy_core.runner.run_experiment`
            (``master``, ``redis_url``, ``results_dir``, ``experiment_id``, ...).

    Returns:
        The experiment's result (the content of ``result.json``).
    """
    from maggy_core.runner import run_experiment

    if isinstance(train_fn, str):
        return run_experiment(config.replace(train_fn=train_fn), **options)
    return run_experiment(config, train_fn=train_fn, **options)
