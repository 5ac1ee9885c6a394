"""The results store, on a local folder and on a real S3-protocol server (moto's
standalone server over HTTP): the same operations behave the same on both."""

from __future__ import annotations

import json
import os
import pickle
import time

import pytest

from maggy_core.storage import (
    JOURNAL_FILE,
    SEGMENTS,
    SegmentWriter,
    Storage,
    StorageError,
    read_journal_lines,
)

pytestmark = pytest.mark.integration


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path) -> Storage:
    if request.param == "local":
        return Storage(tmp_path / "results")
    s3 = request.getfixturevalue("s3")
    return Storage(f"s3://{s3.bucket()}/maggy", s3.storage_options)


def test_write_read_list_move_remove(store):
    assert store.read_text("exp", "result.json") is None
    assert not store.exists("exp", "result.json")
    store.write_text('{"a": 1}', "exp", "result.json")
    store.write_text("x", "exp", "trials", "t0000.log")
    assert json.loads(store.read_text("exp", "result.json")) == {"a": 1}
    assert store.exists("exp", "result.json")
    assert store.list("exp") == ["result.json", "trials"]
    assert store.list("missing") == []
    assert store.is_regular_file("exp", "result.json")
    assert not store.is_regular_file("exp", "nothing.json")
    store.move(("exp", "result.json"), ("exp", "result.previous.json"))
    assert store.read_text("exp", "result.json") is None
    assert store.read_text("exp", "result.previous.json") == '{"a": 1}'
    store.remove("exp", "result.previous.json")
    store.remove("exp", "result.previous.json")  # gone already: nothing happens
    assert store.list("exp") == ["trials"]


def test_a_child_store_is_the_folder_below(store):
    exp = store.child("exp-1")
    exp.write_text("hello", "trials", "t0001.log")
    assert store.read_text("exp-1", "trials", "t0001.log") == "hello"
    assert exp.url_of("trials", "t0001.log") == store.url_of("exp-1", "trials", "t0001.log")
    assert exp.url_of().startswith(store.url_of())


def test_overwriting_is_whole_and_leaves_no_temporary_file(store):
    for i in range(5):
        store.write_text(json.dumps({"i": i, "pad": "x" * 10_000}), "exp", "result.json")
    assert json.loads(store.read_text("exp", "result.json"))["i"] == 4
    assert store.list("exp") == ["result.json"]


def test_the_journal_ships_segments_and_a_resumed_writer_continues(store):
    exp = store.child("exp")
    writer = SegmentWriter(exp, max_delay=60, max_records=3)
    writer.append('{"n":0}')
    writer.append('{"n":1}')
    assert read_journal_lines(exp) == []  # buffered: nothing shipped yet
    assert writer.pending == 2
    writer.append('{"n":2}')  # max_records reached: shipped
    assert writer.pending == 0 and writer.shipped == 1
    writer.append('{"n":3}')
    writer.flush()
    assert [json.loads(x)["n"] for x in read_journal_lines(exp)] == [0, 1, 2, 3]

    again = SegmentWriter(exp, max_delay=60)  # the next run of the same experiment
    again.append('{"n":4}')
    again.flush()
    assert [json.loads(x)["n"] for x in read_journal_lines(exp)] == [0, 1, 2, 3, 4]
    assert exp.list(SEGMENTS) == ["00000000.jsonl", "00000001.jsonl", "00000002.jsonl"]


def test_a_quiet_journal_ships_within_its_delay(store):
    exp = store.child("exp")
    writer = SegmentWriter(exp, max_delay=0.2, max_records=1000)
    writer.append('{"n":0}')
    writer.tick()
    assert writer.pending == 1  # too young
    time.sleep(0.25)
    writer.tick()
    assert writer.pending == 0
    assert read_journal_lines(exp) == ['{"n":0}']


def test_a_record_must_be_one_line(store):
    with pytest.raises(ValueError, match="one line"):
        SegmentWriter(store.child("exp")).append('{"a":\n1}')


def test_a_local_journal_file_with_a_torn_tail_then_segments(tmp_path):
    exp = Storage(tmp_path / "exp")
    exp.makedirs()
    (tmp_path / "exp" / JOURNAL_FILE).write_text('{"n":0}\n{"n":1}\n{"n":', encoding="utf-8")
    writer = SegmentWriter(exp)
    writer.append('{"n":2}')
    writer.flush()
    assert read_journal_lines(exp) == ['{"n":0}', '{"n":1}', '{"n":2}']


def test_links_never_count_as_files_of_the_store(tmp_path):
    outside = tmp_path / "secret.txt"
    outside.write_text("not for the API server")
    store = Storage(tmp_path / "results")
    store.write_text("fine", "exp", "ablation.csv")
    os.symlink(outside, tmp_path / "results" / "exp" / "trial.log")
    os.symlink(tmp_path / "results" / "exp" / "ablation.csv", tmp_path / "results" / "exp" / "x")
    assert store.is_regular_file("exp", "ablation.csv")
    assert not store.is_regular_file("exp", "trial.log")  # points outside the root
    assert not store.is_regular_file("exp", "x")  # a link, even to a file inside
    assert not store.is_regular_file("..", "secret.txt")


def test_a_store_travels_to_another_process_without_its_connection(s3):
    store = Storage(f"s3://{s3.bucket()}/p", s3.storage_options)
    store.write_text("v", "k")
    copy = pickle.loads(pickle.dumps(store))
    assert copy.read_text("k") == "v" and copy.url == store.url


def test_unknown_protocols_and_empty_urls_are_refused_by_name():
    with pytest.raises(StorageError, match=r"results_dir 'nope://bucket/x'.*'nope'"):
        Storage("nope://bucket/x")
    with pytest.raises(StorageError, match="results_dir"):
        Storage("")


def test_credentials_in_a_url_stay_out_of_messages():
    with pytest.raises(StorageError) as info:
        Storage("nope://user:hunter2@host/x")
    assert "hunter2" not in str(info.value)


def test_the_url_of_an_s3_store(s3):
    bucket = s3.bucket()
    store = Storage(f"s3://{bucket}/a/b/", s3.storage_options)
    assert store.url == f"s3://{bucket}/a/b"
    assert store.url_of("exp", "result.json") == f"s3://{bucket}/a/b/exp/result.json"
    assert s3.storage_options["secret"] not in repr(store)


# ------------------------------------------------------ the results on the store


def _trial(tid: str, status: str, metric: float | None):
    from maggy_core.records import TrialEnded, TrialRecord
    from maggy_core.trial import TrialStatus

    record = TrialRecord(tid, {"x": int(tid[1:])}, TrialStatus(status), metric, attempts=1)
    return TrialEnded(trial_id=tid, trial=record)


def test_an_experiment_written_and_read_back_through_the_store(store):
    """Journal, trial log and result.json of one experiment, then a resumed run:
    every reader (resume's replay, the partial result, load_result) sees the same."""
    from maggy_core.records import Ended, ExperimentRecord, TrialStarted
    from maggy_core.results import ResultStore, load_result, read_records, replay
    from maggy_core.results import result_from_journal as partial

    rs = ResultStore(store, "exp-a")
    rs.append(ExperimentRecord(experiment_id="exp-a", epoch=1, spec={"direction": "max"}))
    rs.append(TrialStarted(trial_id="t0000", attempt=1, params={"x": 0}, worker="w"))
    rs.trial_log("t0000", "epoch 1")
    rs.append(_trial("t0000", "finished", 0.5))
    rs.trial_log("t0000", "epoch 2")
    rs.close_trial_log("t0000")
    rs.append(TrialStarted(trial_id="t0001", attempt=1, params={"x": 1}, worker="w"))
    rs.journal.sync()  # what a reader sees once the segment shipped
    seen = partial(store.child("exp-a"))
    assert seen is not None and seen["status"] == "running"
    assert [(t["trial_id"], t["status"]) for t in seen["trials"]] == [
        ("t0000", "finished"),
        ("t0001", "running"),
    ]
    assert seen["results_dir"] == store.url_of("exp-a")
    assert store.read_text("exp-a", "trials", "t0000.log") == "epoch 1\nepoch 2\n"
    rs.append(Ended(status="stopped", reason="test"))
    written = rs.write_result({"experiment_id": "exp-a", "status": "stopped"})
    rs.close()
    assert written == store.path("exp-a", "result.json")
    assert load_result(store.child("exp-a"))["status"] == "stopped"
    assert load_result(store.url_of("exp-a"), store.storage_options)["status"] == "stopped"

    again = ResultStore(store, "exp-a")  # the resumed run
    state = replay(again.journal.records())
    assert state.runs == 1 and state.ended is not None
    assert state.trials["t0000"].status.value == "finished"
    assert again.retire_result() is not None
    assert not store.exists("exp-a", "result.json")
    assert store.exists("exp-a", "result.previous.json")
    again.append(ExperimentRecord(experiment_id="exp-a", epoch=2, spec={}))
    again.close()
    assert [r.type for r in read_records(store.child("exp-a"))] == [
        "experiment",
        "trial_started",
        "trial_ended",
        "trial_started",
        "ended",
        "experiment",
    ]


def test_a_quiet_journal_on_a_store_ships_without_being_asked(s3):
    """The journal's shipper puts a record on the store within the interval even
    when nothing else is written after it (the bound on what a crash loses)."""
    from maggy_core.records import ExperimentRecord
    from maggy_core.results import FSYNC_INTERVAL, Journal

    exp = Storage(f"s3://{s3.bucket()}/q", s3.storage_options).child("exp")
    journal = Journal(exp)
    journal.append(ExperimentRecord(experiment_id="exp", epoch=1, spec={}))
    deadline = time.monotonic() + 10 * FSYNC_INTERVAL
    while not read_journal_lines(exp) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(read_journal_lines(exp)) == 1
    assert time.monotonic() < deadline
    journal.close()


def test_storage_options_come_from_the_environment_and_errors_name_the_variable(tmp_path, s3):
    from maggy_core.storage import open_storage, storage_options_from_env

    options = json.dumps(s3.storage_options)
    assert storage_options_from_env({}) == {}
    assert storage_options_from_env({"MAGGY_STORAGE_OPTIONS": options}) == s3.storage_options
    path = tmp_path / "options.json"
    path.write_text(options)
    path.chmod(0o600)
    assert storage_options_from_env({"MAGGY_STORAGE_OPTIONS_FILE": str(path)})["key"]
    with pytest.raises(StorageError, match="MAGGY_STORAGE_OPTIONS: must be a JSON object") as e:
        storage_options_from_env({"MAGGY_STORAGE_OPTIONS": '["hunter2"]'})
    assert "hunter2" not in str(e.value)
    with pytest.raises(StorageError, match="MAGGY_STORAGE_OPTIONS_FILE: cannot read"):
        storage_options_from_env({"MAGGY_STORAGE_OPTIONS_FILE": str(tmp_path / "none")})
    bucket = s3.bucket()
    os.environ["MAGGY_STORAGE_OPTIONS"] = options
    try:
        store = open_storage(f"s3://{bucket}/env")
    finally:
        del os.environ["MAGGY_STORAGE_OPTIONS"]
    store.write_text("v", "k")
    assert Storage(f"s3://{bucket}/env", s3.storage_options).read_text("k") == "v"


def test_maggy_show_reads_an_experiment_on_the_store(store, capsys):
    from maggy_core.cli import main
    from maggy_core.records import ExperimentRecord
    from maggy_core.results import ResultStore

    rs = ResultStore(store, "exp-s")
    rs.append(ExperimentRecord(experiment_id="exp-s", epoch=1, spec={"num_trials": 2}))
    rs.append(_trial("t0000", "finished", 0.25))
    rs.close()
    os.environ["MAGGY_STORAGE_OPTIONS"] = json.dumps(store.storage_options)
    try:
        assert main(["show", store.url_of("exp-s")]) == 0  # running: from the journal
        running = capsys.readouterr().out
        rs.write_result({**json.loads(json.dumps(_partial(store))), "status": "finished"})
        assert main(["show", "--json", store.url_of("exp-s")]) == 0
        ended = json.loads(capsys.readouterr().out)
        assert main(["show", store.url_of("nothing")]) == 1
    finally:
        del os.environ["MAGGY_STORAGE_OPTIONS"]
    assert "exp-s: running" in running and "t0000" in running and "0.25" in running
    assert ended["status"] == "finished"


def _partial(store: Storage) -> dict:
    from maggy_core.results import result_from_journal

    return result_from_journal(store.child("exp-s"))


def _study_result(experiment_id: str, effect_of_a: float) -> tuple:
    import random

    from maggy_core.ablation.ablators import get_ablator
    from maggy_core.spec import ExperimentSpec

    spec = ExperimentSpec.from_dict(
        {
            "name": "abl",
            "train_fn": "mypkg.train:fit",
            "ablation": {"components": ["a", "b"]},
            "ablator": {"name": "loco", "repeats": 3},
            "direction": "max",
            "seed": 7,
        }
    )
    plan = get_ablator(
        "loco", spec.ablation.plan(), direction="max", seed=7, options={"repeats": 3}
    ).plan()
    noise = random.Random(3)
    effect = {None: 0.0, "a": -effect_of_a, "b": 0.0}
    trials = [
        {
            "trial_id": f"t{i:04d}",
            "params": params,
            "status": "finished",
            "metric": 0.9 + effect[params["ablated"]] + noise.gauss(0, 0.003),
        }
        for i, params in enumerate(plan)
    ]
    result = {
        "experiment_id": experiment_id,
        "status": "finished",
        "ended": time.time(),
        "trials": trials,
        "spec": spec.to_dict(),
    }
    return spec, result


def test_ablation_outputs_and_history_on_the_store(store):
    """The study's table, chart and history go to the store; the next run reads
    the history back from there and appends to it."""
    from maggy_core.ablation.report import finish_study

    for run, effect in (("abl-1", 0.1), ("abl-2", 0.1)):
        spec, result = _study_result(run, effect)
        analysis = finish_study(
            spec.ablation,
            result,
            name="abl",
            direction="max",
            results_root=store,
            experiment_dir=store.child(run),
        )
        assert analysis["table"] == store.url_of(run, "ablation.csv")
        assert store.read_text(run, "ablation.csv").startswith("rank,component")
        assert "<svg" in store.read_text(run, "ablation.svg")
    assert analysis["history"] == store.url_of("_ablation_history", "abl.jsonl")
    lines = store.read_text("_ablation_history", "abl.jsonl").splitlines()
    assert [json.loads(x)["experiment_id"] for x in lines] == ["abl-1", "abl-2"]
    top = analysis["components"][0]
    assert top["component"] == "a" and top.get("previous_delta") is not None


def test_an_airflow_connection_gives_the_stores_options(monkeypatch, s3):
    """``results_conn_id``: an aws connection as s3fs options, or fsspec options as
    they are in the ``storage_options`` extra; the options reach the store."""
    from maggy_airflow import settings

    endpoint = s3.storage_options["client_kwargs"]["endpoint_url"]
    aws = {
        "conn_type": "aws",
        "login": s3.storage_options["key"],
        "password": s3.storage_options["secret"],
        "extra": {"endpoint_url": endpoint, "region_name": "us-east-1"},
    }
    monkeypatch.setenv("AIRFLOW_CONN_MAGGY_S3", json.dumps(aws))
    options = settings.storage_options("maggy_s3")
    assert options == s3.storage_options
    store = Storage(f"s3://{s3.bucket()}/conn", options)
    store.write_text("v", "k")
    assert store.read_text("k") == "v"

    other = {"conn_type": "generic", "extra": {"storage_options": {"anon": True}}}
    monkeypatch.setenv("AIRFLOW_CONN_MAGGY_OTHER", json.dumps(other))
    assert settings.storage_options("maggy_other") == {"anon": True}
    bad = {"conn_type": "generic", "password": "hunter2", "extra": {"storage_options": "x"}}
    monkeypatch.setenv("AIRFLOW_CONN_MAGGY_BAD", json.dumps(bad))
    with pytest.raises(ValueError, match="'maggy_bad': the extra 'storage_options'") as e:
        settings.storage_options("maggy_bad")
    assert "hunter2" not in str(e.value)
    with pytest.raises(ValueError, match="results_conn_id: no Airflow connection 'nope'"):
        settings.storage_options("nope")
    assert settings.storage_options(None) == {}


def test_a_reader_that_lives_on_sees_what_another_process_writes(s3):
    """One Storage kept by a reader (the plugin's process) sees new segments,
    experiments and files written by another writer (the driver): no listing of a
    store stays cached."""
    bucket = s3.bucket()
    reader = Storage(f"s3://{bucket}/live", s3.storage_options)
    assert reader.list() == [] and read_journal_lines(reader.child("exp")) == []
    writer = Storage(f"s3://{bucket}/live", {**s3.storage_options, "use_listings_cache": False})
    assert writer.fs is not reader.fs  # another filesystem instance, as in another process
    first = SegmentWriter(writer.child("exp"))
    first.append('{"n":0}')
    first.flush()
    assert reader.list() == ["exp"]
    assert read_journal_lines(reader.child("exp")) == ['{"n":0}']
    first.append('{"n":1}')
    first.flush()
    writer.write_text("{}", "exp", "result.json")
    assert read_journal_lines(reader.child("exp")) == ['{"n":0}', '{"n":1}']
    assert reader.exists("exp", "result.json") and reader.is_regular_file("exp", "result.json")
    assert reader.modified("exp", "result.json") is not None


def test_an_experiment_on_s3_runs_and_resumes_from_the_store(
    s3, redis_url, local_spark, monkeypatch, capsys
):
    """``run_experiment`` with ``results_dir`` an s3:// URL (credentials from
    ``$MAGGY_STORAGE_OPTIONS``); its journal cut after the fourth ended trial, as
    if the driver died there; the next run resumes from the segments on the store
    and runs no ended trial again; ``maggy show`` reads the result from the URL."""
    from maggy_core.cli import main
    from maggy_core.runner import run_experiment

    monkeypatch.setenv("MAGGY_STORAGE_OPTIONS", json.dumps(s3.storage_options))
    url = f"s3://{s3.bucket()}/runs"
    store = Storage(url, s3.storage_options)
    from test_engine import spec as engine_spec  # the engine tests' quick search

    spec = engine_spec(name="s3", experiment_id="resume-s3")
    first = run_experiment(spec, redis_url=redis_url, results_dir=url)
    assert first["status"] == "finished"
    assert first["results_dir"] == store.url_of("resume-s3")
    exp = store.child("resume-s3")
    assert exp.list(SEGMENTS) and not exp.exists(JOURNAL_FILE)
    records = [json.loads(line) for line in read_journal_lines(exp)]
    ended = [i for i, r in enumerate(records) if r["type"] == "trial_ended"]
    cut = records[: ended[3] + 1]
    kept = {r["trial_id"] for r in cut if r["type"] == "trial_ended"}
    for name in exp.list(SEGMENTS):
        exp.remove(SEGMENTS, name)
    exp.write_text("".join(json.dumps(r) + "\n" for r in cut), SEGMENTS, "00000000.jsonl")

    second = run_experiment(spec, redis_url=redis_url, results_dir=url)
    assert second["status"] == "finished" and second["num_trials"] == 8
    assert json.loads(exp.read_text("result.previous.json"))["started"] == first["started"]
    after = [json.loads(line) for line in read_journal_lines(exp)][len(cut) :]
    rerun = {r["trial_id"] for r in after if r["type"] == "trial_started"}
    assert rerun and not rerun & kept, "an ended trial ran again"
    assert {t["trial_id"]: t["params"] for t in second["trials"]} == {
        t["trial_id"]: t["params"] for t in first["trials"]
    }
    assert main(["show", "--json", store.url_of("resume-s3")]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["started"] == second["started"] and shown["status"] == "finished"


def test_checkpoints_travel_through_the_store_between_workers(s3, tmp_path, monkeypatch):
    """A trial's checkpoint (its JSON and the files the function wrote) is shipped
    to the store; another worker, with its own empty cache, fetches it."""
    from maggy_core.reporter import Reporter, load_checkpoint

    monkeypatch.setenv("MAGGY_STORAGE_OPTIONS", json.dumps(s3.storage_options))
    root = f"s3://{s3.bucket()}/r/exp/checkpoints"
    monkeypatch.setenv("MAGGY_CHECKPOINT_DIR", str(tmp_path / "worker-a"))
    reporter = Reporter(None, "t0001", checkpoint_root=root)
    reporter.broadcast(0.5, step=2)
    path = reporter.checkpoint_path()
    assert path.startswith(str(tmp_path / "worker-a"))
    os.makedirs(os.path.join(path, "model"))
    with open(os.path.join(path, "model", "weights.bin"), "wb") as fh:
        fh.write(b"\x00weights")
    reporter.save_checkpoint({"epoch": 2})
    store = Storage(root, s3.storage_options)
    assert store.files("t0001") == ["checkpoint.json", "model/weights.bin"]

    monkeypatch.setenv("MAGGY_CHECKPOINT_DIR", str(tmp_path / "worker-b"))
    found = load_checkpoint(root, "t0001")
    assert found is not None and found.data == {"epoch": 2} and found.step == 2
    assert found.path.startswith(str(tmp_path / "worker-b"))
    with open(os.path.join(found.path, "model", "weights.bin"), "rb") as fh:
        assert fh.read() == b"\x00weights"
    assert load_checkpoint(root, "t0099") is None  # none saved
    assert load_checkpoint(root, "../t0001") is None  # not a plain name


def test_asha_promotions_continue_from_checkpoints_on_the_store(
    s3, redis_url, local_spark, monkeypatch, tmp_path
):
    """ASHA with results on S3: each trial's checkpoint is shipped to the store, and
    a promotion continues from its previous rung's (only the added epochs run).
    (Fetching from the store into another worker's empty cache: the test above.)"""
    from maggy_core.runner import run_experiment
    from maggy_core.spec import ExperimentSpec

    monkeypatch.setenv("MAGGY_STORAGE_OPTIONS", json.dumps(s3.storage_options))
    # The workers' environment (this module's SparkContext started before the
    # variables were set; under spark-submit the workers inherit its environment).
    for name, value in {
        "MAGGY_STORAGE_OPTIONS": json.dumps(s3.storage_options),
        "MAGGY_CHECKPOINT_DIR": str(tmp_path / "cache"),
    }.items():
        monkeypatch.setitem(local_spark.environment, name, value)
    url = f"s3://{s3.bucket()}/asha"
    spec = ExperimentSpec.from_dict(
        {
            "name": "asha-s3",
            "train_fn": "maggy_core.examples.sleep:budgeted",
            "searchspace": {"x": ["DOUBLE", [-3.0, 3.0]]},
            "optimizer": {
                "name": "asha",
                "options": {"resource_min": 1, "resource_max": 3, "reduction_factor": 3},
            },
            "num_trials": 6,
            "workers": 2,
            "es_policy": "none",
            "hb_interval": 0.5,
            "seed": 5,
        }
    )
    result = run_experiment(spec, redis_url=redis_url, results_dir=url)
    assert result["status"] == "finished", result["reason"]
    store = Storage(url, s3.storage_options).child(result["experiment_id"], "checkpoints")
    trials = {t["trial_id"]: t for t in result["trials"]}
    promoted = [t for t in trials.values() if t["info"]["rung"] == 1]
    assert promoted
    for t in trials.values():
        saved = json.loads(store.read_text(t["trial_id"], "checkpoint.json") or "null")
        assert saved["data"] == {"epoch": t["budget"]}, (t["trial_id"], saved)
    for t in promoted:
        assert t["info"]["checkpoint"] in trials
        assert [s for s, _ in t["history"]] == [2, 3]  # continued after epoch 1
