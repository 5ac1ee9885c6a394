#!/usr/bin/env python
"""The coordinator against N simulated workers: how far one coordinator scales.

Run from the project root (a Redis at ``--redis-url``, default 127.0.0.1:6379)::

    .venv/bin/python bench/scale.py              # N = 16, 128, 1024; 12 s each
    .venv/bin/python bench/scale.py --quick      # N = 16, 128, 1024; 4 s each
    .venv/bin/python bench/scale.py --workers 16 64 --seconds 8

No Spark: the coordinator (the real ``Coordinator``, its journal and ``result.json``
in a temporary directory) runs in this process, and the N workers are the real
worker loop (``maggy_core.worker.run_worker``, with its heartbeat thread) in
threads, spread over child processes so that 1,024 of them fit on two cores. Every
worker speaks the real ``WorkerChannel`` to the real Redis. Each trial reports
27 steps, every 10-100 ms (drawn per trial), under ``es_policy: asha`` (rungs 1, 3,
9 of 27): reports at a rung wait for the rule's verdict, as on Spark.

Per N, once all N workers have registered, over ``--seconds`` after one more second:

- reports/s: metric events the coordinator handled per second (a worker offers
  about one per 55 ms while its trial runs);
- event age p50/p99: how old an event is (its stream id's time) when the
  coordinator reads it: a coordinator that falls behind lets it grow;
- dispatch p50/p99: from a trial's end (its worker's clock) to the next trial's
  start on the same worker, i.e. what a worker waits between trials;
- verdict p50/p99: how long a report at a rung waited for the rule's answer;
- coordinator CPU per trial (process CPU of this process, which runs only the
  coordinator, per trial that ended) and its CPU share (CPU s / wall s);
- "saturated" when the coordinator's CPU share is above 0.9, or p99 event age or
  p99 dispatch is 10 ms or more.

The workers' processes run at ``--nice`` 19 (default), so the coordinator and Redis
get the CPU first, as they would with the workers on other machines; the workers
then report as fast as the cores left over allow, which may be less often than
every 10-100 ms: the benchmark prints the rate the workload asks for (about 25.6
reports/s per worker: the mean of 1/period) beside the rate handled. ``--nice 0``
gives the workers the coordinator's priority (the figures before this option).

Nothing is asserted. The figures under load say little about an idle machine: the
workers' processes share the same two cores as the coordinator.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import argparse  # noqa: E402
import math  # noqa: E402
import multiprocessing as mp  # noqa: E402
import os  # noqa: E402
import random  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from typing import Any  # noqa: E402

from bench import _common  # noqa: E402
from bench._common import fmt, table  # noqa: E402

STEPS = 27
PERIOD = (0.010, 0.100)  # seconds between two reports of a trial
WARMUP = 1.0  # seconds of the start not counted
SIZES = {"full": {"seconds": 12.0}, "quick": {"seconds": 4.0}}
DEFAULT_N = (16, 128, 1024)
THREADS_PER_PROCESS = 128
#: Reports per second one worker offers: the mean of 1/period over the uniform period.
ASKED_PER_WORKER = math.log(PERIOD[1] / PERIOD[0]) / (PERIOD[1] - PERIOD[0])
HB_INTERVAL = 2.0
REGISTER_TIMEOUT = 120.0  # seconds for all N workers to register


def train(x: float, period: float, reporter: Any) -> float:
    """A simulated trial: ``STEPS`` reports, one every ``period`` seconds; the
    time each report took is kept for the verdict figures."""
    from maggy_core.reporter import asks_at

    waits = _VERDICT_WAITS
    for step in range(1, STEPS + 1):
        time.sleep(period)
        previous = step - 1 if step > 1 else None
        t0 = time.perf_counter()
        try:
            reporter.broadcast(x * step / STEPS, step=step)
        finally:
            if asks_at(reporter._asks, previous, step):
                waits.append(time.perf_counter() - t0)
    return x


_VERDICT_WAITS: list[float] = []


def _worker_process(launch_json: str, ids: list[str], out: Any, nice: int) -> None:
    """A child process: ``len(ids)`` worker loops in threads until the coordinator
    says done; sends back the verdict waits."""
    import logging

    if nice:
        os.nice(nice)
    from maggy_core.worker import Launch, run_worker

    logging.basicConfig(level=logging.ERROR)
    launch = Launch.from_json(launch_json)
    threads = [
        threading.Thread(target=run_worker, args=(launch, wid, train), daemon=True) for wid in ids
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    out.put(list(_VERDICT_WAITS))


def run_n(n: int, seconds: float, redis_url: str, tmp: Path, nice: int = 19) -> dict[str, Any]:
    """One coordinator against ``n`` simulated workers for ``seconds``."""
    from maggy_core.channel import CoordinatorChannel
    from maggy_core.coordinator import Coordinator
    from maggy_core.modes import mode_of, stopping_rule
    from maggy_core.results import ResultStore
    from maggy_core.spec import ExperimentSpec
    from maggy_core.worker import Launch

    spec = ExperimentSpec.from_dict(
        {
            "name": f"bench-scale-{n}",
            "train_fn": "bench.scale:train",
            "searchspace": {
                "x": ["DOUBLE", [0.0, 1.0]],
                "period": ["DOUBLE", list(PERIOD)],
            },
            "num_trials": 1_000_000,
            "workers": n,
            "es_policy": {
                "name": "asha",
                "options": {"min_step": 1, "max_step": STEPS, "reduction_factor": 3},
            },
            "hb_interval": HB_INTERVAL,
            "seed": n,
        }
    )
    exp = f"bench-scale-{n}-{uuid.uuid4().hex[:8]}"
    channel = CoordinatorChannel(redis_url, exp)
    store = ResultStore(tmp, exp)
    coordinator = Coordinator(
        spec, exp, channel, store, mode_of(spec).optimizer(spec, spec.seed), stopping_rule(spec)
    )
    coordinator.open()
    launch = Launch(exp, redis_url, 1, spec.hb_interval, spec.optimization_key).to_json()
    ids = [f"e1-w{i}.0" for i in range(n)]
    per = max(1, min(THREADS_PER_PROCESS, -(-n // 2)))
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = [
        ctx.Process(target=_worker_process, args=(launch, ids[i : i + per], out, nice), daemon=True)
        for i in range(0, n, per)
    ]
    for p in procs:
        p.start()
    t_start = time.time()
    t0 = time.monotonic()
    reports = {"all": 0}
    original = coordinator._on_metric

    def counted(trial, worker, step, value):  # count what the coordinator handles
        reports["all"] += 1
        original(trial, worker, step, value)

    coordinator._on_metric = counted  # type: ignore[method-assign]
    ages: list[float] = []
    read = channel.read_events

    def timed_read(*a, **kw):  # how old each event is when the coordinator reads it
        events = read(*a, **kw)
        now_ms = time.time() * 1000
        if time.monotonic() - t0 >= WARMUP:
            ages.extend(now_ms - int(entry.split(b"-")[0]) for entry, _ in events)
        return events

    channel.read_events = timed_read  # type: ignore[method-assign]
    # The window starts once every worker has registered (their processes take a
    # while to start on a loaded machine) and the first second after it has passed.
    up_by = time.monotonic() + REGISTER_TIMEOUT
    while len(coordinator.registry.workers) < n and time.monotonic() < up_by:
        coordinator.poll(50)
    registered_after = time.monotonic() - t0
    t0 = time.monotonic()
    t_start = time.time()
    cpu0 = wall0 = None
    ended0 = reports0 = 0
    while time.monotonic() - t0 < WARMUP + seconds and coordinator.status is None:
        coordinator.poll(50)
        if cpu0 is None and time.monotonic() - t0 >= WARMUP:
            cpu0, wall0 = time.process_time(), time.monotonic()
            ended0, reports0 = coordinator.table.ended_count(), reports["all"]
    cpu1, wall1 = time.process_time(), time.monotonic()
    ended1, reports1 = coordinator.table.ended_count(), reports["all"]
    running = len(coordinator.registry.busy())
    registered = len(coordinator.registry.workers)
    coordinator.stop("the benchmark's time is up")
    coordinator.drain(10.0)
    result = coordinator.result()
    channel.finish(expire_seconds=30)
    waits: list[float] = []
    for _ in procs:
        try:
            waits.extend(out.get(timeout=60))
        except Exception:
            break
    for p in procs:
        p.join(timeout=30)
        if p.is_alive():
            p.kill()
    channel.close()
    steady_from = t_start + WARMUP
    gaps = dispatch_gaps(result["trials"], steady_from)
    wall = (wall1 - wall0) if wall0 is not None else 0.0
    cpu = (cpu1 - cpu0) if cpu0 is not None else 0.0
    ended = ended1 - ended0
    handled = (reports1 - reports0) / wall if wall > 0 else None
    out_row = {
        "workers": n,
        "registered": registered,
        "registered_after_s": registered_after,
        "processes": len(procs),
        "seconds": wall,
        "trials_ended": ended,
        "reports_per_s": handled,
        "running": running,
        "event_age_p50_ms": pct(ages, 50),
        "event_age_p99_ms": pct(ages, 99),
        "dispatch_p50_ms": pct(gaps, 50),
        "dispatch_p99_ms": pct(gaps, 99),
        "verdict_p50_ms": pct([w * 1000 for w in waits], 50),
        "verdict_p99_ms": pct([w * 1000 for w in waits], 99),
        "cpu_per_trial_ms": 1000 * cpu / ended if ended else None,
        "cpu_share": cpu / wall if wall > 0 else None,
    }
    out_row["saturated"] = saturated(out_row)
    return out_row


def dispatch_gaps(trials: list[dict[str, Any]], since: float) -> list[float]:
    """Milliseconds from each trial's end to the next trial's start on its worker."""
    by_worker: dict[str, list[tuple[float, float]]] = {}
    for t in trials:
        if t.get("start") is None or t.get("duration") is None or not t.get("worker"):
            continue
        by_worker.setdefault(t["worker"], []).append((t["start"], t["start"] + t["duration"]))
    gaps = []
    for spans in by_worker.values():
        spans.sort()
        for (_s0, e0), (s1, _e1) in zip(spans, spans[1:], strict=False):
            if e0 >= since:
                gaps.append(1000 * max(0.0, s1 - e0))
    return gaps


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def saturated(row: dict[str, Any]) -> bool:
    share = row["cpu_share"] or 0.0
    behind = row["event_age_p99_ms"] is not None and row["event_age_p99_ms"] >= 10.0
    late = row["dispatch_p99_ms"] is not None and row["dispatch_p99_ms"] >= 10.0
    return bool(share > 0.9 or behind or late)


LIMITS = """\
What limits one coordinator, and how it would shard:
- One stream and one consumer: every worker's events go through one Redis stream
  (`events`), read by one consumer group with one consumer, the coordinator's single
  Python thread. Every report costs it a JSON decode and validation, a rule update
  and an XACK share; every trial end a journal append, the optimiser's suggestion and
  an assignment. Its CPU share is the first thing to reach 1.0; Redis itself (one
  core) handles well over 100k simple commands/s and is not the limit here.
- On this two-core machine the simulated workers' processes take the same cores, so
  the coordinator's share of CPU, not its code, decides where it saturates.
- How it would shard: the experiment's keys share one cluster hash tag, so one
  experiment is one Redis slot and one coordinator. Past one coordinator's rate,
  split the workers into groups with one `events` stream each (`events:<g>`, a hash
  tag per group so the streams can live on different Redis nodes), read by one
  process per group that decodes, validates and applies the stopping rule for its
  group's trials (the rule's rung lists are small and can be shared through the
  parent), and forward only trial ends to the single optimiser/journal process,
  which is then bounded by trials/s, not reports/s. The cheaper first step is
  coarser reports: a worker may batch several steps into one metric event.
"""


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="4 s per N")
    p.add_argument("--workers", type=int, nargs="+", metavar="N", help="default 16 128 1024")
    p.add_argument("--seconds", type=float, help="seconds per N (default 12; --quick 4)")
    p.add_argument(
        "--redis-url", default=os.environ.get("MAGGY_REDIS_URL", "redis://127.0.0.1:6379/0")
    )
    p.add_argument(
        "--nice", type=int, default=19, help="niceness of the workers' processes (default 19)"
    )
    p.add_argument("--json", metavar="PATH", help="also write the figures as JSON to PATH")
    args = p.parse_args(argv)
    _common.quiet_logs()
    import logging

    logging.getLogger("maggy").setLevel(logging.ERROR)  # "stopped: time is up" per N
    mode = "quick" if args.quick else "full"
    sizes = dict(SIZES[mode])
    if args.seconds:
        sizes["seconds"] = args.seconds
    ns = args.workers or list(DEFAULT_N)
    sizes["workers"] = ns
    _common.header("maggy coordinator scale benchmark", mode, sizes)
    print(
        f"{STEPS} reports per trial, one every {PERIOD[0] * 1000:.0f}-{PERIOD[1] * 1000:.0f} ms; "
        f"es_policy asha (rungs 1, 3, 9); up to {THREADS_PER_PROCESS} workers per process "
        f"at nice {args.nice}; Redis {args.redis_url}; the workload asks for about "
        f"{ASKED_PER_WORKER:.1f} reports/s per worker"
    )
    random.seed(0)
    tmp = Path(tempfile.mkdtemp(prefix="maggy-bench-scale-"))
    rows: list[dict[str, Any]] = []
    t_all = time.monotonic()
    failed = False
    try:
        for n in ns:
            print(f"  N={n} ...", end=" ", flush=True)
            meter = _common.OtherCpu()
            row = run_n(n, sizes["seconds"], args.redis_url, tmp, args.nice)
            row["reports_asked_per_s"] = n * ASKED_PER_WORKER
            row["load_average"] = os.getloadavg()[0]
            row["other_cores"] = meter.cores()
            rows.append(row)
            print(
                f"{fmt(row['reports_per_s'], '.0f')} reports/s, dispatch p99 "
                f"{fmt(row['dispatch_p99_ms'], '.1f')} ms"
            )
    except Exception as exc:
        import traceback

        traceback.print_exc()
        print(f"!! the benchmark failed: {type(exc).__name__}: {exc}")
        failed = True
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    headers = [
        "N",
        "registered (s)",
        "trials/s",
        "reports/s",
        "asked",
        "event age p50 ms",
        "p99 ms",
        "dispatch p50 ms",
        "p99 ms",
        "verdict p50 ms",
        "p99 ms",
        "CPU/trial ms",
        "coord CPU share",
        "saturated",
    ]
    table(
        headers,
        [
            [
                r["workers"],
                f"{r['registered']} ({r['registered_after_s']:.1f})",
                fmt(r["trials_ended"] / r["seconds"] if r["seconds"] else None, ".0f"),
                fmt(r["reports_per_s"], ".0f"),
                fmt(r["reports_asked_per_s"], ".0f"),
                fmt(r["event_age_p50_ms"], ".1f"),
                fmt(r["event_age_p99_ms"], ".1f"),
                fmt(r["dispatch_p50_ms"], ".1f"),
                fmt(r["dispatch_p99_ms"], ".1f"),
                fmt(r["verdict_p50_ms"], ".1f"),
                fmt(r["verdict_p99_ms"], ".1f"),
                fmt(r["cpu_per_trial_ms"], ".2f"),
                fmt(r["cpu_share"]),
                "yes" if r["saturated"] else "no",
            ]
            for r in rows
        ],
    )
    first = next((r["workers"] for r in rows if r["saturated"]), None)
    print(
        f"\nsaturates at N={first}" if first else "\nnot saturated at any N measured",
        f"(load average {os.getloadavg()[0]:.2f}: figures under load)",
    )
    # What one dedicated core would sustain: 1 / (CPU per trial) trials/s, against
    # what each worker asks for (trials/s per worker where the coordinator kept up).
    fit = [r for r in rows if r["cpu_per_trial_ms"] and r["trials_ended"] and r["seconds"]]
    if fit:
        least = min(fit, key=lambda r: r["cpu_per_trial_ms"])
        per_worker = max(r["trials_ended"] / r["seconds"] / r["workers"] for r in fit)
        capacity = 1000 / least["cpu_per_trial_ms"]
        print(
            f"one coordinator on one core of its own: about {capacity:.0f} trials/s "
            f"({least['cpu_per_trial_ms']:.2f} ms CPU per trial at N={least['workers']}); "
            f"a worker here asks for up to {per_worker:.1f} trials/s, so it would keep up "
            f"with about {capacity / per_worker:.0f} such workers"
        )
    print(LIMITS)
    top = next((r for r in rows if r["workers"] == 1024), None)
    met = (
        None
        if top is None
        else bool(top["dispatch_p99_ms"] is not None and top["dispatch_p99_ms"] < 10)
    )
    text = "target (1,024 workers, p99 dispatch < 10 ms): " + (
        "not measured" if top is None else ("MET" if met else "NOT MET")
    )
    _common.finish(args, mode, t_all, text, met, {"rows": rows})
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
