"""Nightly ablation study of a Keras classifier on the day's data.

Every night ``write_dataset`` writes the day's table (scikit-learn's bundled
breast-cancer data, to Parquet), ``study`` runs a leave-one-component-out study
on it, and ``summarize`` reports what each component contributes and which
effects changed since the earlier nights:

- features: ``mean_texture``, and the group ``worst_radius+worst_perimeter+worst_area``;
- a layer group of the Keras model: ``dense_2+dense_3``;
- a generic component: the ``scaling`` switch (feature standardisation).

Repeats are adaptive (``repeats: {min: 3, max: 8, precision: 0.02}`` within
``budget: {trials: 31}``): every component runs 3 times with paired seeds, then the
components whose effect is still open get more, so every effect comes with an
interval and a p-value that stay valid under this optional stopping (see
``docs/ablation.md``), and the table says how many repeats each got and why it
stopped. The study's history sits beside the results, and a component whose
effect changed significantly is flagged ``changed``.

The DAG param ``signal_only`` simulates a night whose data drifted: every other
feature column is shuffled, so only the listed columns still carry the signal
(the trigger form takes it, e.g. ``["worst_radius", "worst_perimeter", "worst_area"]``).

Its outputs are Airflow Assets: ``write_dataset`` updates :data:`TABLE` (the folder
of the daily tables) and ``summarize`` updates :data:`SUMMARY`, whose event carries
the components that are significant and those whose effect changed. The DAG
``ablation_watch`` is scheduled on :data:`SUMMARY` and acts on the changes.
"""

from __future__ import annotations

import os

import pendulum
from airflow.sdk import DAG, Asset, Param, task

from maggy_airflow.operators import MaggyOperator

DATA_DIR = os.environ.get("MAGGY_DATA_DIR") or os.path.join(
    os.environ.get("AIRFLOW_HOME") or os.path.expanduser("~/airflow"), "maggy-data"
)

#: The folder of the daily tables (one Parquet file a day).
TABLE = Asset(name="nightly_breast_cancer_table", uri=f"file://{os.path.abspath(DATA_DIR)}")
#: The study's summary; ``ablation_watch`` (same name there) is scheduled on it.
SUMMARY = Asset(name="nightly_ablation_summary", uri="maggy://nightly_ablation/summary")

#: The study, as in a spec file; the day's table comes from the upstream task.
STUDY = {
    "name": "nightly-breast-cancer",
    "ablation": {
        "dataset": "{{ ti.xcom_pull(task_ids='write_dataset') }}",
        "label": "label",
        "features": ["mean_texture", ["worst_radius", "worst_perimeter", "worst_area"]],
        "base_model": "maggy_core.examples.tabular:base_model",
        "layer_groups": [["dense_2", "dense_3"]],
        "components": ["scaling"],
    },
    # Clear effects stop after 3 repeats; open ones get up to 8, the one nearest a
    # decision first (the trials it needs kept for it), within 31 trials (about a
    # minute for the DAG on two cores): the scaling switch is decided within them.
    "ablator": {
        "name": "loco",
        "repeats": {"min": 3, "max": 8, "precision": 0.02},
        "budget": {"trials": 31},
    },
    "direction": "max",
    "optimization_key": "accuracy",
    "seed": 11,
    "train_kwargs": {"epochs": 6},
}

with DAG(
    dag_id="nightly_ablation",
    description="maggy: nightly ablation study of a Keras classifier on the day's data",
    schedule="@daily",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    params={
        "signal_only": Param(
            [],
            type="array",
            description="simulate drift: shuffle every feature column but these (empty: none)",
        )
    },
    tags=["maggy", "example", "ablation"],
) as dag:

    @task(outlets=[TABLE])
    def write_dataset(params: dict | None = None, ds: str | None = None) -> str:
        """Write the day's table; its path goes to the study through XCom."""
        from maggy_core.examples.tabular import write_dataset as write

        signal_only = list((params or {}).get("signal_only") or [])
        path = os.path.join(DATA_DIR, f"breast_cancer-{ds}.parquet")
        return write(path, signal_only=signal_only or None, seed=7)

    data = write_dataset()

    study = MaggyOperator(
        task_id="study",
        train_fn="maggy_core.examples.tabular:ablation_train",
        config=STUDY,
        num_workers=2,
    )
    data >> study

    @task(outlets=[SUMMARY])
    def summarize(summary: dict, outlet_events=None) -> dict:
        """Report each component's effect, and the ones that changed since the
        earlier nights; a real pipeline would alert or publish here."""

        def f(value: float | None) -> str:
            return "-" if value is None else f"{value:+.4f}"

        table = summary.get("ablation") or []
        for row in table:
            print(
                f"{row['rank']}. {row['component']:<42} {row['kind']:<12} "
                f"{row.get('repeats')} repeats ({row.get('stopped')}) "
                f"delta {f(row['delta'])} [{f(row['ci_low'])}, {f(row['ci_high'])}] "
                f"p={'-' if row['p_adjusted'] is None else format(row['p_adjusted'], '.3g')}"
                + ("  significant" if row["significant"] else "")
                + (f"  CHANGED (was {f(row['previous_delta'])})" if row.get("changed") else "")
            )
        result = {
            "experiment_id": summary["experiment_id"],
            "significant": [r["component"] for r in table if r["significant"]],
            "changed": [r["component"] for r in table if r.get("changed")],
            "undecided": [
                r["component"] for r in table if r.get("stopped") not in ("decided", "precise")
            ],
        }
        if outlet_events is not None:
            outlet_events[SUMMARY].extra = result
        return result

    summarize(study.output)
