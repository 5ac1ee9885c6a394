"""Every registered optimiser through the same cases: parameters inside the space
for every type, DONE when the budget is spent, max and min alike, repeatable
with a seed, and resume from saved state or from the trials of a journal."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from maggy_core.optimizers import DONE, WAIT, Optimizer, Suggestion, available_optimizers
from maggy_core.optimizers import get_optimizer as _get
from maggy_core.searchspace import Searchspace
from maggy_core.trial import FrozenTrial, TrialStatus

NUM_TRIALS = 14

# Every parameter type; grid search needs a finite space, so its DOUBLE has a step.
SPACE = {
    "lr": ["DOUBLE", [1e-4, 1e-1], "log"],
    "dropout": ["DOUBLE", [0.0, 0.5]],
    "units": ["INTEGER", [8, 64]],
    "layers": ["INTEGER", [1, 7], {"step": 2}],
    "batch": ["DISCRETE", [16, 32, 64]],
    "act": ["CATEGORICAL", ["relu", "tanh", "elu"]],
}
GRID_SPACE = {
    "dropout": ["DOUBLE", [0.0, 0.5], {"step": 0.25}],
    "units": ["INTEGER", [8, 10]],
    "batch": ["DISCRETE", [16, 32]],
    "act": ["CATEGORICAL", ["relu", "tanh"]],
}


def make(name: str, direction: str = "max", seed: int = 5, num_trials: int = NUM_TRIALS):
    space = Searchspace.from_dict(GRID_SPACE if name == "gridsearch" else SPACE)
    try:
        return _get(name, space, num_trials=num_trials, direction=direction, seed=seed)
    except Exception as err:  # an optional dependency (torch for gp) that is missing
        if "install" in str(err):
            pytest.skip(str(err))
        raise


def objective(params: dict[str, Any]) -> float:
    """A smooth score, larger is better, that every parameter moves."""
    score = -((math.log10(params.get("lr", 1e-2)) + 2) ** 2)
    score -= (params["dropout"] - 0.2) ** 2 + ((params["units"] - 40) / 40) ** 2
    score += {"relu": 0.3, "tanh": 0.1, "elu": 0.0}[params["act"]]
    return score + params["batch"] / 640


def drive(
    opt: Optimizer, *, parallel: int = 1, sign: float = 1.0, stop_after: int | None = None
) -> tuple[list[Suggestion], list[FrozenTrial]]:
    """Run the coordinator's protocol with ``parallel`` trials in flight; trials end
    oldest first. With ``stop_after``, stop suggesting after that many and let the
    running ones end. Returns the suggestions and the ended trials, in order."""
    suggestions: list[Suggestion] = []
    ended: list[FrozenTrial] = []
    running: list[FrozenTrial] = []
    while True:
        more = stop_after is None or len(suggestions) < stop_after
        decision = opt.suggest() if more and len(running) < parallel else WAIT
        if isinstance(decision, Suggestion):
            suggestions.append(decision)
            tid = f"t{len(suggestions) - 1:04d}"
            running.append(
                FrozenTrial(
                    tid,
                    decision.params,
                    TrialStatus.RUNNING,
                    None,
                    (),
                    decision.budget,
                    decision.info,
                )
            )
            continue
        if not running:
            assert decision is DONE or not more
            break
        t = running.pop(0)
        value = sign * objective(t.params) * (1 + 0.01 * (t.budget or 0))
        done = FrozenTrial(
            t.trial_id, t.params, TrialStatus.FINISHED, value, ((0, value),), t.budget, t.info
        )
        opt.observe(done)
        ended.append(done)
    return suggestions, ended


def names() -> list[str]:
    return available_optimizers()


@pytest.mark.parametrize("name", names())
@pytest.mark.parametrize("parallel", [1, 4])
def test_suggestions_are_inside_the_space_and_done_when_spent(name: str, parallel: int) -> None:
    opt = make(name)
    suggestions, ended = drive(opt, parallel=parallel)
    expected = NUM_TRIALS if name != "gridsearch" else min(NUM_TRIALS, opt.searchspace.grid_size())
    assert len(suggestions) == expected
    assert len(ended) == expected
    for s in suggestions:
        assert set(s.params) == set(opt.searchspace.names())
        for key, value in s.params.items():
            assert opt.searchspace.get(key).contains(value), (key, value)
        json.dumps({"params": s.params, "info": s.info, "budget": s.budget})  # JSON only
    assert opt.suggest() is DONE
    assert opt.suggest() is DONE


@pytest.mark.parametrize("name", names())
def test_min_of_the_negated_metric_is_max_of_the_metric(name: str) -> None:
    up, _ = drive(make(name, "max"))
    down, _ = drive(make(name, "min"), sign=-1.0)
    assert [s.params for s in up] == [s.params for s in down]
    assert [s.budget for s in up] == [s.budget for s in down]


@pytest.mark.parametrize("name", names())
def test_the_same_seed_gives_the_same_search(name: str) -> None:
    first, _ = drive(make(name, seed=11), parallel=2)
    again, _ = drive(make(name, seed=11), parallel=2)
    assert [(s.params, s.budget) for s in first] == [(s.params, s.budget) for s in again]


@pytest.mark.parametrize("name", names())
def test_resume_from_the_journal_trials(name: str) -> None:
    """A crash with trials in flight: the ended ones come back with results, the
    others as PENDING (the coordinator runs them again and observes them later)."""
    opt = make(name)
    head, ended = drive(opt, parallel=2, stop_after=7)
    ended = ended[:-1]  # the last one was still running at the crash
    done = {t.trial_id: t for t in ended}
    trials = []
    for i, s in enumerate(head):
        tid = f"t{i:04d}"
        trials.append(
            done.get(tid)
            or FrozenTrial(tid, s.params, TrialStatus.PENDING, None, (), s.budget, s.info)
        )
    fresh = make(name)
    fresh.resume(trials)
    # The pending one ends first, as it would when run again, then the search goes on.
    for t in trials:
        if t.status is TrialStatus.PENDING:
            value = objective(t.params) * (1 + 0.01 * (t.budget or 0))
            fresh.observe(
                FrozenTrial(
                    t.trial_id,
                    t.params,
                    TrialStatus.FINISHED,
                    value,
                    ((0, value),),
                    t.budget,
                    t.info,
                )
            )
    tail, _ = drive(fresh, parallel=2)
    expected, _ = drive(opt, parallel=2)  # the run that did not crash
    assert [(s.params, s.budget) for s in tail] == [(s.params, s.budget) for s in expected]
    assert len(head) + len(tail) == NUM_TRIALS
    assert fresh.suggest() is DONE


@pytest.mark.parametrize("name", names())
def test_failed_and_stopped_trials_are_taken(name: str) -> None:
    opt = make(name)
    for i in range(NUM_TRIALS):
        s = opt.suggest()
        if not isinstance(s, Suggestion):
            break
        status = [TrialStatus.FAILED, TrialStatus.EARLY_STOPPED, TrialStatus.FINISHED][i % 3]
        metric = None if status is TrialStatus.FAILED else objective(s.params)
        history = () if metric is None else ((0, metric), (1, metric))
        opt.observe(FrozenTrial(f"t{i}", s.params, status, metric, history, s.budget, s.info))
    assert opt.suggest() is DONE
