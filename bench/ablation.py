#!/usr/bin/env python
"""Benchmark of ablation studies: the same 10-component study with fixed and with
adaptive repeats, on 4 workers.

Run from the project root::

    .venv/bin/python bench/ablation.py             # full run (about four minutes)
    .venv/bin/python bench/ablation.py --quick     # one run of each plan, and the CLI run
    .venv/bin/python bench/ablation.py --only study --json /tmp/ablation.json

The study (``ablation: {components: [c0..c9]}``) leaves out switches whose true
effects are graded, from clear (0.2) through small (0.01-0.03) to none (three of
them), and every trial's metric has its own noise (sd 0.01), so small effects need
many repeats and clear ones few. Its training function (:func:`graded_sleep`)
sleeps 0.3-1.5 s, fixed by the component left out and the repeat. Two plans of it:

- ``fixed``: ``repeats: 20``, every component and the base 20 times (220 trials);
- ``adaptive``: ``repeats: {min: 3, max: 20, precision: 0.02}``: every component
  3 times, then more only for the undecided ones.

Measures:

1. ``wholerun`` -- the adaptive study as a user runs it, ``maggy run spec.json`` in a
                   new process (run first, while nothing else of this benchmark
                   runs): wall time from the process start to its exit, Spark
                   start-up included.
2. ``study``    -- ``run_experiment`` in this process for each plan, ``runs`` times
                   (quick 1, full 2), in one SparkContext started and warmed up first
                   (not counted). Per run: trials, how many components were found
                   (significant) and how many of the true effects that is, wrong
                   findings (a useless component significant), the makespan,
                   utilisation = sum of trial times / (workers x makespan) (target >=
                   0.95 with adaptive repeats; the verdict takes the median of the
                   adaptive runs), and where the idle worker-seconds are.

Also printed, per run: the best utilisation its trials allow in the order they
started (on the first free worker, with no overhead at all), a bound for the engine.
The machine has 2 cores and is shared: the output shows the cores other processes
used during each run. Nothing is asserted.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse  # noqa: E402
import heapq  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
from typing import Any  # noqa: E402

# _common sets PYTHONPATH for the Spark workers when imported, before Spark starts.
from bench import _common, _workloads  # noqa: E402
from bench._common import fmt, table  # noqa: E402

WORKERS = 4
MASTER = f"local[{WORKERS},3]"
SEED = 12345
#: The true effect of each component (the metric lost without it).
EFFECTS = {
    "c0": 0.2,
    "c1": 0.1,
    "c2": 0.05,
    "c3": 0.03,
    "c4": 0.02,
    "c5": 0.015,
    "c6": 0.01,
    "c7": 0.0,
    "c8": 0.0,
    "c9": 0.0,
}
COMPONENTS = list(EFFECTS)
NOISE = 0.01
PLANS = {"fixed": 20, "adaptive": {"min": 3, "max": 20, "precision": 0.02}}
TARGET_UTILISATION = 0.95

SIZES = {"full": {"runs": 2}, "quick": {"runs": 1}}
MEASURES = ("study", "wholerun")


def graded_sleep(
    ablated: str | None, components: dict[str, bool], seed: int, reporter: Any
) -> float:
    """A trial of the benchmark's study: sleeps :func:`bench._workloads.ablation_seconds`
    and returns 1 less the effects of the switches turned off, plus its own noise
    (sd :data:`NOISE`, fixed by the component left out and the repeat)."""
    import random

    seconds = _workloads.ablation_seconds(ablated, seed)
    time.sleep(seconds)
    score = 1.0 - sum(EFFECTS[name] for name, on in components.items() if not on)
    score += random.Random(f"noise/{ablated}/{seed}").gauss(0.0, NOISE)
    reporter.broadcast(score, step=1)
    return score


def spec_dict(name: str, plan: str) -> dict[str, Any]:
    return {
        "name": name,
        "train_fn": "bench.ablation:graded_sleep",
        "ablation": {"components": COMPONENTS},
        "ablator": {"name": "loco", "repeats": PLANS[plan]},
        "workers": WORKERS,
        "seed": SEED,
    }


def started_seconds(result: dict[str, Any]) -> list[float]:
    """Each trial's sleep, in the order the trials started."""
    trials = sorted(result["trials"], key=lambda t: t.get("start") or 0.0)
    return [
        _workloads.ablation_seconds(t["params"]["ablated"], t["params"]["seed"]) for t in trials
    ]


def list_schedule(seconds: list[float], workers: int) -> float:
    """Makespan of the trials taken in order by the first free worker, no overhead."""
    free = [0.0] * workers
    for s in seconds:
        heapq.heappush(free, heapq.heappop(free) + s)
    return max(free)


class WaitLog:
    """Records the unix times at which the study's ablator answered WAIT (it had
    nothing to run until a trial ended), for the idle time by cause; in this
    process only (the ``maggy run`` measure has none)."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def __enter__(self) -> WaitLog:
        from maggy_core.ablation.ablators import LOCO
        from maggy_core.optimizers import WAIT

        self._cls, self._suggest = LOCO, LOCO.suggest
        original, times = LOCO.suggest, self.times

        def suggest(ablator: Any) -> Any:
            decision = original(ablator)
            if decision is WAIT:
                times.append(time.time())
            return decision

        LOCO.suggest = suggest  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc: object) -> None:
        self._cls.suggest = self._suggest  # type: ignore[method-assign]


def figures(
    result: dict[str, Any],
    wall: float,
    other_cores: float,
    label: str,
    waits: list[float] | None = None,
) -> dict[str, Any]:
    """A run's figures from its result (``result.json``): time, utilisation, decisions,
    and the idle worker-seconds by cause (``waits``: when the ablator answered WAIT)."""
    trials = _common.trial_times(result)
    makespan = float(result["makespan"])
    busy = sum(t["duration"] for t in trials)
    span = max(t["start"] + t["duration"] for t in trials) - trials[0]["start"] if trials else 0.0
    analysis = result.get("ablation") or {}
    entries = analysis.get("components", [])
    found = {e["component"] for e in entries if e.get("significant")}
    seconds = started_seconds(result)
    ideal = list_schedule(seconds, WORKERS) if seconds else 0.0
    return {
        "run": label,
        "found": len(found),
        "found_true": len(found & {c for c, v in EFFECTS.items() if v > 0}),
        "wrong": len(found - {c for c, v in EFFECTS.items() if v > 0}),
        "found_names": sorted(found),
        "repeats": {e["component"]: e.get("repeats") for e in entries},
        "stopped": {e["component"]: e.get("stopped") for e in entries},
        "bound_utilisation": sum(seconds) / (WORKERS * ideal) if ideal else None,
        "status": result["status"],
        "reason": result.get("reason"),
        "trials": len(trials),
        "trials_ok": sum(1 for t in result["trials"] if t["status"] == "finished"),
        "makespan_s": makespan,
        "sum_trials_s": busy,
        "utilisation": busy / (WORKERS * makespan) if makespan > 0 else None,
        "span_s": span,
        "utilisation_span": busy / (WORKERS * span) if span > 0 else None,
        "idle_s": _common.idle_breakdown(
            trials, _common.job_start(result), makespan, WORKERS, waits
        ),
        "waits": None if waits is None else len(waits),
        "wall_s": wall,
        "outside_s": wall - makespan,
        "analysis_components": len(analysis.get("components", [])),
        "analysis_error": analysis.get("error"),
        "other_cores": other_cores,
    }


def bench_study(runs: int, tmp: Path) -> list[dict[str, Any]]:
    """The study in this process, ``runs`` times, in one SparkContext started first and
    warmed up by a short discarded study (its Python workers are then reused), so that
    the makespan holds the engine's work and not the start of Spark's Python workers."""
    from maggy_core.runner import spark_context

    out = []
    t0 = time.monotonic()
    with spark_context(MASTER, "bench-ablation", None):
        print(f"  SparkContext up in {time.monotonic() - t0:.1f} s (not counted)", flush=True)
        warm = spec_dict("bench-ablation-warmup", "fixed")
        warm["ablation"] = {"components": COMPONENTS[:3]}
        warm["ablator"] = {"name": "loco", "repeats": 1}
        warm["train_fn"] = "bench._workloads:ablation_sleep"
        warm["train_kwargs"] = {"low": 0.05, "high": 0.1}
        t0 = time.monotonic()
        _common.run_engine(warm, tmp, MASTER)
        print(f"  warm-up study (4 trials, discarded) in {time.monotonic() - t0:.1f} s", flush=True)
        for i, plan in [(i, plan) for i in range(runs) for plan in PLANS]:
            label = f"{plan} {i + 1} (warm)"
            print(f"  {label}: run_experiment ...", end=" ", flush=True)
            with WaitLog() as waits:
                result = _common.run_engine(
                    spec_dict(f"bench-ablation-{plan}-{i + 1}", plan), tmp, MASTER
                )
            f = figures(result, result["_wall"], result["_other_cores"], label, waits.times)
            out.append(f)
            print(_one_line(f), flush=True)
    return out


def bench_wholerun(tmp: Path) -> dict[str, Any] | None:
    """The study through ``maggy run`` in a new process: its wall time from start to exit."""
    spec_path = tmp / "bench-ablation-cli.json"
    spec = spec_dict("bench-ablation-cli", "adaptive")
    spec_path.write_text(json.dumps(spec, indent=2), encoding="utf-8")
    results = tmp / "cli-results"
    maggy = Path(sys.executable).parent / "maggy"
    cmd = [str(maggy), "run", str(spec_path), "--master", MASTER, "--results-dir", str(results)]
    cmd.append("--quiet")
    print(f"  $ {' '.join(cmd)}", flush=True)
    meter = _common.OtherCpu()
    t0 = time.monotonic()
    proc = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True, env=os.environ.copy())
    wall = time.monotonic() - t0
    other = meter.cores()
    print(f"    -> exit code {proc.returncode}, wall {wall:.2f} s", flush=True)
    found = list(results.glob("*/result.json"))
    if proc.returncode != 0 or not found:
        tail = "\n    ".join((proc.stderr or proc.stdout).splitlines()[-15:])
        print(f"  !! maggy run failed (exit code {proc.returncode}):\n    {tail}")
        return None
    result = json.loads(found[0].read_text(encoding="utf-8"))
    f = figures(result, wall, other, "adaptive, maggy run (process)")
    f["exit_code"] = proc.returncode
    print(f"    {_one_line(f)}", flush=True)
    return f


def _one_line(f: dict[str, Any]) -> str:
    return (
        f"status {f['status']}, {f['trials_ok']}/{f['trials']} trials finished, found "
        f"{f['found_true']} of {sum(1 for v in EFFECTS.values() if v > 0)} effects "
        f"({f['wrong']} wrong), makespan "
        f"{f['makespan_s']:.2f} s, sum {f['sum_trials_s']:.2f} s, util "
        f"{fmt(f['utilisation'], '.3f')}, wall {f['wall_s']:.2f} s, others used "
        f"{fmt(f['other_cores'])} cores"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--quick", action="store_true", help="one in-process run of each plan: a smoke run"
    )
    p.add_argument(
        "--only", choices=MEASURES, action="append", help="run only this measure (repeatable)"
    )
    p.add_argument(
        "--runs", type=int, metavar="N", help="in-process runs of each plan (default 2; --quick 1)"
    )
    args, mode, sizes = _common.parse_args(p, argv, SIZES, "runs", "runs")
    names = [m for m in MEASURES if not args.only or m in args.only]

    _common.header("maggy ablation benchmark", mode, sizes)
    print(
        f"LOCO study of {len(COMPONENTS)} components (true effects "
        f"{', '.join(f'{v:g}' for v in EFFECTS.values())}; noise sd {NOISE:g} per trial), "
        f"trials of 0.30-1.50 s, {WORKERS} workers on {MASTER}; plans: "
        + "; ".join(f"{k} repeats {v}" for k, v in PLANS.items())
    )

    tmp = Path(tempfile.mkdtemp(prefix="maggy-bench-ablation-"))
    runs: list[dict[str, Any]] = []
    failed = False
    t_all = time.monotonic()
    try:
        # The separate process first: nothing of this benchmark runs beside it.
        if "wholerun" in names:
            print(
                "\n[wholerun: the study as `maggy run` in a new process, Spark start-up included]"
            )
            f = bench_wholerun(tmp)
            if f is None:
                failed = True
            else:
                runs.append(f)
        if "study" in names:
            print(f"\n[study: run_experiment in this process, {sizes['runs']} run(s)]")
            runs += bench_study(sizes["runs"], tmp)
    except Exception as exc:
        traceback.print_exc()
        print(f"!! the benchmark failed: {type(exc).__name__}: {exc}")
        failed = True
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"results kept in {tmp}")
    failed = failed or any(f["status"] != "finished" or f["analysis_error"] for f in runs)

    print(f"\n=== runs ({mode}; makespan: from the Spark job's start to the result)")
    true_effects = sum(1 for v in EFFECTS.values() if v > 0)
    rows = [
        [
            f["run"],
            f"{f['trials_ok']}/{f['trials']}",
            f"{f['found_true']}/{true_effects}",
            f["wrong"],
            fmt(f["makespan_s"]),
            fmt(f["utilisation"], ".3f"),
            fmt(f["bound_utilisation"], ".3f"),
            "/".join(f"{f['idle_s'][k]:.2f}" for k in ("head", "between", "tail")),
            fmt(f["wall_s"]),
            f["analysis_error"] or "ok",
            fmt(f["other_cores"]),
        ]
        for f in runs
    ]
    headers = [
        "run",
        "trials ok",
        "effects found",
        "wrong",
        "makespan s",
        "util",
        "bound",
        "idle head/between/tail w-s",
        "wall s",
        "analysis",
        "others' cores",
    ]
    table(headers, rows)
    print(
        f"  util = sum of trial times / ({WORKERS} workers x makespan); bound: the same trials "
        "in the order they started on the first free worker with no overhead; idle "
        "worker-seconds within the makespan: before each worker's first trial, between its "
        "trials, after its last. wrong: useless components found significant."
    )
    print("\n=== idle worker-seconds by cause (and utilisation over the trials' span)")
    causes = ("head", "dispatch", "waits", "last_trials", "end")
    table(
        ["run", *causes, "idle", "WAITs", "util", "util span"],
        [
            [
                f["run"],
                *(fmt(f["idle_s"][k]) for k in causes),
                fmt(sum(f["idle_s"][k] for k in causes)),
                "-" if f.get("waits") is None else f["waits"],
                fmt(f["utilisation"], ".3f"),
                fmt(f["utilisation_span"], ".3f"),
            ]
            for f in runs
        ],
    )
    print(
        "  head: Spark job start to each worker's first trial; dispatch: gaps between a "
        "worker's trials while the ablator had trials to give (the engine's hand-over); "
        "waits: gaps in which the ablator answered WAIT (its next decision needed trials "
        "still running; not recorded for `maggy run`, counted as dispatch); last_trials: "
        "from each worker's last trial to the study's last (its last trials on fewer "
        "workers); end: from the last trial's end to the end of the Spark job, on every "
        "worker. util span: busy / (workers x first trial start to last trial end)."
    )
    print("\n=== trials and decisions, fixed and adaptive repeats side by side")
    for f in runs:
        print(
            f"  {f['run']}: {f['trials']} trials; repeats "
            + ", ".join(f"{c} {f['repeats'].get(c)} ({f['stopped'].get(c)})" for c in COMPONENTS)
        )
    paired = [r for r in runs if "maggy run" not in r["run"]]
    table(
        ["component", "true effect", *(r["run"] for r in paired)],
        [
            [
                c,
                f"{EFFECTS[c]:g}",
                *(
                    f"{r['repeats'].get(c)} {r['stopped'].get(c)}"
                    + (" *" if c in r["found_names"] else "")
                    for r in paired
                ),
            ]
            for c in COMPONENTS
        ]
        + [["trials", "", *(str(r["trials"]) for r in paired)]],
    )
    print("  per run: repeats and why the component stopped; * found significant")

    def of(plan: str) -> list[dict[str, Any]]:
        return [f for f in runs if f["run"].startswith(f"{plan} ") and "maggy run" not in f["run"]]

    adaptive, fixed = of("adaptive"), of("fixed")
    cold = next((f for f in runs if "maggy run" in f["run"]), None)
    judged = adaptive or ([cold] if cold else [])
    utils = [f["utilisation"] for f in judged if f["utilisation"] is not None]
    median = statistics.median(utils) if utils else None

    def med(rows: list[dict[str, Any]], key: str) -> float | None:
        values = [f[key] for f in rows if f[key] is not None]
        return statistics.median(values) if values else None

    summary: dict[str, Any] = {
        "utilisation_median_adaptive": median,
        "utilisation_min_adaptive": min(utils) if utils else None,
        "utilisation_median_fixed": med(fixed, "utilisation"),
        "trials_median_adaptive": med(adaptive, "trials"),
        "trials_median_fixed": med(fixed, "trials"),
        "found_median_adaptive": med(adaptive, "found_true"),
        "found_median_fixed": med(fixed, "found_true"),
        "makespan_median_adaptive_s": med(adaptive, "makespan_s"),
        "makespan_median_fixed_s": med(fixed, "makespan_s"),
        "wholerun_wall_s": cold["wall_s"] if cold else None,
    }
    print("\n=== ratios (adaptive / fixed, medians)")
    for key, what in (
        ("trials", "trials"),
        ("found", "effects found"),
        ("makespan", "makespan"),
    ):
        a = summary[f"{key}_median_adaptive" + ("_s" if key == "makespan" else "")]
        b = summary[f"{key}_median_fixed" + ("_s" if key == "makespan" else "")]
        print(f"  {what}: adaptive {fmt(a)} / fixed {fmt(b)} = {fmt(_common.ratio(a, b), '.3f')}")
    if median is not None:
        print(
            f"  utilisation with adaptive repeats (median of {len(utils)}) {median:.3f} / target "
            f"{TARGET_UTILISATION:.2f} = {median / TARGET_UTILISATION:.3f}"
        )
    met = None if median is None else median >= TARGET_UTILISATION
    word = {None: "NO FIGURE", True: "MET", False: "NOT MET"}[met]
    text = (
        f"verdict: {word} -- utilisation with adaptive repeats {fmt(median, '.3f')} (median "
        f"of {len(utils)}) against the target >= {TARGET_UTILISATION:.2f}; adaptive used "
        f"{fmt(summary['trials_median_adaptive'], '.0f')} trials and found "
        f"{fmt(summary['found_median_adaptive'], '.0f')}/{true_effects} effects, fixed "
        f"{fmt(summary['trials_median_fixed'], '.0f')} trials and "
        f"{fmt(summary['found_median_fixed'], '.0f')}/{true_effects}"
    )
    _common.finish(
        args,
        mode,
        t_all,
        text,
        met,
        {
            "sizes": sizes,
            "workers": WORKERS,
            "master": MASTER,
            "effects": EFFECTS,
            "plans": PLANS,
            "runs": runs,
            "summary": summary,
            "target_utilisation": TARGET_UTILISATION,
        },
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
