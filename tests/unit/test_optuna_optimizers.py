"""The Optuna optimisers: tpe, gp, cmaes and optuna (any sampler by name)."""

from __future__ import annotations

import json
import logging
import math
import subprocess
import sys
import warnings
from collections.abc import Callable
from typing import Any

import pytest

from maggy_core.exceptions import SpecError
from maggy_core.optimizers import (
    DONE,
    CmaEsSearch,
    GPSearch,
    Optimizer,
    OptunaSearch,
    Suggestion,
    TPESearch,
    _optuna,
    available_optimizers,
    get_optimizer,
    resolve_optimizer,
)
from maggy_core.searchspace import Searchspace
from maggy_core.trial import FrozenTrial, TrialStatus

# Small n_startup_trials / popsize so that the model (not only its random start)
# runs within a few trials, and the tests stay fast.
CONFIGS: list[tuple[str, dict[str, Any]]] = [
    ("tpe", {"n_startup_trials": 4}),
    ("gp", {"n_startup_trials": 4}),
    ("cmaes", {"popsize": 4}),
    ("optuna", {"sampler": "QMCSampler", "scramble": True}),
    ("optuna", {"sampler": "RandomSampler"}),
]
IDS = ["tpe", "gp", "cmaes", "qmc", "random"]
MODELS = CONFIGS[:3]  # the samplers that learn from results


def snapshot(opt: Any) -> dict[str, Any]:
    """What the optimiser holds (its sampler, seed, count and Optuna trials), for
    comparing two of them; read from its attributes, since it keeps no other copy."""
    return {
        "sampler": opt._sampler_name,
        "seed": opt._seed,
        "count": opt._count,
        "trials": [r.to_json() for r in opt._records],
    }


def every_type_space() -> Searchspace:
    return Searchspace(
        x=("DOUBLE", [0.0, 1.0]),
        lr=("DOUBLE", [1e-4, 1e-1], "log"),
        q=("DOUBLE", [0.1, 0.95], {"step": 0.1}),  # grid 0.1 .. 0.9; 0.95 is off-grid
        n=("INTEGER", [1, 10]),
        m=("INTEGER", [0, 20], {"step": 5}),
        k=("INTEGER", [1, 1000], "log"),
        d=("DISCRETE", [1, 2.5, 4]),
        c=("CATEGORICAL", ["a", True, 3]),
    )


def square() -> Searchspace:
    return Searchspace(x=("DOUBLE", [0.0, 1.0]), y=("DOUBLE", [0.0, 1.0]))


def bowl(p: dict[str, Any]) -> float:
    """Maximum 0 at x=0.3, y=0.7."""
    return -((p["x"] - 0.3) ** 2) - (p["y"] - 0.7) ** 2


def score(p: dict[str, Any]) -> float:
    """A smooth function of every parameter of every_type_space()."""
    bonus = {"a": 0.0, True: 0.05, 3: 0.02}[p["c"]]
    return -((p["x"] - 0.3) ** 2) - (p["q"] - 0.5) ** 2 + 0.01 * p["n"] + 0.01 * p["d"] + bonus


def make(
    name: str,
    options: dict[str, Any],
    space: Searchspace | None = None,
    *,
    num_trials: int = 100,
    seed: int | None = 7,
    direction: str = "max",
) -> Optimizer:
    return get_optimizer(
        name,
        space or every_type_space(),
        num_trials=num_trials,
        direction=direction,
        seed=seed,
        options=options,
    )


def ask(opt: Optimizer) -> Suggestion:
    s = opt.suggest()
    assert isinstance(s, Suggestion), f"expected a suggestion, got {s!r}"
    return s


def ended(
    i: int, s: Suggestion, status: TrialStatus, f: Callable[[dict[str, Any]], float] = score
) -> FrozenTrial:
    """Trial ``t{i}`` ended with ``status``; an early-stopped one has reported twice."""
    value = f(s.params)
    if status is TrialStatus.FAILED:
        return FrozenTrial(f"t{i:04d}", s.params, status, None, (), info=s.info)
    if status is TrialStatus.EARLY_STOPPED:
        history = ((1, value - 0.3), (2, value - 0.1))
        return FrozenTrial(f"t{i:04d}", s.params, status, value - 0.1, history, info=s.info)
    return FrozenTrial(f"t{i:04d}", s.params, status, value, ((1, value),), info=s.info)


CYCLE = [TrialStatus.FINISHED, TrialStatus.EARLY_STOPPED, TrialStatus.FINISHED, TrialStatus.FAILED]


def interrupted_run(
    opt: Optimizer, n: int = 9
) -> tuple[list[tuple[int, Suggestion]], list[FrozenTrial]]:
    """Like a coordinator with 3 workers: batches of 3 suggestions; the first two of
    each batch end (in reverse order, cycling through the terminal statuses), the
    third is still running.

    Returns:
        The running (index, suggestion) pairs, and every trial as the journal would
        give it to ``resume``: in suggestion order, PENDING where not ended.
    """
    trials: list[FrozenTrial] = []
    running: list[tuple[int, Suggestion]] = []
    for start in range(0, n, 3):
        batch = [(i, ask(opt)) for i in range(start, start + 3)]
        trials += [
            FrozenTrial(f"t{i:04d}", s.params, TrialStatus.PENDING, info=s.info) for i, s in batch
        ]
        for i, s in reversed(batch[:2]):
            trial = ended(i, s, CYCLE[i % 4])
            opt.observe(trial)
            trials[i] = trial
        running.append(batch[2])
    return running, trials


def carry_on(
    opt: Optimizer, running: list[tuple[int, Suggestion]], rounds: int = 4
) -> list[dict[str, Any]]:
    """End the running trials, then a few sequential rounds; the suggested params."""
    for i, s in running:
        opt.observe(ended(i, s, TrialStatus.FINISHED))
    out = []
    for r in range(rounds):
        s = ask(opt)
        out.append(s.params)
        opt.observe(ended(100 + r, s, TrialStatus.FINISHED))
    return out


# --- registry and import ---------------------------------------------------------------


def test_registered_names_and_classes() -> None:
    assert {"tpe", "gp", "cmaes", "optuna"} <= set(available_optimizers())
    classes = {"tpe": TPESearch, "gp": GPSearch, "cmaes": CmaEsSearch, "optuna": OptunaSearch}
    for name, cls in classes.items():
        assert resolve_optimizer(name) is cls
    opt = make("optuna", {})  # Optuna's default sampler
    assert snapshot(opt)["sampler"] == "TPESampler"


def test_importing_maggy_core_does_not_import_optuna() -> None:
    code = (
        "import sys, maggy_core, maggy_core.optimizers, maggy_core.spec\n"
        "print(sorted(m for m in ('optuna', 'torch', 'cmaes') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# --- suggestions -----------------------------------------------------------------------


@pytest.mark.parametrize(("name", "options"), CONFIGS, ids=IDS)
def test_params_are_plain_json_in_the_space_then_done(name: str, options: dict) -> None:
    space = every_type_space()
    grid_q = space.get("q").grid_values()
    opt = make(name, options, space, num_trials=10)
    seen = []
    for i in range(10):
        s = ask(opt)
        space.validate_params(s.params)
        assert json.loads(json.dumps(s.params)) == s.params
        assert json.loads(json.dumps(s.info)) == s.info and s.info["optuna_trial"] == i
        assert type(s.params["x"]) is float and type(s.params["lr"]) is float
        assert type(s.params["n"]) is int and type(s.params["k"]) is int
        assert s.params["q"] in grid_q  # 0.3, never 0.30000000000000004
        assert s.params["m"] in (0, 5, 10, 15, 20)
        seen.append(s.params)
        opt.observe(ended(i, s, CYCLE[i % 4]))
    assert opt.suggest() is DONE and opt.suggest() is DONE
    assert len({json.dumps(p, sort_keys=True) for p in seen}) == 10


def test_stepped_double_keeps_the_top_of_the_grid() -> None:
    # (0.4 - 0.1) / 0.1 is 2.9999999999999996 in floats; the grid still ends at 0.4.
    space = Searchspace(q=("DOUBLE", [0.1, 0.4], {"step": 0.1}), x=("DOUBLE", [0, 1]))
    opt = make("optuna", {"sampler": "RandomSampler"}, space, seed=0)
    values = {ask(opt).params["q"] for _ in range(60)}
    assert values == {0.1, 0.2, 0.3, 0.4}


@pytest.mark.parametrize(("name", "options"), MODELS, ids=IDS[:3])
def test_pending_suggestions_are_distinct_in_startup_and_model_phases(
    name: str, options: dict
) -> None:
    opt = make(name, options, square())

    def four_pending(start: int) -> list[Suggestion]:
        batch = [ask(opt) for _ in range(4)]
        points = [(s.params["x"], s.params["y"]) for s in batch]
        assert len(set(points)) == 4, points
        running = [t for t in snapshot(opt)["trials"] if t["state"] == "running"]
        assert len(running) == 4  # the model sees them as RUNNING trials
        for i, s in enumerate(batch):
            opt.observe(ended(start + i, s, TrialStatus.FINISHED, bowl))
        return batch

    four_pending(0)  # random start: a fresh sampler per ask, each with its own seed
    for i in range(4, 10):
        opt.observe(ended(i, ask(opt), TrialStatus.FINISHED, bowl))
    four_pending(10)  # the model: past n_startup_trials (cmaes: 2 generations of 4)


def test_tpe_constant_liar_spreads_pending_suggestions_on_a_grid() -> None:
    space = Searchspace(x=("DOUBLE", [0, 1], {"step": 0.1}), y=("DOUBLE", [0, 1], {"step": 0.1}))

    def duplicates(options: dict[str, Any]) -> int:
        count = 0
        for seed in range(5):
            opt = make("tpe", {"n_startup_trials": 5, **options}, space, seed=seed)
            for i in range(10):
                opt.observe(ended(i, ask(opt), TrialStatus.FINISHED, bowl))
            points = [json.dumps(ask(opt).params, sort_keys=True) for _ in range(4)]
            count += 4 - len(set(points))
        return count

    assert duplicates({}) == 0
    # Control: without constant_liar (running trials ignored) TPE repeats its best guess,
    # so the check above is able to fail.
    assert duplicates({"constant_liar": False}) > 0


def test_qmc_keeps_one_low_discrepancy_sequence() -> None:
    # Trial 0 is random (Optuna's QMCSampler starts so); trials 1..8 are the first 8
    # points of one scrambled Sobol sequence, which put exactly one point in each
    # eighth of [0, 1). Reseeding QMC per trial would make them random.
    space = Searchspace(x=("DOUBLE", [0.0, 1.0]))
    for seed in range(3):
        opt = make("optuna", {"sampler": "QMCSampler", "scramble": True}, space, seed=seed)
        xs = []
        for i in range(9):
            s = ask(opt)
            xs.append(s.params["x"])
            opt.observe(ended(i, s, TrialStatus.FINISHED, lambda p: -p["x"]))
        assert sorted(int(x * 8) for x in xs[1:]) == list(range(8))


# --- repeatability and resume ----------------------------------------------------------


@pytest.mark.parametrize(("name", "options"), CONFIGS, ids=IDS)
def test_same_seed_same_suggestions_other_seed_others(name: str, options: dict) -> None:
    def run(seed: int) -> list:
        opt = make(name, options, seed=seed)
        running, _ = interrupted_run(opt)
        return carry_on(opt, running)

    first = run(11)
    assert run(11) == first
    assert run(12) != first


@pytest.mark.parametrize(("name", "options"), CONFIGS, ids=IDS)
def test_resume_from_trials_continues_like_the_uninterrupted_search(
    name: str, options: dict
) -> None:
    live = make(name, options, num_trials=13)
    running, trials = interrupted_run(live)
    journal = [  # what a journal gives back: JSON round-tripped params and info
        FrozenTrial(
            t.trial_id,
            json.loads(json.dumps(t.params)),
            t.status,
            t.metric,
            t.history,
            info=json.loads(json.dumps(t.info)),
        )
        for t in trials
    ]
    resumed = make(name, options, num_trials=13)
    resumed.resume(journal)
    assert carry_on(resumed, running) == carry_on(live, running)
    assert snapshot(resumed) == snapshot(live)
    assert resumed.suggest() is DONE  # 9 + 4 = 13 suggestions, resumed ones included


def test_resume_without_a_seed_reuses_the_first_runs_seed() -> None:
    live = make("tpe", {"n_startup_trials": 3}, seed=None)
    running, trials = interrupted_run(live)
    resumed = make("tpe", {"n_startup_trials": 3}, seed=None)
    resumed.resume(trials)
    assert carry_on(resumed, running) == carry_on(live, running)


def test_resume_finds_pending_trials_by_id_without_optuna_info() -> None:
    # Trials from a journal whose info the optimiser did not write (another version).
    space = square()
    opt = make("tpe", {"n_startup_trials": 2}, space, num_trials=5)
    trials = [
        FrozenTrial("t0000", {"x": 0.1, "y": 0.2}, TrialStatus.FINISHED, -0.5),
        FrozenTrial("t0001", {"x": 0.3, "y": 0.7}, TrialStatus.PENDING),
    ]
    opt.resume(trials)
    opt.observe(FrozenTrial("t0001", {"x": 0.3, "y": 0.7}, TrialStatus.FINISHED, 0.0))
    state = snapshot(opt)
    assert [(t["trial_id"], t["state"], t["value"]) for t in state["trials"]] == [
        ("t0000", "complete", -0.5),
        ("t0001", "complete", 0.0),
    ]
    assert len([ask(opt) for _ in range(3)]) == 3 and opt.suggest() is DONE


def test_observe_maps_statuses_onto_optuna_states() -> None:
    opt = make("tpe", {}, square())
    s = [ask(opt) for _ in range(5)]
    opt.observe(FrozenTrial("a", s[0].params, TrialStatus.FINISHED, 0.5, info=s[0].info))
    history = ((1, 0.2), (2, 0.4), (2, 0.9))  # a repeated step keeps its first value
    opt.observe(
        FrozenTrial("b", s[1].params, TrialStatus.EARLY_STOPPED, 0.9, history, info=s[1].info)
    )
    opt.observe(FrozenTrial("c", s[2].params, TrialStatus.FAILED, None, info=s[2].info))
    opt.observe(FrozenTrial("d", s[3].params, TrialStatus.FINISHED, math.nan, info=s[3].info))
    rows = [(t["state"], t["value"], t["history"]) for t in snapshot(opt)["trials"]]
    assert rows == [
        ("complete", 0.5, []),
        ("pruned", 0.4, [[1, 0.2], [2, 0.4]]),
        ("fail", None, []),
        ("fail", None, []),  # Optuna refuses NaN values
        ("running", None, []),
    ]
    # A second report of the same trial changes nothing.
    opt.observe(FrozenTrial("a", s[0].params, TrialStatus.FINISHED, 9.0, info=s[0].info))
    assert snapshot(opt)["trials"][0]["value"] == 0.5


# --- the model works -------------------------------------------------------------------


@pytest.mark.parametrize("direction", ["max", "min"])
def test_tpe_beats_random_search_on_a_smooth_function(direction: str) -> None:
    sign = 1.0 if direction == "max" else -1.0  # "min" minimises the negated bowl

    def best(name: str, seed: int) -> float:
        opt = make(name, {}, square(), num_trials=40, seed=seed, direction=direction)
        values = []
        for i in range(40):
            s = ask(opt)
            values.append(sign * bowl(s.params))
            opt.observe(ended(i, s, TrialStatus.FINISHED, lambda p: sign * bowl(p)))
        assert opt.suggest() is DONE
        return max(values) if direction == "max" else min(values)

    wins = 0
    for seed in range(5):
        tpe, rnd = best("tpe", seed), best("randomsearch", seed)
        wins += tpe > rnd if direction == "max" else tpe < rnd
    assert wins >= 4


# --- errors ----------------------------------------------------------------------------


def problems(name: str, options: dict, space: Searchspace | None = None) -> list:
    return resolve_optimizer(name).check(space or every_type_space(), options)


def test_unknown_option_lists_the_samplers_options() -> None:
    [(where, message)] = problems("tpe", {"n_startup": 3})
    assert where == "optimizer.options.n_startup"
    assert message.startswith("unknown option for tpe; allowed: ")
    assert "n_startup_trials" in message and "constant_liar" in message
    assert "seed" not in message.split("allowed: ")[1].split(", ")
    with pytest.raises(SpecError, match="optimizer.options.n_startup: unknown option for tpe"):
        make("tpe", {"n_startup": 3})
    [(where, message)] = problems("optuna", {"sampler": "QMCSampler", "bogus": 1})
    assert where == "optimizer.options.bogus"
    assert message.startswith("unknown option for optuna (QMCSampler); allowed: sampler, ")


def test_seed_is_not_an_option() -> None:
    for name in ("tpe", "gp", "cmaes"):
        [(where, message)] = problems(name, {"seed": 1})
        assert where == "optimizer.options.seed"
        assert message == "is not an option: the spec's seed seeds the sampler"


def test_options_that_need_python_objects_are_refused() -> None:
    [(where, message)] = problems("tpe", {"gamma": "lambda n: 3"})
    assert where == "optimizer.options.gamma"
    assert "takes a Python object" in message and "Callable" in message


def test_options_the_sampler_rejects_are_reported() -> None:
    [(where, message)] = problems("optuna", {"sampler": "QMCSampler", "qmc_type": "lattice"})
    assert where == "optimizer.options"
    assert "optuna (QMCSampler)" in message and "lattice" in message


def test_unknown_or_unusable_sampler_for_optuna() -> None:
    [(where, message)] = problems("optuna", {"sampler": "SuperSampler"})
    assert where == "optimizer.options.sampler"
    assert message.startswith("unknown Optuna sampler 'SuperSampler'; allowed: ")
    assert "QMCSampler" in message and "NSGAIISampler" in message
    assert "GridSampler" not in message and "PartialFixedSampler" not in message
    [(where, message)] = problems("optuna", {"sampler": "GridSampler"})
    assert where == "optimizer.options.sampler" and "gridsearch" in message
    [(where, message)] = problems("optuna", {"sampler": "PartialFixedSampler"})
    assert "base_sampler" in message and "spec cannot give" in message
    with pytest.raises(SpecError, match="optimizer.options.sampler: unknown Optuna sampler"):
        make("optuna", {"sampler": "SuperSampler"})


def test_gp_without_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    real = _optuna._module_available
    monkeypatch.setattr(_optuna, "_module_available", lambda m: m != "torch" and real(m))
    assert problems("gp", {}) == [
        (
            "optimizer.name",
            "gp needs PyTorch (Optuna's GPSampler); install it: pip install 'maggy-airflow[gp]'",
        )
    ]
    [(where, message)] = problems("optuna", {"sampler": "GPSampler"})
    assert where == "optimizer.options.sampler" and "pip install 'maggy-airflow[gp]'" in message
    assert problems("tpe", {}) == []


def test_cmaes_without_the_cmaes_package(monkeypatch: pytest.MonkeyPatch) -> None:
    real = _optuna._module_available
    monkeypatch.setattr(_optuna, "_module_available", lambda m: m != "cmaes" and real(m))
    assert problems("cmaes", {}) == [
        (
            "optimizer.name",
            "cmaes needs the cmaes package (Optuna's CmaEsSampler); "
            "install it: pip install 'maggy-airflow[optuna]'",
        )
    ]


def test_without_optuna(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_optuna, "_module_available", lambda m: False)
    [(where, message)] = problems("tpe", {})
    assert where == "optimizer.name" and "pip install 'maggy-airflow[optuna]'" in message


def test_cmaes_needs_a_numeric_parameter(caplog: pytest.LogCaptureFixture) -> None:
    space = Searchspace(c=("CATEGORICAL", ["a", "b"]), d=("DISCRETE", [1, 2]))
    [(where, message)] = problems("cmaes", {}, space)
    assert where == "optimizer.name" and "at least one DOUBLE or INTEGER" in message
    assert "c, d" in message
    mixed = Searchspace(x=("DOUBLE", [0, 1]), c=("CATEGORICAL", ["a", "b"]))
    assert problems("cmaes", {}, mixed) == []
    with caplog.at_level(logging.WARNING, logger="maggy_core.optimizers._optuna"):
        make("cmaes", {}, mixed)
    assert "samples c at random" in caplog.text


def test_categorical_values_optuna_cannot_tell_apart() -> None:
    space = Searchspace(flag=("CATEGORICAL", [True, 1, "x"]), x=("DOUBLE", [0, 1]))
    [(where, message)] = problems("tpe", {}, space)
    assert where == "searchspace.flag" and "True" in message and "1" in message


# --- quiet -----------------------------------------------------------------------------


def test_optuna_logging_and_experimental_warnings_are_silenced() -> None:
    import optuna

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        opt = make("optuna", {"sampler": "QMCSampler"}, square())
        for i in range(3):
            opt.observe(ended(i, ask(opt), TrialStatus.FINISHED, bowl))
    assert optuna.logging.get_verbosity() == optuna.logging.WARNING
    assert [
        w for w in caught if issubclass(w.category, optuna.exceptions.ExperimentalWarning)
    ] == []
