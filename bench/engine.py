#!/usr/bin/env python
# ruff: noqa: E501  (long print lines read better whole)
"""Benchmark of the maggy engine: dispatch cost, scaling, utilisation, stop latency, whole run.

Run from the project root::

    .venv/bin/python bench/engine.py            # full run (a few minutes)
    .venv/bin/python bench/engine.py --quick    # smaller sizes, a smoke run
    .venv/bin/python bench/engine.py --only dispatch --json /tmp/engine.json
    .venv/bin/python bench/engine.py --wait-idle 600 --retries 3   # on a shared machine

It prints figures, the target next to each figure and whether it is met; it asserts
nothing. The machine is 2 cores: other processes' CPU changes every figure, so the
benchmark measures it (all processes sampled every 0.25 s) and prints it per measure;
``--wait-idle`` waits for a quiet machine before each experiment and ``--retries``
runs an experiment again when others used more than 0.3 cores during it. Every experiment runs on ``local[4]`` with 4 workers, against the Redis
that the engine picks by default (``redis://127.0.0.1:6379/0`` when it answers).
Specs and results go to a temporary directory that is removed at the end
(``--keep`` keeps it).

Measurements (each a function below):

1. ``dispatch``    -- per-trial overhead with no-op trials: N and 10 N trials (each
                      made ``repeats`` times), the difference of the median trial spans
                      divided by 9 N, so Spark start-up cancels out; when the N runs
                      finished before all workers had registered (they do), the
                      steady state of the 10 N runs instead, and the output says so.
2. ``scaling``     -- the same at 10 N and 100 N trials, and whether the cost per trial
                      grows with the number of finished trials (first vs last 10 %):
                      per-worker gaps between trial starts, and the driver's CPU.
3. ``utilisation`` -- sleep trials of mixed length: busy / (workers x span), and
                      where the idle worker-seconds are (head, between trials, tail).
4. ``stop``        -- early-stop latency: stop decision -> the worker's next trial.
5. ``wholerun``    -- wall time and peak memory of the whole ``maggy run`` process
                      tree, and whether any process of it mapped tensorflow.
"""

from __future__ import annotations

import os
import sys

os.environ["PYSPARK_PYTHON"] = sys.executable
os.environ["PYSPARK_DRIVER_PYTHON"] = sys.executable
os.environ["SPARK_LOCAL_IP"] = "127.0.0.1"

import argparse  # noqa: E402
import bisect  # noqa: E402
import contextlib  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import math  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from collections import defaultdict  # noqa: E402
from datetime import datetime  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

WORKERS = 4
MASTER = f"local[{WORKERS}]"
SEED = 12345

# Reference points quoted in the issue (NOT measured by this benchmark).
REF_HYPEROPT_SPARKTRIALS_S = 1.0  # Hyperopt SparkTrials, ~1 s per trial on this machine
REF_OPTUNA_THREADS_S = 0.001  # Optuna, in-process threads, ~1 ms per trial

TARGET_DISPATCH_S = 0.005
TARGET_GROWTH_RATIO = 1.25  # "close to 1": last-10 % cost within +25 % of the first-10 % cost
TARGET_UTILISATION = 0.97
TARGET_STOP_S = 0.050
TARGET_WALL_S = 20.0
TARGET_MEM_BYTES = 0.8e9

SIZES = {
    "full": {"n": 30, "scaling": (300, 3000), "repeats": 3, "util": 60, "stop": 40, "wholerun": 60},
    "quick": {
        "n": 10,
        "scaling": (100, 1000),
        "repeats": 1,
        "util": 20,
        "stop": 20,
        "wholerun": 20,
    },
}

NOOP_SPACE = {"x": ["DOUBLE", [0, 1]]}
SLEEP_SPACE = {"seconds": ["DOUBLE", [0.4, 2.0], "log"], "x": ["DOUBLE", [-1, 1]]}
CURVE_SPACE = {"quality": ["DOUBLE", [0.1, 1.0]]}


# --------------------------------------------------------------------------- helpers


class Bench:
    """Shared state: temp dir, cache of runs, the figures and the summary rows."""

    def __init__(self, sizes: dict[str, Any], tmp: Path) -> None:
        self.sizes = sizes
        self.tmp = tmp
        self.figures: dict[str, Any] = {}
        self.summary: list[tuple[str, str, str, bool | None]] = []
        self._noop_runs: dict[tuple[int, int], dict[str, Any]] = {}
        self._warm = False
        self.interference: dict[str, float] = {}  # measure -> cores used by other processes

    def row(self, measure: str, figure: str, target: str, met: bool | None) -> None:
        self.summary.append((measure, figure, target, met))

    def noop_run(self, num_trials: int, rep: int = 0) -> dict[str, Any]:
        """One no-op experiment of ``num_trials`` (cached: dispatch and scaling share runs).

        The first call makes one discarded warm-up run first: the first experiment of a
        process also starts the JVM and loads Spark's classes, so without it the N run
        would not be made "the same way" as the later ones.
        """
        if not self._warm:
            self._warm = True
            print("  warm-up run (discarded):")
            self._noop_spec_run(self.sizes["n"], "bench-warmup")
        key = (num_trials, rep)
        if key not in self._noop_runs:
            self._noop_runs[key] = self._noop_spec_run(num_trials, f"bench-noop-{num_trials}-{rep}")
        return self._noop_runs[key]

    def _noop_spec_run(self, num_trials: int, name: str) -> dict[str, Any]:
        spec = {
            "name": name,
            "train_fn": "maggy_core.examples.sleep:noop",
            "searchspace": NOOP_SPACE,
            "num_trials": num_trials,
            "workers": WORKERS,
            "es_policy": "none",
            "seed": SEED,
        }
        return run(spec, self.tmp)


#: Set from the command line: wait for a quiet machine before each experiment, and
#: run an experiment again when other processes used more than DISTURBED cores during it.
QUIET = {"wait": 0.0, "retries": 0}
DISTURBED = 0.3


def quietly(label: str, attempt_fn: Any) -> tuple[Any, float]:
    """Call ``attempt_fn()`` (after waiting for a quiet machine), again up to
    ``QUIET["retries"]`` times while other processes disturb it. Returns its value and
    the cores other processes used during the attempt kept."""
    for attempt in range(1 + int(QUIET["retries"])):
        if QUIET["wait"]:
            wait_for_quiet(QUIET["wait"])
        meter = OtherCpu()
        value = attempt_fn()
        other, secs = meter.stop()
        cores = other / secs if secs else math.nan
        if cores <= DISTURBED:
            return value, cores
        if attempt < QUIET["retries"]:
            print(
                f"    .. other processes used {cores:.2f} cores during {label} ({meter.top()}): running it again",
                flush=True,
            )
    print(
        f"    !! other processes used {cores:.2f} cores during {label}: its figures may be disturbed",
        flush=True,
    )
    return value, cores


def run(spec_dict: dict[str, Any], tmp: Path) -> dict[str, Any]:
    """Run one experiment in this process; add ``_wall`` (seconds of run_experiment),
    ``_cpu`` / ``_redis_cpu`` (CPU seconds of the driver process / the Redis server)
    and ``_other_cores`` (cores used by other processes meanwhile)."""
    from maggy_core.runner import run_experiment
    from maggy_core.spec import ExperimentSpec

    spec = ExperimentSpec.from_dict(spec_dict)

    def attempt() -> dict[str, Any]:
        print(
            f"  running {spec.name}: {spec.num_trials} trials, {spec.workers} workers on {MASTER} ...",
            flush=True,
        )
        cpu0, rcpu0 = process_cpu(), redis_cpu()
        samples: list[tuple[float, float]] = []  # (unix time, CPU seconds of this process)
        halt = threading.Event()

        def sample_cpu() -> None:
            while not halt.wait(0.02):
                samples.append((time.time(), process_cpu()))

        sampler = threading.Thread(target=sample_cpu, name="cpu-sampler", daemon=True)
        sampler.start()
        t0 = time.monotonic()
        try:
            result = run_experiment(spec, master=MASTER, results_dir=tmp / "results")
        finally:
            halt.set()
            sampler.join()
        result["_wall"] = time.monotonic() - t0
        result["_cpu_samples"] = samples
        result["_cpu"] = process_cpu() - cpu0
        result["_redis_cpu"] = redis_cpu() - rcpu0
        ended = [t for t in result["trials"] if t["status"] in ("finished", "early_stopped")]
        print(
            f"    -> status {result['status']}, {len(ended)}/{spec.num_trials} trials ended ok, "
            f"makespan {result['makespan']:.3f} s, run_experiment wall {result['_wall']:.2f} s",
            flush=True,
        )
        if result["status"] != "finished":
            print(f"    !! experiment did not finish: {result['reason']}", flush=True)
        return result

    result, cores = quietly(spec.name, attempt)
    result["_other_cores"] = cores
    return result


def process_cpu() -> float:
    """User + system CPU seconds of this process (all its threads)."""
    import resource

    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def redis_cpu() -> float:
    """User + system CPU seconds of the Redis server at the default URL (``INFO cpu``)."""
    import redis

    from maggy_core.redis_server import DEFAULT_URL

    client = redis.Redis.from_url(DEFAULT_URL)
    try:
        info = client.info("cpu")
        return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])
    except redis.RedisError:
        return math.nan
    finally:
        client.close()


def timed(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Trials that have a start and a duration, sorted by start."""
    ts = [
        t for t in result["trials"] if t.get("start") is not None and t.get("duration") is not None
    ]
    return sorted(ts, key=lambda t: t["start"])


def span(result: dict[str, Any]) -> float:
    """First trial start to last trial end (seconds)."""
    ts = timed(result)
    return max(t["start"] + t["duration"] for t in ts) - min(t["start"] for t in ts)


def by_worker(trials: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for t in trials:
        out[t["worker"]].append(t)
    for v in out.values():
        v.sort(key=lambda t: t["start"])
    return out


def participation(result: dict[str, Any]) -> str:
    """Registered workers and the trials each ran, e.g. ``4 registered, trials {w0.0: 91, ...}``."""
    ws = {w["worker"]: w["trials"] for w in result["workers"]}
    active = sum(1 for v in ws.values() if v)
    return f"{len(ws)} registered, {active} ran trials: {dict(sorted(ws.items()))}"


def after_all_active(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Trials that started once every worker that ran a trial had started its first one."""
    ts = timed(result)
    all_in = max(v[0]["start"] for v in by_worker(ts).values())
    return [t for t in ts if t["start"] >= all_in]


def pct(values: list[float], q: float) -> float:
    """Percentile ``q`` (0..100) with linear interpolation."""
    xs = sorted(values)
    if not xs:
        return math.nan
    k = (len(xs) - 1) * q / 100.0
    lo, hi = math.floor(k), math.ceil(k)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def ms(s: float) -> str:
    return f"{s * 1000:.2f} ms"


def yes(ok: bool | None) -> str:
    return "-" if ok is None else ("MET" if ok else "NOT MET")


def phases(result: dict[str, Any]) -> dict[str, float]:
    """Seconds of each phase of one experiment, from the result's timestamps.

    The Spark job's start is taken as ``ended - makespan``: ``makespan`` is measured
    from the job's start to just after ``ended`` is stamped (a few ms apart at most).
    """
    ts = timed(result)
    first, last_end = ts[0]["start"], max(t["start"] + t["duration"] for t in ts)
    job_start = result["ended"] - result["makespan"]
    return {
        "spark_context": job_start - result["started"],
        "workers_up": first - job_start,
        "trials": last_end - first,
        "end": result["ended"] - last_end,
    }


def timeline(result: dict[str, Any]) -> str:
    """Where the wall time of one in-process run went."""
    ph = phases(result)
    return (
        f"coordinator created -> Spark job start {ph['spark_context']:.3f} s (SparkContext); "
        f"-> first trial start {ph['workers_up']:.3f} s (task launch, Python workers start, register); "
        f"trials {ph['trials']:.3f} s; last trial end -> result {ph['end']:.3f} s; "
        f"run_experiment wall {result['_wall']:.3f} s"
    )


# --------------------------------------------------------------------------- 1. dispatch


def steady_state(result: dict[str, Any]) -> tuple[float, int]:
    """Seconds per trial once every worker has started its first trial.

    From the moment the last worker started its first trial to the last trial
    start, divided by the number of trial starts in between.
    """
    ts = timed(result)
    all_in = max(v[0]["start"] for v in by_worker(ts).values())
    later = [t["start"] for t in ts if t["start"] >= all_in]
    if len(later) < 2:
        return math.nan, len(later)
    return (later[-1] - all_in) / (len(later) - 1), len(later)


def bench_dispatch(b: Bench) -> None:
    n = b.sizes["n"]
    reps = b.sizes["repeats"]
    print(
        f"\n=== 1. dispatch: no-op trials, {WORKERS} workers, {MASTER}, es_policy none; N={n} vs 10N={10 * n}, "
        f"each made {reps} times"
    )
    smalls = [b.noop_run(n, rep) for rep in range(reps)]
    bigs = [b.noop_run(10 * n, rep) for rep in range(reps)]
    for r in (*smalls, *bigs):
        print(
            f"  {r['spec']['num_trials']:>5} trials: makespan {r['makespan']:.3f} s, trial span {span(r):.3f} s; "
            f"workers {participation(r)}"
        )
        print(f"        {timeline(r)}")
    mk_n, mk_10n = (
        statistics.median(r["makespan"] for r in smalls),
        statistics.median(r["makespan"] for r in bigs),
    )
    sp_n, sp_10n = (
        statistics.median(span(r) for r in smalls),
        statistics.median(span(r) for r in bigs),
    )
    d_makespan = (mk_10n - mk_n) / (9 * n)
    d_span = (sp_10n - sp_n) / (9 * n)
    steadies = [steady_state(r) for r in bigs]
    steady = statistics.median(x for x, _ in steadies)
    own = [
        nxt["start"] - a["start"]
        for r in bigs
        for v in by_worker(timed(r)).values()
        for a, nxt in zip(v, v[1:], strict=False)
    ]
    print(
        f"  per trial from makespan   (median makespan(10N) - median makespan(N)) / 9N : {ms(d_makespan)}"
    )
    print(
        f"  per trial from trial span (median span(10N) - median span(N)) / 9N         : {ms(d_span)}"
    )
    print(
        f"  steady state in the 10N runs (from the moment every worker that ran trials was up to the last "
        f"trial start, per trial start): {', '.join(ms(x) for x, _ in steadies)}; median {ms(steady)}"
    )
    print(
        f"  one worker's cycle (trial start -> its next trial start, no-op trial) in the 10N runs: median "
        f"{ms(pct(own, 50))}, p95 {ms(pct(own, 95))} ({len(own)} cycles)"
    )
    active_n = statistics.median(len(by_worker(timed(r))) for r in smalls)
    valid = d_span > 0 and active_n >= WORKERS
    if valid:
        per, how = d_span, "trial-span difference"
        print(
            "  headline = trial-span difference: first trial start -> last trial end leaves out the Spark job's"
        )
        print(
            "  task launch, the Python workers' start-up and the shutdown, which vary from run to run by seconds"
        )
        makespans = ", ".join(f"{r['makespan']:.2f}" for r in smalls)
        print(
            f"  (the makespan difference above is that noise: makespans of the N runs {makespans} s)."
        )
    else:
        per, how = steady, "steady state"
        print(
            f"  the span difference is not usable here: in the N runs a median of {active_n:.0f} of {WORKERS} workers "
            f"had registered before the {n} no-op trials were all done, so N and 10N trials did not run the same"
        )
        print(
            "  way; headline = the steady state of the 10N runs, when every worker that ran trials was up."
        )
    tput = 1.0 / per if per > 0 else math.inf
    ok = 0 < per < TARGET_DISPATCH_S
    print(f"  per-trial overhead ({how}): {ms(per)}  (target < {ms(TARGET_DISPATCH_S)}: {yes(ok)})")
    print(
        f"  throughput: {tput:.0f} trials/s with {WORKERS} workers "
        f"(per worker: one trial every {ms(per * WORKERS)})"
    )
    print("  reference points quoted from the issue, NOT measured here:")
    print(
        f"    Hyperopt SparkTrials ~{REF_HYPEROPT_SPARKTRIALS_S:.0f} s/trial -> ours is "
        f"{REF_HYPEROPT_SPARKTRIALS_S / per:.0f}x less per trial"
    )
    print(
        f"    Optuna in-process threads ~{ms(REF_OPTUNA_THREADS_S)}/trial -> ratio ours/Optuna = "
        f"{per / REF_OPTUNA_THREADS_S:.2f}"
    )
    b.figures["dispatch"] = {
        "n": n,
        "repeats": reps,
        "makespan_n": [r["makespan"] for r in smalls],
        "makespan_10n": [r["makespan"] for r in bigs],
        "span_n": [span(r) for r in smalls],
        "span_10n": [span(r) for r in bigs],
        "per_trial_from_makespan_s": d_makespan,
        "per_trial_from_span_s": d_span,
        "steady_state_per_trial_s": [x for x, _ in steadies],
        "headline": how,
        "per_trial_s": per,
        "trials_per_second": tput,
        "workers_active_n": [len(by_worker(timed(r))) for r in smalls],
        "workers_active_10n": [len(by_worker(timed(r))) for r in bigs],
        "worker_cycle_median_s": pct(own, 50),
        "other_cores": [r["_other_cores"] for r in (*smalls, *bigs)],
        "ratio_vs_hyperopt_sparktrials_ref": REF_HYPEROPT_SPARKTRIALS_S / per,
        "ratio_vs_optuna_threads_ref": per / REF_OPTUNA_THREADS_S,
    }
    b.row(f"dispatch: per-trial overhead ({how})", ms(per), f"< {ms(TARGET_DISPATCH_S)}", ok)


# --------------------------------------------------------------------------- 2. scaling


def gap_profile(
    result: dict[str, Any], buckets: int = 10, steady: bool = False
) -> tuple[list[float], list[float], list[int]]:
    """Per-worker gaps between consecutive trial starts, grouped by the global start
    rank of the earlier trial into ``buckets`` equal parts.

    Returns mean gap and median gap (seconds) per bucket and the number of gaps.
    """
    ts = after_all_active(result) if steady else timed(result)
    rank = {t["trial_id"]: i for i, t in enumerate(ts)}
    n = len(ts)
    groups: list[list[float]] = [[] for _ in range(buckets)]
    for trials in by_worker(ts).values():
        for a, nxt in zip(trials, trials[1:], strict=False):
            groups[min(buckets - 1, rank[a["trial_id"]] * buckets // n)].append(
                nxt["start"] - a["start"]
            )
    means = [statistics.fmean(g) if g else math.nan for g in groups]
    medians = [statistics.median(g) if g else math.nan for g in groups]
    return means, medians, [len(g) for g in groups]


def gap_trend(result: dict[str, Any]) -> tuple[float, float]:
    """Slope (seconds of gap per finished trial) and intercept of the per-worker gaps
    against the start rank of the earlier trial, over the steady window."""
    ts = after_all_active(result)
    rank = {t["trial_id"]: i for i, t in enumerate(ts)}
    xs, ys = [], []
    for trials in by_worker(ts).values():
        for a, nxt in zip(trials, trials[1:], strict=False):
            xs.append(rank[a["trial_id"]])
            ys.append(nxt["start"] - a["start"])
    fit = statistics.linear_regression(xs, ys)
    return fit.slope, fit.intercept


def cpu_growth(result: dict[str, Any]) -> tuple[float, float]:
    """Driver-process CPU seconds per trial start in the first and the last 10 % of the
    steady window, from the CPU samples taken every 20 ms during the run."""
    samples = result["_cpu_samples"]
    times = [t for t, _ in samples]

    def cpu_at(t: float) -> float:
        i = bisect.bisect_left(times, t)
        if i <= 0:
            return samples[0][1]
        if i >= len(samples):
            return samples[-1][1]
        (ta, ca), (tb, cb) = samples[i - 1], samples[i]
        return ca + (cb - ca) * (t - ta) / (tb - ta) if tb > ta else cb

    starts = [t["start"] for t in after_all_active(result)]
    k = len(starts) // 10
    first = (cpu_at(starts[k]) - cpu_at(starts[0])) / k
    last = (cpu_at(starts[-1]) - cpu_at(starts[-1 - k])) / k
    return first, last


def bench_scaling(b: Bench) -> None:
    n = b.sizes["n"]
    mid, large = b.sizes["scaling"]
    reps = b.sizes["repeats"]
    print(
        f"\n=== 2. scaling: no-op trials at {mid} and {large} (baseline N={n} for start-up); "
        f"the {large}-trial run is made {reps} times"
    )
    bases = [b.noop_run(n, rep) for rep in range(reps)]
    mids = [b.noop_run(mid, rep) for rep in range(reps)]
    larges = [b.noop_run(large, rep) for rep in range(reps)]
    r_large = larges[0]
    sp_base, sp_mid = (
        statistics.median(span(r) for r in bases),
        statistics.median(span(r) for r in mids),
    )
    mk_base, mk_mid = (
        statistics.median(r["makespan"] for r in bases),
        statistics.median(r["makespan"] for r in mids),
    )
    c_mid = (sp_mid - sp_base) / (mid - n)
    c_larges = [(span(r) - sp_base) / (large - n) for r in larges]
    c_large = statistics.median(c_larges)
    marginal = (statistics.median(span(r) for r in larges) - sp_mid) / (large - mid)
    c_mid_mk = (mk_mid - mk_base) / (mid - n)
    c_large_mk = (statistics.median(r["makespan"] for r in larges) - mk_base) / (large - n)
    print(f"  {large} trials (run 1): {timeline(r_large)}")
    print(
        f"  spans (first trial start -> last trial end): N {', '.join(f'{span(r):.3f}' for r in bases)} s; "
        f"{mid} {', '.join(f'{span(r):.3f}' for r in mids)} s; {large} {', '.join(f'{span(r):.3f}' for r in larges)} s"
    )
    print(
        f"  per trial at {mid:>5}: {ms(c_mid)} (trial span), {ms(c_mid_mk)} (makespan)   [(median x - median x(N)) / ({mid}-N)]"
    )
    print(
        f"  per trial at {large:>5}: {ms(c_large)} (trial span, median of {reps} runs: "
        f"{', '.join(ms(c) for c in c_larges)}), {ms(c_large_mk)} (makespan)   [(x - x(N)) / ({large}-N)]"
    )
    print(f"  marginal per trial from {mid} to {large}: {ms(marginal)} (trial span)")
    print(f"  ratio per-trial({large}) / per-trial({mid}) = {c_large / c_mid:.2f}")

    def med(runs: list[dict[str, Any]], key: str) -> float:
        return statistics.median(r[key] for r in runs)

    cpu_mid = (med(mids, "_cpu") - med(bases, "_cpu")) / (mid - n)
    cpu_large = (med(larges, "_cpu") - med(mids, "_cpu")) / (large - mid)
    rcpu_mid = (med(mids, "_redis_cpu") - med(bases, "_redis_cpu")) / (mid - n)
    rcpu_large = (med(larges, "_redis_cpu") - med(mids, "_redis_cpu")) / (large - mid)
    print(
        f"  CPU per trial, marginal: driver process (coordinator) {ms(cpu_mid)} from N to {mid}, "
        f"{ms(cpu_large)} from {mid} to {large}; Redis server {ms(rcpu_mid)} and {ms(rcpu_large)}"
    )
    print(
        "  per-worker gap between consecutive trial starts, by decile of trial start (a gap = one trial"
    )
    print(
        "  on one worker incl. its dispatch; wall cost per trial ~ gap / active workers); only the trials"
    )
    print("  started once every worker that ran trials was up (the steady window):")
    print(
        "    run  "
        + " ".join(f"{i + 1:>6}" for i in range(10))
        + "   last/first  slope per 1000 trials  workers"
    )
    profiles, ratios = [], []
    for i, r in enumerate(larges):
        s_means, _med, _cnt = gap_profile(r, steady=True)
        slope, icpt = gap_trend(r)
        profiles.append(s_means)
        ratios.append(s_means[-1] / s_means[0])
        counts = "/".join(str(w["trials"]) for w in sorted(r["workers"], key=lambda w: w["worker"]))
        print(
            f"    {i + 1:>3}  "
            + " ".join(f"{m * 1000:6.2f}" for m in s_means)
            + f"   {ratios[-1]:10.2f}  {slope * 1e6 * 1000:+8.0f} us ({slope * 1000 / icpt * 100:+5.1f} %)  {counts}"
        )
    avg = [statistics.fmean(col) for col in zip(*profiles, strict=True)]
    ratio = avg[-1] / avg[0]
    print("    avg  " + " ".join(f"{m * 1000:6.2f}" for m in avg) + f"   {ratio:10.2f}")
    means_all, _m, _c = gap_profile(r_large)
    print(
        f"  (run 1 over all trials, workers still joining in the first decile: "
        f"{' '.join(f'{m * 1000:.2f}' for m in means_all)} ms)"
    )
    spread = max(max(p) for p in profiles) / min(min(p) for p in profiles)
    print(
        f"  decile means of all runs span {spread:.2f}x (max/min); per-run last/first ratios "
        f"{', '.join(f'{x:.2f}' for x in ratios)}"
    )
    ok = ratio <= TARGET_GROWTH_RATIO
    growth = [cpu_growth(r) for r in larges]
    print(
        "  driver-process (coordinator) CPU per trial inside each run, from CPU samples every 20 ms, steady window:"
    )
    for i, (f, l_) in enumerate(growth):
        print(f"    run {i + 1}: first 10 % {ms(f)}, last 10 % {ms(l_)}: ratio {l_ / f:.2f}")
    cpu_ratio = statistics.median(l_ / f for f, l_ in growth)
    ok_cpu = cpu_ratio <= TARGET_GROWTH_RATIO
    print(
        f"  growth ratio last/first 10 % (steady window, averaged over {reps} runs): {ratio:.2f} "
        f"(target close to 1, read here as <= {TARGET_GROWTH_RATIO}: {yes(ok)})"
    )
    print(
        f"  coordinator CPU per trial, last/first 10 % (median of {reps} runs): {cpu_ratio:.2f} "
        f"(target close to 1, <= {TARGET_GROWTH_RATIO}: {yes(ok_cpu)}); the marginal figures above "
        f"({ms(cpu_mid)} vs {ms(cpu_large)}) compare different runs and include each run's fixed costs"
    )
    b.figures["scaling"] = {
        "sizes": [n, mid, large],
        "repeats": reps,
        "span": [[span(r) for r in runs] for runs in (bases, mids, larges)],
        "makespan": [[r["makespan"] for r in runs] for runs in (bases, mids, larges)],
        "driver_cpu_s": [[r["_cpu"] for r in runs] for runs in (bases, mids, larges)],
        "other_cores": [r["_other_cores"] for r in larges],
        "per_trial_mid_s": c_mid,
        "per_trial_large_s": c_large,
        "per_trial_large_runs_s": c_larges,
        "marginal_s": marginal,
        "per_trial_mid_makespan_s": c_mid_mk,
        "per_trial_large_makespan_s": c_large_mk,
        "driver_cpu_per_trial_s": [cpu_mid, cpu_large],
        "driver_cpu_first_last_10pct_s": growth,
        "driver_cpu_growth_ratio": cpu_ratio,
        "redis_cpu_per_trial_s": [rcpu_mid, rcpu_large],
        "steady_gap_mean_by_decile_s": profiles,
        "steady_gap_mean_by_decile_avg_s": avg,
        "growth_ratio_runs": ratios,
        "growth_ratio": ratio,
    }
    b.row(
        f"scaling: per-trial at {mid} / at {large}",
        f"{ms(c_mid)} / {ms(c_large)}",
        f"< {ms(TARGET_DISPATCH_S)}",
        max(c_mid, c_large) < TARGET_DISPATCH_S,
    )
    b.row(
        f"scaling: gap last/first 10 % (avg {reps} runs)",
        f"{ratio:.2f}",
        f"<= {TARGET_GROWTH_RATIO}",
        ok,
    )
    b.row(
        "scaling: coordinator CPU/trial last/first 10 %",
        f"{cpu_ratio:.2f}",
        f"<= {TARGET_GROWTH_RATIO}",
        ok_cpu,
    )


# --------------------------------------------------------------------------- 3. utilisation


def idle_breakdown(result: dict[str, Any], workers: int) -> dict[str, float]:
    """Worker-seconds of the trial span that were busy and idle (head, gaps, tail)."""
    ts = timed(result)
    first = ts[0]["start"]
    last_end = max(t["start"] + t["duration"] for t in ts)
    groups = by_worker(ts)
    head = sum(v[0]["start"] - first for v in groups.values())
    gaps_list = [
        b["start"] - (a["start"] + a["duration"])
        for v in groups.values()
        for a, b in zip(v, v[1:], strict=False)
    ]
    tail = sum(last_end - (v[-1]["start"] + v[-1]["duration"]) for v in groups.values())
    missing = (workers - len(groups)) * (last_end - first)  # workers that ran no trial at all
    busy = sum(t["duration"] for t in ts)
    return {
        "busy": busy,
        "head": head,
        "gaps": sum(gaps_list),
        "tail": tail + missing,
        "gap_mean": statistics.fmean(gaps_list) if gaps_list else math.nan,
        "gap_max": max(gaps_list) if gaps_list else math.nan,
        "gap_count": len(gaps_list),
        "span": last_end - first,
        "last_handout": ts[-1]["start"],
        "last_end": last_end,
    }


def bench_utilisation(b: Bench) -> None:
    n = b.sizes["util"]
    print(
        f"\n=== 3. utilisation: {n} sleep trials (seconds log-uniform in [0.4, 2.0], 10 steps), "
        f"{WORKERS} workers, {MASTER}, es_policy none, seed {SEED}"
    )
    spec = {
        "name": f"bench-util-{n}",
        "train_fn": "maggy_core.examples.sleep:train",
        "searchspace": SLEEP_SPACE,
        "num_trials": n,
        "workers": WORKERS,
        "es_policy": "none",
        "seed": SEED,
    }
    r = run(spec, b.tmp)
    d = idle_breakdown(r, WORKERS)
    cap = WORKERS * d["span"]
    util = d["busy"] / cap
    util_mk = d["busy"] / (WORKERS * r["makespan"])
    print(f"  {timeline(r)}")
    print(
        f"  sum of trial durations {d['busy']:.3f} s; trial span (first start -> last end) {d['span']:.3f} s; "
        f"capacity {WORKERS} x span = {cap:.3f} worker-s"
    )
    print(
        f"  utilisation = busy / (workers x span) = {util:.4f}  (target >= {TARGET_UTILISATION}: "
        f"{yes(util >= TARGET_UTILISATION)})"
    )
    print(
        f"  (over the result's makespan, Spark job start -> end, {r['makespan']:.3f} s: {util_mk:.4f})"
    )
    idle = cap - d["busy"]
    print(f"  idle {idle:.3f} worker-s within the span:")
    for part, label in (
        ("head", "head: before each worker's first trial"),
        (
            "gaps",
            f"between trials on a worker ({d['gap_count']} gaps, mean {ms(d['gap_mean'])}, "
            f"max {ms(d['gap_max'])})",
        ),
        ("tail", "tail: after each worker's last trial, to the last trial end"),
    ):
        share = d[part] / idle if idle > 0 else math.nan
        print(
            f"    {label}: {d[part]:.3f} worker-s ({share * 100:.1f} % of idle, "
            f"{d[part] / cap * 100:.2f} % of capacity)"
        )
    print(
        f"  the last trial was handed out {d['last_handout'] - (d['last_end'] - d['span']):.3f} s into the span "
        f"and ran {d['last_end'] - d['last_handout']:.3f} s: after that only the trials still running "
        f"use the workers (the tail)"
    )
    b.figures["utilisation"] = {
        "trials": n,
        "utilisation": util,
        "utilisation_over_makespan": util_mk,
        "makespan": r["makespan"],
        **d,
    }
    b.row(
        f"utilisation ({n} sleep trials)",
        f"{util:.4f}",
        f">= {TARGET_UTILISATION}",
        util >= TARGET_UTILISATION,
    )


# --------------------------------------------------------------------------- 4. stop latency


def bench_stop(b: Bench) -> None:
    n = b.sizes["stop"]
    hb = 1.0
    print(
        f"\n=== 4. stop latency: {n} curve trials (20 steps x 0.02 s), median rule, es_min 4, "
        f"{WORKERS} workers, hb_interval {hb}"
    )
    spec = {
        "name": f"bench-stop-{n}",
        "train_fn": "maggy_core.examples.sleep:curve",
        "searchspace": CURVE_SPACE,
        "num_trials": n,
        "workers": WORKERS,
        "es_policy": "median",
        "es_min": 4,
        "hb_interval": hb,
        "seed": SEED,
    }
    r = run(spec, b.tmp)
    ts = timed(r)
    stopped = [t for t in ts if t["status"] == "early_stopped"]
    print(f"  {len(stopped)} of {len(ts)} trials early-stopped; counts {r['counts']}")
    # Always computed from the trials: stopped trial's end -> next trial start on that worker.
    gaps = []
    for trials in by_worker(ts).values():
        for a, nxt in zip(trials, trials[1:], strict=False):
            if a["status"] == "early_stopped":
                gaps.append(nxt["start"] - (a["start"] + a["duration"]))
    engine = (r.get("engine") or {}).get("stop_latencies")
    fig: dict[str, Any] = {"trials": n, "early_stopped": len(stopped), "hb_interval": hb}
    if gaps:
        print(
            f"  from the trials (stopped trial's end -> next trial's start on its worker), {len(gaps)} values: "
            f"median {ms(pct(gaps, 50))}, p95 {ms(pct(gaps, 95))}, max {ms(max(gaps))}"
        )
        fig["end_to_next_start_s"] = {
            "median": pct(gaps, 50),
            "p95": pct(gaps, 95),
            "max": max(gaps),
            "n": len(gaps),
        }
    if engine is not None:
        lat = [float(x) for x in engine]
        print(
            "  result['engine']['stop_latencies'] is present: seconds from the stop decision (coordinator)"
        )
        print(
            "  to that worker being handed its next trial (the coordinator's assign), not to the trial's start"
        )
        source, values = "engine: decision -> next assignment", lat
    else:
        print(
            "  result['engine']['stop_latencies'] is MISSING: the decision time is not in the result, so the"
        )
        print(
            "  figure below is only the gap from the stopped trial's end to the next trial's start on that worker"
        )
        source, values = "trials: stopped end -> next start", gaps
    if not values:
        print(
            "  no stop latency to report (no stopped trial was followed by another trial on its worker)"
        )
        b.row("stop latency", "n/a", f"median < {ms(TARGET_STOP_S)}, max <= {hb:.0f} s", None)
        b.figures["stop"] = fig
        return
    med, p95, mx = pct(values, 50), pct(values, 95), max(values)
    ok_med, ok_p95, ok_max = med < TARGET_STOP_S, p95 < TARGET_STOP_S, mx <= hb
    print(f"  stop latency ({source}), {len(values)} values:")
    print(f"    median {ms(med)}  (target < {ms(TARGET_STOP_S)}: {yes(ok_med)})")
    print(f"    p95    {ms(p95)}  (target < {ms(TARGET_STOP_S)}: {yes(ok_p95)})")
    print(f"    max    {ms(mx)}  (target never more than hb_interval = {hb:.1f} s: {yes(ok_max)})")
    if engine is not None and gaps:
        print(
            f"  so decision -> next assignment (median {ms(med)}) vs stopped end -> next start on the worker "
            f"(median {ms(pct(gaps, 50))})"
        )
    step_seconds = 0.02  # curve's default report interval
    if engine is not None:
        print(
            f"  a worker sees a stop only at its trial's next report, {step_seconds * 1000:.0f} ms later with curve's "
            f"step_seconds, so roughly {ms(med - step_seconds)} of the median is the engine's own"
        )
    fig.update({"source": source, "median_s": med, "p95_s": p95, "max_s": mx, "n": len(values)})
    b.figures["stop"] = fig
    b.row(
        "stop latency median / p95",
        f"{ms(med)} / {ms(p95)}",
        f"< {ms(TARGET_STOP_S)}",
        ok_med and ok_p95,
    )
    b.row("stop latency max", ms(mx), f"<= hb_interval {hb:.1f} s", ok_max)


# --------------------------------------------------------------------------- 5. whole run


#: Modules Spark's Python daemon may run as (spark.python.daemon.module).
DAEMONS = ("pyspark.daemon", "pyspark/daemon", "maggy_core.spark_daemon")


RECOGNISED = ("jvm", "maggy CLI (driver)")


class TreeSampler(threading.Thread):
    """Samples the RSS of a process and all its descendants every ``interval`` s;
    every ``maps_every`` s also reads each process's memory maps (tensorflow
    libraries, PSS)."""

    def __init__(self, pid: int, interval: float = 0.05, maps_every: float = 1.0) -> None:
        super().__init__(name="tree-sampler", daemon=True)
        import psutil

        self.psutil = psutil
        self.root = psutil.Process(pid)
        self.interval = interval
        self.maps_every = maps_every
        self.halt = threading.Event()
        self.peak = 0
        self.peak_at = 0.0
        self.peak_detail: list[tuple[str, int]] = []
        self.peak_pss = 0
        self.samples = 0
        self.max_procs = 0
        self.tf_paths: set[str] = set()
        self.maps_denied: set[str] = set()
        self.maps_checked: set[int] = set()
        self.created: dict[int, tuple[str, float]] = {}  # pid -> (kind, create time)
        self.packages: dict[str, set[str]] = defaultdict(
            set
        )  # process kind -> site-packages with mapped files
        self.t0 = time.monotonic()

    def _procs(self) -> list[Any]:
        try:
            return [self.root, *self.root.children(recursive=True)]
        except self.psutil.Error:
            return []

    @staticmethod
    def _label(p: Any) -> str:
        try:
            cmd = p.cmdline()
        except Exception:
            return "?"
        text = " ".join(cmd)
        if "java" in os.path.basename(cmd[0] if cmd else ""):
            return "jvm"
        is_python = bool(cmd) and "python" in os.path.basename(cmd[0])
        if is_python and any(d in text for d in DAEMONS):
            try:
                pcmd = p.parent().cmdline()
            except Exception:
                pcmd = []
            # The JVM's own command line names the daemon module too (--conf): look for a Python parent.
            if (
                pcmd
                and "python" in os.path.basename(pcmd[0])
                and any(d in " ".join(pcmd) for d in DAEMONS)
            ):
                return "python worker (forked by the daemon)"
            return f"python daemon ({next(d for d in DAEMONS if d in text)})"
        if "maggy" in text and " run " in f" {text} ":
            return "maggy CLI (driver)"
        return os.path.basename(cmd[0]) if cmd else p.name()

    def run(self) -> None:
        next_maps = 0.0
        while not self.halt.is_set():
            procs = self._procs()
            total, detail = 0, []
            for p in procs:
                try:
                    rss = p.memory_info().rss
                except self.psutil.Error:
                    continue
                total += rss
                detail.append((p, rss))
                # Relabelled every sample: spark-submit's shell script execs into java.
                # A recognised kind is kept: at the end a worker outlives its daemon.
                known = self.created.get(p.pid)
                if (
                    known is None
                    or known[0] not in RECOGNISED
                    and not known[0].startswith("python ")
                ):
                    with contextlib.suppress(self.psutil.Error):
                        self.created[p.pid] = (self._label(p), p.create_time())
            self.samples += 1
            self.max_procs = max(self.max_procs, len(detail))
            if total > self.peak:
                self.peak = total
                self.peak_at = time.monotonic() - self.t0
                self.peak_detail = [
                    (f"{self.created.get(p.pid, (self._label(p),))[0]} [{p.pid}]", rss)
                    for p, rss in detail
                ]
            now = time.monotonic()
            if now >= next_maps:
                next_maps = now + self.maps_every
                pss = 0
                for p, _rss in detail:
                    try:
                        for m in p.memory_maps(grouped=True):
                            pss += getattr(m, "pss", 0)
                            if "tensorflow" in m.path.lower():
                                self.tf_paths.add(m.path)
                            if "site-packages/" in m.path:
                                pkg = m.path.split("site-packages/", 1)[1].split("/", 1)[0]
                                self.packages[self.created.get(p.pid, (self._label(p),))[0]].add(
                                    pkg
                                )
                        self.maps_checked.add(p.pid)
                    except self.psutil.AccessDenied:
                        self.maps_denied.add(f"{p.pid}")
                    except self.psutil.Error:
                        pass
                self.peak_pss = max(self.peak_pss, pss)
            self.halt.wait(self.interval)


def bench_wholerun(b: Bench) -> None:
    n = b.sizes["wholerun"]
    print(
        f"\n=== 5. whole run: `maggy run` CLI subprocess, {n} sleep trials as in 3, {MASTER}, Spark start-up included"
    )
    import yaml

    spec = {
        "name": f"bench-cli-{n}",
        "train_fn": "maggy_core.examples.sleep:train",
        "searchspace": SLEEP_SPACE,
        "num_trials": n,
        "workers": WORKERS,
        "es_policy": "none",
        "seed": SEED,
    }
    spec_path = b.tmp / f"bench-cli-{n}.yaml"
    spec_path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    maggy = ROOT / ".venv" / "bin" / "maggy"
    tries = iter(range(100))

    def attempt() -> tuple[int, float, float, TreeSampler, Path, Path]:
        results = b.tmp / f"cli-results-{next(tries)}"
        cmd = [str(maggy), "run", str(spec_path), "--master", MASTER, "--results-dir", str(results)]
        print(f"  $ {' '.join(cmd)}", flush=True)
        out_path, err_path = b.tmp / "cli.stdout", b.tmp / "cli.stderr"
        with out_path.open("wb") as out, err_path.open("wb") as err:
            t0, t0_unix = time.monotonic(), time.time()
            proc = subprocess.Popen(cmd, stdout=out, stderr=err, cwd=b.tmp)
            sampler = TreeSampler(proc.pid)
            sampler.start()
            rc = proc.wait()
            wall = time.monotonic() - t0
            sampler.halt.set()
            sampler.join()
        print(f"    -> exit code {rc}, wall {wall:.2f} s", flush=True)
        return rc, wall, t0_unix, sampler, results, err_path

    (rc, wall, t0_unix, sampler, results, err_path), other_cores = quietly("the CLI run", attempt)
    proc_pid = sampler.root.pid
    print(
        f"  exit code {rc}, wall {wall:.2f} s  (target < {TARGET_WALL_S:.0f} s: {yes(wall < TARGET_WALL_S)})"
    )
    if rc != 0:
        print(
            "  stderr tail:\n    "
            + "\n    ".join(err_path.read_text(errors="replace").splitlines()[-15:])
        )
    result_files = list(results.glob("*/result.json"))
    trial_part, ph = None, None
    if result_files:
        r = json.loads(result_files[0].read_text())
        ts = timed(r)
        first, last_end = ts[0]["start"], max(t["start"] + t["duration"] for t in ts)
        trial_part = last_end - first
        ph = phases(r)
        print("  where the wall time went:")
        print(
            f"    {r['started'] - t0_unix:6.2f} s  process start -> experiment created (imports, spec, Redis)"
        )
        print(
            f"    {ph['spark_context']:6.2f} s  -> Spark job start (JVM launch via spark-submit, SparkContext)"
        )
        print(
            f"    {ph['workers_up']:6.2f} s  -> first trial start (task launch, Python workers start, register)"
        )
        print(
            f"    {ph['trials']:6.2f} s  trials: first start -> last end (sum of durations {sum(t['duration'] for t in ts):.2f} "
            f"worker-s = {sum(t['duration'] for t in ts) / WORKERS:.2f} s on {WORKERS} workers)"
        )
        print(
            f"    {t0_unix + wall - last_end:6.2f} s  last trial end -> process exit (result, Spark stop, JVM exit)"
        )
        job_start = r["ended"] - r["makespan"]
        print(
            "  process and trial events, seconds after the CLI was started (process creation times +-0.01 s):"
        )
        # psutil's create times are boot time + clock ticks, off by some 0.1 s from time.time():
        # shift them so that the CLI process was created at the moment it was started.
        skew = sampler.created[proc_pid][1] - t0_unix if proc_pid in sampler.created else 0.0
        events = [
            (c - skew - t0_unix, f"{kind} created [{pid}]")
            for pid, (kind, c) in sampler.created.items()
            if ("python" in kind or kind == "jvm") and pid != proc_pid
        ]
        events.append((r["started"] - t0_unix, "experiment created (coordinator)"))
        events.append((job_start - t0_unix, "Spark job start (SparkContext ready)"))
        for w, v in sorted(by_worker(ts).items()):
            events.append((v[0]["start"] - t0_unix, f"worker {w} starts its first trial"))
        for at, what in sorted(events):
            print(f"    {at:6.2f}  {what}")
    gb = sampler.peak / 1e9
    ok_mem = sampler.peak < TARGET_MEM_BYTES
    print(
        f"  peak RSS of the process tree: {gb:.3f} GB at t={sampler.peak_at:.1f} s "
        f"(target < {TARGET_MEM_BYTES / 1e9:.1f} GB: {yes(ok_mem)}); {sampler.samples} samples every 50 ms, "
        f"up to {sampler.max_procs} processes"
    )
    print("  at the peak (RSS per process; RSS double-counts pages shared by forked workers):")
    for label, rss in sorted(sampler.peak_detail, key=lambda x: -x[1]):
        if rss:
            print(f"    {rss / 1e6:8.1f} MB  {label}")
    print(
        f"  peak PSS of the tree (shared pages split, sampled every 1 s): {sampler.peak_pss / 1e9:.3f} GB"
    )
    tf = bool(sampler.tf_paths)
    denied = (
        f"; memory maps denied for pids {sorted(sampler.maps_denied)}"
        if sampler.maps_denied
        else ""
    )
    print(
        f"  tensorflow mapped by any process of the tree: {'YES' if tf else 'no'} "
        f"(memory maps of {len(sampler.maps_checked)} processes checked{denied})"
    )
    for path in sorted(sampler.tf_paths)[:10]:
        print(f"    {path}")
    if sampler.packages:
        print("  site-packages with native files mapped, per kind of process:")
        for label, pkgs in sorted(sampler.packages.items()):
            print(f"    {label}: {', '.join(sorted(pkgs)) or '-'}")
    b.figures["wholerun"] = {
        "trials": n,
        "exit_code": rc,
        "wall_s": wall,
        "other_cores": other_cores,
        "trial_span_s": trial_part,
        "phases": ph,
        "packages_mapped": {k: sorted(v) for k, v in sampler.packages.items()},
        "peak_rss_bytes": sampler.peak,
        "peak_pss_bytes": sampler.peak_pss,
        "peak_detail": sampler.peak_detail,
        "tensorflow_mapped": tf,
        "tensorflow_paths": sorted(sampler.tf_paths),
        "processes_max": sampler.max_procs,
    }
    b.row(
        f"whole run wall ({n} trials, CLI)",
        f"{wall:.2f} s",
        f"< {TARGET_WALL_S:.0f} s",
        wall < TARGET_WALL_S and rc == 0,
    )
    b.row("whole run peak RSS (tree)", f"{gb:.3f} GB", f"< {TARGET_MEM_BYTES / 1e9:.1f} GB", ok_mem)
    b.row("tensorflow mapped in the tree", "yes" if tf else "no", "no", not tf)


# --------------------------------------------------------------------------- other load on the machine


class _ForeignSampler(threading.Thread):
    """Adds up the CPU time of every process that is not this benchmark's (this
    process, its descendants, the Redis server), sampling all processes every
    ``interval`` s. A process that starts and ends between two samples is missed."""

    def __init__(self, interval: float = 0.25) -> None:
        super().__init__(name="foreign-cpu", daemon=True)
        self.interval = interval
        self.lock = threading.Lock()
        self.last: dict[tuple[int, float], float] = {}
        self.per: dict[tuple[int, float], float] = defaultdict(float)  # foreign process -> CPU seen
        self.labels: dict[tuple[int, float], str] = {}
        self.mine: set[tuple[int, float]] = set()
        self.total = 0.0
        self._sample(first=True)

    def _sample(self, first: bool = False) -> None:
        import psutil

        me = os.getpid()
        rows = {}
        for p in psutil.process_iter(
            ["pid", "ppid", "create_time", "cpu_times", "name", "cmdline"]
        ):
            info = p.info
            if info["cpu_times"] is None or info["create_time"] is None:
                continue
            rows[info["pid"]] = info
        children: dict[int, list[int]] = defaultdict(list)
        for pid, info in rows.items():
            children[info["ppid"]].append(pid)
        tree, todo = set(), [me]
        while todo:
            pid = todo.pop()
            tree.add(pid)
            todo.extend(children.get(pid, []))
        with self.lock:
            for pid, info in rows.items():
                key = (pid, info["create_time"])
                cpu = info["cpu_times"].user + info["cpu_times"].system
                if pid in tree:
                    self.mine.add(key)
                prev = self.last.get(key)
                self.last[key] = cpu
                if key in self.mine or info["name"] == "redis-server":
                    continue
                delta = cpu - prev if prev is not None else (0.0 if first else cpu)
                if delta > 0:
                    self.total += delta
                    self.per[key] += delta
                    if key not in self.labels:
                        cmd = info["cmdline"] or [info["name"] or "?"]
                        self.labels[key] = " ".join(
                            os.path.basename(c) if i == 0 else c for i, c in enumerate(cmd)
                        )[:60]

    def run(self) -> None:
        while True:
            time.sleep(self.interval)
            with contextlib.suppress(Exception):
                self._sample()

    def snapshot(self) -> tuple[float, dict[tuple[int, float], float]]:
        with self.lock:
            return self.total, dict(self.per)


_FOREIGN: _ForeignSampler | None = None


def _foreign() -> _ForeignSampler:
    global _FOREIGN
    if _FOREIGN is None:
        _FOREIGN = _ForeignSampler()
        _FOREIGN.start()
    return _FOREIGN


class OtherCpu:
    """CPU used by other processes (not this benchmark's tree, not Redis) from now to :meth:`stop`."""

    def __init__(self) -> None:
        self.t0 = time.monotonic()
        self.total0, self.per0 = _foreign().snapshot()

    def stop(self) -> tuple[float, float]:
        total, _per = _foreign().snapshot()
        return total - self.total0, time.monotonic() - self.t0

    def top(self, k: int = 3) -> str:
        """The ``k`` other processes that used the most CPU since the start."""
        _total, per = _foreign().snapshot()
        deltas = sorted(
            ((v - self.per0.get(key, 0.0), key) for key, v in per.items()), reverse=True
        )[:k]
        labels = _foreign().labels
        return "; ".join(f"{labels.get(key, key[0])} {d:.1f} s" for d, key in deltas if d >= 0.5)


def wait_for_quiet(limit: float, window: float = 3.0, cores: float = 0.2) -> None:
    """Wait up to ``limit`` seconds until other processes use less than ``cores`` over ``window`` s."""
    t0 = time.monotonic()
    while True:
        meter = OtherCpu()
        time.sleep(window)
        other, secs = meter.stop()
        if other / secs < cores:
            waited = time.monotonic() - t0
            if waited > window + 0.5:
                print(f"\n[waited {waited:.0f} s for the machine to be quiet]")
            return
        if time.monotonic() - t0 > limit:
            print(
                f"\n[machine still busy after {limit:.0f} s ({other / secs:.2f} cores used by others): going on]"
            )
            return


# --------------------------------------------------------------------------- main

MEASURES = {
    "dispatch": bench_dispatch,
    "scaling": bench_scaling,
    "utilisation": bench_utilisation,
    "stop": bench_stop,
    "wholerun": bench_wholerun,
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small sizes, a smoke run")
    p.add_argument(
        "--only",
        choices=sorted(MEASURES),
        action="append",
        help="run only this measure (repeatable)",
    )
    p.add_argument("--json", metavar="PATH", help="also write the figures as JSON to PATH")
    p.add_argument(
        "--wait-idle",
        type=float,
        default=0,
        metavar="SECONDS",
        help="before each experiment, wait up to SECONDS for other processes to use < 0.2 cores",
    )
    p.add_argument(
        "--retries",
        type=int,
        default=0,
        metavar="N",
        help=f"run an experiment up to N more times while other processes use > {DISTURBED} cores during it",
    )
    p.add_argument(
        "--keep",
        action="store_true",
        help="keep the temporary directory (specs, results, CLI logs)",
    )
    args = p.parse_args(argv)
    QUIET["wait"], QUIET["retries"] = args.wait_idle, args.retries

    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("maggy").setLevel(logging.WARNING)
    logging.getLogger("py4j").setLevel(logging.WARNING)

    sizes = SIZES["quick" if args.quick else "full"]
    tmp = Path(tempfile.mkdtemp(prefix="maggy-bench-"))
    b = Bench(sizes, tmp)
    names = args.only or list(MEASURES)
    import pyspark

    load = os.getloadavg()
    print(
        f"maggy engine benchmark {datetime.now().isoformat(timespec='seconds')}  "
        f"({'quick' if args.quick else 'full'}: {sizes})"
    )
    print(
        f"python {sys.version.split()[0]}, pyspark {pyspark.__version__}, {os.cpu_count()} cores, "
        f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; temp dir {tmp}"
    )
    t_all = time.monotonic()
    try:
        for name in [n for n in MEASURES if n in names]:
            load = os.getloadavg()
            print(f"\n[{name}: load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}]")
            meter = OtherCpu()
            try:
                MEASURES[name](b)
            except Exception as exc:  # one failing measure must not hide the others
                import traceback

                traceback.print_exc()
                print(f"  !! {name} failed: {type(exc).__name__}: {exc}")
                b.row(name, "FAILED", "-", None)
            other, secs = meter.stop()
            b.interference[name] = other / secs if secs else math.nan
            top = meter.top()
            print(
                f"  [other processes on the machine (not this benchmark, not Redis) used {other:.1f} CPU-s in "
                f"{secs:.0f} s = {other / secs:.2f} of {os.cpu_count()} cores during {name}, waits included"
                f"{' (mostly: ' + top + ')' if top else ''}]"
            )
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)

    print(
        f"\n=== summary ({'quick' if args.quick else 'full'} run, {time.monotonic() - t_all:.0f} s in all)"
    )
    w1 = max([len(r[0]) for r in b.summary] + [7])
    w2 = max([len(r[1]) for r in b.summary] + [6])
    w3 = max([len(r[2]) for r in b.summary] + [6])
    print(f"  {'measure':<{w1}}  {'figure':>{w2}}  {'target':<{w3}}  met?")
    for measure, figure, target, met in b.summary:
        print(f"  {measure:<{w1}}  {figure:>{w2}}  {target:<{w3}}  {yes(met)}")
    if b.interference:
        print(
            "  other processes' CPU during each measure (cores): "
            + ", ".join(f"{k} {v:.2f}" for k, v in b.interference.items())
        )
    if args.json:
        out = {
            "interference_cores": b.interference,
            "date": datetime.now().isoformat(timespec="seconds"),
            "quick": args.quick,
            "sizes": sizes,
            "figures": b.figures,
            "summary": [
                dict(zip(("measure", "figure", "target", "met"), r, strict=True)) for r in b.summary
            ],
        }
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=2, default=str) + "\n", encoding="utf-8")
        print(f"figures written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
