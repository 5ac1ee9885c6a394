#!/usr/bin/env python
"""Benchmark of the optimisers: ASHA vs random search vs synchronous successive halving.

Run from the project root::

    .venv/bin/python bench/optimizers.py             # full run (a few minutes, 3 seeds)
    .venv/bin/python bench/optimizers.py --quick     # a smoke run, about a minute
    .venv/bin/python bench/optimizers.py --only asha --only sh --seeds 1 --json /tmp/opt.json

The workload (``bench/_workloads.py``) is synthetic learning curves made of sleeps:
a configuration (width, decay, lr) has a level it saturates at, a learning speed
and 0.02-0.08 s per epoch; slow starters often end higher than fast ones, so the
ranking after a few epochs is imperfect. The best possible metric after R epochs is
known, so "time to reach 95 % of the best possible metric" is defined.

All methods spend the same total budget B = N x R epochs (N full-budget trials of
random search) on ``WORKERS`` workers (``local[8,3]``: the trials sleep, so more
workers than cores make sense), in one SparkContext started first (its start-up is
not counted):

1. ``asha``   -- the engine's ASHA (resource_min 1, resource_max R, reduction_factor 3),
                 stopped once its trials' budgets add up to B
                 (``bench._workloads:BudgetedASHA``);
2. ``random`` -- the engine's random search, N trials of R epochs;
3. ``sh``     -- synchronous successive halving in plain PySpark, one Spark job per
                 rung with a barrier between rungs (``sc.parallelize(configs, 8)
                 .map(run_config_for_budget).collect()``), keeping the top 1/3; the same
                 configurations as ASHA (ASHA's sampler and seed), rung sizes chosen so
                 that it spends at most B epochs.

Per method: makespan (engine: ``result["makespan"]``; sh: wall time of the rungs),
worker utilisation (time inside training functions / (workers x makespan)), best
metric, time to reach 95 % of the best possible metric (trial end times from the
start), epochs spent. The figures depend on the machine's load (2 cores): the
output shows the cores other processes used during each run. Nothing is asserted.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import argparse  # noqa: E402
import random  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
from typing import Any  # noqa: E402

# _common sets PYTHONPATH for the Spark workers when imported, before Spark starts.
from bench import _common, _workloads  # noqa: E402
from bench._common import fmt, ratio, table  # noqa: E402

WORKERS = 8
MASTER = f"local[{WORKERS},3]"
SEED = 12345
R = 27  # full budget, epochs
ETA = 3
RESOURCE_MIN = 1
TARGET_FRACTION = 0.95

SIZES = {
    "full": {"full_trials": 64, "seeds": 3},
    "quick": {"full_trials": 24, "seeds": 1},
}
METHODS = ("asha", "random", "sh")
LABELS = {
    "asha": "asha (engine)",
    "random": "random (engine)",
    "sh": "sync SH (PySpark)",
}


def rungs() -> list[int]:
    """Budgets of the rungs: 1, 3, 9, 27."""
    out, b = [], RESOURCE_MIN
    while b <= R:
        out.append(b)
        b *= ETA
    return out


def sh_sizes(total: int) -> list[int]:
    """Configurations per rung of synchronous SH: the most at rung 0 such that keeping
    the top 1/ETA at every rung spends at most ``total`` epochs."""

    def sizes(n0: int) -> list[int]:
        out = [n0]
        for _ in rungs()[1:]:
            out.append(max(1, out[-1] // ETA))
        return out

    def cost(n0: int) -> int:
        return sum(n * b for n, b in zip(sizes(n0), rungs(), strict=True))

    n0 = 1
    while cost(n0 + 1) <= total:
        n0 += 1
    return sizes(n0)


def time_to_target(ends: list[tuple[float, float]], target: float) -> float | None:
    """First end time (seconds from the start) at which a trial's metric reached ``target``."""
    for end, metric in sorted(ends):
        if metric >= target:
            return end
    return None


def outcome(
    method: str,
    seed: int,
    makespan: float,
    trials: list[dict[str, Any]],
    start: float,
    best_possible: float,
    other_cores: float,
    status: str,
) -> dict[str, Any]:
    """The figures of one run from its trials (each: metric, budget, start, duration)."""
    ok = [t for t in trials if t.get("metric") is not None and t.get("duration") is not None]
    busy = sum(t["duration"] for t in ok)
    ends = [(t["start"] + t["duration"] - start, t["metric"]) for t in ok]
    best = max((t["metric"] for t in ok), default=None)
    epochs = sum(int(t["budget"]) for t in trials if t.get("budget") is not None)
    t95 = time_to_target(ends, TARGET_FRACTION * best_possible)
    idle = _common.idle_breakdown(ok, start, makespan, WORKERS)
    return {
        "method": method,
        "seed": seed,
        "status": status,
        "makespan_s": makespan,
        "busy_s": busy,
        "utilisation": busy / (WORKERS * makespan) if makespan > 0 else None,
        "best_metric": best,
        "best_fraction": None if best is None else best / best_possible,
        "t95_s": t95,
        "epochs": epochs,
        "trials": len(trials),
        "configs": len({_key(t["params"]) for t in trials}),
        "idle_s": idle,
        "other_cores": other_cores,
    }


def _key(params: dict[str, Any]) -> tuple[tuple[str, Any], ...]:
    return tuple(sorted(params.items()))


# --------------------------------------------------------------------------- methods


def engine_spec(method: str, seed: int, full_trials: int, total: int) -> dict[str, Any]:
    base = {
        "name": f"bench-opt-{method}-{seed}",
        "train_fn": "bench._workloads:crossing_curve",
        "searchspace": _workloads.CURVE_SPACE,
        "workers": WORKERS,
        "es_policy": "none",
        "seed": seed,
    }
    if method == "asha":
        options = {
            "resource_min": RESOURCE_MIN,
            "resource_max": R,
            "reduction_factor": ETA,
            "total_budget": total,
        }
        # num_trials only bounds the count: every trial has at least 1 epoch.
        return {
            **base,
            "optimizer": {"name": "bench._workloads:BudgetedASHA", "options": options},
            "num_trials": total,
        }
    return {
        **base,
        "optimizer": "randomsearch",
        "num_trials": full_trials,
        "train_kwargs": {"epochs": R},
    }


def run_engine_method(
    method: str, seed: int, full_trials: int, tmp: Path, best_possible: float
) -> tuple[dict[str, Any], dict[str, Any]]:
    total = full_trials * R
    result = _common.run_engine(engine_spec(method, seed, full_trials, total), tmp, MASTER)
    trials = [
        {**t, "budget": t["budget"] if t.get("budget") is not None else R}
        for t in _common.trial_times(result)
        if t["status"] in ("finished", "early_stopped")
    ]
    status = result["status"] if result["status"] != "finished" else "ok"
    if result["status"] != "finished":
        status += f": {result.get('reason')}"
    out = outcome(
        method,
        seed,
        result["makespan"],
        trials,
        _common.job_start(result),
        best_possible,
        result["_other_cores"],
        status,
    )
    out["failed_trials"] = sum(1 for t in result["trials"] if t["status"] == "failed")
    return out, result


def sh_configs(seed: int, n: int) -> list[dict[str, Any]]:
    """The first ``n`` configurations ASHA samples with ``seed`` (its sampler)."""
    from maggy_core.searchspace import Searchspace

    space = Searchspace.from_dict(_workloads.CURVE_SPACE)
    return [space.sample(random.Random(f"{seed}/asha/{i}")) for i in range(n)]


def run_sh(sc: Any, seed: int, full_trials: int, best_possible: float) -> dict[str, Any]:
    sizes = sh_sizes(full_trials * R)
    configs = sh_configs(seed, sizes[0])
    meter = _common.OtherCpu()
    start = time.time()
    t0 = time.monotonic()
    alive = list(range(len(configs)))
    trials: list[dict[str, Any]] = []
    for k, budget in enumerate(rungs()):
        items = [(c, configs[c], budget) for c in alive]
        rung = sc.parallelize(items, min(WORKERS, len(items)))
        ended = rung.map(_workloads.run_config_for_budget).collect()
        trials += ended
        if k + 1 < len(sizes):
            ranked = sorted(ended, key=lambda r: (-r["metric"], r["config"]))
            alive = [r["config"] for r in ranked[: sizes[k + 1]]]
    makespan = time.monotonic() - t0
    out = outcome("sh", seed, makespan, trials, start, best_possible, meter.cores(), "ok")
    out["rung_sizes"] = sizes
    return out


def warm_up(sc: Any, tmp: Path) -> None:
    """One small engine run and one small Spark job, discarded: the first job of a
    SparkContext starts the Python workers (and loads classes), later ones reuse them."""
    spec = engine_spec("random", SEED, WORKERS, WORKERS * R)
    spec["name"] = "bench-opt-warmup"
    spec["train_kwargs"] = {"epochs": 1}
    _common.run_engine(spec, tmp, MASTER)
    items = [(i, c, 1) for i, c in enumerate(sh_configs(SEED, WORKERS))]
    sc.parallelize(items, WORKERS).map(_workloads.run_config_for_budget).collect()


# --------------------------------------------------------------------------- report


def mean_of(runs: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in runs if r.get(key) is not None]
    return statistics.fmean(values) if values else None


def summarise(runs: list[dict[str, Any]], methods: list[str]) -> dict[str, dict[str, Any]]:
    out = {}
    for m in methods:
        mine = [r for r in runs if r["method"] == m]
        if not mine:
            continue
        reached = [r["t95_s"] for r in mine if r["t95_s"] is not None]
        out[m] = {
            "runs": len(mine),
            "makespan_s": mean_of(mine, "makespan_s"),
            "utilisation": mean_of(mine, "utilisation"),
            "best_metric": mean_of(mine, "best_metric"),
            "t95_s": statistics.fmean(reached) if reached else None,
            "t95_reached": len(reached),
            "epochs": mean_of(mine, "epochs"),
            "trials": mean_of(mine, "trials"),
            "other_cores": mean_of(mine, "other_cores"),
        }
    return out


def t95_text(value: float | None, reached: int | None = None, runs: int | None = None) -> str:
    if value is None:
        return "never"
    text = f"{value:.2f}"
    if reached is not None and runs is not None and runs > 1:
        text += f" ({reached}/{runs})"
    return text


def print_runs(runs: list[dict[str, Any]]) -> None:
    rows = [
        [
            LABELS[r["method"]],
            r["seed"],
            fmt(r["makespan_s"]),
            fmt(r["utilisation"], ".3f"),
            "/".join(f"{r['idle_s'][k]:.1f}" for k in ("head", "between", "tail")),
            fmt(r["best_metric"], ".4f"),
            t95_text(r["t95_s"]),
            r["epochs"],
            r["trials"],
            r["configs"],
            fmt(r["other_cores"]),
            r["status"],
        ]
        for r in runs
    ]
    headers = [
        "method",
        "seed",
        "makespan s",
        "util",
        "idle head/between/tail w-s",
        "best",
        "t95 s",
        "epochs",
        "trials",
        "configs",
        "others' cores",
        "status",
    ]
    table(headers, rows)


def print_means(summary: dict[str, dict[str, Any]]) -> None:
    rows = [
        [
            LABELS[m],
            fmt(s["makespan_s"]),
            fmt(s["utilisation"], ".3f"),
            fmt(s["best_metric"], ".4f"),
            t95_text(s["t95_s"], s["t95_reached"], s["runs"]),
            fmt(s["epochs"], ".0f"),
            fmt(s["trials"], ".0f"),
        ]
        for m, s in summary.items()
    ]
    table(["method", "makespan s", "util", "best", "t95 s (reached)", "epochs", "trials"], rows)


def compare(runs: list[dict[str, Any]], summary: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Ratios of ASHA to each other method, and per seed whether ASHA reached the
    target first (reaching it when the other never does counts as first)."""
    out: dict[str, Any] = {}
    if "asha" not in summary:
        return out
    a = summary["asha"]
    asha_by_seed = {r["seed"]: r for r in runs if r["method"] == "asha"}
    for m, s in summary.items():
        if m == "asha":
            continue
        wins = 0
        seeds = 0
        for r in (r for r in runs if r["method"] == m):
            mine = asha_by_seed.get(r["seed"])
            if mine is None:
                continue
            seeds += 1
            if mine["t95_s"] is not None and (r["t95_s"] is None or mine["t95_s"] < r["t95_s"]):
                wins += 1
        out[m] = {
            "makespan": ratio(a["makespan_s"], s["makespan_s"]),
            "utilisation": ratio(a["utilisation"], s["utilisation"]),
            "t95": ratio(a["t95_s"], s["t95_s"]),
            "best_metric_diff": None
            if a["best_metric"] is None or s["best_metric"] is None
            else a["best_metric"] - s["best_metric"],
            "asha_first_seeds": wins,
            "seeds": seeds,
        }
    return out


def print_ratios(ratios: dict[str, Any]) -> None:
    for m, r in ratios.items():
        print(
            f"  ASHA vs {LABELS[m]:<18}: makespan x{fmt(r['makespan'])}, "
            f"utilisation x{fmt(r['utilisation'])}, time to 95 % x{fmt(r['t95'], '.2f', 'n/a')}, "
            f"best metric {fmt(r['best_metric_diff'], '+.4f')}; ASHA reached 95 % first in "
            f"{r['asha_first_seeds']}/{r['seeds']} seeds"
        )


def verdict(ratios: dict[str, Any], summary: dict[str, dict[str, Any]]) -> tuple[str, bool | None]:
    target = "ASHA reaches 95 % of the best possible metric before the others, same total epochs"
    if not ratios:
        return f"target ({target}): needs asha and another method", None
    met = all(r["seeds"] and 2 * r["asha_first_seeds"] > r["seeds"] for r in ratios.values())
    parts = [f"{LABELS[m]} {r['asha_first_seeds']}/{r['seeds']} seeds" for m, r in ratios.items()]
    util = ""
    if "sh" in summary:
        util = (
            f"; utilisation ASHA {fmt(summary['asha']['utilisation'], '.3f')} vs sync SH "
            f"{fmt(summary['sh']['utilisation'], '.3f')}"
        )
    word = "MET" if met else "NOT MET"
    return f"verdict: {word} -- {target} (ASHA first vs {', '.join(parts)}){util}", met


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smaller budget and one seed: a smoke run")
    p.add_argument(
        "--only", choices=METHODS, action="append", help="run only this method (repeatable)"
    )
    p.add_argument(
        "--seeds", type=int, metavar="K", help="average over K seeds (default 3; --quick 1)"
    )
    p.add_argument(
        "--trials",
        type=int,
        metavar="N",
        help=f"budget = N full-budget trials of {R} epochs (default 64; --quick 24)",
    )
    p.add_argument("--json", metavar="PATH", help="also write the figures as JSON to PATH")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory (results)")
    args = p.parse_args(argv)
    _common.quiet_logs()

    mode = "quick" if args.quick else "full"
    sizes = dict(SIZES[mode])
    if args.seeds is not None:
        sizes["seeds"] = max(1, args.seeds)
    if args.trials is not None:
        sizes["full_trials"] = max(1, args.trials)
    methods = [m for m in METHODS if not args.only or m in args.only]
    n = sizes["full_trials"]
    total = n * R
    seeds = [SEED + k for k in range(sizes["seeds"])]
    best_possible = _workloads.best_possible(R)
    target = TARGET_FRACTION * best_possible

    _common.header("maggy optimiser benchmark", mode, sizes)
    sh = sh_sizes(total)
    sh_epochs = sum(a * b for a, b in zip(sh, rungs(), strict=True))
    print(
        f"{WORKERS} workers on {MASTER}; rungs {rungs()} epochs (reduction factor {ETA}); "
        f"total budget {total} epochs = {n} trials x {R}; "
        f"sync SH rung sizes {sh} ({sh_epochs} epochs)"
    )
    print(
        f"best possible metric after {R} epochs {best_possible:.4f}; "
        f"target 95 % of it = {target:.4f}; methods {methods}; seeds {seeds}"
    )

    tmp = Path(tempfile.mkdtemp(prefix="maggy-bench-opt-"))
    runs: list[dict[str, Any]] = []
    failed = False
    t_all = time.monotonic()
    try:
        from maggy_core.runner import spark_context

        t0 = time.monotonic()
        with spark_context(MASTER, "bench-optimizers", None) as sc:
            print(
                f"\nSparkContext up in {time.monotonic() - t0:.1f} s (not counted); warm-up runs "
                "(discarded) ...",
                flush=True,
            )
            t0 = time.monotonic()
            warm_up(sc, tmp)
            print(f"  warm-up done in {time.monotonic() - t0:.1f} s", flush=True)

            def run(m: str, seed: int) -> dict[str, Any]:
                if m == "sh":
                    return run_sh(sc, seed, n, best_possible)
                r, result = run_engine_method(m, seed, n, tmp, best_possible)
                if m == "asha":
                    r["same_configs_as_sh"] = _same_configs(result, seed)
                return r

            runs, failed = _common.run_each(
                seeds,
                methods,
                run,
                lambda r: (
                    f"makespan {r['makespan_s']:.2f} s, util {fmt(r['utilisation'], '.3f')}, "
                    f"best {fmt(r['best_metric'], '.4f')}, t95 {t95_text(r['t95_s'])}, "
                    f"{r['epochs']} epochs in {r['trials']} trials, "
                    f"others used {fmt(r['other_cores'])} cores"
                ),
                LABELS.get,
            )
    except Exception as exc:
        traceback.print_exc()
        print(f"!! the benchmark failed: {type(exc).__name__}: {exc}")
        failed = True
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"results kept in {tmp}")

    print(
        f"\n=== runs ({mode}; makespan from the Spark job's start; t95 = seconds until a trial "
        f"ended with a metric >= {target:.4f})"
    )
    print_runs(runs)
    print(
        f"  (util = time inside training functions / ({WORKERS} workers x makespan); idle "
        "worker-seconds: before each worker's first trial, between its trials, after its last)"
    )
    summary = summarise(runs, methods)
    if len(seeds) > 1:
        print(f"\n=== means over {len(seeds)} seeds (t95: mean over the seeds that reached it)")
        print_means(summary)
    ratios = compare(runs, summary)
    if ratios:
        print("\n=== ratios (ASHA / other; below 1 means ASHA is shorter / sooner)")
        print_ratios(ratios)
    same = [r.get("same_configs_as_sh") for r in runs if r["method"] == "asha"]
    if same and "sh" in methods:
        print(f"  ASHA's first configurations are sync SH's: {'yes' if all(same) else 'NO'}")
    text, met = verdict(ratios, summary)
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
            "rungs": rungs(),
            "total_budget": total,
            "sh_rung_sizes": sh_sizes(total),
            "best_possible": best_possible,
            "target_metric": target,
            "runs": runs,
            "means": summary,
            "ratios": ratios,
        },
    )
    return 1 if failed else 0


def _same_configs(result: dict[str, Any], seed: int) -> bool:
    """Whether ASHA's configurations are those :func:`sh_configs` draws (same sampler)."""
    by_config = {}
    for t in result["trials"]:
        info = t.get("info") or {}
        if "config" in info:
            by_config[int(info["config"])] = t["params"]
    if not by_config:
        return False
    ours = sh_configs(seed, max(by_config) + 1)
    return all(ours[i] == params for i, params in by_config.items())


if __name__ == "__main__":
    sys.exit(main())
