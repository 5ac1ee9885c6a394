"""maggy-airflow's engine: asynchronous hyperparameter search and ablation studies
on Spark and Redis.

Importing this package is cheap: pyspark, redis and TensorFlow are imported only
where they are used.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = [
    "AblationConfig",
    "AblationStudy",
    "EarlyStopException",
    "ExperimentSpec",
    "HyperparameterOptConfig",
    "MaggyError",
    "Reporter",
    "Searchspace",
    "SpecError",
    "__version__",
    "lagom",
    "load_spec",
    "run_experiment",
]

_LAZY = {
    "AblationConfig": "maggy_core.spec",
    "AblationStudy": "maggy_core.ablation.study",
    "EarlyStopException": "maggy_core.exceptions",
    "MaggyError": "maggy_core.exceptions",
    "SpecError": "maggy_core.exceptions",
    "ExperimentSpec": "maggy_core.spec",
    "HyperparameterOptConfig": "maggy_core.spec",
    "load_spec": "maggy_core.spec",
    "Searchspace": "maggy_core.searchspace",
    "Reporter": "maggy_core.reporter",
    "lagom": "maggy_core.lagom",
    "run_experiment": "maggy_core.runner",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'maggy_core' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
