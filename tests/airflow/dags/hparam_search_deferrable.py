"""Tests only: ``hparam_search`` with ``MaggyOperator(deferrable=True)``.

The same params, experiment and downstream step as ``dags/hparam_search.py``
(imported from it: the end-to-end tests put this file next to the project's DAGs
in a DAGs folder of their own, which Airflow puts on ``sys.path``); the search task
submits the Spark application, then waits in the triggerer.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG, task
from hparam_search import CONFIG, PARAMS, report_best

from maggy_airflow.operators import MaggyOperator

with DAG(
    dag_id="hparam_search_deferrable",
    description="maggy (tests): hparam_search with the operator in deferrable mode",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    render_template_as_native_obj=True,
    tags=["maggy", "tests"],
    params=PARAMS,
) as dag:
    search = MaggyOperator(
        task_id="search",
        train_fn="maggy_core.examples.digits:train",
        config=CONFIG,
        num_workers="{{ params.workers }}",
        deferrable=True,
        poll_interval=1,
    )
    task(report_best, task_id="report")(search.output)
