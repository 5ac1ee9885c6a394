"""Fault injection on real Spark and Redis: outages, hostile messages, torn journals,
killed drivers. After each fault the same invariants are checked: the experiment
ended; every trial is in ``result.json`` exactly once; no trial that had finished
before the fault ran again; the journal read back says what ``result.json`` says.

Run alone with ``./scripts/test.sh -m faults``.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from waiting import wait_for  # tests/, on sys.path

from maggy_core import channel as ch
from maggy_core.redis_server import PrivateRedis
from maggy_core.results import read_records, replay
from maggy_core.runner import run_experiment
from maggy_core.spec import ExperimentSpec

pytestmark = [pytest.mark.faults, pytest.mark.integration, pytest.mark.slow]

ENDED = {"finished", "failed", "stopped"}


def sleep_spec(name: str, num_trials: int = 12, **more: Any) -> ExperimentSpec:
    return ExperimentSpec.from_dict(
        {
            "name": name,
            "train_fn": "maggy_core.examples.sleep:train",
            "searchspace": {"seconds": ["DOUBLE", [0.2, 0.5]], "x": ["DOUBLE", [-1, 1]]},
            "num_trials": num_trials,
            "workers": 2,
            "es_policy": "none",
            "hb_interval": 0.2,
            "seed": 11,
            **more,
        }
    )


def ended_trials(folder: Path) -> set[str]:
    """Ids of the trials the journal has as ended, so far."""
    return {r.trial_id for r in read_records(folder) if r.type == "trial_ended"}  # type: ignore[attr-defined]


def check_invariants(result: dict[str, Any], folder: Path, before: set[str] = frozenset()) -> None:
    assert result["status"] in ENDED, result
    ids = [t["trial_id"] for t in result["trials"]]
    assert len(ids) == len(set(ids)), "a trial is in result.json twice"
    on_disk = json.loads((folder / "result.json").read_text())
    assert [t["trial_id"] for t in on_disk["trials"]] == ids
    records = read_records(folder)
    state = replay(records)
    assert {t.trial_id: (t.status.value, t.metric) for t in state.ordered()} == {
        t["trial_id"]: (t["status"], t["metric"]) for t in on_disk["trials"]
    }
    # A trial that had ended before the fault is never started again after it.
    last_end = {}
    for i, r in enumerate(records):
        if r.type == "trial_ended":
            last_end.setdefault(r.trial_id, i)  # type: ignore[attr-defined]
    for i, r in enumerate(records):
        if r.type == "trial_started" and r.trial_id in before:  # type: ignore[attr-defined]
            assert i < last_end[r.trial_id], f"{r.trial_id} ran again after it ended"  # type: ignore[attr-defined]


def run_in_thread(
    spec: ExperimentSpec, url: str, results: Path, exp: str
) -> tuple[threading.Thread, dict]:
    out: dict = {}
    thread = threading.Thread(
        target=lambda: out.update(
            run_experiment(spec, redis_url=url, results_dir=results, experiment_id=exp)
        ),
        daemon=True,
    )
    thread.start()
    return thread, out


@pytest.mark.usefixtures("local_spark")
@pytest.mark.parametrize("seconds", [1.0, 5.0, 15.0])
def test_redis_down_for_a_while_with_no_persistence(tmp_path, seconds):
    """Down 1, 5 and 15 s (the worker timeout is 5 s here): no worker is given up for
    Redis's silence, nothing runs twice, the experiment finishes."""
    server = PrivateRedis()
    url = server.start()
    exp = f"outage-{int(seconds)}-{uuid.uuid4().hex[:6]}"
    thread, out = run_in_thread(sleep_spec(exp, 16), url, tmp_path, exp)
    folder = tmp_path / exp
    try:
        wait_for(lambda: len(ended_trials(folder)) >= 4, 240, "four trials to end")
        before = ended_trials(folder)
        port = server.port
        server.stop()
        time.sleep(seconds)
        server = PrivateRedis(port=port)
        server.start()
        thread.join(240)
        assert not thread.is_alive(), "the experiment did not end after the outage"
    finally:
        server.stop()
    assert out["status"] == "finished", out.get("reason")
    assert out["counts"]["finished"] == 16
    check_invariants(out, folder, before)


def _ten_sleeps_two_ended(tmp_path, redis_url, name):
    """An experiment of 10 sleep trials running in a thread, once two have ended:
    its id, thread, outcome dict, folder, a Redis client, key prefix and the ended."""
    exp = f"{name}-{uuid.uuid4().hex[:6]}"
    thread, out = run_in_thread(sleep_spec(exp, 10), redis_url, tmp_path, exp)
    folder = tmp_path / exp
    wait_for(lambda: len(ended_trials(folder)) >= 2, 240, "two trials to end")
    return exp, thread, out, folder, ch.connect(redis_url), ch.key_prefix(exp), ended_trials(folder)


@pytest.mark.usefixtures("local_spark")
def test_hostile_messages_on_every_stream_and_list(tmp_path, redis_url):
    exp, thread, out, folder, client, prefix, before = _ten_sleeps_two_ended(
        tmp_path, redis_url, "hostile"
    )
    workers = [w.decode() for w in client.zrange(prefix + "workers", 0, -1)]
    assert workers
    forged = {"v": 1, "worker": workers[0], "epoch": 1, "seq": 10**9}
    hostile = [
        b"\xff not json",
        "[" * 200_000 + "]" * 200_000,
        json.dumps({"v": 1, "type": "metric", "pad": "x" * 2_000_000}),
        json.dumps({**forged, "type": "final", "trial": "t9999", "attempt": 1, "status":
                    "finished", "metric": 1e9, "metrics": {}, "start": 0, "duration": 0}),
        json.dumps({**forged, "type": "final", "trial": sorted(before)[0], "attempt": 7,
                    "status": "finished", "metric": 1e9, "metrics": {}, "start": 0,
                    "duration": 0}),
        json.dumps({**forged, "type": "metric", "trial": "t0000", "attempt": "1", "step": 0,
                    "value": 1}),
        json.dumps({**forged, "type": "register", "host": 5, "pid": "x"}),
        json.dumps({"v": 1, "type": "bye", "worker": 3, "epoch": 1, "busy": 0, "trials": 0}),
        json.dumps({"v": 2, "type": "metric"}),
        json.dumps(["a", "list"]),
    ]  # fmt: skip
    # Forged outcomes of trials running right now: from a worker that does not run
    # them, and from the right worker with another epoch or attempt.
    wait_for(lambda: bool(_running(folder)), 60, "a trial to be running")
    for trial, worker in _running(folder).items():
        other = next((w for w in workers if w != worker), "e1-w9.9")
        final = {"v": 1, "type": "final", "trial": trial, "status": "finished", "metric": 1e9,
                 "metrics": {}, "start": 0, "duration": 0, "seq": 10**9}  # fmt: skip
        hostile += [
            json.dumps({**final, "worker": other, "epoch": 1, "attempt": 1}),
            json.dumps({**final, "worker": worker, "epoch": 2, "attempt": 1}),
            json.dumps({**final, "worker": worker, "epoch": 1, "attempt": 5}),
            json.dumps({**final, "type": "metric", "worker": other, "epoch": 1, "attempt": 1,
                        "step": 1, "value": 1e9}),
        ]  # fmt: skip
    for body in hostile:
        client.xadd(prefix + "events", {"m": body})
        client.xadd(prefix + ch.REQUESTS, {"m": body})
    client.xadd(prefix + "events", {"other": b"field"})
    for w in workers:
        client.rpush(prefix + f"assign:{w}", b"garbage", json.dumps({"v": 1, "type": "bye"}))
    client.hset(prefix + "ctl", "t0009", "not STOP")
    thread.join(180)
    assert not thread.is_alive(), "the experiment did not end"
    assert out["status"] == "finished", out.get("reason")
    assert out["counts"]["finished"] == 10
    assert all(t["metric"] != 1e9 for t in out["trials"])  # the forged finals were dropped
    check_invariants(out, folder, before)


@pytest.mark.usefixtures("local_spark")
def test_keys_expire_even_while_the_experiment_runs(tmp_path, redis_url):
    exp = f"expiry-{uuid.uuid4().hex[:6]}"
    thread, out = run_in_thread(sleep_spec(exp, 6), redis_url, tmp_path, exp)
    client = ch.connect(redis_url)
    prefix = ch.key_prefix(exp)
    wait_for(lambda: len(ended_trials(tmp_path / exp)) >= 1, 240, "a trial to end")
    keys = [k.decode() for k in client.smembers(prefix + "keys")] + [prefix + "keys"]
    ttls = {k: client.ttl(k) for k in keys if client.exists(k)}
    assert ttls and all(0 < t <= ch.KEY_TTL for t in ttls.values()), ttls
    thread.join(120)
    assert out["status"] == "finished"


@pytest.mark.usefixtures("local_spark")
def test_a_torn_journal_tail_is_repaired_and_the_resume_runs_nothing_twice(tmp_path, redis_url):
    exp = f"torn-{uuid.uuid4().hex[:6]}"
    spec = sleep_spec(exp, 10)
    thread, out = run_in_thread(spec, redis_url, tmp_path, exp)
    folder = tmp_path / exp
    wait_for(lambda: len(ended_trials(folder)) >= 3, 240, "three trials to end")
    ch.request_experiment_stop(ch.connect(redis_url), exp, "the test")
    thread.join(120)
    assert out["status"] == "stopped"
    before = ended_trials(folder)
    with (folder / "journal.jsonl").open("a") as fh:  # as if killed mid-line
        fh.write('{"type":"trial_ended","trial_id":"t00')
    result = run_experiment(spec, redis_url=redis_url, results_dir=tmp_path, experiment_id=exp)
    assert result["status"] == "finished", result["reason"]
    assert sum(result["counts"].values()) == 10
    # Only trials in flight at the stop may have ended otherwise (told to stop, or cut
    # off by the end); every one started after the resume finished.
    first_run = {
        r.trial_id for r in read_records(folder)[: _second_run(folder)] if r.type == "trial_started"
    }  # type: ignore[attr-defined]
    for t in result["trials"]:
        assert t["status"] == "finished" or t["trial_id"] in first_run, t
    check_invariants(result, folder, before)
    # Both runs' records are visible to every reader (nothing hid behind the torn line).
    assert replay(read_records(folder)).runs == 2


def _second_run(folder: Path) -> int:
    """The index of the second run's ``experiment`` record in the journal."""
    starts = [i for i, r in enumerate(read_records(folder)) if r.type == "experiment"]
    return starts[1]


def _maggy_run(
    spec_path: Path, results: Path, url: str, exp: str, *more: str, stdout: int = subprocess.DEVNULL
) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "maggy_core.cli", "run", str(spec_path), "--redis-url", url,
         "--results-dir", str(results), "--experiment-id", exp, "-q", *more],
        stdout=stdout,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip


@pytest.mark.parametrize("seed", range(5))
def test_sigkill_of_the_driver_at_a_random_point_then_resume(tmp_path, redis_url, seed):
    rng = random.Random(seed)
    exp = f"killed-{seed}-{uuid.uuid4().hex[:6]}"
    spec_path = tmp_path / "spec.json"
    spec_path.write_text(json.dumps(sleep_spec(exp, 8).to_dict()))
    folder = tmp_path / exp
    proc = _maggy_run(spec_path, tmp_path, redis_url, exp)
    try:
        wait_for(lambda: len(ended_trials(folder)) >= 1, 120, "the first trial to end")
        time.sleep(rng.uniform(0.0, 1.5))  # a seeded random point of the run
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    before = ended_trials(folder)
    again = _maggy_run(spec_path, tmp_path, redis_url, exp)
    assert again.wait(300) == 0
    result = json.loads((folder / "result.json").read_text())
    assert result["status"] == "finished" and result["counts"]["finished"] == 8
    check_invariants(result, folder, before)


def _worker_pids(client: Any, prefix: str) -> dict[str, int]:
    """Worker id -> the pid it registered with (from the event stream)."""
    pids = {}
    for _id, fields in client.xrange(prefix + "events"):
        try:
            msg = json.loads(fields.get(b"m", b""))
        except ValueError:
            continue
        if isinstance(msg, dict) and msg.get("type") == "register":
            pids[msg["worker"]] = msg["pid"]
    return pids


def _running(folder: Path) -> dict[str, str]:
    """Trial id -> worker of the trials started and not ended, from the journal."""
    running: dict[str, str] = {}
    for r in read_records(folder):
        if r.type == "trial_started":
            running[r.trial_id] = r.worker  # type: ignore[attr-defined]
        elif r.type == "trial_ended":
            running.pop(r.trial_id, None)  # type: ignore[attr-defined]
    return running


@pytest.mark.usefixtures("local_spark")
def test_a_python_worker_sigkilled_mid_trial(tmp_path, redis_url):
    """The worker's process dies (SIGKILL, as the OOM killer does) while it runs a
    trial: Spark starts its task again, the trial runs again on a worker, nothing
    else runs twice, the experiment finishes."""
    exp = f"workerkill-{uuid.uuid4().hex[:6]}"
    spec = sleep_spec(
        exp, 8, searchspace={"seconds": ["DOUBLE", [0.8, 1.2]], "x": ["DOUBLE", [-1, 1]]}
    )
    thread, out = run_in_thread(spec, redis_url, tmp_path, exp)
    folder = tmp_path / exp
    client = ch.connect(redis_url)
    prefix = ch.key_prefix(exp)
    wait_for(lambda: len(ended_trials(folder)) >= 2, 240, "two trials to end")
    victim: dict[str, Any] = {}

    def pick() -> bool:
        pids = _worker_pids(client, prefix)
        # The latest trial to start: the most of its run is still ahead of the kill.
        for trial, worker in reversed(_running(folder).items()):
            if worker in pids:
                victim.update(trial=trial, worker=worker, pid=pids[worker])
                return True
        return False

    wait_for(pick, 60, "a running trial on a registered worker")
    before = ended_trials(folder)
    os.kill(victim["pid"], signal.SIGKILL)
    thread.join(240)
    assert not thread.is_alive(), "the experiment did not end after the worker was killed"
    assert out["status"] == "finished", out.get("reason")
    assert out["counts"]["finished"] == 8
    killed = next(t for t in out["trials"] if t["trial_id"] == victim["trial"])
    assert killed["attempts"] == 2 and killed["status"] == "finished", killed
    assert len(out["workers"]) >= 3  # Spark's new task registered as a new worker
    check_invariants(out, folder, before)


def _make_unwritable(how: str, folder: Path, pid: int) -> None:
    """Make the experiment's folder unwritable for the driver ``pid``. The tests run
    as root, whom ``chmod`` does not stop, so: ``fsize``: a file size limit on the
    driver at the journal's current size (``prlimit``: every write past it fails
    with EFBIG, as on a full disk or quota, and the record being written is torn);
    ``replaced``: the folder moved away and a file put at its path (the journal,
    already open, follows the moved folder; every new file, result.json's
    temporary included, fails with ENOTDIR)."""
    import resource

    if how == "fsize":
        size = (folder / "journal.jsonl").stat().st_size
        resource.prlimit(pid, resource.RLIMIT_FSIZE, (size + 64, size + 64))
    else:
        folder.rename(folder.with_name(folder.name + ".moved"))
        folder.write_text("not a folder any more")


def _make_writable(how: str, folder: Path) -> None:
    if how == "replaced":
        folder.unlink()
        folder.with_name(folder.name + ".moved").rename(folder)


@pytest.mark.parametrize("how", ["fsize", "replaced"])
def test_the_results_directory_becoming_unwritable(tmp_path, redis_url, how):
    """The run fails cleanly (never hangs) with a reason naming the folder, and
    returns its result (``maggy run`` prints it); nothing that ended before is lost:
    once the folder is writable again, the same experiment id resumes from the
    journal, runs nothing that had ended again, and writes result.json."""
    exp = f"unwritable-{how}-{uuid.uuid4().hex[:6]}"
    spec_path = tmp_path / "spec.json"
    spec_path.write_text(json.dumps(sleep_spec(exp, 12).to_dict()))
    folder = tmp_path / exp
    proc = _maggy_run(spec_path, tmp_path, redis_url, exp, "--json", stdout=subprocess.PIPE)
    try:
        wait_for(lambda: len(ended_trials(folder)) >= 3, 120, "three trials to end")
        before = ended_trials(folder)
        _make_unwritable(how, folder, proc.pid)
        stdout, _ = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 1  # EXIT_FAILED, not a crash
    printed = json.loads(stdout)
    assert printed["status"] == "failed" and str(folder) in printed["reason"], printed["reason"]
    assert not (folder / "result.json").exists()
    _make_writable(how, folder)
    assert before <= ended_trials(folder)  # everything that had ended is in the journal

    again = _maggy_run(spec_path, tmp_path, redis_url, exp)
    assert again.wait(300) == 0
    result = json.loads((folder / "result.json").read_text())
    assert result["status"] == "finished" and result["counts"]["finished"] == 12
    check_invariants(result, folder, before)


@pytest.mark.usefixtures("local_spark")
def test_hostile_values_in_the_hashes_and_sets_the_engine_reads(tmp_path, redis_url):
    """Besides streams and lists, the engine reads the ``workers`` heartbeats (a
    sorted set), the ``meta`` hash (epoch, state) and the ``ctl`` stop flags: forged
    or undecodable members and values there are survived too."""
    exp, thread, out, folder, client, prefix, before = _ten_sleeps_two_ended(
        tmp_path, redis_url, "hostile-sets"
    )
    now = time.time()
    client.zadd(
        prefix + "workers",
        {b"\xff\xfe": now, "x" * 100_000: now, "e1-w9.9": now, "e7-w0.0": 1e300},
    )
    client.hset(prefix + "meta", mapping={"epoch": b"\xffnot a number", "state": b"\xff\xfe"})
    running = _running(folder)
    for trial in running:
        client.hset(prefix + "ctl", trial, b"\xff" * 1000)
    thread.join(180)
    assert not thread.is_alive(), "the experiment did not end"
    assert out["status"] == "finished", out.get("reason")
    assert out["counts"]["finished"] == 10
    # A heartbeat written once, of this epoch's shape, is not adopted as a worker
    # (maggy_core.workers: only a heartbeat that moves is), so no trial went to it.
    assert not any(w["worker"] == "e1-w9.9" for w in out["workers"])
    check_invariants(out, folder, before)
