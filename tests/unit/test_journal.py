"""The journal survives a torn tail; replay is the one reader of trials."""

from __future__ import annotations

import json

from maggy_core.records import (
    Ended,
    ExperimentRecord,
    StopRequested,
    TrialEnded,
    TrialRecord,
    TrialStarted,
)
from maggy_core.results import (
    Journal,
    ResultStore,
    read_records,
    replay,
    result_from_journal,
)
from maggy_core.trial import TrialStatus


def started(tid: str, attempt: int = 1) -> TrialStarted:
    return TrialStarted(trial_id=tid, attempt=attempt, params={"x": int(tid[1:])}, worker="w")


def ended(tid: str, status: str, metric: float | None) -> TrialEnded:
    t = TrialRecord(tid, {"x": int(tid[1:])}, TrialStatus(status), metric, attempts=1)
    return TrialEnded(trial_id=tid, trial=t)


def write(journal: Journal, *records) -> None:
    for r in records:
        journal.append(r)


def test_a_torn_tail_is_cut_before_the_next_run_appends(tmp_path):
    path = tmp_path / "journal.jsonl"
    j = Journal(path)
    write(j, ExperimentRecord(experiment_id="e", epoch=1, spec={}), started("t0000"))
    j.close()
    with path.open("a") as fh:  # SIGKILL in the middle of a line
        fh.write('{"type":"trial_ended","trial_id":"t0000","tri')
    assert [r.type for r in read_records(path)] == ["experiment", "trial_started"]
    again = Journal(path)
    write(
        again,
        ExperimentRecord(experiment_id="e", epoch=2, spec={}),
        ended("t0000", "finished", 1.0),
    )
    again.close()
    assert [r.type for r in read_records(path)] == [
        "experiment",
        "trial_started",
        "experiment",
        "trial_ended",
    ]
    assert path.read_bytes().endswith(b"\n")
    state = replay(read_records(path))
    assert state.runs == 2 and state.trials["t0000"].status is TrialStatus.FINISHED


def test_a_journal_that_is_only_a_torn_line_is_emptied(tmp_path):
    path = tmp_path / "journal.jsonl"
    path.write_text('{"type":"exper')
    j = Journal(path)
    assert j.repair() == len('{"type":"exper')
    assert path.read_bytes() == b""
    assert Journal(tmp_path / "absent.jsonl").records() == []


def test_readers_skip_a_bad_complete_line_and_read_on(tmp_path):
    path = tmp_path / "journal.jsonl"
    j = Journal(path)
    write(j, started("t0000"))
    j.close()
    with path.open("a") as fh:
        fh.write("garbage\n[1, 2]\n")
        fh.write(json.dumps({"type": "trial_ended", "trial_id": "t0000"}) + "\n")  # no trial
    j = Journal(path)
    write(j, ended("t0000", "failed", None))
    j.close()
    assert [r.type for r in read_records(path)] == ["trial_started", "trial_ended"]
    assert len(ResultStore.read_journal_at(tmp_path)) == 3  # the raw lines that parse


def test_replay_keeps_the_last_attempt_and_the_latest_runs_end(tmp_path):
    records = [
        ExperimentRecord(experiment_id="e", epoch=1, spec={"direction": "min"}, seed=9),
        started("t0000"),
        started("t0001"),
        ended("t0001", "finished", 0.3),
        Ended(status="stopped", reason="SIGTERM"),
        ExperimentRecord(experiment_id="e", epoch=2, spec={"direction": "min"}, seed=9),
        started("t0000", attempt=2),
        StopRequested(trial_id="t0000", reason="by alice", outcome="stopping"),
    ]
    state = replay(records)
    assert state.runs == 2 and state.first is not None and state.first.seed == 9
    assert state.ended is None  # the latest run has not ended
    assert state.trials["t0000"].status is TrialStatus.PENDING
    assert state.trials["t0000"].attempts == 2
    assert [t.trial_id for t in state.ordered()] == ["t0000", "t0001"]


def test_result_from_journal_shows_a_running_experiment(tmp_path):
    store = ResultStore(tmp_path, "exp")
    spec = {"name": "exp", "direction": "min", "optimization_key": "loss"}
    store.append(ExperimentRecord(experiment_id="exp", epoch=1, spec=spec, dag_id="d"))
    for r in (started("t0000"), started("t0001"), ended("t0000", "finished", 0.2)):
        store.append(r)
    store.append(ended("t0002", "finished", 0.1))
    store.close()
    result = result_from_journal(store.root)
    assert result is not None
    assert result["status"] == "running" and result["dag_id"] == "d"
    assert {t["trial_id"]: t["status"] for t in result["trials"]} == {
        "t0000": "finished",
        "t0001": "running",
        "t0002": "finished",
    }
    assert result["best"]["trial_id"] == "t0002"  # direction min
    assert result["counts"] == {"finished": 2, "early_stopped": 0, "failed": 0}
    store = ResultStore(tmp_path, "exp")
    store.append(Ended(status="failed", reason="lost"))
    store.close()
    after = result_from_journal(store.root)
    assert after is not None and after["status"] == "failed"
    assert {t["trial_id"]: t["status"] for t in after["trials"]}["t0001"] == "pending"
    assert result_from_journal(tmp_path / "nothing") is None


def test_result_json_is_replaced_whole_and_leaves_no_temporary_file(tmp_path):
    store = ResultStore(tmp_path, "exp")
    store.write_result({"status": "running", "trials": []})
    store.write_result({"status": "finished", "trials": []})
    files = sorted(p.name for p in store.root.iterdir())
    assert files == ["result.json", "trials"]
    assert json.loads((store.root / "result.json").read_text())["status"] == "finished"
    assert store.retire_result() is not None
    assert sorted(p.name for p in store.root.iterdir()) == ["result.previous.json", "trials"]


def test_one_json_lines_reader_skips_empty_torn_and_foreign_lines():
    from maggy_core.storage import complete_lines, parse_json_lines

    text = '{"a":1}\n\n[1,2]\nnot json\n{"b":2}\n{"c":'
    assert parse_json_lines(text) == [{"a": 1}, {"b": 2}]
    assert parse_json_lines(text.encode()) == [{"a": 1}, {"b": 2}]
    assert parse_json_lines(None) == []
    assert complete_lines(text)[-1] == '{"b":2}'  # the torn tail is not a line yet
    assert complete_lines("no newline") == []


def test_a_journal_given_its_folder_or_file_or_storage_writes_the_same_file(tmp_path):
    from maggy_core.storage import Storage

    folder = tmp_path / "exp"
    for where in (folder, folder / "journal.jsonl", Storage(folder)):
        j = Journal(where)
        j.append(started("t0001"))
        j.close()
        assert j.path == folder / "journal.jsonl"
    assert [r.trial_id for r in read_records(folder)] == ["t0001"] * 3
    assert [r.trial_id for r in read_records(Storage(folder))] == ["t0001"] * 3


def test_result_json_is_written_whole_through_the_store(tmp_path):
    from maggy_core.results import load_result

    store = ResultStore(tmp_path, "e")
    store.append(ExperimentRecord(experiment_id="e", epoch=1, spec={}))
    path = store.write_result({"experiment_id": "e", "status": "finished"})
    store.close()
    assert path == str(tmp_path / "e" / "result.json")
    assert load_result(tmp_path / "e") == load_result(path)
    assert load_result(path)["status"] == "finished"
    assert sorted(p.name for p in (tmp_path / "e").iterdir()) == [
        "journal.jsonl",
        "result.json",
        "trials",
    ]
