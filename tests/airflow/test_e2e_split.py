"""End to end without a shared disk: a split Airflow, results only on an S3 server.

One Airflow for the module (``airflow_server.AirflowServer``: api-server, scheduler,
dag-processor and triggerer as separate processes, LocalExecutor, SQLite) whose
results store is ``s3://<bucket>/results`` on a real S3-protocol server (moto's
standalone server on loopback, reached over HTTP). The credentials are those of
an Airflow ``aws`` connection named by ``[maggy] results_conn_id``: no component
has AWS variables in its environment, and there is no local results folder at
all (the one the harness makes is removed before any DAG runs, and must still
be absent at the end). The api-server reads ended experiments from the store and
running ones from the journal segments on the store and from Redis.

- A search is triggered through the REST API; while it runs the plugin's list,
  page and JSON (fetched from the api-server over HTTP) show it running; its
  driver is then SIGKILLed, the task fails, and Airflow's retry resumes the same
  experiment from the journal on the store: the trials that had ended are kept
  and not run again, and the plugin shows the ended experiment.
- The same search in deferrable mode (the task waits in the triggerer). This
  runs Spark in local client mode, as deferrable mode allows on this branch.

Run: ``.venv/bin/pytest tests/airflow/test_e2e_split.py`` (Java 17 and Redis
needed; a few minutes on two cores).
"""

from __future__ import annotations

import json
import signal
import textwrap
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from airflow_server import AirflowServer, cmdline, wait_for
from test_e2e_standalone import follow_run as follow
from test_e2e_standalone import search_xcom as xcom

from maggy_airflow.operators.links import experiment_id_for
from maggy_core.storage import Storage, read_journal_lines

pytestmark = [pytest.mark.airflow, pytest.mark.integration, pytest.mark.slow]

DAG_ID = "maggy_split"
DEFERRED_DAG_ID = "maggy_split_deferred"
TASK_ID = "search"
NUM_TRIALS = 6
CONN_ID = "maggy_s3"

#: The test DAGs: a quick search (each trial sleeps about 5 s in 10 reports) with
#: one retry, and the same search deferring to the triggerer.
DAG_FILE = textwrap.dedent(
    f'''
    """Tests only: quick searches whose results go to the configured object store."""
    import datetime

    import pendulum
    from airflow.sdk import DAG

    from maggy_airflow.operators import MaggyOperator

    CONFIG = {{
        "searchspace": {{"x": ["DOUBLE", [-1.0, 1.0]], "y": ["DOUBLE", [-1.0, 1.0]]}},
        "num_trials": {NUM_TRIALS},
        "optimizer": "randomsearch",
        "direction": "max",
        "train_kwargs": {{"seconds": 5.0, "steps": 10}},
        "seed": 11,
    }}

    for dag_id, deferrable in (("{DAG_ID}", False), ("{DEFERRED_DAG_ID}", True)):
        with DAG(
            dag_id=dag_id,
            schedule=None,
            start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
            catchup=False,
            tags=["maggy", "tests"],
        ) as dag:
            MaggyOperator(
                task_id="{TASK_ID}",
                train_fn="maggy_core.examples.sleep:train",
                config=CONFIG,
                num_workers=2,
                deferrable=deferrable,
                poll_interval=1,
                retries=1,
                retry_delay=datetime.timedelta(seconds=1),
            )
        globals()[dag_id] = dag
    '''
)


@pytest.fixture(scope="module")
def store(s3: Any) -> Storage:
    """The results store of this module's Airflow (the test reads it directly too)."""
    return Storage(f"s3://{s3.bucket()}/results", s3.storage_options)


@pytest.fixture(scope="module")
def airflow(
    tmp_path_factory: pytest.TempPathFactory, redis_url: str, s3: Any, store: Storage
) -> Iterator[AirflowServer]:
    base = tmp_path_factory.mktemp("airflow-split")
    dags = base / "dags"
    dags.mkdir()
    (dags / f"{DAG_ID}.py").write_text(DAG_FILE, encoding="utf-8")
    options = s3.storage_options
    connection = {
        "conn_type": "aws",
        "login": options["key"],
        "password": options["secret"],
        "extra": {
            "endpoint_url": options["client_kwargs"]["endpoint_url"],
            "region_name": options["client_kwargs"]["region_name"],
        },
    }
    env = {
        "MAGGY_RESULTS_DIR": store.url,
        "AIRFLOW__MAGGY__RESULTS_DIR": store.url,
        "AIRFLOW__MAGGY__RESULTS_CONN_ID": CONN_ID,
        f"AIRFLOW_CONN_{CONN_ID.upper()}": json.dumps(connection),
    }
    local_results = base / "no-local-results"
    server = AirflowServer(base / "home", dags, local_results, redis_url, extra_env=env)
    credentials = ("AWS_ACCESS_KEY", "AWS_SECRET", "AWS_SESSION", "AWS_ENDPOINT", "AWS_PROFILE")
    assert not [k for k in server.env() if k.startswith(credentials)], "would bypass the connection"
    try:
        with server:
            # The harness makes a local results folder; this deployment has none.
            local_results.rmdir()
            for dag_id in (DAG_ID, DEFERRED_DAG_ID):
                server.wait_dag(dag_id, timeout=120)
                server.unpause(dag_id)
            yield server
            assert not local_results.exists(), "something wrote results to a local folder"
            written = [
                str(p)
                for name in ("journal.jsonl", "result.json")
                for p in base.rglob(name)
                if "spark-local" not in p.parts
            ]
            assert written == [], f"results on the local disk: {written}"
    finally:
        delete_keys(redis_url, store)


def delete_keys(redis_url: str, store: Storage) -> None:
    """Delete the Redis keys of the experiments this module ran (a killed driver
    leaves keys behind until they expire)."""
    import redis

    from maggy_core.channel import key_prefix

    client = redis.Redis.from_url(redis_url)
    try:
        for name in store.list():
            keys = list(client.scan_iter(match=key_prefix(name) + "*", count=1000))
            if keys:
                client.delete(*keys)
    finally:
        client.close()


# ---------------------------------------------------------------- helpers


def journal(store: Storage, experiment_id: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in read_journal_lines(store.child(experiment_id))]


def plugin(server: AirflowServer, path: str) -> httpx.Response:
    """GET a page or JSON of the plugin from the api-server, signed in as the admin."""
    return httpx.get(
        f"{server.base_url}/maggy{path}",
        headers={"Authorization": f"Bearer {server.token()}"},
        timeout=30,
    )


def plugin_json(server: AirflowServer, path: str) -> dict[str, Any]:
    reply = plugin(server, path)
    assert reply.status_code == 200, (path, reply.status_code, reply.text[:2000])
    return reply.json()  # type: ignore[no-any-return]


def drivers(server: AirflowServer, experiment_id: str) -> list[Any]:
    """The Python driver processes (``maggy_driver.py``) of this Airflow."""
    found = []
    for proc in server.tagged_processes():
        line = cmdline(proc)
        # Not spark-submit's JVM, whose arguments name the driver's file too.
        if "maggy_driver.py" in line and "java" not in line.split(" ", 1)[0]:
            found.append(proc)
    return found


def check_ended(
    server: AirflowServer, store: Storage, dag_id: str, run_id: str, experiment_id: str
) -> dict[str, Any]:
    """The XCom summary names the store's URL, and the plugin shows the ended
    experiment as result.json on the store says; the result."""
    summary = xcom(server, dag_id, run_id)
    assert summary["status"] == "finished", summary
    assert summary["experiment_id"] == experiment_id
    assert summary["results_dir"] == store.url_of(experiment_id), summary
    assert sum(summary["counts"].values()) == NUM_TRIALS, summary
    result = json.loads(store.read_text(experiment_id, "result.json") or "null")
    assert result["status"] == "finished"
    shown = plugin_json(server, f"/api/experiments/{experiment_id}")
    assert shown == result
    rows = plugin_json(server, "/api/experiments")["experiments"]
    row = next(r for r in rows if r["experiment_id"] == experiment_id)
    assert row["status"] == "finished" and row["trials_ended"] == NUM_TRIALS, row
    assert row["dag_id"] == dag_id, row
    page = plugin(server, f"/experiments/{experiment_id}")
    assert page.status_code == 200 and "finished" in page.text, page.text[:2000]
    return result


# ---------------------------------------------------------------- tests


def test_a_killed_driver_is_resumed_from_the_store_by_the_retry(
    airflow: AirflowServer, store: Storage
) -> None:
    run_id = airflow.trigger(DAG_ID, {})
    experiment_id = experiment_id_for(DAG_ID, TASK_ID, run_id, -1)

    # Running: two trials ended (in the journal's segments on the store), and the
    # api-server shows it running, from the store and Redis.
    def two_ended() -> dict[str, Any] | None:
        airflow.check_alive()
        state = airflow.run_state(DAG_ID, run_id)["state"]
        assert state not in ("success", "failed"), (
            f"the run ended ({state}) before two trials were seen ended on the store; "
            f"the store holds {store.list()} and {store.list(experiment_id)}\n"
            + airflow.run_diagnostics(DAG_ID, run_id)
        )
        ended = [r for r in journal(store, experiment_id) if r["type"] == "trial_ended"]
        if len(ended) < 2:
            return None
        reply = plugin(airflow, f"/api/experiments/{experiment_id}")
        return reply.json() if reply.status_code == 200 else None

    running = wait_for(
        two_ended,
        300,
        f"two trials of {experiment_id} ended and shown",
        interval=0.3,
        on_timeout=lambda: airflow.run_diagnostics(DAG_ID, run_id),
    )
    assert running["status"] == "running", running
    assert running["results_dir"] == store.url_of(experiment_id)
    assert sum(1 for t in running["trials"] if t["status"] == "finished") >= 2, running
    rows = plugin_json(airflow, "/api/experiments?status=running")["experiments"]
    assert experiment_id in [r["experiment_id"] for r in rows], rows
    page = plugin(airflow, f"/experiments/{experiment_id}")
    assert page.status_code == 200 and "running" in page.text, page.text[:2000]

    # The store's secret is on no command line (spark-submit, the driver, workers).
    secret = store.storage_options["secret"]
    lines = [cmdline(p) for p in airflow.tagged_processes()]
    assert any("maggy_driver.py" in line for line in lines)
    assert not [line for line in lines if secret in line]

    # The first try's driver dies (SIGKILL: no result.json, no summary in Redis).
    found = drivers(airflow, experiment_id)
    assert len(found) == 1, [cmdline(p) for p in found]
    found[0].send_signal(signal.SIGKILL)
    before = {r["trial_id"]: r for r in journal(store, experiment_id) if r["type"] == "trial_ended"}
    assert len(before) >= 2 and store.read_text(experiment_id, "result.json") is None

    run, states = follow(airflow, DAG_ID, run_id)
    assert run["state"] == "success", airflow.run_diagnostics(DAG_ID, run_id)
    ti = airflow.task_instance(DAG_ID, run_id, TASK_ID)
    assert ti["try_number"] == 2, (ti, states)
    assert "up_for_retry" in states, states
    result = check_ended(airflow, store, DAG_ID, run_id, experiment_id)

    # The retry resumed the journal on the store: the trials that had ended kept
    # their outcome and were not started again.
    records = journal(store, experiment_id)
    assert [r["type"] for r in records].count("experiment") == 2, [r["type"] for r in records]
    resumed = next(r for r in records if r["type"] == "resumed")
    assert resumed["kept"] >= len(before), resumed
    second = records[[r["type"] for r in records].index("experiment", 1) :]
    restarted = {r["trial_id"] for r in second if r["type"] == "trial_started"}
    assert not restarted & set(before), f"ended trials ran again: {restarted & set(before)}"
    trials = {t["trial_id"]: t for t in result["trials"]}
    assert len(trials) == NUM_TRIALS
    for trial_id, record in before.items():
        assert trials[trial_id]["metric"] == record["trial"]["metric"]
        assert trials[trial_id]["start"] == record["trial"]["start"]
    log = airflow.task_log(DAG_ID, run_id, TASK_ID, 2)
    assert store.url_of(experiment_id) in log, log[-4000:]
    # The connection's secret reached the driver in its environment only.
    for try_number in (1, 2):
        assert secret not in airflow.task_log(DAG_ID, run_id, TASK_ID, try_number)


def test_a_deferred_search_writes_to_the_store(airflow: AirflowServer, store: Storage) -> None:
    run_id = airflow.trigger(DEFERRED_DAG_ID, {})
    experiment_id = experiment_id_for(DEFERRED_DAG_ID, TASK_ID, run_id, -1)
    run, states = follow(airflow, DEFERRED_DAG_ID, run_id)
    assert run["state"] == "success", airflow.run_diagnostics(DEFERRED_DAG_ID, run_id)
    assert "deferred" in states, states
    result = check_ended(airflow, store, DEFERRED_DAG_ID, run_id, experiment_id)
    assert [t["attempts"] for t in result["trials"]] == [1] * NUM_TRIALS
    assert [r["type"] for r in journal(store, experiment_id)].count("experiment") == 1
