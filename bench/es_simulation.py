#!/usr/bin/env python
"""The early-stopping benchmark's decisions in simulated time: no Spark, no sleeps.

Run from the project root::

    .venv/bin/python bench/es_simulation.py                  # seeds 5000-5039
    .venv/bin/python bench/es_simulation.py --seeds 2026:2041

The workload of ``bench/early_stopping.py`` (60 configurations of the synthetic
learning curves of ``bench/_workloads.py``, 27 epochs, 4 workers), with every epoch
taking exactly its simulated time and nothing else taking any: what is left are the
methods' decisions (which configurations, which stops and promotions), without the
engine's overhead or the machine's noise. It runs maggy's ASHA and Hyperband
optimisers (promotions continuing from checkpoints) with each sampler and bracket
count below, and Optuna's ``TPESampler`` + ``SuccessiveHalvingPruner`` (a trial
reports every epoch, as in the benchmark), and prints, per method: the seeds that
reached 95 % of the best possible, the median time to it over all seeds (a seed
that never got there counting as infinitely long), its ratio to Optuna's, the
median per-seed ratio, and the seeds where the method missed and Optuna did not.

``tpe-hyperband``'s settings in ``bench/early_stopping.py`` (2 brackets, TPE) were
chosen with this script on seeds 5000-5039, which the benchmark does not use.
Nothing is asserted.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import argparse  # noqa: E402
import heapq  # noqa: E402
import math  # noqa: E402
import statistics  # noqa: E402
from typing import Any  # noqa: E402

from bench import _workloads as w  # noqa: E402
from bench._common import fmt, table  # noqa: E402
from maggy_core.optimizers import Suggestion, get_optimizer  # noqa: E402
from maggy_core.searchspace import Searchspace  # noqa: E402
from maggy_core.trial import FrozenTrial, TrialStatus  # noqa: E402

CONFIGS, EPOCHS, ETA, WORKERS = 60, 27, 3, 4
TARGET = 0.95 * w.best_possible(EPOCHS)
RUNGS = {"resource_min": 1, "resource_max": EPOCHS, "reduction_factor": ETA}
#: maggy methods: (optimizer, options besides the rungs).
MAGGY = {
    "asha random": ("asha", {}),
    "asha tpe": ("asha", {"sampler": "tpe"}),
    "hyperband-2 random": ("hyperband", {"brackets": 2}),
    "hyperband-2 tpe": ("hyperband", {"brackets": 2, "sampler": "tpe"}),
    "hyperband-3 tpe": ("hyperband", {"brackets": 3, "sampler": "tpe"}),
    "hyperband-4 tpe": ("hyperband", {"sampler": "tpe"}),
}


def value(params: dict[str, float], epochs: float) -> float:
    return w.curve_value(params["width"], params["decay"], params["lr"], epochs)


def simulate_maggy(optimizer: str, options: dict[str, Any], seed: int) -> float | None:
    """Simulated seconds until a trial ended >= TARGET (``None``: never)."""
    space = Searchspace(**{k: tuple(v) for k, v in w.CURVE_SPACE.items()})
    opt = get_optimizer(
        optimizer,
        space,
        num_trials=CONFIGS,
        direction="max",
        seed=seed,
        options={**RUNGS, **options},
    )
    now, free, n = 0.0, WORKERS, 0
    running: list[tuple[float, int, Suggestion]] = []
    reached: dict[int, float] = {}  # config -> budget its checkpoint holds
    t95 = None
    while True:
        while free:
            s = opt.suggest()
            if not isinstance(s, Suggestion):
                break
            added = float(s.budget or 0) - reached.get(s.info["config"], 0.0)
            n += 1
            heapq.heappush(running, (now + added * w.epoch_seconds(s.params["width"]), n, s))
            free -= 1
        if not running:
            return t95
        now, k, s = heapq.heappop(running)
        free += 1
        reached[s.info["config"]] = float(s.budget or 0)
        v = value(s.params, float(s.budget or 0))
        if t95 is None and v >= TARGET:
            t95 = now
        opt.observe(FrozenTrial(f"t{k}", s.params, TrialStatus.FINISHED, v, (), s.budget, s.info))


def simulate_optuna(seed: int) -> float | None:
    """Optuna's TPE + successive halving, a report (and prune check) every epoch."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=seed),
        pruner=optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=ETA),
    )
    dists = {
        "width": optuna.distributions.FloatDistribution(0, 1),
        "decay": optuna.distributions.FloatDistribution(0, 1),
        "lr": optuna.distributions.FloatDistribution(1e-3, 1, log=True),
    }
    events: list[tuple[float, int, Any, int]] = []
    started, t95 = 0, None

    def start(at: float) -> None:
        nonlocal started
        if started < CONFIGS:
            trial = study.ask(dists)
            started += 1
            heapq.heappush(events, (at + w.epoch_seconds(trial.params["width"]), started, trial, 1))

    for _ in range(WORKERS):
        start(0.0)
    while events:
        now, k, trial, epoch = heapq.heappop(events)
        v = value(trial.params, epoch)
        trial.report(v, epoch)
        ended = epoch == EPOCHS or trial.should_prune()
        if ended:
            if t95 is None and v >= TARGET:
                t95 = now
            if epoch == EPOCHS:
                study.tell(trial, v)
            else:
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            start(now)
        else:
            heapq.heappush(
                events, (now + w.epoch_seconds(trial.params["width"]), k, trial, epoch + 1)
            )
    return t95


def median_all(times: list[float | None]) -> float:
    return statistics.median([math.inf if t is None else t for t in times])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", default="5000:5040", help="a range FIRST:END (default 5000:5040)")
    args = p.parse_args(argv)
    first, _, end = args.seeds.partition(":")
    seeds = list(range(int(first), int(end)))
    print(f"{CONFIGS} configurations, {EPOCHS} epochs, {WORKERS} workers, seeds {args.seeds}")
    ref = [simulate_optuna(s) for s in seeds]
    ref_median = median_all(ref)
    rows = []
    for name, times in [("optuna tpe+sha", ref)] + [
        (name, [simulate_maggy(opt, options, s) for s in seeds])
        for name, (opt, options) in MAGGY.items()
    ]:
        both = [t / r for t, r in zip(times, ref, strict=True) if t is not None and r is not None]
        missed = sum(1 for t, r in zip(times, ref, strict=True) if t is None and r is not None)
        m = median_all(times)
        rows.append(
            [
                name,
                f"{sum(t is not None for t in times)}/{len(seeds)}",
                fmt(None if math.isinf(m) else m, ".2f", "never"),
                fmt(m / ref_median if not math.isinf(m) and not math.isinf(ref_median) else None),
                fmt(statistics.median(both) if both else None),
                missed,
            ]
        )
        print(f"  {name} done", flush=True)
    headers = ["method", "reached", "t95 s (all seeds)", "/ optuna", "per-seed ratio", "missed"]
    table(headers, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
