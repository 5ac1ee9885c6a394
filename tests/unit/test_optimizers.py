from __future__ import annotations

import json
import sys
import types

import pytest

from maggy_core.exceptions import SpecError
from maggy_core.optimizers import (
    DONE,
    WAIT,
    GridSearch,
    Optimizer,
    RandomSearch,
    Suggestion,
    available_optimizers,
    get_optimizer,
    register_optimizer,
    resolve_optimizer,
)
from maggy_core.searchspace import Searchspace
from maggy_core.spec import OptimizerSpec
from maggy_core.trial import FrozenTrial, TrialStatus


def finite_space() -> Searchspace:
    return Searchspace(
        x=("DOUBLE", [0, 1], {"step": 0.5}),
        n=("INTEGER", [1, 4]),
        c=("CATEGORICAL", ["a", "b"]),
    )  # 3 * 4 * 2 = 24 points


def continuous_space() -> Searchspace:
    return Searchspace(lr=("DOUBLE", [1e-4, 1e-1], "log"), units=("INTEGER", [16, 256]))


def make(
    name: str, space: Searchspace | None = None, num_trials: int = 10, seed: int | None = 1
) -> Optimizer:
    return get_optimizer(
        name, space or finite_space(), num_trials=num_trials, direction="max", seed=seed
    )


def drain(opt: Optimizer, limit: int = 1000, done: bool = True) -> list[Suggestion]:
    """Suggestions until DONE (``done``) or ``limit`` of them (not ``done``)."""
    out: list[Suggestion] = []
    for _ in range(limit):
        s = opt.suggest()
        if s is DONE:
            assert done, "DONE before the limit"
            return out
        assert isinstance(s, Suggestion), f"unexpected {s!r}"
        out.append(s)
    assert not done, "optimizer never said DONE"
    return out


def finished(
    trial_id: str, s: Suggestion, metric: float | None, status: TrialStatus
) -> FrozenTrial:
    return FrozenTrial(trial_id, s.params, status, metric, ((0, metric or 0.0),), s.budget, s.info)


def test_registry_lists_the_builtins() -> None:
    assert {"randomsearch", "gridsearch"} <= set(available_optimizers())
    assert available_optimizers() == sorted(available_optimizers())
    assert resolve_optimizer("RandomSearch") is RandomSearch


def test_decisions_have_readable_reprs() -> None:
    assert repr(WAIT) == "WAIT" and repr(DONE) == "DONE" and WAIT != DONE


# --- conformance: every registered optimizer ---------------------------------------


@pytest.fixture(params=available_optimizers())
def name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_conformance_suggestions_are_in_the_space_and_end_with_done(name: str) -> None:
    space = finite_space()
    opt = make(name, space, num_trials=10)
    suggestions = drain(opt)
    assert 1 <= len(suggestions) <= 10
    for s in suggestions:
        space.validate_params(s.params)
        json.dumps(s.params)
        json.dumps(s.info)
    assert opt.suggest() is DONE  # DONE stays DONE


def test_conformance_num_trials_caps_suggestions(name: str) -> None:
    assert len(drain(make(name, num_trials=3))) == 3


def test_conformance_same_seed_same_sequence(name: str) -> None:
    a = [s.params for s in drain(make(name, seed=42))]
    b = [s.params for s in drain(make(name, seed=42))]
    assert a == b


def test_conformance_resumes_from_the_trials_mid_sequence(name: str) -> None:
    full = [s.params for s in drain(make(name, seed=3, num_trials=12))]
    first = make(name, seed=3, num_trials=12)
    head = drain(first, limit=5, done=False)
    # Suggested and not observed yet (in flight at the crash), as in the drain above.
    trials = [finished(f"t{i:04d}", s, None, TrialStatus.PENDING) for i, s in enumerate(head)]
    resumed = make(name, seed=3, num_trials=12)  # the runner keeps the experiment's seed
    resumed.resume(trials)
    assert [s.params for s in head] + [s.params for s in drain(resumed)] == full


def test_conformance_observe_accepts_every_terminal_status(name: str) -> None:
    opt = make(name, num_trials=3)
    statuses = [TrialStatus.FINISHED, TrialStatus.EARLY_STOPPED, TrialStatus.FAILED]
    for i, (s, status) in enumerate(zip(drain(opt), statuses, strict=True)):
        metric = None if status is TrialStatus.FAILED else float(i)
        opt.observe(finished(f"t{i}", s, metric, status))
    assert opt.suggest() is DONE


def test_conformance_rejects_unknown_options(name: str) -> None:
    cls = resolve_optimizer(name)
    problems = cls.check(finite_space(), {"bogus": 1})
    assert ("optimizer.options.bogus" in [f for f, _ in problems]) and "allowed" in str(problems)
    assert cls.check(finite_space(), {}) == []
    with pytest.raises(SpecError, match="optimizer.options.bogus"):
        get_optimizer(
            name, finite_space(), num_trials=1, direction="max", seed=0, options={"bogus": 1}
        )


def test_conformance_validates_common_arguments(name: str) -> None:
    with pytest.raises(SpecError) as err:
        get_optimizer(name, finite_space(), num_trials=True, direction="up", seed=None)
    assert [f for f, _ in err.value.problems] == ["num_trials", "direction"]
    with pytest.raises(SpecError, match="searchspace: is empty"):
        get_optimizer(name, Searchspace(), num_trials=1, direction="max", seed=None)


# --- random search -----------------------------------------------------------------


def test_random_search_continuous_space() -> None:
    space = continuous_space()
    suggestions = drain(make("randomsearch", space, num_trials=50, seed=0))
    assert len(suggestions) == 50
    assert len({json.dumps(s.params, sort_keys=True) for s in suggestions}) == 50
    assert all(1e-4 <= s.params["lr"] <= 1e-1 for s in suggestions)


def test_random_search_different_seeds_differ() -> None:
    a = [s.params for s in drain(make("randomsearch", continuous_space(), seed=1))]
    b = [s.params for s in drain(make("randomsearch", continuous_space(), seed=2))]
    assert a != b


def test_random_search_does_not_repeat_points_of_a_finite_space_until_exhausted() -> None:
    space = Searchspace(n=("INTEGER", [1, 6]))
    params = [s.params["n"] for s in drain(make("randomsearch", space, num_trials=8, seed=0))]
    assert sorted(params[:6]) == [1, 2, 3, 4, 5, 6]
    assert len(params) == 8 and all(1 <= p <= 6 for p in params)


def test_random_search_resumed_does_not_repeat_the_points_of_the_trials() -> None:
    space = Searchspace(n=("INTEGER", [1, 6]))
    head = drain(make("randomsearch", space, num_trials=8, seed=0), limit=4, done=False)
    trials = [finished(f"t{i:04d}", s, 0.5, TrialStatus.FINISHED) for i, s in enumerate(head)]
    resumed = make("randomsearch", space, num_trials=8, seed=0)
    resumed.resume(trials)
    params = [s.params["n"] for s in head] + [s.params["n"] for s in drain(resumed)]
    assert sorted(params[:6]) == [1, 2, 3, 4, 5, 6]
    assert len(params) == 8


# --- grid search -------------------------------------------------------------------


def test_grid_search_follows_the_grid_order() -> None:
    space = finite_space()
    params = [s.params for s in drain(make("gridsearch", space, num_trials=100))]
    assert params == space.grid()
    assert len(params) == 24


def test_grid_search_runs_min_of_num_trials_and_grid_size() -> None:
    space = finite_space()
    assert [s.params for s in drain(make("gridsearch", space, num_trials=5))] == space.grid()[:5]


def test_grid_search_check_reports_double_without_step() -> None:
    space = Searchspace(lr=("DOUBLE", [0, 1]), n=("INTEGER", [1, 3]))
    problems = GridSearch.check(space, {})
    assert [f for f, _ in problems] == ["searchspace.lr"]
    assert "step" in problems[0][1] and "DISCRETE" in problems[0][1]
    assert RandomSearch.check(space, {}) == []
    with pytest.raises(SpecError, match=r"searchspace\.lr: gridsearch needs a finite grid"):
        make("gridsearch", space)


def test_grid_search_does_not_list_a_huge_grid() -> None:
    space = Searchspace(a=("INTEGER", [0, 9999]), b=("INTEGER", [0, 9999]), c=("INTEGER", [1, 9]))
    opt = make("gridsearch", space, num_trials=3)
    assert [s.params for s in drain(opt)] == [
        {"a": 0, "b": 0, "c": 1},
        {"a": 0, "b": 0, "c": 2},
        {"a": 0, "b": 0, "c": 3},
    ]


def test_grid_search_resumes_after_the_trials_it_suggested() -> None:
    space = finite_space()
    head = drain(make("gridsearch", space, num_trials=100), limit=7, done=False)
    trials = [finished(f"t{i:04d}", s, 0.5, TrialStatus.FINISHED) for i, s in enumerate(head)]
    resumed = make("gridsearch", space, num_trials=100)
    resumed.resume(trials)
    assert [s.params for s in drain(resumed)] == space.grid()[7:]


# --- factory and registry ----------------------------------------------------------


def test_get_optimizer_from_an_optimizer_spec() -> None:
    opt = get_optimizer(
        OptimizerSpec("GridSearch"), finite_space(), num_trials=2, direction="min", seed=None
    )
    assert isinstance(opt, GridSearch) and opt.direction == "min" and opt.num_trials == 2


def test_unknown_name_lists_the_allowed_ones() -> None:
    with pytest.raises(SpecError, match=r"optimizer.name: unknown optimizer 'bayes'.*randomsearch"):
        resolve_optimizer("bayes")


class _Always(Optimizer):
    name = "always-first"
    option_names = ("offset",)

    def suggest(self) -> Suggestion:
        return Suggestion({"n": 1 + self.options.get("offset", 0)})

    def observe(self, trial: FrozenTrial) -> None:
        pass


@pytest.fixture
def user_module(monkeypatch: pytest.MonkeyPatch) -> str:
    module = types.ModuleType("user_opts")
    module.Always = _Always  # type: ignore[attr-defined]
    module.NotAnOptimizer = dict  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "user_opts", module)
    return "user_opts"


def test_user_class_by_import_path(user_module: str) -> None:
    space = Searchspace(n=("INTEGER", [1, 5]))
    opt = get_optimizer(
        OptimizerSpec(f"{user_module}:Always", {"offset": 2}),
        space,
        num_trials=1,
        direction="max",
        seed=None,
    )
    assert opt.suggest() == Suggestion({"n": 3})


@pytest.mark.parametrize(
    ("path", "needle"),
    [
        ("user_opts:NotAnOptimizer", "is not a subclass"),
        ("user_opts:Missing", "is not a subclass"),
        ("no_such_module_xyz:Opt", "cannot import 'no_such_module_xyz'"),
    ],
)
def test_bad_import_paths(user_module: str, path: str, needle: str) -> None:
    with pytest.raises(SpecError, match="optimizer.name") as err:
        resolve_optimizer(path)
    assert needle in str(err.value)


def test_register_optimizer_checks_its_argument() -> None:
    with pytest.raises(TypeError):
        register_optimizer(dict)  # type: ignore[arg-type]

    class Clash(_Always):
        name = "randomsearch"

    with pytest.raises(ValueError, match="taken"):
        register_optimizer(Clash)
    assert register_optimizer(RandomSearch) is RandomSearch  # registering again is harmless
