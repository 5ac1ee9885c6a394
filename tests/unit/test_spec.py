from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from maggy_core.exceptions import SpecError
from maggy_core.optimizers import available_optimizers
from maggy_core.searchspace import Searchspace
from maggy_core.spec import ExperimentSpec, HyperparameterOptConfig, OptimizerSpec, load_spec

SPACE = {"lr": ["DOUBLE", [0.0001, 0.1], "log"], "units": ["INTEGER", [16, 256]]}


def minimal(**more: Any) -> dict[str, Any]:
    return {"train_fn": "maggy_core.examples.digits:train", "searchspace": SPACE, **more}


def problems_of(data: Any, **kwargs: Any) -> dict[str, str]:
    with pytest.raises(SpecError) as err:
        ExperimentSpec.from_dict(data, **kwargs)
    return dict(err.value.problems)


def test_defaults() -> None:
    spec = ExperimentSpec.from_dict(minimal())
    assert spec.name == "experiment"
    assert spec.optimizer == OptimizerSpec("randomsearch", {})
    assert (spec.num_trials, spec.direction, spec.optimization_key) == (10, "max", "metric")
    assert (spec.es_policy, spec.es_min, spec.es_interval) == ("median", 5, 1)
    assert (spec.hb_interval, spec.workers, spec.seed) == (1.0, 2, None)
    assert (spec.max_consecutive_failures, spec.max_attempts) == (5, 3)
    assert spec.experiment_id is None and spec.description == ""
    assert spec.searchspace == Searchspace.from_dict(SPACE)


def test_round_trip_through_dict_and_json() -> None:
    spec = ExperimentSpec.from_dict(
        minimal(
            name="nightly.hpo-1",
            optimizer={"name": "gridsearch", "options": {}},
            searchspace={"n": ["INTEGER", [1, 3]], "x": ["DOUBLE", [0, 1], {"step": 0.5}]},
            num_trials=7,
            direction="MIN",
            es_policy="none",
            hb_interval=2,
            seed=3,
            experiment_id="exp-7",
            description="d",
        )
    )
    data = spec.to_dict()
    assert data["optimizer"] == {"name": "gridsearch", "options": {}}
    assert data["searchspace"]["x"] == ["DOUBLE", [0.0, 1.0], {"step": 0.5}]
    assert data["direction"] == "min" and data["hb_interval"] == 2.0
    assert ExperimentSpec.from_dict(data) == spec
    assert ExperimentSpec.from_dict(json.loads(json.dumps(data))) == spec


def test_spec_holds_its_own_copy_of_the_searchspace() -> None:
    space = Searchspace(n=("INTEGER", [1, 3]))
    spec = ExperimentSpec(searchspace=space, train_fn="m:f")
    space.add("m", ("INTEGER", [1, 2]))
    assert spec.searchspace.names() == ["n"]


def test_direct_construction_is_validated() -> None:
    with pytest.raises(SpecError, match="num_trials: must be an integer >= 1, got 0"):
        ExperimentSpec(searchspace=Searchspace(n=("INTEGER", [1, 3])), num_trials=0)
    spec = ExperimentSpec(searchspace=Searchspace(n=("INTEGER", [1, 3])), optimizer="GridSearch")  # type: ignore[arg-type]
    assert spec.optimizer == OptimizerSpec("gridsearch")


def test_unknown_key_suggests_the_close_one() -> None:
    problems = problems_of(minimal(num_trial=5, colour="red"))
    assert "did you mean 'num_trials'?" in problems["num_trial"]
    assert "allowed: name, train_fn, searchspace" in problems["num_trial"]
    assert "did you mean" not in problems["colour"]


def test_train_fn_is_required_unless_told_otherwise() -> None:
    data = {"searchspace": SPACE}
    assert "module:function" in problems_of(data)["train_fn"]
    assert ExperimentSpec.from_dict(data, require_train_fn=False).train_fn is None


@pytest.mark.parametrize("bad", ["digits.train", "a.b:", ":f", "a..b:f", "a:b:c", "a-b:f", 3])
def test_train_fn_must_be_an_import_path(bad: Any) -> None:
    assert "must be 'module:function'" in problems_of(minimal(train_fn=bad))["train_fn"]


def test_every_problem_is_reported_at_once() -> None:
    data = {
        "name": "bad name!",
        "train_fn": "x",
        "searchspace": {"lr": ["DOUBLE", [1, 0]], "hparams": ["INTEGER", [1, 2]]},
        "optimizer": "bayesian",
        "num_trials": True,
        "direction": "up",
        "optimization_key": "",
        "es_policy": "asha",
        "es_min": -1,
        "es_interval": 0,
        "hb_interval": 0,
        "workers": 1.5,
        "seed": -1,
        "max_consecutive_failures": 0,
        "max_attempts": None,
        "experiment_id": "a{b}",
        "description": 5,
        "extra": 1,
    }
    problems = problems_of(data)
    assert set(problems) == {
        "name",
        "train_fn",
        "searchspace.lr",
        "searchspace.hparams",
        "optimizer.name",
        "num_trials",
        "direction",
        "optimization_key",
        "es_policy",
        "es_min",
        "es_interval",
        "hb_interval",
        "workers",
        "seed",
        "max_consecutive_failures",
        "max_attempts",
        "experiment_id",
        "description",
        "extra",
    }
    assert "allowed: " + ", ".join(available_optimizers()) in problems["optimizer.name"]
    assert "must be one of median, none" in problems["es_policy"]
    assert "'max' or 'min'" in problems["direction"]


def test_missing_searchspace_and_empty_searchspace() -> None:
    assert "is required" in problems_of({"train_fn": "m:f"})["searchspace"]
    assert "is empty" in problems_of(minimal(searchspace={}))["searchspace"]


@pytest.mark.parametrize("value", [None, False, "none", "NONE"])
def test_es_policy_off_spellings(value: Any) -> None:
    assert ExperimentSpec.from_dict(minimal(es_policy=value)).es_policy == "none"


def test_gridsearch_over_a_double_without_step_is_reported() -> None:
    problems = problems_of(minimal(optimizer="gridsearch", num_trials=0))
    assert "gridsearch needs a finite grid" in problems["searchspace.lr"]
    assert "num_trials" in problems  # reported together with the rest


@pytest.mark.parametrize(
    ("optimizer", "field", "needle"),
    [
        ({"name": "randomsearch", "seed": 1}, "optimizer", "unknown: seed; put them under options"),
        ({"options": {}}, "optimizer", "name (required)"),
        (["randomsearch"], "optimizer", "must be a name"),
        ({"name": "randomsearch", "options": {"x": 1}}, "optimizer.options.x", "allowed: none"),
        ({"name": "randomsearch", "options": [1]}, "optimizer.options", "mapping"),
        ({"name": ""}, "optimizer.name", "non-empty"),
        ("nosuchmodule_xyz:Opt", "optimizer.name", "cannot import"),
    ],
)
def test_optimizer_forms(optimizer: Any, field: str, needle: str) -> None:
    assert needle in problems_of(minimal(optimizer=optimizer))[field]


def test_optimizer_options_become_json_values() -> None:
    spec = OptimizerSpec("RandomSearch", {"t": (1, 2)})
    assert spec == OptimizerSpec("randomsearch", {"t": [1, 2]})
    assert OptimizerSpec("My.Mod:Opt").name == "My.Mod:Opt"  # import paths keep their case


def test_replace_validates_and_keeps_the_rest() -> None:
    spec = ExperimentSpec.from_dict(minimal(seed=1))
    other = spec.replace(
        num_trials=3, optimizer="gridsearch", searchspace={"n": ["INTEGER", [1, 2]]}
    )
    assert (other.num_trials, other.optimizer.name, other.seed) == (3, "gridsearch", 1)
    assert spec.num_trials == 10
    with pytest.raises(SpecError, match="workers: must be an integer >= 1"):
        spec.replace(workers=0)
    with pytest.raises(SpecError, match="did you mean 'workers'"):
        spec.replace(worker=3)


def test_top_level_must_be_a_mapping() -> None:
    with pytest.raises(SpecError, match="a spec must be a mapping"):
        ExperimentSpec.from_dict([1, 2])


# --- files -------------------------------------------------------------------------

YAML = """
name: nightly
train_fn: maggy_core.examples.digits:train
searchspace:
  lr: [DOUBLE, [0.0001, 0.1], log]
  units: {type: INTEGER, values: [16, 256]}
  act: [CATEGORICAL, [relu, tanh]]
optimizer: {name: randomsearch, options: {}}
num_trials: 4
es_policy: null
"""


def test_load_yaml(tmp_path: Path) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text(YAML)
    spec = load_spec(path)
    assert spec.name == "nightly" and spec.num_trials == 4 and spec.es_policy == "none"
    assert spec.searchspace.get("act").values == ("relu", "tanh")
    assert spec.searchspace.get("lr").log is True


def test_load_json_equals_yaml(tmp_path: Path) -> None:
    (tmp_path / "a.yml").write_text(YAML)
    spec = load_spec(tmp_path / "a.yml")
    (tmp_path / "b.json").write_text(json.dumps(spec.to_dict()))
    assert load_spec(tmp_path / "b.json") == spec


@pytest.mark.parametrize(
    ("filename", "text", "needle"),
    [
        ("missing.yaml", None, "cannot read the spec"),
        ("bad.yaml", "a: [1, 2\nb: c", "cannot parse the spec"),
        ("bad.json", "{'a': 1}", "cannot parse the spec"),
        ("list.yaml", "- 1\n- 2\n", "the top level must be a mapping"),
        ("empty.yaml", "", "the top level must be a mapping"),
        ("spec.txt", "a: 1", "must end in .yaml, .yml or .json"),
    ],
)
def test_load_errors_name_the_file(
    tmp_path: Path, filename: str, text: str | None, needle: str
) -> None:
    path = tmp_path / filename
    if text is not None:
        path.write_text(text)
    with pytest.raises(SpecError) as err:
        load_spec(path)
    assert err.value.problems[0][0] == ""
    assert str(path) in str(err.value) and needle in str(err.value)


def test_load_reports_field_problems(tmp_path: Path) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text("train_fn: m:f\nsearchspace: {lr: [DOUBLE, [0, 1], log]}\nworkers: 0\n")
    with pytest.raises(SpecError) as err:
        load_spec(path)
    assert [f for f, _ in err.value.problems] == ["searchspace.lr", "workers"]


# --- MAGGY 1.x ---------------------------------------------------------------------


def test_hyperparameter_opt_config_maggy_1x() -> None:
    sp = Searchspace(kernel=("INTEGER", [2, 8]), pool=("INTEGER", [2, 8]))
    sp.add("dropout", ("DOUBLE", [0.01, 0.99]))
    config = HyperparameterOptConfig(
        num_trials=4,
        optimizer="randomsearch",
        searchspace=sp,
        direction="max",
        es_interval=1,
        es_min=5,
        name="hp_tuning_test",
    )
    assert isinstance(config, ExperimentSpec)
    assert config.train_fn is None and config.name == "hp_tuning_test"
    assert config.num_trials == 4 and config.es_min == 5 and config.searchspace == sp


def test_hyperparameter_opt_config_defaults_and_extras() -> None:
    config = HyperparameterOptConfig(
        10, {"name": "gridsearch"}, {"n": ["INTEGER", [1, 4]]}, workers=4, seed=9
    )
    assert (config.es_min, config.name, config.hb_interval) == (10, "HPOptimization", 1.0)
    assert (config.workers, config.seed, config.optimizer.name) == (4, 9, "gridsearch")
    with pytest.raises(SpecError, match="did you mean 'workers'"):
        HyperparameterOptConfig(10, "randomsearch", {"n": ["INTEGER", [1, 4]]}, wrokers=4)


def test_a_spec_is_validated_once_per_from_dict(monkeypatch: pytest.MonkeyPatch) -> None:
    import maggy_core.spec as spec_module

    calls = []
    real = spec_module._validate

    def counting(values: dict[str, Any]) -> Any:
        calls.append(1)
        return real(values)

    monkeypatch.setattr(spec_module, "_validate", counting)
    spec = ExperimentSpec.from_dict(minimal(es_policy={"name": "percentile", "options": {}}))
    assert len(calls) == 1
    assert spec.es_policy == "percentile"


@pytest.mark.parametrize(
    ("field", "value", "where"),
    [
        ("optimizer", {"name": "randomsearch", "options": 3}, "optimizer.options"),
        ("es_policy", {"options": {}}, "es_policy"),
        ("es_policy", {"name": "median", "min": 3}, "es_policy"),
    ],
)
def test_one_name_options_parser_names_the_field(field: str, value: Any, where: str) -> None:
    with pytest.raises(SpecError) as err:
        ExperimentSpec.from_dict(minimal(**{field: value}))
    assert where in [f for f, _ in err.value.problems]


@pytest.mark.parametrize(
    ("fields", "where", "says"),
    [
        ({"num_trials": 10**12}, "num_trials", "at most 1,000,000"),
        ({"workers": 10**9}, "workers", "at most 10,000"),
        ({"hb_interval": 1e-9}, "hb_interval", "at least 0.01"),
    ],
)
def test_counts_above_the_stated_maximum_are_refused(fields: dict, where: str, says: str) -> None:
    problems = problems_of(minimal(**fields))
    assert says in problems[where]


def test_a_huge_ablation_plan_is_refused_before_it_is_made() -> None:
    import time

    def refused(components: int, repeats: int) -> str:
        study = {"components": [f"c{i}" for i in range(components)]}
        ablator = {"name": "loco", "repeats": repeats}
        return problems_of({"train_fn": "a:b", "ablation": study, "ablator": ablator})[
            "ablator.repeats"
        ]

    t0 = time.perf_counter()
    assert "at most 10,000" in refused(3, 10**12)
    assert "plan of 3,609,000 trials; at most 1,000,000" in refused(400, 9_000)
    assert time.perf_counter() - t0 < 5  # refused, not planned
