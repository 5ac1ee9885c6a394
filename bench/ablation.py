#!/usr/bin/env python
"""Benchmark of ablation studies: a 10-component, 3-repeat LOCO study on 4 workers.

Run from the project root::

    .venv/bin/python bench/ablation.py             # full run (about a minute and a half)
    .venv/bin/python bench/ablation.py --quick     # the CLI run and one in-process study
    .venv/bin/python bench/ablation.py --only study --json /tmp/ablation.json

The study (``ablation: {components: [c0..c9]}``, ``ablator: {name: loco, repeats: 3}``:
the base and one trial per component, three times, 33 trials) runs through the engine
with 4 workers on ``local[4,3]``. Its training function
(``bench._workloads:ablation_sleep``) sleeps 0.3-1.5 s, fixed by the component left
out and the repeat, and returns a number.

Measures:

1. ``wholerun`` -- the study as a user runs it, ``maggy run spec.json`` in a new
                   process (run first, while nothing else of this benchmark runs): wall
                   time from the process start to its exit, Spark start-up included
                   (Python, the JVM, the SparkContext, Spark's Python workers, the
                   study, the analysis, shutdown), and the figures of its result.
2. ``study``    -- ``run_experiment`` in this process, ``runs`` times (quick 1, full 3),
                   in one SparkContext started and warmed up first (not counted), so
                   the makespan holds the engine's work. Per run: the experiment's wall
                   time (``makespan``, from the Spark job's start to the result), the
                   sum of trial times, utilisation = sum / (workers x makespan)
                   (target >= 0.95; the verdict takes the median of these runs), and
                   where the idle worker-seconds are.

Also printed: the best utilisation the plan allows in its order (the trials listed
in order on the first free worker, with no overhead at all), a bound for the engine.
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
COMPONENTS = [f"c{i}" for i in range(10)]
REPEATS = 3
TARGET_UTILISATION = 0.95

SIZES = {"full": {"runs": 3}, "quick": {"runs": 1}}
MEASURES = ("study", "wholerun")


def spec_dict(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "train_fn": "bench._workloads:ablation_sleep",
        "ablation": {"components": COMPONENTS},
        "ablator": {"name": "loco", "repeats": REPEATS},
        "workers": WORKERS,
        "seed": SEED,
    }


def planned_seconds() -> list[float]:
    """Each trial's sleep, in the order the ablator suggests them."""
    from maggy_core.ablation.ablators import get_ablator
    from maggy_core.ablation.study import AblationSpec

    plan = AblationSpec.parse({"components": COMPONENTS}).plan()
    ablator = get_ablator("loco", plan, direction="max", seed=SEED, options={"repeats": REPEATS})
    return [_workloads.ablation_seconds(p["ablated"], p["seed"]) for p in ablator.plan()]


def list_schedule(seconds: list[float], workers: int) -> float:
    """Makespan of the trials taken in order by the first free worker, no overhead."""
    free = [0.0] * workers
    for s in seconds:
        heapq.heappush(free, heapq.heappop(free) + s)
    return max(free)


def figures(result: dict[str, Any], wall: float, other_cores: float, label: str) -> dict[str, Any]:
    """A run's figures from its result (``result.json``)."""
    trials = _common.trial_times(result)
    makespan = float(result["makespan"])
    busy = sum(t["duration"] for t in trials)
    span = max(t["start"] + t["duration"] for t in trials) - trials[0]["start"] if trials else 0.0
    analysis = result.get("ablation") or {}
    return {
        "run": label,
        "status": result["status"],
        "reason": result.get("reason"),
        "trials": len(trials),
        "trials_ok": sum(1 for t in result["trials"] if t["status"] == "finished"),
        "makespan_s": makespan,
        "sum_trials_s": busy,
        "utilisation": busy / (WORKERS * makespan) if makespan > 0 else None,
        "span_s": span,
        "utilisation_span": busy / (WORKERS * span) if span > 0 else None,
        "idle_s": _common.idle_breakdown(trials, _common.job_start(result), makespan, WORKERS),
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
        warm = spec_dict("bench-ablation-warmup")
        warm["ablation"] = {"components": COMPONENTS[:3]}
        warm["ablator"] = {"name": "loco", "repeats": 1}
        warm["train_kwargs"] = {"low": 0.05, "high": 0.1}
        t0 = time.monotonic()
        _common.run_engine(warm, tmp, MASTER)
        print(f"  warm-up study (4 trials, discarded) in {time.monotonic() - t0:.1f} s", flush=True)
        for i in range(runs):
            label = f"in-process {i + 1} (warm)"
            print(f"  {label}: run_experiment ...", end=" ", flush=True)
            result = _common.run_engine(spec_dict(f"bench-ablation-{i + 1}"), tmp, MASTER)
            f = figures(result, result["_wall"], result["_other_cores"], label)
            out.append(f)
            print(_one_line(f), flush=True)
    return out


def bench_wholerun(tmp: Path) -> dict[str, Any] | None:
    """The study through ``maggy run`` in a new process: its wall time from start to exit."""
    spec_path = tmp / "bench-ablation-cli.json"
    spec_path.write_text(json.dumps(spec_dict("bench-ablation-cli"), indent=2), encoding="utf-8")
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
    f = figures(result, wall, other, "maggy run (process)")
    f["exit_code"] = proc.returncode
    print(f"    {_one_line(f)}", flush=True)
    return f


def _one_line(f: dict[str, Any]) -> str:
    return (
        f"status {f['status']}, {f['trials_ok']}/{f['trials']} trials finished, makespan "
        f"{f['makespan_s']:.2f} s, sum {f['sum_trials_s']:.2f} s, util "
        f"{fmt(f['utilisation'], '.3f')}, wall {f['wall_s']:.2f} s, others used "
        f"{fmt(f['other_cores'])} cores"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="one in-process run: a smoke run")
    p.add_argument(
        "--only", choices=MEASURES, action="append", help="run only this measure (repeatable)"
    )
    p.add_argument("--runs", type=int, metavar="N", help="in-process runs (default 3; --quick 1)")
    p.add_argument("--json", metavar="PATH", help="also write the figures as JSON to PATH")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory (results)")
    args = p.parse_args(argv)
    _common.quiet_logs()

    mode = "quick" if args.quick else "full"
    sizes = dict(SIZES[mode])
    if args.runs is not None:
        sizes["runs"] = max(1, args.runs)
    names = [m for m in MEASURES if not args.only or m in args.only]

    _common.header("maggy ablation benchmark", mode, sizes)
    seconds = planned_seconds()
    ideal = list_schedule(seconds, WORKERS)
    bound = sum(seconds) / (WORKERS * ideal)
    print(
        f"LOCO study: {len(COMPONENTS)} components x {REPEATS} repeats + base = {len(seconds)} "
        f"trials of {min(seconds):.2f}-{max(seconds):.2f} s (sum {sum(seconds):.2f} s), "
        f"{WORKERS} workers on {MASTER}"
    )
    print(
        f"the plan in its order on the first free worker, no overhead: makespan {ideal:.2f} s, "
        f"utilisation {bound:.3f} (the best the engine can do with this order)"
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
    rows = [
        [
            f["run"],
            f"{f['trials_ok']}/{f['trials']}",
            fmt(f["makespan_s"]),
            fmt(f["sum_trials_s"]),
            fmt(f["utilisation"], ".3f"),
            fmt(f["utilisation_span"], ".3f"),
            "/".join(f"{f['idle_s'][k]:.2f}" for k in ("head", "between", "tail")),
            fmt(f["wall_s"]),
            f["analysis_error"] or f"{f['analysis_components']} components",
            fmt(f["other_cores"]),
        ]
        for f in runs
    ]
    headers = [
        "run",
        "trials ok",
        "makespan s",
        "sum of trials s",
        "util",
        "util (span)",
        "idle head/between/tail w-s",
        "wall s",
        "analysis",
        "others' cores",
    ]
    table(headers, rows)
    print(
        f"  util = sum of trial times / ({WORKERS} workers x makespan); util (span): over the "
        "first trial start -> last trial end instead; idle worker-seconds within the makespan: "
        "before each worker's first trial, between its trials, after its last.\n"
        "  wall: for `maggy run`, the process from start to exit (Python, JVM, SparkContext, "
        "Python workers, study, analysis, shutdown); in-process, the run_experiment call in a "
        "SparkContext already up."
    )

    warm = [f for f in runs if f["run"].startswith("in-process")]
    cold = next((f for f in runs if f["run"].startswith("maggy run")), None)
    judged = warm or ([cold] if cold else [])
    utils = [f["utilisation"] for f in judged if f["utilisation"] is not None]
    median = statistics.median(utils) if utils else None
    summary: dict[str, Any] = {
        "judged_runs": [f["run"] for f in judged],
        "utilisation_median": median,
        "utilisation_min": min(utils) if utils else None,
        "makespan_median_s": statistics.median(f["makespan_s"] for f in judged) if judged else None,
        "sum_trials_median_s": statistics.median(f["sum_trials_s"] for f in judged)
        if judged
        else None,
        "wholerun_wall_s": cold["wall_s"] if cold else None,
        "wholerun_makespan_s": cold["makespan_s"] if cold else None,
        "wholerun_utilisation": cold["utilisation"] if cold else None,
        "plan_bound_utilisation": bound,
        "plan_bound_makespan_s": ideal,
    }
    print("\n=== ratios")
    if median is not None:
        which = "warm in-process" if warm else "maggy run"
        mk = summary["makespan_median_s"]
        print(
            f"  utilisation (median of {len(utils)} {which} run(s)) {median:.3f}: / target "
            f"{TARGET_UTILISATION:.2f} = {median / TARGET_UTILISATION:.3f}; / the plan's "
            f"no-overhead bound {bound:.3f} = {median / bound:.3f}"
        )
        print(
            f"  makespan (median) {mk:.2f} s / the plan's no-overhead makespan {ideal:.2f} s = "
            f"{mk / ideal:.3f}"
        )
    if cold is not None:
        print(
            f"  whole run (`maggy run`) {cold['wall_s']:.2f} s = makespan "
            f"{cold['makespan_s']:.2f} s (its Python workers start inside it: util "
            f"{fmt(cold['utilisation'], '.3f')}) + "
            f"{cold['outside_s']:.2f} s outside the Spark job = "
            f"{cold['wall_s'] / ideal:.2f} x the plan's no-overhead makespan"
        )
    met = None if median is None else median >= TARGET_UTILISATION
    word = {None: "NO FIGURE", True: "MET", False: "NOT MET"}[met]
    text = (
        f"verdict: {word} -- utilisation {fmt(median, '.3f')} "
        f"({'warm runs' if warm else 'maggy run'}, median of {len(utils)}, lowest "
        f"{fmt(summary['utilisation_min'], '.3f')}) against the target >= "
        f"{TARGET_UTILISATION:.2f}; whole run with Spark start-up "
        f"{fmt(summary['wholerun_wall_s'], '.1f', 'not run')} s"
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
            "components": COMPONENTS,
            "repeats": REPEATS,
            "planned_seconds": seconds,
            "runs": runs,
            "summary": summary,
            "target_utilisation": TARGET_UTILISATION,
        },
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
