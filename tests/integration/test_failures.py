"""Failures the engine must survive: a Redis restart, a worker process that dies."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import pytest
from waiting import wait_for  # tests/, on sys.path

from maggy_core.redis_server import PrivateRedis
from maggy_core.runner import run_experiment
from maggy_core.spec import ExperimentSpec

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("local_spark")]


def ended_in(journal: Path) -> int:
    return journal.read_text().count('"trial_ended"') if journal.exists() else 0


def test_the_experiment_survives_a_redis_restart(tmp_path):
    server = PrivateRedis()
    url = server.start()
    spec = ExperimentSpec.from_dict(
        {
            "name": "restart",
            "train_fn": "maggy_core.examples.sleep:train",
            "searchspace": {"seconds": ["DOUBLE", [0.2, 0.4]], "x": ["DOUBLE", [-1, 1]]},
            "num_trials": 16,
            "workers": 2,
            "es_policy": "none",
            "hb_interval": 0.2,
            "seed": 1,
            "experiment_id": "restart",
        }
    )
    out: dict = {}
    runner = threading.Thread(
        target=lambda: out.update(run_experiment(spec, redis_url=url, results_dir=tmp_path))
    )
    runner.start()
    try:
        journal = tmp_path / "restart" / "journal.jsonl"
        wait_for(lambda: ended_in(journal) >= 4, 60, "four trials to end")
        # Redis goes away with everything it held (no persistence) and comes back
        # on the same port 1.5 s later.
        port = server.port
        server.stop()
        time.sleep(1.5)
        server = PrivateRedis(port=port)
        server.start()
        runner.join(120)
        assert not runner.is_alive(), "the experiment did not end after the restart"
    finally:
        server.stop()
    assert out["status"] == "finished", out.get("reason")
    assert out["num_trials"] == 16
    assert out["counts"]["finished"] == 16
    started = [
        json.loads(line) for line in journal.read_text().splitlines() if '"trial_started"' in line
    ]
    assert len({r["trial_id"] for r in started}) == 16  # every trial ran, none was lost


def test_a_dead_worker_is_replaced_and_its_trial_runs_again(tmp_path, redis_url):
    marker = tmp_path / "crashed"

    def train(x, reporter):
        reporter.broadcast(x, 0)
        if x > 0.5 and not marker.exists():
            marker.touch()
            os._exit(3)  # the Python worker process dies mid-trial, as on an OOM kill
        time.sleep(0.1)
        return x

    spec = ExperimentSpec.from_dict(
        {
            "name": "crash",
            "searchspace": {"x": ["DISCRETE", [0.1, 0.9, 0.2, 0.3, 0.4, 0.8]]},
            "optimizer": "gridsearch",
            "num_trials": 6,
            "workers": 2,
            "es_policy": "none",
            "hb_interval": 0.2,
            "max_attempts": 2,
        },
        require_train_fn=False,
    )
    result = run_experiment(spec, train_fn=train, redis_url=redis_url, results_dir=tmp_path)
    assert marker.exists(), "the crash did not happen"
    assert result["status"] == "finished", result["reason"]
    assert result["counts"]["finished"] == 6
    crashed = next(t for t in result["trials"] if t["params"]["x"] == 0.9)
    assert crashed["attempts"] == 2 and crashed["status"] == "finished"
    assert len(result["workers"]) >= 3  # the restarted task registered as a new worker
