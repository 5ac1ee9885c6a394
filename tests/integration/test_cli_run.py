"""``maggy run`` as a user runs it: a subprocess that starts its own Spark."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

pytestmark = pytest.mark.integration

MAGGY = str(Path(sys.executable).with_name("maggy"))


def write_spec(tmp_path: Path, **over) -> Path:
    spec = {
        "name": "cli",
        "train_fn": "maggy_core.examples.sleep:train",
        "searchspace": {"seconds": ["DOUBLE", [0.05, 0.15]], "x": ["DOUBLE", [-1, 1]]},
        "num_trials": 6,
        "workers": 2,
        "es_policy": "none",
        "seed": 5,
    }
    spec.update(over)
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(spec))
    return path


def start(
    spec: str, redis_url: str, out: Path, experiment_id: str, *extra: str
) -> subprocess.Popen:
    return subprocess.Popen(
        [
            MAGGY,
            "run",
            spec,
            "--master",
            "local[2]",
            "--redis-url",
            redis_url,
            "--results-dir",
            str(out),
            "--experiment-id",
            experiment_id,
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def wait_started(journal: Path, count: int) -> None:
    deadline = time.monotonic() + 120
    while not (journal.exists() and journal.read_text().count('"trial_started"') >= count):
        assert time.monotonic() < deadline, "the experiment did not start in time"
        time.sleep(0.2)


@pytest.fixture
def processes():
    """Processes a test started; killed (with their groups) if still running at the end."""
    started: list[subprocess.Popen] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_maggy_run_prints_progress_and_a_summary(tmp_path, redis_url, experiment_id):
    proc = subprocess.run(
        [
            MAGGY,
            "run",
            str(write_spec(tmp_path)),
            "--master",
            "local[2]",
            "--redis-url",
            redis_url,
            "--results-dir",
            str(tmp_path / "out"),
            "--experiment-id",
            experiment_id,
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    progress = [line for line in proc.stderr.splitlines() if "maggy: trial t" in line]
    assert len(progress) == 6
    assert "[6/6 ended" in progress[-1]
    assert f"experiment {experiment_id}: finished" in proc.stdout
    assert "best: t" in proc.stdout
    result = json.loads((tmp_path / "out" / experiment_id / "result.json").read_text())
    assert result["counts"]["finished"] == 6
    assert result["spark"]["master"] == "local[2]"


def test_sigterm_stops_the_experiment_and_leaves_nothing_running(
    tmp_path, redis_url, experiment_id, processes
):
    # Long trials: the experiment is still running when the signal comes.
    spec = write_spec(tmp_path, searchspace={"seconds": ["DOUBLE", [20, 30]]}, num_trials=4)
    out = tmp_path / "out"
    proc = start(str(spec), redis_url, out, experiment_id)
    processes.append(proc)
    wait_started(out / experiment_id / "journal.jsonl", 2)  # both workers run a trial
    tree = psutil.Process(proc.pid).children(recursive=True)
    assert any("java" in p.name() for p in tree), "expected a Spark JVM under maggy run"
    os.kill(proc.pid, signal.SIGTERM)
    _stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 1, stderr[-3000:]
    result = json.loads((out / experiment_id / "result.json").read_text())
    assert result["status"] == "stopped" and "SIGTERM" in result["reason"]
    assert all(t["status"] in ("early_stopped", "failed") for t in result["trials"])
    _gone, alive = psutil.wait_procs(tree, timeout=30)
    assert not alive, f"left running: {[(p.pid, p.name()) for p in alive]}"


def test_maggy_stop_ends_a_running_experiment(tmp_path, redis_url, experiment_id, processes):
    spec = json.loads(
        write_spec(tmp_path, searchspace={"seconds": ["DOUBLE", [20, 30]]}).read_text()
    )
    out = tmp_path / "out"
    proc = start(json.dumps(spec), redis_url, out, experiment_id, "--json")  # the spec inline
    processes.append(proc)
    wait_started(out / experiment_id / "journal.jsonl", 1)
    stop = subprocess.run(
        [MAGGY, "stop", experiment_id, "--redis-url", redis_url, "--reason", "test"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert stop.returncode == 0, stop.stderr
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 1, stderr[-3000:]
    result = json.loads(stdout)
    assert result["status"] == "stopped" and result["reason"] == "stop requested: test"
    again = subprocess.run(
        [MAGGY, "stop", experiment_id, "--redis-url", redis_url],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert again.returncode == 1 and "no running experiment" in again.stderr
