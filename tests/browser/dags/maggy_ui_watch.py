"""A search slow enough to watch: each trial sleeps 4 minutes and reports its curve every second.

The browser test triggers it, watches the curves grow in the task's "Maggy experiment"
tab, stops one trial and then the whole experiment from the page.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG

from maggy_airflow.operators import MaggyOperator

with DAG(
    dag_id="maggy_ui_watch",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["maggy", "test"],
):
    MaggyOperator(
        task_id="watch",
        train_fn="maggy_core.examples.sleep:train",
        config={
            "searchspace": {"x": ["DOUBLE", [0.0, 1.0]], "y": ["DOUBLE", [0.0, 1.0]]},
            "num_trials": 4,
            "direction": "max",
            "optimization_key": "metric",
            "es_policy": "none",
            "seed": 3,
            "train_kwargs": {"seconds": 240, "steps": 240},
        },
        num_workers=2,
    )
