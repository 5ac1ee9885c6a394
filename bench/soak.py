"""Soak run: many short trials while faults are injected at random.

Runs the same experiment twice in one process run, each as its own ``maggy run``
(the driver is a separate process, so it can be killed like a lost machine) on a
private Redis server that this script owns:

- a **peer** run without faults, for the time the faults cost;
- a **faulted** run: every 1.5-3.5 s (seeded) one fault, drawn from
  ``worker`` (SIGKILL of one Python worker process mid-trial), ``driver`` (SIGKILL
  of the driver's whole process group, JVM and workers included, then ``maggy run``
  again with the same experiment id, which resumes from the journal), ``pause``
  (Redis answers nobody for 1-3 s: ``CLIENT PAUSE``), ``restart`` (Redis stops,
  losing everything it held, and comes back empty on the same port 0.5-2 s later)
  and ``hostile`` (garbage, deep nesting, huge values, wrong types and forged
  outcomes on the experiment's event and request streams and assignment lists;
  undecodable members and values in its heartbeats set, ``meta`` and ``ctl``).

It prints, from the journal and ``result.json`` of the faulted run: trials lost
(target 0), trials run more than once and how many were in flight at a fault
(target: no more than that), whether every trial is in ``result.json`` exactly
once, and the faulted run's wall time against the peer's. It asserts nothing.

    python bench/soak.py             # 2,000 trials, 4 workers
    python bench/soak.py --quick     # 300 trials
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import contextlib

from bench._common import ROOT, OtherCpu, finish, fmt, header, ratio, table  # noqa: E402

FAULTS = ("worker", "driver", "pause", "restart", "hostile")
MAX_DRIVER_KILLS = 3
MAX_RETRIES = 10  # starts again of a driver that exited without a result
RUN_TIMEOUT = 900.0  # a run that has not ended by then counts as hung


def spec(trials: int, workers: int, seed: int) -> dict[str, Any]:
    return {
        "name": "soak",
        "train_fn": "maggy_core.examples.sleep:train",
        "searchspace": {"seconds": ["DOUBLE", [0.01, 0.06]], "x": ["DOUBLE", [-1.0, 1.0]]},
        "num_trials": trials,
        "workers": workers,
        "es_policy": "none",
        "hb_interval": 0.2,
        "max_attempts": 10,
        "seed": seed,
        "train_kwargs": {"steps": 3},
    }


@dataclass
class Run:
    """One experiment, perhaps over several ``maggy run`` processes (resumes)."""

    name: str
    experiment_id: str
    spec_path: Path
    results: Path
    redis_url: str
    workers: int
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0
    retries: int = 0  # starts after the driver exited without a result
    wall: float = 0.0
    hung: bool = False
    faults: list[dict[str, Any]] = field(default_factory=list)

    @property
    def folder(self) -> Path:
        return self.results / self.experiment_id

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [
                    str(Path(sys.executable).with_name("maggy")),
                    "run",
                    str(self.spec_path),
                    "--redis-url",
                    self.redis_url,
                    "--results-dir",
                    str(self.results),
                    "--experiment-id",
                    self.experiment_id,
                    "--master",
                    f"local[{self.workers},3]",
                    "-q",
                ],
                stdout=out,
                stderr=out,
                start_new_session=True,  # its own process group: a driver kill takes all
            )
        self.starts += 1

    def kill_driver(self) -> None:
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()


def journal(folder: Path) -> list[dict[str, Any]]:
    """Every complete record of the journal (and of segments, if any)."""
    out = []
    files = [folder / "journal.jsonl", *sorted((folder / "journal").glob("*.jsonl"))]
    for path in files:
        if not path.is_file():
            continue
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue  # a torn last line
    return out


def running_now(folder: Path) -> set[str]:
    """Trials started and not ended, from the journal as it stands."""
    running: set[str] = set()
    for rec in journal(folder):
        if rec.get("type") == "trial_started":
            running.add(rec["trial_id"])
        elif rec.get("type") == "trial_ended":
            running.discard(rec["trial_id"])
    return running


def worker_processes(root_pid: int) -> list[Any]:
    """Python worker processes of the run: children of its Python daemon."""
    import psutil

    try:
        tree = psutil.Process(root_pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    daemons = [
        p
        for p in tree
        if p.name().startswith("python") and p.parent() and "java" in p.parent().name()
    ]
    workers = []
    for d in daemons:
        try:
            workers += d.children()
        except psutil.NoSuchProcess:
            continue
    return workers


def hostile_messages(rng: random.Random) -> list[bytes]:
    deep = "[" * 100_000 + "]" * 100_000
    forged = {
        "v": 1,
        "type": "final",
        "worker": "e1-w0.0",
        "epoch": 1,
        "trial": f"t{rng.randrange(50):04d}",
        "attempt": 1,
        "seq": 10**9,
        "status": "finished",
        "metric": 1e9,
        "metrics": {},
        "start": 0,
        "duration": 0,
    }
    return [
        b"\xff\xfe not json",
        b"[1, 2, 3]",
        deep.encode(),
        json.dumps({"v": 1, "type": "metric", "x": "y" * 2_000_000}).encode(),
        json.dumps({**forged, "attempt": "1"}).encode(),
        json.dumps(forged).encode(),
        json.dumps({**forged, "type": "metric", "step": 1, "value": 1e308}).encode(),
        json.dumps({"v": 999, "type": "register"}).encode(),
        json.dumps({"v": 1, "type": "register", "worker": {"a": 1}, "epoch": 1}).encode(),
    ]


class Injector(threading.Thread):
    """Injects faults into ``run`` until told to stop."""

    def __init__(self, run: Run, redis: Any, seed: int, kinds: tuple[str, ...]) -> None:
        super().__init__(daemon=True)
        self.run_ = run
        self.redis = redis
        self.rng = random.Random(seed)
        self.kinds = kinds
        self.done = threading.Event()
        self.lock = threading.Lock()  # held while the driver is being replaced

    def run(self) -> None:
        while not self.done.wait(self.rng.uniform(1.5, 3.5)):
            kind = self.rng.choice(self.kinds)
            drivers = sum(f["kind"] == "driver" for f in self.run_.faults)
            if kind == "driver" and drivers >= MAX_DRIVER_KILLS:
                kind = "worker"
            try:
                self.inject(kind)
            except Exception as exc:  # noqa: BLE001 - a fault that could not be injected
                self.run_.faults.append({"kind": kind, "error": repr(exc)[:200]})

    def inject(self, kind: str) -> None:
        run, at = self.run_, time.monotonic()
        # What runs as the fault strikes, the only trials it may make run again: every
        # trial running just before it or just after it is done (a killed worker's
        # trial has not ended then; trials are shorter than finding the victim).
        running = running_now(run.folder)
        record: dict[str, Any] = {"kind": kind, "at": at, "in_flight": 0, "running": running}
        self._inject(kind, record)
        running |= running_now(run.folder)

    def _inject(self, kind: str, record: dict[str, Any]) -> None:
        run = self.run_
        if kind == "worker":
            victims = worker_processes(run.proc.pid) if run.proc else []
            if not victims:
                return
            self.rng.choice(victims).kill()
            record["in_flight"] = 1
        elif kind == "driver":
            with self.lock:
                run.kill_driver()
                record["in_flight"] = len(running_now(run.folder))  # its journal is final
                time.sleep(self.rng.uniform(0.2, 1.0))
                run.start()
        elif kind == "pause":
            seconds = self.rng.uniform(1.0, 3.0)
            self.redis.client().execute_command("CLIENT", "PAUSE", int(seconds * 1000), "ALL")
            record["seconds"] = round(seconds, 2)
            time.sleep(seconds)
        elif kind == "restart":
            seconds = self.rng.uniform(0.5, 2.0)
            self.redis.restart(seconds)
            record["seconds"] = round(seconds, 2)
        elif kind == "hostile":
            client = self.redis.client()
            prefix = f"maggy:{{{run.experiment_id}}}:"
            sent = 0
            for message in hostile_messages(self.rng):
                client.xadd(prefix + "events", {"m": message})
                client.xadd(prefix + "requests", {"m": message})
                sent += 2
            client.zadd(prefix + "workers", {b"\xff\xfe": time.time(), "y" * 10_000: 0})
            client.hset(prefix + "meta", "state", b"\xff\xfe")
            for key in client.scan_iter(match=prefix + "assign:*", count=100):
                client.rpush(key, b"{not json", json.dumps({"v": 1, "type": "trial"}))
                sent += 2
            client.hset(prefix + "ctl", "t0000", "x" * 100_000)
            record["messages"] = sent
        run.faults.append(record)


class Redis:
    """The run's private Redis server; it can be restarted empty on the same port."""

    def __init__(self) -> None:
        from maggy_core.redis_server import PrivateRedis

        self._cls = PrivateRedis
        self.server = PrivateRedis()
        self.url = self.server.start()
        self.port = self.server.port

    def client(self) -> Any:
        import redis

        return redis.Redis.from_url(self.url, socket_timeout=10)

    def restart(self, down: float) -> None:
        self.server.stop()
        time.sleep(down)
        self.server = self._cls(port=self.port)
        self.server.start()

    def stop(self) -> None:
        self.server.stop()


def execute(run: Run, injector: Injector | None) -> None:
    t0 = time.monotonic()
    run.start()
    if injector is not None:
        injector.start()
    deadline = t0 + RUN_TIMEOUT
    try:
        while time.monotonic() < deadline:
            lock = injector.lock if injector else threading.Lock()
            with lock:
                proc = run.proc
                code = proc.poll() if proc else None
            if code is not None and (run.folder / "result.json").exists():
                break
            if code is not None:
                # The driver gave up without a result: ``maggy run`` refuses to start
                # while Redis does not answer (a restart fault as it started). Run it
                # again, as a scheduler's retry would; the resume loses nothing.
                if run.retries >= MAX_RETRIES:
                    break
                with lock:
                    if run.proc is proc:
                        run.retries += 1
                        time.sleep(1.0)
                        run.start()
            time.sleep(0.2)
        else:
            run.hung = True
    finally:
        if injector is not None:
            injector.done.set()
            injector.join(30)
        if run.hung and run.proc is not None:
            run.kill_driver()
    run.wall = time.monotonic() - t0


def analyse(run: Run, num_trials: int) -> dict[str, Any]:
    result_path = run.folder / "result.json"
    result = json.loads(result_path.read_text()) if result_path.exists() else {}
    records = journal(run.folder)
    started = collections.Counter(
        r["trial_id"] for r in records if r.get("type") == "trial_started"
    )
    ended = [r["trial_id"] for r in records if r.get("type") == "trial_ended"]
    in_result = collections.Counter(t["trial_id"] for t in result.get("trials", []))
    statuses = collections.Counter(t.get("status") for t in result.get("trials", []))
    terminal = {t["trial_id"] for t in result.get("trials", []) if t.get("status") != "running"}
    journal_ended = collections.Counter(ended)
    rerun = {t for t, n in started.items() if n > 1}
    at_a_fault = set().union(*(f.get("running", set()) for f in run.faults))
    return {
        "status": result.get("status", "none"),
        "reason": result.get("reason", ""),
        "hung": run.hung,
        "starts": run.starts,
        "retries": run.retries,
        "wall": run.wall,
        "ended_trials": len(terminal),
        "lost": max(0, num_trials - len(terminal)),
        "statuses": dict(statuses),
        "run_more_than_once": sum(1 for n in started.values() if n > 1),
        "extra_runs": sum(n - 1 for n in started.values() if n > 1),
        "in_flight_at_faults": sum(f.get("in_flight", 0) for f in run.faults),
        # Trials that ran again although none of the faults struck while they ran.
        "rerun_not_at_a_fault": sorted(rerun - at_a_fault),
        "exactly_once_in_result": bool(in_result) and all(n == 1 for n in in_result.values()),
        "ended_twice_in_journal": sum(1 for n in journal_ended.values() if n > 1),
        "journal_matches_result": set(journal_ended) == terminal,
        "faults": collections.Counter(f["kind"] for f in run.faults),
        "fault_errors": [f for f in run.faults if "error" in f],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="300 trials")
    parser.add_argument("--trials", type=int, default=None)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--faults", default=",".join(FAULTS), help="kinds to inject")
    parser.add_argument("--json", help="write the figures to this file")
    args = parser.parse_args()
    trials = args.trials or (300 if args.quick else 2000)
    kinds = tuple(k for k in args.faults.split(",") if k)
    unknown = set(kinds) - set(FAULTS)
    if unknown:
        parser.error(f"--faults: unknown kinds {sorted(unknown)}; allowed: {', '.join(FAULTS)}")
    mode = "quick" if args.quick else "full"
    started = time.monotonic()
    header("soak", mode, {"trials": trials, "workers": args.workers, "faults": kinds})
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    os.environ["PYSPARK_PYTHON"] = sys.executable
    tmp = Path(tempfile.mkdtemp(prefix="maggy-soak-"))
    spec_path = tmp / "soak.json"
    spec_path.write_text(json.dumps(spec(trials, args.workers, args.seed)))
    meter = OtherCpu()
    figures: dict[str, Any] = {}
    for name, faulty in (("peer", False), ("faulted", True)):
        redis = Redis()
        run = Run(
            name,
            f"soak-{name}",
            spec_path,
            tmp / "results",
            redis.url,
            args.workers,
            tmp / f"{name}.log",
        )
        injector = Injector(run, redis, args.seed, kinds) if faulty else None
        try:
            execute(run, injector)
        finally:
            redis.stop()
        figures[name] = analyse(run, trials)
        print(
            f"  {name}: {figures[name]['status']} in {run.wall:.1f} s ({run.starts} start(s), "
            f"{run.retries} after the driver exited without a result)"
        )
    peer, hit = figures["peer"], figures["faulted"]
    print()
    table(
        ["measure", "peer", "faulted", "target"],
        [
            ["status", peer["status"], hit["status"], "finished"],
            ["hung", peer["hung"], hit["hung"], "False"],
            ["trials ended", peer["ended_trials"], hit["ended_trials"], trials],
            ["trials lost", peer["lost"], hit["lost"], 0],
            [
                "trials run more than once",
                peer["run_more_than_once"],
                hit["run_more_than_once"],
                f"<= {hit['in_flight_at_faults']} (in flight at a fault)",
            ],
            [
                "reruns not running at any fault",
                len(peer["rerun_not_at_a_fault"]),
                len(hit["rerun_not_at_a_fault"]),
                0,
            ],
            [
                "every trial once in result.json",
                peer["exactly_once_in_result"],
                hit["exactly_once_in_result"],
                "True",
            ],
            [
                "journal agrees with result.json",
                peer["journal_matches_result"],
                hit["journal_matches_result"],
                "True",
            ],
            ["wall time (s)", fmt(peer["wall"], ".1f"), fmt(hit["wall"], ".1f"), ""],
        ],
    )
    cost = hit["wall"] - peer["wall"]
    print(
        f"\n  faults injected: {dict(hit['faults'])}; time they cost: {cost:.1f} s "
        f"({fmt(ratio(hit['wall'], peer['wall']), '.2f')}x the peer's wall time)"
    )
    if hit["fault_errors"]:
        print(f"  faults that could not be injected: {hit['fault_errors'][:5]}")
    if hit["status"] != "finished":
        print(f"  faulted run: {hit['reason']}")
    print(f"  others used {meter.cores():.2f} cores meanwhile; logs and results in {tmp}")
    met = (
        hit["status"] == "finished"
        and not hit["hung"]
        and hit["lost"] == 0
        and hit["run_more_than_once"] <= hit["in_flight_at_faults"]
        and not hit["rerun_not_at_a_fault"]
        and hit["exactly_once_in_result"]
        and hit["journal_matches_result"]
    )
    verdict = (
        "soak: targets met (nothing lost, reruns only of trials in flight at a fault)"
        if met
        else "soak: targets NOT met (see the table)"
    )
    figures["root"] = str(ROOT)
    finish(args, mode, started, verdict, met, {"figures": figures})


if __name__ == "__main__":
    main()
