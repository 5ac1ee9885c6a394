"""What runs on ``local[N]`` also runs on a Spark standalone cluster.

The module starts a real standalone cluster on loopback (one master, two
workers of 2 cores each, from the pyspark package; see ``spark_cluster.py``)
and runs an HPO experiment on ``spark://127.0.0.1:<port>`` with Redis over
TCP. It then proves from the outside that the trials ran in executors of the
standalone workers (their work directories and executor logs), not in the
driver, and on both workers.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

# Lives next to this file; pytest's default ("prepend") import mode puts this
# directory on sys.path for the test modules in it.
from spark_cluster import StandaloneCluster, standalone_cluster

from maggy_core.runner import run_experiment
from maggy_core.spec import ExperimentSpec

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TERMINAL = {"finished", "early_stopped", "failed"}
NUM_TRIALS = 12
WORKERS = 2  # maggy workers = Spark tasks; one per executor, one executor per Spark worker

# Settings a standalone cluster needs that local[N] gets from the runner's defaults:
SPARK_CONF = {
    # The driver runs in this process; executors must reach it on loopback.
    "spark.driver.host": "127.0.0.1",
    "spark.driver.bindAddress": "127.0.0.1",
    # 2 executors of 1 core (= 2 task slots, one per maggy worker). The master
    # spreads executors over workers (spark.deploy.spreadOut, on by default),
    # so each Spark worker gets one.
    "spark.executor.cores": "1",
    "spark.cores.max": str(WORKERS),
    "spark.executor.memory": "512m",
    # Start the job only once both executors are registered (at most 30 s), so
    # that the two long-lived tasks are placed on both of them from the start.
    "spark.scheduler.minRegisteredResourcesRatio": "1.0",
    "spark.scheduler.maxRegisteredResourcesWaitingTime": "30s",
}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StandaloneCluster]:
    """A master and two workers (2 cores, 1 GiB each), all ALIVE; torn down after the module."""
    with standalone_cluster(
        tmp_path_factory.mktemp("spark-cluster"), workers=2, cores=2, memory="1g"
    ) as c:
        yield c


@pytest.fixture
def no_active_spark_context() -> None:
    # run_experiment reuses an active SparkContext whatever its master; this test
    # needs a new one on the cluster.
    from pyspark import SparkContext

    active = SparkContext._active_spark_context
    if active is not None:
        pytest.fail(f"a SparkContext on {active.master} is still active (left by another test)")


def _tids_by_spark_worker(cluster: StandaloneCluster, app_id: str) -> dict[str, set[int]]:
    """Spark worker name -> ids (TIDs) of the tasks its executors of ``app_id`` ran.

    Read from the executors' own logs, ``<work-dir>/<app-id>/<executor-id>/stderr``,
    where Spark's Executor logs ``Running task 0.0 in stage 0.0 (TID 0)``.
    """
    found: dict[str, set[int]] = {}
    for daemon in cluster.workers:
        assert daemon.work_dir is not None
        tids: set[int] = set()
        for stderr in (daemon.work_dir / app_id).glob("*/stderr"):
            tids.update(
                int(m)
                for m in re.findall(
                    r"Running task \S+ in stage \S+ \(TID (\d+)\)",
                    stderr.read_text(errors="replace"),
                )
            )
        found[daemon.name] = tids
    return found


def test_hpo_experiment_runs_on_a_standalone_cluster(
    cluster: StandaloneCluster,
    redis_url: str,
    redis_client,
    experiment_id: str,
    tmp_path: Path,
    no_active_spark_context: None,
) -> None:
    spec = ExperimentSpec.from_dict(
        {
            "name": "cluster",
            "train_fn": "maggy_core.examples.sleep:train",
            "searchspace": {"seconds": ["DOUBLE", [0.05, 0.3]], "x": ["DOUBLE", [-2, 2]]},
            "optimizer": "randomsearch",
            "num_trials": NUM_TRIALS,
            "direction": "max",
            "es_policy": "median",
            "es_min": 3,
            "workers": WORKERS,
            "seed": 7,
        }
    )
    # The results directory is written by the coordinator in the driver (this
    # process). Every "node" of this cluster is this same machine, so any path
    # is also seen by all of them; on a real cluster it would have to be on
    # storage the driver can write (the workers only talk to Redis).
    result = run_experiment(
        spec,
        master=cluster.master_url,
        redis_url=redis_url,
        results_dir=tmp_path / "results",
        spark_conf=SPARK_CONF,
        experiment_id=experiment_id,
    )

    assert result["status"] == "finished", result.get("reason")
    assert result["experiment_id"] == experiment_id

    # Every trial recorded, each with a terminal status.
    trials = result["trials"]
    assert result["num_trials"] == NUM_TRIALS
    assert len(trials) == NUM_TRIALS
    assert len({t["trial_id"] for t in trials}) == NUM_TRIALS
    bad = [(t["trial_id"], t["status"], t["error"]) for t in trials if t["status"] not in TERMINAL]
    assert not bad
    assert not [t for t in trials if t["status"] == "failed"], [
        t["traceback"] for t in trials if t["traceback"]
    ]
    assert sum(result["counts"].get(s, 0) for s in TERMINAL) == NUM_TRIALS
    on_disk = json.loads((Path(result["results_dir"]) / "result.json").read_text())
    assert on_disk["status"] == "finished"
    assert len(on_disk["trials"]) == NUM_TRIALS

    # The experiment ran on the standalone master ...
    assert result["spark"]["master"] == cluster.master_url
    app_id = result["spark"]["app_id"]
    assert app_id.startswith("app-"), app_id  # local mode ids look like "local-1700000000000"

    # ... on more than one maggy worker ...
    ran = {t["worker"] for t in trials}
    assert len(ran) >= 2, ran
    assert len([w for w in result["workers"] if w["trials"] > 0]) >= 2, result["workers"]

    # ... in executors that the standalone workers launched: each Spark worker
    # has a directory for this application, holding its executor's logs ...
    for daemon in cluster.workers:
        assert daemon.work_dir is not None
        assert (daemon.work_dir / app_id).is_dir(), (
            f"{daemon.name} ran no executor of {app_id}; its work dir has "
            f"{sorted(p.name for p in daemon.work_dir.iterdir())}"
        )

    # ... and the Spark tasks behind the maggy workers that ran trials were run
    # by executors of both Spark workers. A maggy worker id is
    # "w<partition>.<task attempt id>", and the attempt id is the TID that the
    # executor logs.
    tids = _tids_by_spark_worker(cluster, app_id)
    hosts = {}
    for worker_id in ran:
        tid = int(worker_id.rsplit(".", 1)[1])
        hosts[worker_id] = [name for name, ids in tids.items() if tid in ids]
        assert len(hosts[worker_id]) == 1, (worker_id, tids)
    assert {h[0] for h in hosts.values()} == {d.name for d in cluster.workers}, hosts

    # The master saw the application end, having been given exactly the 2 cores.
    apps = {a["id"]: a for a in cluster.master_state().get("completedapps", [])}
    assert app_id in apps, sorted(apps)
    assert apps[app_id]["cores"] == WORKERS
