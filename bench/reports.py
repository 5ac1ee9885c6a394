#!/usr/bin/env python
"""Reports from a loop that broadcasts every batch: held back and sent together,
against one event each.

Run from the project root::

    .venv/bin/python bench/reports.py            # 2 runs of each variant
    .venv/bin/python bench/reports.py --quick    # 1 run of each

Each run is an engine experiment on ``local[4,3]`` (one warm SparkContext) of 8
trials on 4 workers whose training function does nothing but ``reporter.broadcast``
3,000 times (``bench._workloads:batch_reports``), under ``es_policy: none``. The
variants differ only in ``maggy_core.reporter.REPORT_EVERY``: 0.1 s (the default:
reports at steps where the stopping rule does not decide are held back and sent
together) and 0 (every report is its own event and round trip, the behaviour
before). Printed per variant: reports per second per worker (steps / trial
duration), metric events the coordinator received, and this process's CPU per
1,000 reports (the coordinator and the Spark driver run here), with the ratio of
the two variants. Every trial's history is checked to hold all its steps. Nothing is
asserted.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import argparse  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402

from bench import _common  # noqa: E402
from bench._common import fmt, ratio, table  # noqa: E402

WORKERS = 4
MASTER = f"local[{WORKERS},3]"
TRIALS = 8
STEPS = 3000
VARIANTS = {"held (0.1 s)": 0.1, "each on its own": 0.0}
SIZES = {"full": {"repeats": 2}, "quick": {"repeats": 1}}


def run(every: float, k: int, tmp: Path) -> dict[str, Any]:
    from maggy_core.coordinator import Coordinator

    events = [0]
    original = Coordinator._handle

    def counted(self: Any, msg: dict[str, Any]) -> None:
        if msg.get("type") == "metric":
            events[0] += 1
        original(self, msg)

    spec = {
        "name": f"bench-reports-{k}",
        "train_fn": "bench._workloads:batch_reports",
        "searchspace": {"x": ["DOUBLE", [0.0, 1.0]]},
        "num_trials": TRIALS,
        "workers": WORKERS,
        "es_policy": "none",
        "train_kwargs": {"steps": STEPS, "every": every},
        "seed": k,
    }
    Coordinator._handle = counted  # type: ignore[method-assign]
    cpu0 = time.process_time()
    try:
        result = _common.run_engine(spec, tmp, MASTER)
    finally:
        Coordinator._handle = original  # type: ignore[method-assign]
    cpu = time.process_time() - cpu0
    trials = _common.trial_times(result)
    complete = len(trials) == TRIALS and all(
        [s for s, _ in t["history"]] == list(range(STEPS)) for t in trials
    )
    return {
        "every": every,
        "status": "ok" if result["status"] == "finished" and complete else "incomplete",
        "rate": statistics.median(STEPS / t["duration"] for t in trials),
        "trial_s": statistics.median(t["duration"] for t in trials),
        "events": events[0],
        "cpu_per_1000": 1000 * cpu / (TRIALS * STEPS),
        "makespan_s": result["makespan"],
        "other_cores": result["_other_cores"],
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="one run of each variant")
    p.add_argument("--repeats", type=int, help="runs of each variant (default 2; --quick 1)")
    args, mode, sizes = _common.parse_args(p, argv, SIZES, "repeats", "repeats")
    _common.header("maggy per-batch reports benchmark", mode, sizes)
    print(f"{TRIALS} trials of {STEPS} reports each on {WORKERS} workers ({MASTER})")
    tmp = Path(tempfile.mkdtemp(prefix="maggy-bench-reports-"))
    rows: list[dict[str, Any]] = []
    t_all = time.monotonic()
    failed = False
    try:
        from maggy_core.runner import spark_context

        with spark_context(MASTER, "bench-reports", None):
            run(0.1, 0, tmp)  # warm-up: the first job starts the Python workers
            for k in range(sizes["repeats"]):
                for name, every in VARIANTS.items():
                    row = {"variant": name, **run(every, k + 1, tmp)}
                    rows.append(row)
                    failed = failed or row["status"] != "ok"
                    print(
                        f"  {name}, run {k + 1}: {row['rate']:.0f} reports/s per worker, "
                        f"{row['events']} metric events, {row['status']}",
                        flush=True,
                    )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    summary = {}
    for name in VARIANTS:
        mine = [r for r in rows if r["variant"] == name]
        if mine:
            summary[name] = {
                key: statistics.median(r[key] for r in mine)
                for key in (
                    "rate",
                    "trial_s",
                    "events",
                    "cpu_per_1000",
                    "makespan_s",
                    "other_cores",
                )
            }
    table(
        [
            "variant",
            "reports/s per worker",
            "trial s",
            "metric events",
            "CPU ms / 1,000 reports",
            "makespan s",
            "others' cores",
        ],
        [
            [
                name,
                fmt(s["rate"], ".0f"),
                fmt(s["trial_s"]),
                fmt(s["events"], ".0f"),
                fmt(s["cpu_per_1000"]),
                fmt(s["makespan_s"]),
                fmt(s["other_cores"]),
            ]
            for name, s in summary.items()
        ],
    )
    held, each = summary.get("held (0.1 s)"), summary.get("each on its own")
    text = "held against each on its own: not measured"
    if held and each:
        text = (
            f"held against each on its own: reports/s x{fmt(ratio(held['rate'], each['rate']))}, "
            f"metric events x{fmt(ratio(held['events'], each['events']), '.3f')}, "
            f"CPU per report x{fmt(ratio(held['cpu_per_1000'], each['cpu_per_1000']))}"
        )
    _common.finish(args, mode, t_all, text, None, {"rows": rows, "summary": summary})
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
