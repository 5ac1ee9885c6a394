"""Hyperparameter search of a small Keras model, triggered by hand.

The search space, the number of trials and the workers are DAG params, so they
can be changed in the UI's trigger form. Rendering is native
(``render_template_as_native_obj``): ``{{ params.searchspace }}`` arrives as a
mapping, not as its text.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG, Param, task

from maggy_airflow.operators import MaggyOperator

#: The trigger form's fields: the search space, the trial count, the workers.
PARAMS = {
    "searchspace": Param(
        {
            "lr": ["DOUBLE", [0.0005, 0.05], "log"],
            "units": ["INTEGER", [16, 128]],
            "activation": ["CATEGORICAL", ["relu", "tanh"]],
        },
        type="object",
        description="name -> [TYPE, VALUES] (TYPE: DOUBLE, INTEGER, DISCRETE, CATEGORICAL; "
        "append 'log' for a log scale)",
    ),
    "num_trials": Param(6, type="integer", minimum=1, description="trials to run"),
    "workers": Param(2, type="integer", minimum=1, description="trials at the same time"),
    "optimizer": Param("randomsearch", enum=["randomsearch", "gridsearch"]),
}

#: The experiment, filled in from the params when the task runs.
CONFIG = {
    "searchspace": "{{ params.searchspace }}",
    "num_trials": "{{ params.num_trials }}",
    "optimizer": "{{ params.optimizer }}",
    "direction": "max",
    "optimization_key": "accuracy",
    "es_policy": "median",
    "es_min": 3,
    "seed": 7,
}


def report_best(summary: dict) -> dict:
    """What a downstream step does with the result: here, log the winner."""
    best = summary["best"]
    print(
        f"best of {summary['num_trials']} trials: {best['params']} -> accuracy {best['metric']:.4f}"
    )
    return best["params"]


with DAG(
    dag_id="hparam_search",
    description="maggy: asynchronous hyperparameter search of a Keras MLP on scikit-learn's digits",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    render_template_as_native_obj=True,
    tags=["maggy", "example"],
    params=PARAMS,
) as dag:
    search = MaggyOperator(
        task_id="search",
        train_fn="maggy_core.examples.digits:train",
        config=CONFIG,
        num_workers="{{ params.workers }}",
    )
    task(report_best, task_id="report")(search.output)
