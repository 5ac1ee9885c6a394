"""The example DAGs: they parse without heavy imports, and run end to end with
``dag.test()`` on local Spark and the real Redis."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

DAGS = Path(__file__).resolve().parents[2] / "dags"


def test_dag_files_parse_without_heavy_imports():
    # A fresh interpreter, as the DAG processor is: what do the DAG files import?
    code = (
        "import sys, json\n"
        "from airflow.dag_processing.dagbag import DagBag\n"
        f"bag = DagBag({str(DAGS)!r})\n"
        "heavy = [m for m in ('tensorflow', 'keras', 'pyspark', 'pandas', 'sklearn', 'redis',"
        " 'maggy_core.runner') if m in sys.modules]\n"
        "print(json.dumps({'errors': {k: str(v) for k, v in bag.import_errors.items()},"
        " 'dags': sorted(bag.dag_ids), 'heavy': heavy}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["errors"] == {}
    assert {"hparam_search", "nightly_ablation", "ablation_watch"} <= set(report["dags"])
    assert report["heavy"] == []


@pytest.fixture(scope="module")
def airflow_db():
    """The session's AIRFLOW_HOME with a migrated SQLite database."""
    out = subprocess.run(
        [str(Path(sys.executable).with_name("airflow")), "db", "migrate"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]


def run_dag(dag_id: str, **run_conf):
    from airflow.dag_processing.dagbag import DagBag
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    dag = DagBag(str(DAGS)).get_dag(dag_id)
    run = dag.test(run_conf=run_conf or None)
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    with create_session() as session:
        rows = session.scalars(
            XComModel.get_many(run_id=run.run_id, dag_ids=dag_id, key="return_value")
        )
        xcoms = {row.task_id: XComModel.deserialize_value(row) for row in rows}
    return run, states, xcoms


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.usefixtures("airflow_db")
def test_nightly_ablation_runs_twice_and_flags_what_changed(redis_url):
    # Night 1: the plain table. The worst_* group is one of many informative
    # features, so leaving it out costs little.
    run, states, xcoms = run_dag("nightly_ablation")
    assert run.state == "success", states
    assert states == {"write_dataset": "success", "study": "success", "summarize": "success"}
    first = xcoms["study"]
    # Adaptive repeats: 3 of everything, more for open effects, within 31 trials.
    assert first["status"] == "finished" and (1 + 4) * 3 <= first["num_trials"] <= 31
    assert first["experiment_id"].startswith("nightly_ablation.study.")
    rows = {r["component"]: r for r in first["ablation"]}
    group = "worst_radius+worst_perimeter+worst_area"
    assert set(rows) == {"mean_texture", group, "dense_2+dense_3", "scaling"}
    assert {r["kind"] for r in rows.values()} == {"feature", "layer_group", "component"}
    assert all(3 <= r["n"] <= 8 and r["changed"] is False for r in rows.values())
    assert all(r["stopped"] in ("decided", "precise", "max", "budget") for r in rows.values())
    assert set(xcoms["summarize"]["undecided"]) == {
        name for name, r in rows.items() if r["stopped"] in ("max", "budget")
    }
    result_dir = Path(first["results_dir"])
    assert (result_dir / "ablation.csv").exists() and (result_dir / "ablation.svg").exists()
    assert xcoms["summarize"]["changed"] == []
    # The summary Asset's event reaches the DAG scheduled on it: nothing changed yet.
    _, watch_states, watch = run_dag("ablation_watch")
    assert watch_states == {"check_changes": "success"}
    assert watch["check_changes"] == {"experiment_id": first["experiment_id"], "changed": []}

    # Night 2: the data drifted: only the worst_* columns still carry the signal,
    # so leaving them out now costs a lot, and the study says so.
    run, states, xcoms = run_dag("nightly_ablation", signal_only=group.split("+"))
    assert run.state == "success", states
    second = xcoms["study"]
    rows2 = {r["component"]: r for r in second["ablation"]}
    assert rows2[group]["changed"] is True
    assert rows2[group]["previous_delta"] == pytest.approx(rows[group]["delta"])
    assert rows2[group]["delta"] > rows[group]["delta"] + 0.1
    assert rows2[group]["ci_low"] > 0  # its interval now excludes zero
    assert rows2[group]["stopped"] == "decided"
    assert second["ablation"][0]["component"] == group  # now the one that matters most
    assert group in xcoms["summarize"]["changed"]
    _, _, watch = run_dag("ablation_watch")
    assert watch["check_changes"]["experiment_id"] == second["experiment_id"]
    assert group in watch["check_changes"]["changed"]
    history = (
        Path(first["results_dir"]).parent / "_ablation_history" / "nightly-breast-cancer.jsonl"
    )
    assert len(history.read_text().splitlines()) >= 2


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.usefixtures("airflow_db")
def test_hparam_search_takes_its_space_from_the_trigger_form(redis_url):
    space = {
        "lr": ["DOUBLE", [0.005, 0.02], "log"],
        "units": ["DISCRETE", [32, 48]],
        "activation": ["CATEGORICAL", ["relu"]],
    }
    run, states, xcoms = run_dag("hparam_search", searchspace=space, num_trials=3, workers=2)
    assert run.state == "success", states
    summary = xcoms["search"]
    assert summary["num_trials"] == 3 and summary["status"] == "finished"
    best = summary["best"]["params"]
    assert (
        best["units"] in (32, 48) and best["activation"] == "relu" and 0.005 <= best["lr"] <= 0.02
    )
    assert xcoms["report"] == best
