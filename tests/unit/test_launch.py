"""The launch record every worker starts from: JSON, and secrets kept out of its repr."""

from __future__ import annotations

import json
import os

import pytest

from maggy_core import worker
from maggy_core.worker import Launch


def _launch(**extra):
    return Launch(
        "exp-1",
        "redis://maggy-worker:exp-1:pw-123@10.0.0.1:6379/0",
        2,
        0.5,
        "accuracy",
        "m:f",
        checkpoint_dir="s3://bucket/results/exp-1/checkpoints",
        **extra,
    )


def test_a_launch_round_trips_as_json_and_its_repr_holds_no_secret():
    launch = _launch(storage_options={"key": "AKIA", "secret": "s3cr3t"})
    assert Launch.from_json(launch.to_json()) == launch
    assert json.loads(launch.to_json())["storage_options"] == {"key": "AKIA", "secret": "s3cr3t"}
    for secret in ("pw-123", "s3cr3t", "AKIA"):
        assert secret not in repr(launch) and secret not in str(launch)


@pytest.mark.parametrize("inherited", [None, '{"anon": true}'])
def test_a_worker_takes_the_stores_options_from_its_launch_unless_it_has_its_own(
    monkeypatch, inherited
):
    """An executor on a cluster does not inherit spark-submit's environment: the
    options in the launch reach the reporter through this process's environment."""
    monkeypatch.setenv("MAGGY_STORAGE_OPTIONS", inherited or "")  # restored afterwards
    if inherited is None:
        monkeypatch.delenv("MAGGY_STORAGE_OPTIONS")
    seen = {}

    def fake_run_worker(launch, worker_id, train_fn):
        seen["env"] = os.environ.get("MAGGY_STORAGE_OPTIONS")
        seen["worker_id"] = worker_id
        return {}

    monkeypatch.setattr(worker, "run_worker", fake_run_worker)
    launch = _launch(storage_options={"key": "AKIA", "secret": "s3cr3t"})
    worker._spark_worker(launch.to_json(), 3, None)
    expected = inherited or json.dumps({"key": "AKIA", "secret": "s3cr3t"})
    assert seen == {"env": expected, "worker_id": "e2-w3.0"}
