"""End to end: a real Airflow on loopback runs the project's DAGs and plugin.

One Airflow (API server, scheduler, DAG processor, triggerer; SQLite and
``LocalExecutor``; see ``airflow_server.py``) is started for the module, with a
DAGs folder assembled for it: the project's DAG files plus
``dags/hparam_search_deferrable.py`` (``hparam_search`` with the operator in
deferrable mode). The tests then do what a user does in the UI, through the
REST API the UI uses: log in, unpause, trigger with a conf, follow the run,
read the XCom, the extra link and the task log, open the plugin's page, and
mark a running (or deferred) search failed, after which no process of its Spark
application may be left and its ``result.json`` must say "stopped".

Processes are told apart from those of other Spark jobs on the machine by the
``MAGGY_E2E_TAG`` every process of this Airflow inherits.

Run: ``.venv/bin/pytest tests/airflow -m airflow`` (Java 17 and Redis needed; about
two minutes).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from airflow_server import AirflowServer, cmdline, wait_for

pytestmark = [pytest.mark.airflow, pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
DAG_ID = "hparam_search"
DEFERRABLE_DAG_ID = "hparam_search_deferrable"
TASK_ID = "search"
LINK_NAME = "Maggy experiment"
RUN_TIMEOUT = 600.0
#: What the processes of a Spark application of the operator have in their command lines.
SPARK_MARKERS = (
    "maggy_driver.py",
    "org.apache.spark.deploy.SparkSubmit",
    "pyspark.daemon",
    "pyspark.worker",
)
PROGRESS_LINE = re.compile(r"trial t\d{4} finished\s")


@pytest.fixture(scope="module")
def airflow(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[AirflowServer]:
    """Airflow with the project's DAGs (and the deferrable variant), both test DAGs unpaused."""
    base = tmp_path_factory.mktemp("airflow-e2e")
    dags = base / "dags"
    dags.mkdir()
    for path in sorted((ROOT / "dags").glob("*.py")):
        (dags / path.name).symlink_to(path)
    (dags / f"{DEFERRABLE_DAG_ID}.py").symlink_to(HERE / "dags" / f"{DEFERRABLE_DAG_ID}.py")
    server = AirflowServer(base / "home", dags, base / "results", redis_url)
    try:
        with server:
            for dag_id in (DAG_ID, DEFERRABLE_DAG_ID):
                server.wait_dag(dag_id, timeout=120)
                server.unpause(dag_id)
            yield server
        if server.slow_to_stop:
            print(f"\nAirflow components that needed SIGKILL: {server.slow_to_stop}")
    finally:
        delete_experiment_keys(redis_url, server.results_dir)


def delete_experiment_keys(redis_url: str, results_dir: Path) -> None:
    """Delete the Redis keys of the experiments this module ran (an experiment that
    was killed leaves keys without expiry)."""
    import redis

    from maggy_core.channel import key_prefix

    if not results_dir.is_dir():
        return
    client = redis.Redis.from_url(redis_url)
    try:
        for path in results_dir.iterdir():
            keys = list(client.scan_iter(match=key_prefix(path.name) + "*", count=1000))
            if keys:
                client.delete(*keys)
    finally:
        client.close()


# ---------------------------------------------------------------- helpers


def spark_processes(server: AirflowServer, experiment_id: str) -> list[str]:
    """``pid cmdline`` of this Airflow's processes that belong to a Spark application
    (or name the experiment)."""
    found = []
    for proc in server.tagged_processes():
        line = cmdline(proc)
        if experiment_id in line or any(marker in line for marker in SPARK_MARKERS):
            found.append(f"{proc.pid} {line}")
    return found


def assert_nothing_left(server: AirflowServer, experiment_id: str, timeout: float) -> float:
    """Wait until no process of the experiment's Spark application is left; the seconds it took."""
    start = time.monotonic()
    left: list[str] = []

    def gone() -> bool:
        left[:] = spark_processes(server, experiment_id)
        return not left

    try:
        wait_for(gone, timeout, f"the Spark processes of {experiment_id} gone", interval=0.5)
    except TimeoutError:
        pytest.fail(
            f"{len(left)} process(es) of experiment {experiment_id} still running "
            f"{timeout:.0f} s after its task ended:\n" + "\n".join(x[:400] for x in left)
        )
    return time.monotonic() - start


def follow_run(
    server: AirflowServer, dag_id: str, run_id: str, timeout: float = RUN_TIMEOUT
) -> tuple[dict[str, Any], list[str]]:
    """Poll the run and its search task (as the UI's grid does) until the run ends.

    Returns:
        The run, and the states the task instance was seen in, in order.
    """
    states: list[str] = []

    def ended() -> dict[str, Any] | None:
        server.check_alive()
        ti = server.task_instance(dag_id, run_id, TASK_ID)
        if ti["state"] and (not states or states[-1] != ti["state"]):
            states.append(ti["state"])
        run = server.run_state(dag_id, run_id)
        return run if run["state"] in ("success", "failed") else None

    run = wait_for(
        ended,
        timeout,
        f"run {run_id} of {dag_id} ended",
        interval=0.5,
        on_timeout=lambda: server.run_diagnostics(dag_id, run_id),
    )
    return run, states


def search_xcom(server: AirflowServer, dag_id: str, run_id: str) -> dict[str, Any]:
    entry = server.api(
        "GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{TASK_ID}/xcomEntries/return_value"
    )
    value = entry["value"]
    return json.loads(value) if isinstance(value, str) else value  # type: ignore[no-any-return]


def experiment_link(server: AirflowServer, dag_id: str, run_id: str) -> str:
    links = server.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{TASK_ID}/links")
    link = links["extra_links"].get(LINK_NAME)
    assert link, f"no {LINK_NAME!r} link on the task: {links}"
    return str(link)


def assert_summary(summary: dict[str, Any], num_trials: int) -> None:
    assert summary["status"] == "finished", summary
    assert summary["num_trials"] == num_trials, summary
    assert summary["experiment_id"], summary
    counts = summary["counts"]
    assert sum(counts.values()) == num_trials, summary
    best = summary["best"]
    assert set(best["params"]) == {"lr", "units", "activation"}, best
    assert 0.0005 <= best["params"]["lr"] <= 0.05, best
    assert 16 <= best["params"]["units"] <= 128, best
    assert best["params"]["activation"] in ("relu", "tanh"), best
    assert 0.0 < best["metric"] <= 1.0, best


def check_successful_run(
    server: AirflowServer, dag_id: str, run_id: str, run: dict[str, Any], num_trials: int
) -> tuple[dict[str, Any], str]:
    """The assertions both successful runs share; the summary and the task log."""
    assert run["state"] == "success", server.run_diagnostics(dag_id, run_id)
    summary = search_xcom(server, dag_id, run_id)
    assert_summary(summary, num_trials)
    experiment_id = summary["experiment_id"]

    link = experiment_link(server, dag_id, run_id)
    assert link.endswith(f"/maggy/experiments/{experiment_id}"), link
    assert link.startswith(server.base_url), (link, server.base_url)
    # The plugin's FastAPI app, mounted at /maggy, asks who is there like Airflow's API.
    assert httpx.get(link, timeout=30).status_code == 401
    login = {"Authorization": f"Bearer {server.token()}"}
    page = httpx.get(link, timeout=30, headers=login)
    assert page.status_code == 200, (page.status_code, page.text[:2000])
    assert experiment_id in page.text, page.text[:2000]
    assert "finished" in page.text, page.text[:2000]
    # The UI's session cookie does as well as the header.
    cookie = httpx.get(link, timeout=30, cookies={"_token": server.token()})
    assert cookie.status_code == 200, (cookie.status_code, cookie.text[:2000])
    result = httpx.get(
        f"{server.base_url}/maggy/api/experiments/{experiment_id}", timeout=30, headers=login
    )
    assert result.status_code == 200 and result.json()["status"] == "finished", result.text[:2000]

    log = server.task_log(dag_id, run_id, TASK_ID, 1)
    assert PROGRESS_LINE.search(log), f"no progress line in the task log:\n{log[-6000:]}"
    assert "best" in log, log[-6000:]
    # The downstream task read the summary through XCom.
    assert server.task_instance(dag_id, run_id, "report")["state"] == "success"
    return summary, log


# ---------------------------------------------------------------- tests


def test_search_run_from_the_rest_api(airflow: AirflowServer) -> None:
    """Trigger hparam_search with a conf, as the UI's trigger form does; read what it made."""
    run_id = airflow.trigger(DAG_ID, {"num_trials": 4, "workers": 2})
    run, states = follow_run(airflow, DAG_ID, run_id)
    summary, log = check_successful_run(airflow, DAG_ID, run_id, run, num_trials=4)
    assert "deferred" not in states, states
    assert "deferring" not in log
    assert_nothing_left(airflow, summary["experiment_id"], timeout=30)


def test_search_run_deferrable(airflow: AirflowServer) -> None:
    """The same search with the operator deferring to the triggerer while Spark runs."""
    run_id = airflow.trigger(DEFERRABLE_DAG_ID, {"num_trials": 4, "workers": 2})
    run, states = follow_run(airflow, DEFERRABLE_DAG_ID, run_id)
    summary, log = check_successful_run(airflow, DEFERRABLE_DAG_ID, run_id, run, num_trials=4)
    experiment_id = summary["experiment_id"]

    # The task went running -> deferred -> (scheduled/queued ->) running -> success.
    assert "deferred" in states, states
    assert states.index("deferred") < len(states) - 1 and states[-1] == "success", states
    assert "deferring to the triggerer" in log, log[-6000:]
    # The triggerer ran the trigger, which logged one line per ended trial (the
    # API server merges that log into the task's: the progress lines checked above).
    trigger_logs = sorted(
        (airflow.home / "logs" / f"dag_id={DEFERRABLE_DAG_ID}").rglob("*.trigger.*")
    )
    assert trigger_logs, "the triggerer wrote no trigger log"
    trigger_text = "\n".join(p.read_text(errors="replace") for p in trigger_logs)
    assert PROGRESS_LINE.search(trigger_text), trigger_text[-4000:]
    assert "Trigger fired event" in trigger_text, trigger_text[-4000:]
    submit_log = Path(summary["results_dir"]) / "spark-submit.log"
    assert submit_log.exists(), f"no {submit_log}"
    assert_nothing_left(airflow, experiment_id, timeout=30)


@pytest.mark.parametrize(
    ("dag_id", "task_state"),
    [(DAG_ID, "running"), (DEFERRABLE_DAG_ID, "deferred")],
    ids=["running", "deferred"],
)
def test_mark_failed_stops_the_experiment(
    airflow: AirflowServer, dag_id: str, task_state: str
) -> None:
    """Marking the search failed in the UI while it runs (in a worker slot, or deferred
    to the triggerer) stops the experiment and its Spark application."""
    known = {p.name for p in airflow.results_dir.iterdir()}
    run_id = airflow.trigger(dag_id, {"num_trials": 200, "workers": 2})
    # (The "Maggy experiment" link is only there once the task has ended: Airflow 3
    # pushes extra links as XComs when the task finishes. The experiment's folder is
    # found in the results folder instead.)
    found: dict[str, Path] = {}

    def started() -> bool:
        airflow.check_alive()
        state = airflow.run_state(dag_id, run_id)["state"]
        assert state not in ("success", "failed"), f"the run ended early: {state}"
        new = [
            p
            for p in airflow.results_dir.iterdir()
            if p.name not in known and p.name.startswith(f"{dag_id}.{TASK_ID}.")
        ]
        assert len(new) <= 1, new
        if not new:
            return False
        found["dir"] = new[0]
        drivers = [
            line for line in spark_processes(airflow, new[0].name) if "maggy_driver.py" in line
        ]
        try:
            trials = '"trial_started"' in (new[0] / "journal.jsonl").read_text(encoding="utf-8")
        except OSError:
            trials = False
        ti_state = airflow.task_instance(dag_id, run_id, TASK_ID)["state"]
        return bool(drivers) and trials and ti_state == task_state

    wait_for(
        started,
        240,
        f"the experiment of run {run_id} running with a trial started, the task {task_state}",
        interval=0.5,
        on_timeout=lambda: airflow.run_diagnostics(dag_id, run_id),
    )
    experiment_dir = found["dir"]
    experiment_id = experiment_dir.name
    before = spark_processes(airflow, experiment_id)
    assert any("org.apache.spark.deploy.SparkSubmit" in line for line in before), [
        x[:400] for x in before
    ]

    marked_at = time.monotonic()
    reply = airflow.api(
        "PATCH",
        f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{TASK_ID}",
        json={"new_state": "failed"},
    )
    assert [ti["state"] for ti in reply["task_instances"]] == ["failed"], reply

    took = assert_nothing_left(airflow, experiment_id, timeout=90)
    print(f"\nthe Spark application of {experiment_id} was gone {took:.1f} s after mark-failed")

    run, _states = follow_run(airflow, dag_id, run_id, timeout=60)
    assert run["state"] == "failed", run
    assert airflow.task_instance(dag_id, run_id, TASK_ID)["state"] == "failed"

    # The operator's on_kill (the trigger's, when deferred) asked the experiment to
    # stop: the driver records the trials that ended, writes result.json ("stopped").
    result_path = experiment_dir / "result.json"
    if not result_path.exists():
        journal = (experiment_dir / "journal.jsonl").read_text(encoding="utf-8").splitlines()
        log = airflow.task_log(dag_id, run_id, TASK_ID, 1).splitlines()
        pytest.fail(
            f"{result_path} is missing after the task was marked failed: the experiment "
            f"was not stopped cleanly; files: {sorted(p.name for p in experiment_dir.iterdir())}\n"
            f"last journal records:\n" + "\n".join(r[:200] for r in journal[-4:]) + "\n"
            "end of the task log:\n" + "\n".join(line[:200] for line in log[-6:])
        )
    result = json.loads(result_path.read_text(encoding="utf-8"))
    assert result["status"] == "stopped", {k: result.get(k) for k in ("status", "reason")}
    assert result["experiment_id"] == experiment_id
    ended = sum(
        1 for t in result["trials"] if t["status"] in ("finished", "early_stopped", "failed")
    )
    assert ended < 200, "the experiment ran to the end instead of stopping"
    print(f"mark-failed to run failed: {time.monotonic() - marked_at:.1f} s")
