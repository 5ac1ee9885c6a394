"""The trial table and the worker registry, each alone."""

from __future__ import annotations

from maggy_core.records import TrialRecord
from maggy_core.trial import TrialStatus
from maggy_core.trials import TrialTable
from maggy_core.workers import WorkerRegistry, partition_of


def test_the_table_hands_out_ids_counts_and_keeps_the_best():
    table = TrialTable("max")
    a = table.new({"x": 1}, None, {})
    b = table.new({"x": 2}, 3.0, {"rung": 0})
    assert (a.trial_id, b.trial_id, b.budget) == ("t0000", "t0001", 3.0)
    table.start(a, "w0")
    table.start(b, "w1")
    assert a.status is TrialStatus.RUNNING and a.attempts == 1
    assert table.mark_stop(b, 1.0, "stopping rule median at step 2")
    assert not table.mark_stop(b, 2.0, "again")  # told once
    table.finish(b, metric=0.9, metrics={}, early=False)
    assert b.status is TrialStatus.EARLY_STOPPED  # told to stop before it returned
    assert b.stop_reason == "stopping rule median at step 2"
    table.finish(a, metric=0.5, metrics={"loss": 0.5}, early=False)
    assert a.status is TrialStatus.FINISHED
    assert table.best is a  # finished ranks above early-stopped
    c = table.new({"x": 3}, None, {})
    table.start(c, "w0")
    table.fail(c, "ValueError: x")
    table.fail(table.new({"x": 4}, None, {}), "lost")
    assert table.consecutive_failures == 2
    assert table.counts == {"finished": 1, "early_stopped": 1, "failed": 2}
    assert table.ended_count() == 4


def test_a_requeued_trial_runs_again_first_with_a_new_attempt():
    table = TrialTable("min")
    t = table.new({}, None, {})
    table.start(t, "w0")
    table.mark_stop(t, 1.0, "by alice")
    table.requeue(t)
    assert t.status is TrialStatus.PENDING and not table.stop_pending(t)
    assert table.next_queued() is t and table.next_queued() is None
    table.start(t, "w1")
    assert t.attempts == 2 and t.worker == "w1" and t.stop_reason is None


def test_restore_keeps_ended_trials_and_queues_the_rest_in_order():
    table = TrialTable("min")
    trials = [
        TrialRecord("t0002", {}, TrialStatus.PENDING, attempts=1),
        TrialRecord("t0000", {}, TrialStatus.FINISHED, 0.4),
        TrialRecord("t0001", {}, TrialStatus.FINISHED, 0.2),
        TrialRecord("t0003", {}, TrialStatus.PENDING, attempts=1),
    ]
    kept, requeued = table.restore(trials)
    assert [t.trial_id for t in kept] == ["t0000", "t0001"]
    assert [t.trial_id for t in requeued] == ["t0002", "t0003"]
    assert list(table.queue) == ["t0002", "t0003"]
    assert table.best is not None and table.best.trial_id == "t0001"
    assert table.new({}, None, {}).trial_id == "t0004"


def test_the_registry_adopts_loses_and_replaces_workers():
    reg = WorkerRegistry(epoch=2, timeout=5.0)
    assert reg.register("e2-w0.10", "h", 1) == []
    assert list(reg.idle) == ["e2-w0.10"]
    # a heartbeat of this epoch without a register event: adopted once it moves (a
    # value written once is no worker); other epochs ignored
    assert reg.check({"e2-w0.10": 1.0, "e2-w1.11": 1.0, "e1-w1.3": 1.0}, now=10.0) == []
    assert set(reg.workers) == {"e2-w0.10"}
    assert reg.check({"e2-w0.10": 1.0, "e2-w1.11": 1.5, "e1-w1.3": 2.0}, now=10.5) == []
    assert set(reg.workers) == {"e2-w0.10", "e2-w1.11"}
    # w1 keeps beating, w0 does not
    assert reg.check({"e2-w0.10": 1.0, "e2-w1.11": 2.0}, now=14.0) == []
    lost = reg.check({"e2-w0.10": 1.0, "e2-w1.11": 3.0}, now=15.5)
    assert [w.worker_id for w in lost] == ["e2-w0.10"]
    reg.drop("e2-w0.10")
    assert "e2-w0.10" not in reg.idle
    assert reg.register("e2-w0.10", "h", 1) == []  # a dropped worker is never taken back
    assert "e2-w0.10" not in reg.workers
    # a new task on w1's partition shows the old one dead
    reg.workers["e2-w1.11"].trial = "t0007"
    dead = reg.register("e2-w1.12", "h", 2)
    assert [w.worker_id for w in dead] == ["e2-w1.11"]
    assert [w.worker_id for w in reg.busy()] == ["e2-w1.11"]
    assert partition_of("e2-w1.12") == "e2-w1"


def test_after_an_outage_silence_is_not_death():
    reg = WorkerRegistry(epoch=1, timeout=2.0)
    reg.register("e1-w0.1", "h", 1)
    reg.check({"e1-w0.1": 1.0}, now=0.0)
    reg.refresh(now=30.0)  # Redis was away until now: nobody could beat
    assert reg.check({"e1-w0.1": 1.0}, now=31.0) == []
    assert [w.worker_id for w in reg.check({"e1-w0.1": 1.0}, now=32.5)] == ["e1-w0.1"]


def test_a_worker_lost_for_silence_is_taken_back_when_it_beats_again():
    reg = WorkerRegistry(epoch=1, timeout=2.0)
    reg.register("e1-w0.1", "h", 1)
    reg.register("e1-w1.2", "h", 2)
    reg.check({"e1-w0.1": 1.0, "e1-w1.2": 1.0}, now=0.0)
    [lost] = reg.check({"e1-w0.1": 1.0, "e1-w1.2": 1.5}, now=2.5)
    assert lost.worker_id == "e1-w0.1"
    reg.drop(lost.worker_id, silent=True)
    reg.drop("e1-w1.2")  # said bye: never taken back
    assert reg.check({"e1-w0.1": 1.0, "e1-w1.2": 9.0}, now=3.0) == []  # same beat: still gone
    assert reg.workers == {}
    reg.check({"e1-w0.1": 4.0, "e1-w1.2": 9.5}, now=4.0)
    assert list(reg.workers) == ["e1-w0.1"] and reg.readmitted == ["e1-w0.1"]
    assert reg.workers["e1-w0.1"].trial is None and "e1-w0.1" in reg.idle
    assert [w.worker_id for w in reg.gone] == ["e1-w1.2"]
