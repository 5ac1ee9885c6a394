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
