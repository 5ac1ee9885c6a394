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


def test_maggy_run_prints_progress_and_a_summary(tmp_path, redis_url):
    spec = write_spec(tmp_path)
    proc = subprocess.run(
        [
            MAGGY,
            "run",
            str(spec),
            "--master",
            "local[2]",
            "--redis-url",
            redis_url,
            "--results-dir",
            str(tmp_path / "out"),
            "--experiment-id",
            "cli-run",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    progress = [line for line in proc.stderr.splitlines() if "maggy: trial t" in line]
    assert len(progress) == 6
    assert "[6/6 ended" in progress[-1]
    assert "experiment cli-run: finished" in proc.stdout
    assert "best: t" in proc.stdout
    result = json.loads((tmp_path / "out" / "cli-run" / "result.json").read_text())
    assert result["counts"]["finished"] == 6
    assert result["spark"]["master"] == "local[2]"


def test_sigterm_stops_the_experiment_and_leaves_nothing_running(tmp_path, redis_url):
    # Long trials: the experiment is still running when the signal comes.
    spec = write_spec(
        tmp_path,
        searchspace={"seconds": ["DOUBLE", [20, 30]], "x": ["DOUBLE", [0, 1]]},
        num_trials=4,
    )
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [
            MAGGY,
            "run",
            str(spec),
            "--master",
            "local[2]",
            "--redis-url",
            redis_url,
            "--results-dir",
            str(out),
            "--experiment-id",
            "cli-term",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    journal = out / "cli-term" / "journal.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # wait until both workers run a trial
        if journal.exists() and journal.read_text().count('"trial_started"') >= 2:
            break
        time.sleep(0.2)
    else:
        proc.kill()
        pytest.fail("the experiment did not start in time")
    tree = psutil.Process(proc.pid).children(recursive=True)
    assert any("java" in p.name() for p in tree), "expected a Spark JVM under maggy run"
    os.kill(proc.pid, signal.SIGTERM)
    _stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 1, stderr[-3000:]
    result = json.loads((out / "cli-term" / "result.json").read_text())
    assert result["status"] == "stopped" and "SIGTERM" in result["reason"]
    assert all(t["status"] in ("early_stopped", "failed") for t in result["trials"])
    gone, alive = psutil.wait_procs(tree, timeout=30)
    assert not alive, f"left running: {[(p.pid, p.name()) for p in alive]}"
