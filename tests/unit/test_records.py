"""Typed records: JSON round trips, tolerant reading, ranking, the summary."""

from __future__ import annotations

import json

import pytest

from maggy_core.records import (
    BestTrial,
    Ended,
    ExperimentRecord,
    Origin,
    Result,
    StopRequested,
    TrialEnded,
    TrialRecord,
    TrialStarted,
    WorkerRecord,
    best_of,
    record_from_json,
    summarize,
)
from maggy_core.trial import TrialStatus


def trial(tid: str, status: str, metric: float | None, **more) -> TrialRecord:
    return TrialRecord(tid, {"lr": 0.1}, TrialStatus(status), metric, **more)


def test_a_trial_survives_json_and_keeps_every_field_name():
    t = trial("t0003", "early_stopped", 0.5, history=[(0, 0.1), (1, 0.5)], attempts=2)
    t.stop_reason = "stopped from the UI by alice"
    data = json.loads(json.dumps(t.to_json()))
    assert set(data) == {
        "trial_id",
        "params",
        "status",
        "metric",
        "metrics",
        "history",
        "budget",
        "info",
        "attempts",
        "worker",
        "start",
        "duration",
        "error",
        "traceback",
        "stop_reason",
    }
    assert TrialRecord.from_json(data) == t
    assert t.frozen().history == ((0, 0.1), (1, 0.5))


def test_older_and_newer_shapes_are_read():
    old = {"trial_id": "t0000", "params": {}, "status": "finished", "metric": 1.0, "history": []}
    assert TrialRecord.from_json(old).stop_reason is None  # written before the field existed
    newer = {**old, "a_field_from_the_future": 1}
    assert TrialRecord.from_json(newer).metric == 1.0
    legacy = {
        "type": "trial_started",
        "trial_id": "t0000",
        "attempt": 1,
        "params": {},
        "optimizer": {"optimizer": "randomsearch", "count": 1},
        "time": 3.0,
    }
    rec = record_from_json(legacy)
    assert isinstance(rec, TrialStarted) and rec.time == 3.0
    assert record_from_json({"type": "from_the_future"}) is None
    with pytest.raises((KeyError, TypeError)):
        record_from_json({"type": "trial_ended"})


@pytest.mark.parametrize(
    "record",
    [
        ExperimentRecord(
            experiment_id="e",
            epoch=2,
            spec={"name": "e"},
            seed=7,
            dag_id="d",
            task_id="t",
            run_id="r",
            map_index=-1,
        ),
        TrialStarted(trial_id="t0001", attempt=1, params={"x": 1}, budget=3, worker="w"),
        TrialEnded(trial_id="t0001", trial=trial("t0001", "failed", None, error="E: x")),
        StopRequested(trial_id="t0002", reason="by bob", outcome="ignored", detail="no such"),
        Ended(status="stopped", reason="maggy stop"),
    ],
)
def test_journal_records_round_trip(record):
    data = json.loads(json.dumps(record.to_json()))
    assert data["type"] == record.type
    assert record_from_json(data) == record


def test_origin_is_checked_by_field():
    assert Origin.from_json(None) == Origin()
    assert Origin.from_json({"dag_id": "d", "map_index": 3}).map_index == 3
    with pytest.raises(ValueError, match="origin.map_index"):
        Origin.from_json({"map_index": "3"})
    with pytest.raises(ValueError, match="origin.run_id"):
        Origin.from_json({"run_id": 5})


def test_best_ranks_finished_above_early_stopped_then_by_direction():
    trials = [
        trial("t0", "early_stopped", 0.99),
        trial("t1", "finished", 0.5),
        trial("t2", "finished", 0.7),
        trial("t3", "failed", None),
        trial("t4", "running", None),
    ]
    assert best_of(trials, "max").trial_id == "t2"
    assert best_of(trials, "min").trial_id == "t1"
    assert best_of([trials[0], trials[3]], "max").trial_id == "t0"
    assert best_of(trials[3:], "max") is None


def test_the_result_round_trips_and_its_summary_has_the_origin():
    t = trial("t0000", "finished", 0.8)
    result = Result(
        experiment_id="e1",
        name="e",
        status="finished",
        reason="",
        direction="max",
        optimization_key="acc",
        counts={"finished": 1, "early_stopped": 0, "failed": 0},
        best=BestTrial.of(t),
        trials=[t],
        workers=[WorkerRecord("w", "h", 1, 1, 0.1234567)],
        origin=Origin("dag", "task", "run", -1),
        makespan=2.0,
    )
    data = json.loads(json.dumps(result.to_json()))
    assert data["num_trials"] == 1 and data["workers"][0]["busy"] == 0.123457
    assert data["dag_id"] == "dag" and data["map_index"] == -1 and data["makespan"] == 2.0
    assert "ablation" not in data
    again = Result.from_json(data)
    assert again.to_json() == data
    summary = summarize(data)
    assert summary["best"]["trial_id"] == "t0000" and summary["task_id"] == "task"
    assert "trials" not in summary
