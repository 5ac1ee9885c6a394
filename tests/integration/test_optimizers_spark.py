"""Optimisers on a real Redis and a real Spark ``local[2]``: ASHA promotes as its
rungs say, in both directions, and TPE beats random search where it should."""

from __future__ import annotations

import statistics

import pytest

from maggy_core.optimizers import available_optimizers
from maggy_core.results import ResultStore
from maggy_core.runner import run_experiment
from maggy_core.spec import ExperimentSpec

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("local_spark")]


def run(spec: dict, redis_url, tmp_path):
    s = ExperimentSpec.from_dict(
        {"workers": 2, "es_policy": "none", "hb_interval": 0.5, "seed": 5, **spec}
    )
    return run_experiment(s, redis_url=redis_url, results_dir=tmp_path)


@pytest.mark.parametrize(("direction", "sampler"), [("max", "random"), ("min", "tpe")])
def test_asha_promotes_as_its_rungs_say_and_promotions_continue(
    redis_url, tmp_path, direction, sampler
):
    # quality = 1 / (1 + x^2): for "min" the metric is negated by the objective below.
    # Where new configurations come from (random, or TPE's proposals) changes nothing
    # of the rungs' rule.
    result = run(
        {
            "name": f"asha-{direction}",
            "train_fn": "maggy_core.examples.sleep:budgeted",
            "searchspace": {"x": ["DOUBLE", [-3.0, 3.0]]},
            "optimizer": {
                "name": "asha",
                "options": {
                    "resource_min": 1,
                    "resource_max": 9,
                    "reduction_factor": 3,
                    "sampler": sampler,
                    **({"sampler_options": {"n_startup_trials": 5}} if sampler == "tpe" else {}),
                },
            },
            "num_trials": 15,  # configurations: promotions come on top
            "direction": direction,
        },
        redis_url,
        tmp_path,
    )
    assert result["status"] == "finished", result["reason"]
    trials = {t["trial_id"]: t for t in result["trials"]}
    assert sum(1 for t in trials.values() if t["info"]["rung"] == 0) == 15
    assert len(trials) > 15
    budgets = {0: 1, 1: 3, 2: 9}
    by_rung = {(t["info"]["rung"], t["info"]["config"]): t for t in trials.values()}
    checkpoints = tmp_path / result["experiment_id"] / "checkpoints"
    for t in trials.values():
        rung = t["info"]["rung"]
        assert t["status"] == "finished"
        assert t["budget"] == budgets[rung]
        # Every trial saved its checkpoint beside the trial, in the results directory.
        assert (checkpoints / t["trial_id"] / "checkpoint.json").exists()
        if rung == 0:
            assert "checkpoint" not in t["info"]
            assert [s for s, _ in t["history"]] == list(range(1, t["budget"] + 1))
            continue
        # A promotion received the checkpoint of its configuration's previous rung
        # and ran only the added epochs.
        previous = by_rung[(rung - 1, t["info"]["config"])]
        assert t["info"]["checkpoint"] == previous["trial_id"]
        assert [s for s, _ in t["history"]] == list(range(budgets[rung - 1] + 1, t["budget"] + 1))
    assert {t["info"]["rung"] for t in trials.values()} == {0, 1, 2}

    # Replay the journal: at each promotion, the promoted configuration must be in
    # the top third of the results its rung had at that moment.
    sign = 1.0 if direction == "max" else -1.0
    ended: dict[int, dict[int, float]] = {0: {}, 1: {}, 2: {}}
    promoted: dict[int, set[int]] = {0: set(), 1: set()}
    journal = ResultStore.read_journal_at(tmp_path / result["experiment_id"])
    for rec in journal:
        if rec["type"] == "trial_started" and rec["info"]["rung"] > 0:
            rung, config = rec["info"]["rung"], rec["info"]["config"]
            below = ended[rung - 1]
            keep = len(below) // 3
            ranked = sorted(below, key=lambda c: -sign * below[c])[:keep]
            assert config in ranked, (rung, config, below)
            assert config not in promoted[rung - 1]  # promoted once
            promoted[rung - 1].add(config)
        elif rec["type"] == "trial_ended":
            t = rec["trial"]
            ended[t["info"]["rung"]][t["info"]["config"]] = t["metric"]
    if direction == "max":  # longer budgets score higher: the best went all the way up
        assert trials[result["best"]["trial_id"]]["info"]["rung"] == 2


def test_tpe_beats_random_search_over_fixed_seeds(redis_url, tmp_path):
    # A smooth 2-D bowl: quality = 1 / (1 + x^2 + y^2), best 1.0 at the origin.
    if "tpe" not in available_optimizers():
        pytest.fail("the tpe optimizer is not registered")
    bests: dict[str, list[float]] = {"tpe": [], "randomsearch": []}
    for seed in (1, 2, 3):
        for name in bests:
            result = run(
                {
                    "name": f"{name}-{seed}",
                    "train_fn": "maggy_core.examples.sleep:train",
                    "searchspace": {"x": ["DOUBLE", [-4.0, 4.0]], "y": ["DOUBLE", [-4.0, 4.0]]},
                    "train_kwargs": {"seconds": 0.0, "steps": 1},
                    "optimizer": name,
                    "num_trials": 40,
                    "seed": seed,
                },
                redis_url,
                tmp_path / name,
            )
            assert result["status"] == "finished", result["reason"]
            bests[name].append(result["best"]["metric"])
    wins = sum(t > r for t, r in zip(bests["tpe"], bests["randomsearch"], strict=True))
    assert wins >= 2, bests
    assert statistics.mean(bests["tpe"]) > statistics.mean(bests["randomsearch"]), bests
