"""The stopping rule's verdict in the report's own round trip, on a real Redis.

A report at a step where the rule decides (an ASHA rung) waits for the
coordinator's answer, so a trial the rule stops there runs no further step. The
worker loops run in threads against a real coordinator and a real Redis (no Spark:
what is tested is the channel and the two loops). Also: the training function's
module is preloaded before the worker registers, and the heartbeat thread is gone
before the channel closes.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
import types
import uuid
from typing import Any

import pytest

from maggy_core.channel import CoordinatorChannel, WorkerChannel
from maggy_core.coordinator import Coordinator
from maggy_core.exceptions import EarlyStopException
from maggy_core.modes import mode_of, stopping_rule
from maggy_core.reporter import Reporter, asks_at
from maggy_core.results import ResultStore
from maggy_core.spec import ExperimentSpec
from maggy_core.worker import Launch, _Heartbeat, close_after, run_worker

pytestmark = pytest.mark.integration

RUNGS = {"min_step": 1, "max_step": 9, "reduction_factor": 3}


def _answer_next(co: CoordinatorChannel, stop: bool, out: list[dict[str, Any]]) -> None:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        for _entry, msg in co.read_events(block_ms=100):
            out.append(msg)
            co.verdict(msg["worker"], msg["trial"], msg["attempt"], msg["step"], stop)
            return


@pytest.mark.parametrize("stop", [True, False])
def test_a_report_that_asks_gets_the_verdict_in_its_round_trip(channels, stop):
    co, wk = channels
    seen: list[dict[str, Any]] = []
    answer = threading.Thread(target=_answer_next, args=(co, stop, seen))
    answer.start()
    assert wk.report("t0001", 1, 3, 0.5, wait=5.0) is stop
    answer.join(timeout=10)
    assert seen and seen[0]["ask"] == 1 and seen[0]["step"] == 3


def test_an_answer_to_another_report_is_skipped_and_silence_does_not_hang(channels):
    co, wk = channels
    co.verdict("w0.1", "t0001", 1, 1, True)  # an answer nobody waited for any more
    t0 = time.monotonic()
    assert wk.report("t0001", 1, 3, 0.5, wait=0.3) is False  # no answer to step 3
    assert 0.25 < time.monotonic() - t0 < 3
    assert wk.report("t0002", 1, 0, 0.5) is False  # no wait when not asked


def test_where_a_report_asks():
    rungs = {"rungs": [1, 3, 9], "max_step": 27}
    assert [s for s in range(30) if asks_at(rungs, s - 1 if s else None, s)] == [1, 3, 9, 28, 29]
    assert asks_at(rungs, 3, 4) is False and asks_at(rungs, 2, 4) is True  # 3 skipped
    assert [s for s in range(6) if asks_at({"every": 2}, None, s)] == [0, 2, 4]
    for junk in (None, {}, {"every": True}, {"rungs": "1,3"}, [1, 3]):
        assert asks_at(junk, None, 1) is False


def _run_threads(spec: ExperimentSpec, fn, redis_url: str, tmp_path, workers: int = 2):
    exp = f"test-verdict-{uuid.uuid4().hex[:8]}"
    channel = CoordinatorChannel(redis_url, exp)
    store = ResultStore(tmp_path, exp)
    coordinator = Coordinator(
        spec, exp, channel, store, mode_of(spec).optimizer(spec, spec.seed), stopping_rule(spec)
    )
    coordinator.open()
    launch = Launch(exp, redis_url, 1, spec.hb_interval, spec.optimization_key)
    threads = [
        threading.Thread(target=run_worker, args=(launch, f"e1-w{i}.0", fn), daemon=True)
        for i in range(workers)
    ]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 60
    try:
        result = coordinator.run(job_alive=lambda: time.monotonic() < deadline)
    finally:
        for t in threads:
            t.join(timeout=10)
        channel.finish(expire_seconds=5)
        channel.close()
    return result


def test_a_trial_stopped_at_a_rung_runs_no_further_step(redis_url, tmp_path):
    ran: dict[str, list[int]] = {}

    def train(x, reporter):
        steps = ran.setdefault(reporter.trial_id, [])
        for step in range(1, 10):
            steps.append(step)  # the step is run, then reported
            time.sleep(0.005)
            reporter.broadcast(x, step=step)
        return x

    spec = ExperimentSpec.from_dict(
        {
            "name": "verdict",
            "train_fn": "maggy_core.examples.sleep:train",
            "searchspace": {"x": ["DOUBLE", [0.0, 1.0]]},
            "num_trials": 10,
            "workers": 2,
            "es_policy": {"name": "asha", "options": RUNGS},
            "hb_interval": 0.5,
            "seed": 5,
        }
    )
    result = _run_threads(spec, train, redis_url, tmp_path)
    assert result["status"] == "finished", result["reason"]
    stopped = [t for t in result["trials"] if t["status"] == "early_stopped"]
    assert len(stopped) >= 3
    for t in stopped:
        last = t["history"][-1][0]
        assert last in (1, 3), t  # stopped at a rung
        # Nothing past the report that was stopped: the verdict came in its round trip.
        assert ran[t["trial_id"]] == list(range(1, last + 1)), t
    finished = [t for t in result["trials"] if t["status"] == "finished"]
    assert finished and all(ran[t["trial_id"]] == list(range(1, 10)) for t in finished)


def test_the_train_fn_module_is_preloaded_before_the_worker_registers(redis_url, tmp_path, caplog):
    events: list[tuple[str, float]] = []
    module = types.ModuleType("maggy_test_preloaded")

    def maggy_preload() -> None:
        time.sleep(0.3)  # a slow import, like TensorFlow's
        events.append(("preloaded", time.time()))

    def train(x, reporter: Reporter):
        events.append(("trial", time.time()))
        return x

    train.__module__ = module.__name__
    module.maggy_preload = maggy_preload  # type: ignore[attr-defined]
    module.train = train  # type: ignore[attr-defined]
    sys.modules[module.__name__] = module
    spec = ExperimentSpec.from_dict(
        {
            "name": "preload",
            "train_fn": "maggy_core.examples.sleep:train",
            "searchspace": {"x": ["DOUBLE", [0.0, 1.0]]},
            "num_trials": 3,
            "workers": 1,
            "es_policy": "none",
            "hb_interval": 0.1,
            "seed": 5,
        }
    )
    try:
        with caplog.at_level(logging.WARNING, logger="maggy.worker"):
            result = _run_threads(spec, train, redis_url, tmp_path, workers=1)
    finally:
        del sys.modules[module.__name__]
    assert result["status"] == "finished", result["reason"]
    kinds = [k for k, _ in events]
    assert kinds == ["preloaded", "trial", "trial", "trial"]
    # The worker registered only after the preload: the first trial starts after it.
    assert result["trials"][0]["start"] >= events[0][1]
    # The heartbeat (every 0.1 s) is joined before the channel closes: no failed beat.
    assert not [r for r in caplog.records if "heartbeat failed" in r.getMessage()]
    assert not [t for t in threading.enumerate() if t.name == "maggy-heartbeat"]


def test_closing_a_worker_channel_waits_for_its_heartbeat(redis_url):
    # The race behind "heartbeat failed: I/O operation on closed file": a beat in
    # flight while the channel closes. Closing without the join hit it in 14 of
    # 200 rounds like these.
    failures: list[str] = []

    class Catch(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            failures.append(record.getMessage())

    handler = Catch(level=logging.WARNING)
    logging.getLogger("maggy.worker").addHandler(handler)
    exp = f"test-hb-{uuid.uuid4().hex[:8]}"
    try:
        for _ in range(100):
            channel = WorkerChannel(redis_url, exp, "w0.1", 1)
            channel.heartbeat()
            beat = _Heartbeat(channel, 0.0005)
            beat.start()
            time.sleep(0.003)
            close_after(beat, channel)
            assert not beat.is_alive()
    finally:
        logging.getLogger("maggy.worker").removeHandler(handler)
        cleanup = WorkerChannel(redis_url, exp, "w0.1", 1)
        cleanup.client.delete(cleanup.key("workers"))
        cleanup.close()
    assert [m for m in failures if "heartbeat failed" in m] == []


def test_reports_of_a_fast_loop_go_together_and_none_is_lost(redis_url, tmp_path, monkeypatch):
    # A function that reports every "batch" as fast as it can: the worker sends its
    # reports in far fewer events (about one per REPORT_EVERY), the coordinator's
    # history of each trial still holds every point in order, and a stop requested
    # while it runs still reaches it.
    sent: list[int] = []
    original = WorkerChannel.report

    def counted(self, trial, attempt, step, value, wait=0.0, earlier=None):
        sent.append(1 + len(earlier or ()))
        return original(self, trial, attempt, step, value, wait, earlier)

    monkeypatch.setattr(WorkerChannel, "report", counted)

    def train(x, reporter):
        for step in range(2000):
            reporter.broadcast(x + step, step=step)
            if step % 100 == 0:
                time.sleep(0.01)
        return x

    spec = ExperimentSpec.from_dict(
        {
            "name": "held",
            "train_fn": "maggy_core.examples.sleep:train",
            "searchspace": {"x": ["DOUBLE", [0.0, 1.0]]},
            "num_trials": 4,
            "workers": 2,
            "es_policy": "none",
            "hb_interval": 0.5,
            "seed": 5,
        }
    )
    result = _run_threads(spec, train, redis_url, tmp_path)
    assert result["status"] == "finished", result["reason"]
    assert len(result["trials"]) == 4
    for t in result["trials"]:
        assert t["status"] == "finished"
        x = t["params"]["x"]
        assert [s for s, _ in t["history"]] == list(range(2000)), t["trial_id"]
        assert all(v == pytest.approx(x + s) for s, v in t["history"])
    assert sum(sent) == 4 * 2000  # every report was sent once
    assert len(sent) < 4 * 2000 / 20, len(sent)  # in far fewer events


def test_a_held_back_report_goes_with_the_next_one_that_asks(redis_url, tmp_path):
    exp = f"test-held-{uuid.uuid4().hex[:8]}"
    co = CoordinatorChannel(redis_url, exp)
    co.open(1, {})
    worker = WorkerChannel(redis_url, exp, "e1-w0.0", 1)
    try:
        reporter = Reporter(worker, "t0000", 1, {}, tmp_path, {"rungs": [3], "max_step": 9})
        events: list[dict[str, Any]] = []

        def answer_the_ask() -> None:
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                for _entry, msg in co.read_events(block_ms=100):
                    events.append(msg)
                    if msg.get("ask") == 1:
                        co.verdict(msg["worker"], msg["trial"], msg["attempt"], msg["step"], True)
                        return

        helper = threading.Thread(target=answer_the_ask)
        helper.start()
        with pytest.raises(EarlyStopException):
            for step in range(4):
                reporter.broadcast(0.5 + step, step=step)
        helper.join(timeout=10)
        # Step 0 went at once; 1 and 2 were held and went with 3, which asked and
        # was told to stop.
        assert [(m["step"], m.get("earlier")) for m in events] == [
            (0, None),
            (3, [[1, 1.5], [2, 2.5]]),
        ]
        assert reporter.history == [(0, 0.5), (1, 1.5), (2, 2.5), (3, 3.5)]
    finally:
        worker.close()
        co.finish(expire_seconds=5)
        co.close()
