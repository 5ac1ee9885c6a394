"""Nightly study of a Keras classifier on the day's data.

``write_dataset`` writes the night's table (scikit-learn's bundled breast-cancer
data, to Parquet); ``study`` runs maggy on it; ``summarize`` reads the XCom
summary and decides whether the result is good enough to use. The study is a
hyperparameter search for now; it becomes an ablation study (which features and
layers earn their keep) when the engine's ablation studies land.
"""

from __future__ import annotations

import os

import pendulum
from airflow.sdk import DAG, task

from maggy_airflow.operators import MaggyOperator

DATA_DIR = os.environ.get("MAGGY_DATA_DIR") or os.path.join(
    os.environ.get("AIRFLOW_HOME") or os.path.expanduser("~/airflow"), "maggy-data"
)

with DAG(
    dag_id="nightly_ablation",
    description="maggy: nightly study of a Keras classifier on the day's data",
    schedule="@daily",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["maggy", "example"],
) as dag:

    @task
    def write_dataset(ds: str | None = None) -> str:
        """Write the day's table; its path goes to the study through XCom."""
        from maggy_core.examples.tabular import write_dataset as write

        return write(os.path.join(DATA_DIR, f"breast_cancer-{ds}.parquet"))

    data = write_dataset()

    study = MaggyOperator(
        task_id="study",
        train_fn="maggy_core.examples.tabular:train",
        config={
            "searchspace": {
                "lr": ["DOUBLE", [0.001, 0.05], "log"],
                "units": ["INTEGER", [8, 64]],
                "dropout": ["DOUBLE", [0.0, 0.5]],
            },
            "num_trials": 6,
            "direction": "max",
            "optimization_key": "accuracy",
            "es_policy": "median",
            "es_min": 3,
            "seed": 11,
            "train_kwargs": {"data": "{{ ti.xcom_pull(task_ids='write_dataset') }}"},
        },
        num_workers=2,
    )
    data >> study

    @task
    def summarize(summary: dict) -> dict:
        """Read the study's summary; a real pipeline would branch or publish here."""
        best = summary["best"]
        ok = best["metric"] >= 0.9
        print(
            f"{summary['experiment_id']}: best accuracy {best['metric']:.4f} "
            f"with {best['params']}; "
            f"{'good enough' if ok else 'below 0.9'}"
        )
        return {"accuracy": best["metric"], "params": best["params"], "good_enough": ok}

    summarize(study.output)
