#!/usr/bin/env python
"""A worker's first trial against its later ones, in the example Keras search.

Run from the project root::

    .venv/bin/python bench/first_trial.py            # 6 trials on 2 workers, both ways, twice
    .venv/bin/python bench/first_trial.py --quick    # the same, once

The experiment is the example ``hparam_search`` DAG's (``dags/hparam_search.py``,
its default params): ``maggy_core.examples.digits:train`` (a Keras MLP on
scikit-learn's digits), 6 trials, 2 workers (``local[2,3]``), random search, the
median rule (``es_min`` 3), seed 7, as a ``maggy run`` subprocess each, so every run
starts fresh Python workers. It runs the same experiment twice in one benchmark run:

- ``preload``: as shipped; each worker calls ``digits.maggy_preload`` (TensorFlow's
  import and a tiny fit, the data) before it registers (``maggy_core.worker.preload``);
- ``no preload``: the same with ``MAGGY_PRELOAD=0``, so the first trial on each worker
  pays TensorFlow's import itself.

Per worker, from ``result.json``: the first trial's duration, the median of its later
trials' durations, and their ratio; and the time from the Spark job's start to the
worker's first trial (what the preload moves out of the trial). Target (issue 14):
first / later <= 1.5 with the preload. Nothing is asserted; figures under load vary.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import argparse  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402

from bench import _common  # noqa: E402
from bench._common import fmt, table  # noqa: E402

WORKERS = 2
MASTER = f"local[{WORKERS},3]"
SPEC = {
    "name": "bench-first-trial",
    "train_fn": "maggy_core.examples.digits:train",
    "searchspace": {
        "lr": ["DOUBLE", [0.0005, 0.05], "log"],
        "units": ["INTEGER", [16, 128]],
        "activation": ["CATEGORICAL", ["relu", "tanh"]],
    },
    "num_trials": 6,
    "workers": WORKERS,
    "optimizer": "randomsearch",
    "direction": "max",
    "optimization_key": "accuracy",
    "es_policy": "median",
    "es_min": 3,
    "seed": 7,
}
VARIANTS = {"preload": "1", "no preload": "0"}
SIZES = {"full": {"repeats": 2}, "quick": {"repeats": 1}}
TARGET = 1.5


def run_once(tmp: Path, variant: str, k: int) -> dict[str, Any]:
    env = {**os.environ, "MAGGY_PRELOAD": VARIANTS[variant]}
    tag = f"first-trial-{k}-{VARIANTS[variant]}"
    result, started, exited = _common.maggy_cli(SPEC, tmp, tag, MASTER, env)
    return {"variant": variant, "wall_s": exited - started, **per_worker(result)}


def per_worker(result: dict[str, Any]) -> dict[str, Any]:
    """First vs later trial durations per worker, from a result.json."""
    job_start = float(result["ended"]) - float(result["makespan"])
    by: dict[str, list[dict[str, Any]]] = {}
    for t in result["trials"]:
        if t.get("start") is not None and t.get("duration") is not None and t.get("worker"):
            by.setdefault(t["worker"], []).append(t)
    workers = []
    for wid, ts in sorted(by.items()):
        ts.sort(key=lambda t: t["start"])
        later = [t["duration"] for t in ts[1:]]
        # Stopped trials ran fewer epochs: compare per epoch too.
        first_epochs = max(1, len(ts[0].get("history") or ()))
        later_per_epoch = [t["duration"] / max(1, len(t.get("history") or ())) for t in ts[1:]]
        workers.append(
            {
                "worker": wid,
                "trials": len(ts),
                "to_first_trial_s": ts[0]["start"] - job_start,
                "first_s": ts[0]["duration"],
                "later_median_s": statistics.median(later) if later else None,
                "ratio": (ts[0]["duration"] / statistics.median(later)) if later else None,
                "ratio_per_epoch": (
                    (ts[0]["duration"] / first_epochs) / statistics.median(later_per_epoch)
                    if later_per_epoch
                    else None
                ),
            }
        )
    return {"workers": workers, "status": result["status"]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="each variant once")
    p.add_argument("--repeats", type=int, help="runs of each variant (default 2; --quick 1)")
    args, mode, sizes = _common.parse_args(p, argv, SIZES, "repeats", "repeats")
    _common.header("maggy first-trial benchmark (Keras digits)", mode, sizes)
    tmp = Path(tempfile.mkdtemp(prefix="maggy-bench-first-"))
    runs: list[dict[str, Any]] = []
    failed = False
    t_all = time.monotonic()
    try:
        for k in range(sizes["repeats"]):
            # Alternate the order, so a change of the machine's load does not always
            # fall on the same variant.
            for variant in list(VARIANTS)[:: 1 if k % 2 == 0 else -1]:
                meter = _common.OtherCpu()
                run = run_once(tmp, variant, k)
                run["other_cores"] = meter.cores()
                runs.append(run)
                print(
                    f"  {variant}, run {k + 1}: wall {run['wall_s']:.1f} s, first/later per worker "
                    + ", ".join(fmt(w["ratio"]) for w in run["workers"])
                    + f" (others used {run['other_cores']:.2f} cores)",
                    flush=True,
                )
    except Exception as exc:
        print(f"!! the benchmark failed: {type(exc).__name__}: {exc}")
        failed = True
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    rows = [
        [
            r["variant"],
            w["worker"],
            w["trials"],
            fmt(w["to_first_trial_s"]),
            fmt(w["first_s"]),
            fmt(w["later_median_s"]),
            fmt(w["ratio"]),
            fmt(w["ratio_per_epoch"]),
            fmt(r["wall_s"], ".1f"),
        ]
        for r in runs
        for w in r["workers"]
    ]
    print("\n=== per worker (seconds; ratio = first trial / median of later trials)")
    table(
        [
            "variant",
            "worker",
            "trials",
            "job start -> 1st trial",
            "1st trial",
            "later (median)",
            "ratio",
            "ratio per epoch",
            "run wall",
        ],
        rows,
    )
    ratios = {
        v: [w["ratio"] for r in runs if r["variant"] == v for w in r["workers"] if w["ratio"]]
        for v in VARIANTS
    }
    med = {v: statistics.median(x) if x else None for v, x in ratios.items()}
    met = None if med["preload"] is None else med["preload"] <= TARGET
    text = (
        f"first / later trial, median over workers: preload {fmt(med['preload'])}, "
        f"no preload {fmt(med['no preload'])}; target <= {TARGET} with the preload: "
        + ("not measured" if met is None else ("met" if met else "not met"))
        + f" (load average {os.getloadavg()[0]:.2f})"
    )
    _common.finish(args, mode, t_all, text, met, {"runs": runs})
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
