"""The follower side of the channel and the supervisor, against a real Redis; and a
single trial stopped on request, end to end on Spark."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid

import pytest

from maggy_core import channel as ch
from maggy_core.channel import CoordinatorChannel
from maggy_core.exceptions import MessageError
from maggy_core.results import read_records
from maggy_core.runner import run_experiment
from maggy_core.spec import ExperimentSpec
from maggy_core.supervisor import Supervisor

pytestmark = pytest.mark.integration


@pytest.fixture
def coordinator(redis_url):
    exp = f"test-{uuid.uuid4().hex[:8]}"
    co = CoordinatorChannel(redis_url, exp)
    co.open(1, {"state": "running", "name": "followed"})
    yield co
    co.client.delete(*[k.decode() for k in co.client.smembers(co.key("keys"))], co.key("keys"))
    co.client.delete(co.key(ch.FOLLOWER))
    co.close()


def test_meta_progress_and_summary_reach_a_follower(coordinator):
    client, exp = coordinator.client, coordinator.experiment_id
    assert ch.read_meta(client, exp)["state"] == "running"
    assert ch.read_meta(client, "no-such-experiment") == {}
    assert ch.read_summary(client, exp) is None
    coordinator.publish_progress({"trial_id": "t0000", "line": "trial t0000 finished"})
    client.xadd(coordinator.key("progress"), {"m": b"not json"})  # skipped, position moves
    coordinator.publish_progress({"trial_id": "t0001", "line": "trial t0001 failed"})
    entries, last = ch.read_progress(client, exp)
    assert [e["trial_id"] for e in entries] == ["t0000", "t0001"]
    assert ch.read_progress(client, exp, last) == ([], last)
    coordinator.set_meta(summary={"status": "finished", "num_trials": 2})
    assert ch.read_summary(client, exp) == {"status": "finished", "num_trials": 2}


def test_the_async_twins_read_and_ask_the_same(coordinator, redis_url):
    import redis.asyncio as aioredis

    exp = coordinator.experiment_id
    coordinator.publish_progress({"trial_id": "t0000", "line": "trial t0000 finished"})
    coordinator.set_meta(summary={"status": "finished"})

    async def follow() -> tuple:
        client = aioredis.from_url(redis_url)
        try:
            meta = await ch.read_meta_async(client, exp)
            entries, _ = await ch.read_progress_async(client, exp)
            summary = await ch.read_summary_async(client, exp)
            asked = await ch.request_trial_stop_async(client, exp, "t0003", "by bob")
            stopped = await ch.request_experiment_stop_async(client, exp, "by carol")
            await ch.touch_follower_async(client, exp, "trigger", 30)
            return meta, entries, summary, asked, stopped
        finally:
            await client.aclose()

    meta, entries, summary, asked, stopped = asyncio.run(follow())
    assert meta["name"] == "followed" and [e["trial_id"] for e in entries] == ["t0000"]
    assert summary == {"status": "finished"} and asked and stopped
    [request] = coordinator.trial_stop_requests()
    assert (request["trial"], request["reason"]) == ("t0003", "by bob")
    assert coordinator.stop_request() == "by carol"
    assert coordinator.follower_present()


def test_trial_stop_requests_reach_the_coordinator_once_and_only_while_running(coordinator):
    client, exp = coordinator.client, coordinator.experiment_id
    assert ch.request_trial_stop(client, exp, "t0001", "stopped from the UI by alice")
    assert ch.request_trial_stop(client, exp, "t0002", "by bob")
    assert [(r["trial"], r["reason"]) for r in coordinator.trial_stop_requests()] == [
        ("t0001", "stopped from the UI by alice"),
        ("t0002", "by bob"),
    ]
    assert coordinator.trial_stop_requests() == []  # read once
    client.xadd(coordinator.key(ch.REQUESTS), {"m": json.dumps({"v": 1, "type": "stop_trial"})})
    [bad] = coordinator.trial_stop_requests()
    assert isinstance(bad, MessageError) and "trial" in str(bad)
    with pytest.raises(ValueError, match="trial_id"):
        ch.request_trial_stop(client, exp, "", "no trial")
    coordinator.set_meta(state="finished")
    assert not ch.request_trial_stop(client, exp, "t0001", "too late")
    assert not ch.request_experiment_stop(client, exp, "too late")
    assert not ch.request_trial_stop(client, "no-such-experiment", "t0000", "nobody")


def test_the_supervisor_stops_on_request_or_when_the_follower_is_gone(coordinator):
    sup = Supervisor(coordinator, 1, follower_lease=1.0, now=100.0)
    assert not sup.redis_lost_keys()
    assert sup.experiment_stop(100.5) is None  # within the lease, no key yet
    ch.touch_follower(coordinator.client, coordinator.experiment_id, "task", 1.0)
    assert sup.experiment_stop(105.0) is None  # the key is there: seen now
    coordinator.client.delete(coordinator.key(ch.FOLLOWER))
    assert sup.experiment_stop(105.9) is None
    reason = sup.experiment_stop(106.5)
    assert reason is not None and "follower_lease 1 s" in reason
    ch.request_experiment_stop(coordinator.client, coordinator.experiment_id, "maggy stop by dan")
    assert sup.experiment_stop(106.6) == "stop requested: maggy stop by dan"
    coordinator.client.delete(coordinator.key("meta"))
    assert sup.redis_lost_keys()


def test_the_supervisor_bounds_a_redis_outage():
    sup = Supervisor(CoordinatorChannel("redis://127.0.0.1:1/0", "x"), 1, outage_limit=10.0)
    assert sup.reachable(1.0) is None
    assert sup.unreachable(ConnectionError("down"), 5.0) is None
    assert sup.unreachable(ConnectionError("down"), 14.0) is None
    failure = sup.unreachable(ConnectionError("down"), 15.5)
    assert failure is not None and "more than 10 s" in failure
    assert sup.reachable(16.0) == pytest.approx(11.0)
    assert sup.reachable(17.0) is None


@pytest.mark.usefixtures("local_spark")
def test_a_trial_stopped_on_request_ends_early_with_its_reason(redis_url, tmp_path):
    spec = ExperimentSpec.from_dict(
        {
            "name": "stop-one",
            "train_fn": "maggy_core.examples.sleep:train",
            "searchspace": {"seconds": ["DISCRETE", [4.0]], "x": ["DOUBLE", [-1, 1]]},
            "num_trials": 3,
            "workers": 2,
            "es_policy": "none",
            "hb_interval": 0.2,
            "seed": 5,
        }
    )
    exp = f"stop-one-{uuid.uuid4().hex[:6]}"
    journal = tmp_path / exp / "journal.jsonl"
    asked: dict[str, bool] = {}

    def ask() -> None:
        client = ch.connect(redis_url)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            started = journal.exists() and '"trial_started"' in journal.read_text()
            if started and ch.read_meta(client, exp).get("state") == "running":
                time.sleep(0.5)  # a few reports in
                asked["t0000"] = ch.request_trial_stop(
                    client, exp, "t0000", "stopped from the UI by alice"
                )
                asked["t0042"] = ch.request_trial_stop(client, exp, "t0042", "by bob")
                return
            time.sleep(0.05)

    thread = threading.Thread(target=ask, daemon=True)
    thread.start()
    result = run_experiment(spec, redis_url=redis_url, results_dir=tmp_path, experiment_id=exp)
    thread.join(5)
    assert asked == {"t0000": True, "t0042": True}
    assert result["status"] == "finished", result["reason"]
    trials = {t["trial_id"]: t for t in result["trials"]}
    assert trials["t0000"]["status"] == "early_stopped"
    assert trials["t0000"]["stop_reason"] == "stopped from the UI by alice"
    assert trials["t0000"]["duration"] < 3.5  # it did not sleep its 4 s
    assert trials["t0001"]["status"] == "finished" and trials["t0001"]["stop_reason"] is None
    records = [r for r in read_records(tmp_path / exp) if r.type == "stop_requested"]
    outcomes = {(r.trial_id, r.outcome) for r in records}  # type: ignore[attr-defined]
    assert outcomes == {("t0000", "stopping"), ("t0042", "ignored")}
    on_disk = json.loads((tmp_path / exp / "result.json").read_text())
    assert on_disk["trials"][0]["stop_reason"] == "stopped from the UI by alice"
