"""The Redis channel against a real Redis server."""

from __future__ import annotations

import pytest

from maggy_core.exceptions import MessageError

pytestmark = pytest.mark.integration


def test_events_flow_to_the_coordinator_in_order(channels):
    co, wk = channels
    wk.register("host", 123)
    for step in range(3):
        assert wk.report("t0000", 1, step, step / 10) is False
    events = co.read_events(block_ms=100)
    kinds = [m["type"] for _, m in events]
    assert kinds == ["register", "metric", "metric", "metric"]
    assert [m["seq"] for _, m in events[1:]] == [1, 2, 3]
    co.ack([e for e, _ in events])
    assert co.read_events(block_ms=10) == []
    pending = co.client.xpending(co.key("events"), "coordinator")
    assert pending["pending"] == 0


def test_stop_flag_is_read_on_the_next_report(channels):
    co, wk = channels
    assert wk.report("t0001", 1, 0, 1.0) is False
    co.request_stop("t0001")
    assert wk.report("t0001", 1, 1, 1.0) is True
    assert wk.report("t0002", 1, 0, 1.0) is False  # other trials are not touched
    co.clear_stop("t0001")
    assert wk.stop_requested("t0001") is False


def test_assignments_reach_the_worker(channels):
    co, wk = channels
    assert wk.next_message(timeout=0.1) is None
    co.assign(
        "w0.1",
        {"type": "trial", "trial": "t0003", "attempt": 2, "params": {"lr": 0.1}, "budget": None},
    )
    msg = wk.next_message(timeout=1)
    assert msg["trial"] == "t0003" and msg["attempt"] == 2 and msg["params"] == {"lr": 0.1}


def test_malformed_entries_are_reported_not_raised(channels):
    co, wk = channels
    co.client.xadd(co.key("events"), {"m": b"\x80\x81 not json"})
    co.client.xadd(co.key("events"), {"m": b'{"v": 1, "type": "metric"}'})
    wk.send("log", trial="t", attempt=1, msg="hello")
    events = co.read_events(block_ms=100)
    assert isinstance(events[0][1], MessageError)
    assert isinstance(events[1][1], MessageError) and "field" in str(events[1][1])
    assert events[2][1]["msg"] == "hello"


def test_heartbeats_and_expiry(channels):
    co, wk = channels
    wk.heartbeat()
    beats = co.heartbeats()
    assert set(beats) == {"w0.1"} and beats["w0.1"] > 0
    co.assign("w0.1", {"type": "done", "reason": "finished"})
    co.finish(expire_seconds=100)
    ttl = co.client.ttl(co.key("meta"))
    assert 0 < ttl <= 100
    assert co.client.ttl(co.assign_key("w0.1")) > 0


def test_a_new_epoch_starts_from_a_clean_channel(channels):
    co, wk = channels
    wk.report("t0000", 1, 0, 1.0)
    co.request_stop("t0000")
    co.open(2, {"state": "running"})
    assert co.read_events(block_ms=10) == []
    assert wk.stop_requested("t0000") is False
    assert co.meta()["epoch"] == "2"


def test_the_group_comes_back_after_redis_loses_the_stream(channels):
    co, wk = channels
    co.client.delete(co.key("events"))  # what a Redis restart without persistence does
    assert co.read_events(block_ms=10) == []
    wk.send("log", trial="t", attempt=1, msg="after")
    assert co.read_events(block_ms=100)[0][1]["msg"] == "after"


def test_live_histories_read_the_whole_stream_page_by_page(channels):
    from maggy_core.channel import live_histories

    co, wk = channels
    for step in range(7):
        wk.report("t0000", 1, step, step / 10)
        wk.report("t0001", 1, step, 1.0)
    co.client.xadd(co.key("events"), {b"m": b"not json"})  # skipped, not raised
    wk.report("t0000", 1, 3, 0.99)  # a step reported again: its latest value
    found = live_histories(co.client, co.experiment_id, {"t0000", "t9999"}, page=4)
    assert found["t9999"] == []
    assert found["t0000"] == [(s, 0.99 if s == 3 else s / 10) for s in range(7)]
