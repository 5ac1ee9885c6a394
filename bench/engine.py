#!/usr/bin/env python
"""Benchmark of the maggy engine: dispatch cost, scaling, utilisation, stop latency, whole run.

Run from the project root::

    .venv/bin/python bench/engine.py            # full run (a few minutes)
    .venv/bin/python bench/engine.py --quick    # smaller sizes, a smoke run
    .venv/bin/python bench/engine.py --only dispatch --json /tmp/engine.json

It prints figures, the target next to each figure and whether it is met; it asserts
nothing. Every experiment runs on ``local[4]`` with 4 workers, against the Redis
that the engine picks by default (``redis://127.0.0.1:6379/0`` when it answers).
Specs and results go to a temporary directory that is removed at the end
(``--keep`` keeps it).

Measurements (each a function below):

1. ``dispatch``    -- per-trial overhead with no-op trials: N and 10 N trials, the
                      difference divided by 9 N, so Spark start-up cancels out.
2. ``scaling``     -- the same at 10 N and 100 N trials, and whether the cost per trial
                      grows with the number of finished trials (first vs last 10 %).
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
    "full": {"n": 30, "scaling": (300, 3000), "util": 60, "stop": 40, "wholerun": 60},
    "quick": {"n": 10, "scaling": (100, 1000), "util": 20, "stop": 20, "wholerun": 20},
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
        self._noop_runs: dict[int, dict[str, Any]] = {}

    def row(self, measure: str, figure: str, target: str, met: bool | None) -> None:
        self.summary.append((measure, figure, target, met))

    def noop_run(self, num_trials: int) -> dict[str, Any]:
        """One no-op experiment of ``num_trials`` (cached: dispatch and scaling share runs)."""
        if num_trials not in self._noop_runs:
            spec = {
                "name": f"bench-noop-{num_trials}",
                "train_fn": "maggy_core.examples.sleep:noop",
                "searchspace": NOOP_SPACE,
                "num_trials": num_trials,
                "workers": WORKERS,
                "es_policy": "none",
                "seed": SEED,
            }
            self._noop_runs[num_trials] = run(spec, self.tmp)
        return self._noop_runs[num_trials]


def run(spec_dict: dict[str, Any], tmp: Path) -> dict[str, Any]:
    """Run one experiment in this process; add ``_wall`` (seconds of run_experiment)."""
    from maggy_core.runner import run_experiment
    from maggy_core.spec import ExperimentSpec

    spec = ExperimentSpec.from_dict(spec_dict)
    print(f"  running {spec.name}: {spec.num_trials} trials, {spec.workers} workers on {MASTER} ...",
          flush=True)
    t0 = time.monotonic()
    result = run_experiment(spec, master=MASTER, results_dir=tmp / "results")
    result["_wall"] = time.monotonic() - t0
    ended = [t for t in result["trials"] if t["status"] in ("finished", "early_stopped")]
    print(f"    -> status {result['status']}, {len(ended)}/{spec.num_trials} trials ended ok, "
          f"makespan {result['makespan']:.3f} s, run_experiment wall {result['_wall']:.2f} s", flush=True)
    if result["status"] != "finished":
        print(f"    !! experiment did not finish: {result['reason']}", flush=True)
    return result


def timed(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Trials that have a start and a duration, sorted by start."""
    ts = [t for t in result["trials"] if t.get("start") is not None and t.get("duration") is not None]
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


def timeline(result: dict[str, Any]) -> str:
    """Where the wall time of one in-process run went."""
    ts = timed(result)
    first, last_end = ts[0]["start"], max(t["start"] + t["duration"] for t in ts)
    return (f"coordinator created -> first trial start {first - result['started']:.3f} s "
            f"(Spark context + task launch + worker start-up); trials {last_end - first:.3f} s; "
            f"last trial end -> result {result['ended'] - last_end:.3f} s; "
            f"makespan (Spark job start -> end) {result['makespan']:.3f} s; "
            f"run_experiment wall {result['_wall']:.3f} s")


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
    print(f"\n=== 1. dispatch: no-op trials, {WORKERS} workers, {MASTER}, es_policy none; N={n} vs 10N={10 * n}")
    small, big = b.noop_run(n), b.noop_run(10 * n)
    d_makespan = (big["makespan"] - small["makespan"]) / (9 * n)
    d_span = (span(big) - span(small)) / (9 * n)
    steady, k = steady_state(big)
    for r in (small, big):
        counts = {w: len(v) for w, v in sorted(by_worker(timed(r)).items())}
        print(f"  {r['spec']['num_trials']:>5} trials: makespan {r['makespan']:.3f} s, trial span "
              f"{span(r):.3f} s, trials per worker {counts}")
        print(f"        {timeline(r)}")
    print(f"  per trial from makespan   (makespan(10N)-makespan(N))/9N : {ms(d_makespan)}")
    print(f"  per trial from trial span (span(10N)-span(N))/9N         : {ms(d_span)}   <- headline")
    print(f"  steady state in the 10N run (all {WORKERS} workers up, {k} trial starts): {ms(steady)}")
    per = d_span
    tput = 1.0 / per if per > 0 else math.inf
    print("  headline = trial-span difference: it leaves out the Spark job's task launch, the Python")
    print("  workers' start-up and the shutdown, which vary run to run by more than the trials cost.")
    print(f"  per-trial overhead: {ms(per)}  (target < {ms(TARGET_DISPATCH_S)}: {yes(per < TARGET_DISPATCH_S)})")
    print(f"  throughput: {tput:.0f} trials/s with {WORKERS} workers "
          f"(per worker: one trial every {ms(per * WORKERS)})")
    print("  reference points quoted from the issue, NOT measured here:")
    print(f"    Hyperopt SparkTrials ~{REF_HYPEROPT_SPARKTRIALS_S:.0f} s/trial -> we are "
          f"{REF_HYPEROPT_SPARKTRIALS_S / per:.0f}x faster")
    print(f"    Optuna in-process threads ~{ms(REF_OPTUNA_THREADS_S)}/trial -> ratio ours/Optuna = "
          f"{per / REF_OPTUNA_THREADS_S:.2f}")
    b.figures["dispatch"] = {
        "n": n, "makespan_n": small["makespan"], "makespan_10n": big["makespan"],
        "span_n": span(small), "span_10n": span(big),
        "per_trial_from_makespan_s": d_makespan, "per_trial_from_span_s": d_span,
        "steady_state_per_trial_s": steady, "trials_per_second": tput,
        "ratio_vs_hyperopt_sparktrials_ref": REF_HYPEROPT_SPARKTRIALS_S / per,
        "ratio_vs_optuna_threads_ref": per / REF_OPTUNA_THREADS_S,
    }
    b.row("dispatch: per-trial overhead (span diff)", ms(per), f"< {ms(TARGET_DISPATCH_S)}",
          per < TARGET_DISPATCH_S)


# --------------------------------------------------------------------------- 2. scaling


def gap_profile(result: dict[str, Any], buckets: int = 10) -> tuple[list[float], list[float], list[int]]:
    """Per-worker gaps between consecutive trial starts, grouped by the global start
    rank of the earlier trial into ``buckets`` equal parts.

    Returns mean gap and median gap (seconds) per bucket and the number of gaps.
    """
    ts = timed(result)
    rank = {t["trial_id"]: i for i, t in enumerate(ts)}
    n = len(ts)
    groups: list[list[float]] = [[] for _ in range(buckets)]
    for trials in by_worker(ts).values():
        for a, nxt in zip(trials, trials[1:], strict=False):
            groups[min(buckets - 1, rank[a["trial_id"]] * buckets // n)].append(nxt["start"] - a["start"])
    means = [statistics.fmean(g) if g else math.nan for g in groups]
    medians = [statistics.median(g) if g else math.nan for g in groups]
    return means, medians, [len(g) for g in groups]


def bench_scaling(b: Bench) -> None:
    n = b.sizes["n"]
    mid, large = b.sizes["scaling"]
    print(f"\n=== 2. scaling: no-op trials at {mid} and {large} (baseline N={n} for start-up)")
    base, r_mid, r_large = b.noop_run(n), b.noop_run(mid), b.noop_run(large)
    c_mid = (span(r_mid) - span(base)) / (mid - n)
    c_large = (span(r_large) - span(base)) / (large - n)
    marginal = (span(r_large) - span(r_mid)) / (large - mid)
    c_mid_mk = (r_mid["makespan"] - base["makespan"]) / (mid - n)
    c_large_mk = (r_large["makespan"] - base["makespan"]) / (large - n)
    print(f"  {large} trials: {timeline(r_large)}")
    print(f"  per trial at {mid:>5}: {ms(c_mid)} (trial span), {ms(c_mid_mk)} (makespan)   [(x - x(N)) / ({mid}-N)]")
    print(f"  per trial at {large:>5}: {ms(c_large)} (trial span), {ms(c_large_mk)} (makespan)   [(x - x(N)) / ({large}-N)]")
    print(f"  marginal per trial from {mid} to {large}: {ms(marginal)} (trial span)")
    print(f"  ratio per-trial({large}) / per-trial({mid}) = {c_large / c_mid:.2f}")
    means, medians, counts = gap_profile(r_large)
    print(f"  {large}-trial run, per-worker gap between consecutive trial starts, by decile of trial start")
    print("  (a gap = one trial on one worker incl. its dispatch; wall cost per trial = gap / workers):")
    print("    decile     " + " ".join(f"{i + 1:>7}" for i in range(10)))
    print("    mean ms    " + " ".join(f"{m * 1000:7.2f}" for m in means))
    print("    median ms  " + " ".join(f"{m * 1000:7.2f}" for m in medians))
    print("    gaps       " + " ".join(f"{c:7d}" for c in counts))
    ratio = means[-1] / means[0]
    ratio_med = medians[-1] / medians[0]
    print(f"  first 10 %: mean gap {ms(means[0])} (= {ms(means[0] / WORKERS)} wall per trial); "
          f"last 10 %: mean gap {ms(means[-1])} (= {ms(means[-1] / WORKERS)} wall per trial)")
    ok = ratio <= TARGET_GROWTH_RATIO
    print(f"  growth ratio last/first 10 %: {ratio:.2f} on means, {ratio_med:.2f} on medians "
          f"(target close to 1, read here as <= {TARGET_GROWTH_RATIO}: {yes(ok)})")
    b.figures["scaling"] = {
        "sizes": [n, mid, large], "span": [span(base), span(r_mid), span(r_large)],
        "makespan": [base["makespan"], r_mid["makespan"], r_large["makespan"]],
        "per_trial_mid_s": c_mid, "per_trial_large_s": c_large, "marginal_s": marginal,
        "per_trial_mid_makespan_s": c_mid_mk, "per_trial_large_makespan_s": c_large_mk,
        "gap_mean_by_decile_s": means, "gap_median_by_decile_s": medians,
        "growth_ratio_mean": ratio, "growth_ratio_median": ratio_med,
    }
    b.row(f"scaling: per-trial at {mid} / at {large}", f"{ms(c_mid)} / {ms(c_large)}",
          f"< {ms(TARGET_DISPATCH_S)}", max(c_mid, c_large) < TARGET_DISPATCH_S)
    b.row("scaling: growth last/first 10 % (gap means)", f"{ratio:.2f}", f"<= {TARGET_GROWTH_RATIO}", ok)


# --------------------------------------------------------------------------- 3. utilisation


def idle_breakdown(result: dict[str, Any], workers: int) -> dict[str, float]:
    """Worker-seconds of the trial span that were busy and idle (head, gaps, tail)."""
    ts = timed(result)
    first = ts[0]["start"]
    last_end = max(t["start"] + t["duration"] for t in ts)
    groups = by_worker(ts)
    head = sum(v[0]["start"] - first for v in groups.values())
    gaps_list = [b["start"] - (a["start"] + a["duration"]) for v in groups.values()
                 for a, b in zip(v, v[1:], strict=False)]
    tail = sum(last_end - (v[-1]["start"] + v[-1]["duration"]) for v in groups.values())
    missing = (workers - len(groups)) * (last_end - first)  # workers that ran no trial at all
    busy = sum(t["duration"] for t in ts)
    return {"busy": busy, "head": head, "gaps": sum(gaps_list), "tail": tail + missing,
            "gap_mean": statistics.fmean(gaps_list) if gaps_list else math.nan,
            "gap_max": max(gaps_list) if gaps_list else math.nan, "gap_count": len(gaps_list),
            "span": last_end - first, "last_handout": ts[-1]["start"], "last_end": last_end}


def bench_utilisation(b: Bench) -> None:
    n = b.sizes["util"]
    print(f"\n=== 3. utilisation: {n} sleep trials (seconds log-uniform in [0.4, 2.0], 10 steps), "
          f"{WORKERS} workers, {MASTER}, es_policy none, seed {SEED}")
    spec = {
        "name": f"bench-util-{n}", "train_fn": "maggy_core.examples.sleep:train",
        "searchspace": SLEEP_SPACE, "num_trials": n, "workers": WORKERS,
        "es_policy": "none", "seed": SEED,
    }
    r = run(spec, b.tmp)
    d = idle_breakdown(r, WORKERS)
    cap = WORKERS * d["span"]
    util = d["busy"] / cap
    util_mk = d["busy"] / (WORKERS * r["makespan"])
    print(f"  {timeline(r)}")
    print(f"  sum of trial durations {d['busy']:.3f} s; trial span (first start -> last end) {d['span']:.3f} s; "
          f"capacity {WORKERS} x span = {cap:.3f} worker-s")
    print(f"  utilisation = busy / (workers x span) = {util:.4f}  (target >= {TARGET_UTILISATION}: "
          f"{yes(util >= TARGET_UTILISATION)})")
    print(f"  (over the result's makespan, Spark job start -> end, {r['makespan']:.3f} s: {util_mk:.4f})")
    idle = cap - d["busy"]
    print(f"  idle {idle:.3f} worker-s within the span:")
    for part, label in (("head", "head: before each worker's first trial"),
                        ("gaps", f"between trials on a worker ({d['gap_count']} gaps, mean {ms(d['gap_mean'])}, "
                                 f"max {ms(d['gap_max'])})"),
                        ("tail", "tail: after each worker's last trial, to the last trial end")):
        share = d[part] / idle if idle > 0 else math.nan
        print(f"    {label}: {d[part]:.3f} worker-s ({share * 100:.1f} % of idle, "
              f"{d[part] / cap * 100:.2f} % of capacity)")
    print(f"  the last trial was handed out {d['last_handout'] - (d['last_end'] - d['span']):.3f} s into the span "
          f"and ran {d['last_end'] - d['last_handout']:.3f} s: after that only the trials still running "
          f"use the workers (the tail)")
    b.figures["utilisation"] = {"trials": n, "utilisation": util, "utilisation_over_makespan": util_mk,
                                "makespan": r["makespan"], **d}
    b.row(f"utilisation ({n} sleep trials)", f"{util:.4f}", f">= {TARGET_UTILISATION}", util >= TARGET_UTILISATION)


# --------------------------------------------------------------------------- 4. stop latency


def bench_stop(b: Bench) -> None:
    n = b.sizes["stop"]
    hb = 1.0
    print(f"\n=== 4. stop latency: {n} curve trials (20 steps x 0.02 s), median rule, es_min 4, "
          f"{WORKERS} workers, hb_interval {hb}")
    spec = {
        "name": f"bench-stop-{n}", "train_fn": "maggy_core.examples.sleep:curve",
        "searchspace": CURVE_SPACE, "num_trials": n, "workers": WORKERS,
        "es_policy": "median", "es_min": 4, "hb_interval": hb, "seed": SEED,
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
        print(f"  from the trials (stopped trial's end -> next trial's start on its worker), {len(gaps)} values: "
              f"median {ms(pct(gaps, 50))}, p95 {ms(pct(gaps, 95))}, max {ms(max(gaps))}")
        fig["end_to_next_start_s"] = {"median": pct(gaps, 50), "p95": pct(gaps, 95), "max": max(gaps), "n": len(gaps)}
    if engine is not None:
        lat = [float(x) for x in engine]
        print("  result['engine']['stop_latencies'] is present: seconds from the stop decision (coordinator)")
        print("  to that worker being handed its next trial (the coordinator's assign), not to the trial's start")
        source, values = "engine: decision -> next assignment", lat
    else:
        print("  result['engine']['stop_latencies'] is MISSING: the decision time is not in the result, so the")
        print("  figure below is only the gap from the stopped trial's end to the next trial's start on that worker")
        source, values = "trials: stopped end -> next start", gaps
    if not values:
        print("  no stop latency to report (no stopped trial was followed by another trial on its worker)")
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
        print(f"  so decision -> next assignment (median {ms(med)}) vs stopped end -> next start on the worker "
              f"(median {ms(pct(gaps, 50))})")
    fig.update({"source": source, "median_s": med, "p95_s": p95, "max_s": mx, "n": len(values)})
    b.figures["stop"] = fig
    b.row("stop latency median / p95", f"{ms(med)} / {ms(p95)}", f"< {ms(TARGET_STOP_S)}", ok_med and ok_p95)
    b.row("stop latency max", ms(mx), f"<= hb_interval {hb:.1f} s", ok_max)


# --------------------------------------------------------------------------- 5. whole run


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
        if "pyspark.daemon" in text or "pyspark/daemon" in text:
            return "python (pyspark daemon/worker)"
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
            self.samples += 1
            self.max_procs = max(self.max_procs, len(detail))
            if total > self.peak:
                self.peak = total
                self.peak_at = time.monotonic() - self.t0
                self.peak_detail = [(f"{self._label(p)} [{p.pid}]", rss) for p, rss in detail]
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
                        self.maps_checked.add(p.pid)
                    except self.psutil.AccessDenied:
                        self.maps_denied.add(f"{p.pid}")
                    except self.psutil.Error:
                        pass
                self.peak_pss = max(self.peak_pss, pss)
            self.halt.wait(self.interval)


def bench_wholerun(b: Bench) -> None:
    n = b.sizes["wholerun"]
    print(f"\n=== 5. whole run: `maggy run` CLI subprocess, {n} sleep trials as in 3, {MASTER}, Spark start-up included")
    import yaml

    spec = {
        "name": f"bench-cli-{n}", "train_fn": "maggy_core.examples.sleep:train",
        "searchspace": SLEEP_SPACE, "num_trials": n, "workers": WORKERS,
        "es_policy": "none", "seed": SEED,
    }
    spec_path = b.tmp / f"bench-cli-{n}.yaml"
    spec_path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    results = b.tmp / "cli-results"
    maggy = ROOT / ".venv" / "bin" / "maggy"
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
    print(f"  exit code {rc}, wall {wall:.2f} s  (target < {TARGET_WALL_S:.0f} s: {yes(wall < TARGET_WALL_S)})")
    if rc != 0:
        print("  stderr tail:\n    " + "\n    ".join(err_path.read_text(errors="replace").splitlines()[-15:]))
    result_files = list(results.glob("*/result.json"))
    trial_part = None
    if result_files:
        r = json.loads(result_files[0].read_text())
        ts = timed(r)
        first, last_end = ts[0]["start"], max(t["start"] + t["duration"] for t in ts)
        trial_part = last_end - first
        print(f"  of which: process start -> experiment created {r['started'] - t0_unix:.2f} s (imports, spec); "
              f"-> first trial start {first - r['started']:.2f} s (Spark + workers); trials {trial_part:.2f} s "
              f"(makespan {r['makespan']:.2f} s); last trial end -> process exit {t0_unix + wall - last_end:.2f} s "
              f"(result, Spark stop, JVM exit)")
    gb = sampler.peak / 1e9
    ok_mem = sampler.peak < TARGET_MEM_BYTES
    print(f"  peak RSS of the process tree: {gb:.3f} GB at t={sampler.peak_at:.1f} s "
          f"(target < {TARGET_MEM_BYTES / 1e9:.1f} GB: {yes(ok_mem)}); {sampler.samples} samples every 50 ms, "
          f"up to {sampler.max_procs} processes")
    print("  at the peak (RSS per process; RSS double-counts pages shared by forked workers):")
    for label, rss in sorted(sampler.peak_detail, key=lambda x: -x[1]):
        print(f"    {rss / 1e6:8.1f} MB  {label}")
    print(f"  peak PSS of the tree (shared pages split, sampled every 1 s): {sampler.peak_pss / 1e9:.3f} GB")
    tf = bool(sampler.tf_paths)
    denied = f"; memory maps denied for pids {sorted(sampler.maps_denied)}" if sampler.maps_denied else ""
    print(f"  tensorflow mapped by any process of the tree: {'YES' if tf else 'no'} "
          f"(memory maps of {len(sampler.maps_checked)} processes checked{denied})")
    for path in sorted(sampler.tf_paths)[:10]:
        print(f"    {path}")
    b.figures["wholerun"] = {"trials": n, "exit_code": rc, "wall_s": wall, "trial_span_s": trial_part,
                             "peak_rss_bytes": sampler.peak, "peak_pss_bytes": sampler.peak_pss,
                             "peak_detail": sampler.peak_detail, "tensorflow_mapped": tf,
                             "tensorflow_paths": sorted(sampler.tf_paths), "processes_max": sampler.max_procs}
    b.row(f"whole run wall ({n} trials, CLI)", f"{wall:.2f} s", f"< {TARGET_WALL_S:.0f} s", wall < TARGET_WALL_S and rc == 0)
    b.row("whole run peak RSS (tree)", f"{gb:.3f} GB", f"< {TARGET_MEM_BYTES / 1e9:.1f} GB", ok_mem)
    b.row("tensorflow mapped in the tree", "yes" if tf else "no", "no", not tf)


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
    p.add_argument("--only", choices=sorted(MEASURES), action="append", help="run only this measure (repeatable)")
    p.add_argument("--json", metavar="PATH", help="also write the figures as JSON to PATH")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory (specs, results, CLI logs)")
    args = p.parse_args(argv)

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("maggy").setLevel(logging.WARNING)
    logging.getLogger("py4j").setLevel(logging.WARNING)

    sizes = SIZES["quick" if args.quick else "full"]
    tmp = Path(tempfile.mkdtemp(prefix="maggy-bench-"))
    b = Bench(sizes, tmp)
    names = args.only or list(MEASURES)
    import pyspark

    load = os.getloadavg()
    print(f"maggy engine benchmark {datetime.now().isoformat(timespec='seconds')}  "
          f"({'quick' if args.quick else 'full'}: {sizes})")
    print(f"python {sys.version.split()[0]}, pyspark {pyspark.__version__}, {os.cpu_count()} cores, "
          f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; temp dir {tmp}")
    t_all = time.monotonic()
    try:
        for name in [n for n in MEASURES if n in names]:
            try:
                MEASURES[name](b)
            except Exception as exc:  # one failing measure must not hide the others
                import traceback

                traceback.print_exc()
                print(f"  !! {name} failed: {type(exc).__name__}: {exc}")
                b.row(name, "FAILED", "-", None)
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)

    print(f"\n=== summary ({'quick' if args.quick else 'full'} run, {time.monotonic() - t_all:.0f} s in all)")
    w1 = max([len(r[0]) for r in b.summary] + [7])
    w2 = max([len(r[1]) for r in b.summary] + [6])
    w3 = max([len(r[2]) for r in b.summary] + [6])
    print(f"  {'measure':<{w1}}  {'figure':>{w2}}  {'target':<{w3}}  met?")
    for measure, figure, target, met in b.summary:
        print(f"  {measure:<{w1}}  {figure:>{w2}}  {target:<{w3}}  {yes(met)}")
    if args.json:
        out = {"date": datetime.now().isoformat(timespec="seconds"), "quick": args.quick, "sizes": sizes,
               "figures": b.figures,
               "summary": [dict(zip(("measure", "figure", "target", "met"), r, strict=True)) for r in b.summary]}
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=2, default=str) + "\n", encoding="utf-8")
        print(f"figures written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
