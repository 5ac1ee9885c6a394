"""Ablation studies without Spark: the spec's ``ablation:`` block and its errors,
MAGGY 1.x's Python API, the LOCO ablator's plan, the checks ``prepare`` makes
before Spark starts, and what a trial is given (``TrialContext``)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# Lives in tests/, which pytest puts on sys.path for tests/conftest.py.
import ablation_fixtures  # noqa: E402

from maggy_core.ablation.ablators import LOCO, Ablator, get_ablator  # noqa: E402
from maggy_core.ablation.study import (  # noqa: E402
    AblationSpec,
    AblationStudy,
    Component,
    TrialContext,
)
from maggy_core.examples import tabular  # noqa: E402
from maggy_core.exceptions import SpecError  # noqa: E402
from maggy_core.optimizers import DONE, Suggestion  # noqa: E402
from maggy_core.runner import _make_optimizer, prepare  # noqa: E402
from maggy_core.spec import AblationConfig, ExperimentSpec, load_spec  # noqa: E402
from maggy_core.trial import FrozenTrial, TrialStatus  # noqa: E402

SPEC_YAML = """\
name: titanic-like-ablation
train_fn: mypkg.train:fit
ablation:
  dataset: data/table.parquet
  label: survived
  features: [age, [fare, sibsp]]
  base_model: mypkg.train:base_model
  layers: [dense_2]
  layer_groups: [[dense_2, dense_3], {prefix: dense}]
  custom_models: {small: mypkg.train:small_model}
  components: [batchnorm]
ablator: {name: loco, repeats: 5}
direction: max
optimization_key: accuracy
workers: 2
seed: 7
"""

EXPECTED_PLAN = [
    ("age", "feature"),
    ("fare+sibsp", "feature"),
    ("dense_2", "layer"),
    ("dense_2+dense_3", "layer_group"),
    ("dense*", "layer_group"),
    ("small", "custom_model"),
    ("batchnorm", "component"),
]


def study_spec(ablation: dict[str, Any], **more: Any) -> dict[str, Any]:
    return {"name": "study", "train_fn": "mypkg.train:fit", "ablation": ablation, **more}


def problems_of(data: dict[str, Any]) -> list[tuple[str, str]]:
    with pytest.raises(SpecError) as err:
        ExperimentSpec.from_dict(data)
    return err.value.problems


def names_kinds(plan: list[Component]) -> list[tuple[str, str]]:
    return [(c.name, c.kind) for c in plan]


# ---------------------------------------------------------------- the spec form


@pytest.fixture
def yaml_spec(tmp_path: Path) -> ExperimentSpec:
    path = tmp_path / "ablation.yaml"
    path.write_text(SPEC_YAML, encoding="utf-8")
    return load_spec(path)


def test_yaml_study_parses_into_its_plan(yaml_spec: ExperimentSpec) -> None:
    study = yaml_spec.ablation
    assert isinstance(study, AblationSpec)
    plan = study.plan()
    assert names_kinds(plan) == EXPECTED_PLAN
    by_name = {c.name: c for c in plan}
    assert by_name["fare+sibsp"].members == ("fare", "sibsp")
    assert by_name["dense_2+dense_3"].members == ("dense_2", "dense_3")
    assert by_name["dense*"].prefix == "dense" and by_name["dense*"].members == ()
    assert by_name["small"].generator == "mypkg.train:small_model"
    assert study.kinds() == dict(EXPECTED_PLAN)
    assert (study.dataset, study.label, study.base_model) == (
        "data/table.parquet",
        "survived",
        "mypkg.train:base_model",
    )
    assert (study.confidence, study.alpha) == (0.95, 0.05)


def test_yaml_study_sizes_and_settings(yaml_spec: ExperimentSpec) -> None:
    assert yaml_spec.num_trials == (1 + 7) * 5
    assert yaml_spec.es_policy == "none"
    assert len(yaml_spec.searchspace) == 0
    assert yaml_spec.ablator is not None
    assert (yaml_spec.ablator.name, yaml_spec.ablator.options) == ("loco", {"repeats": 5})
    assert (yaml_spec.direction, yaml_spec.optimization_key) == ("max", "accuracy")
    assert (yaml_spec.workers, yaml_spec.seed) == (2, 7)


def test_yaml_study_round_trips_through_dict_and_json(yaml_spec: ExperimentSpec) -> None:
    data = yaml_spec.to_dict()
    assert ExperimentSpec.from_dict(data) == yaml_spec
    again = ExperimentSpec.from_dict(json.loads(json.dumps(data)))
    assert again == yaml_spec
    assert again.ablation is not None and again.ablation.plan() == yaml_spec.ablation.plan()
    assert AblationSpec.parse(yaml_spec.ablation.to_dict()) == yaml_spec.ablation


def test_plain_string_ablator_runs_each_trial_once() -> None:
    spec = ExperimentSpec.from_dict(
        study_spec({"components": ["scaling", "batchnorm"]}, ablator="loco")
    )
    assert spec.ablator is not None and spec.ablator.name == "loco"
    assert spec.num_trials == 1 + 2
    assert spec.es_policy == "none"


def test_ablator_defaults_to_loco_and_nested_options_are_read() -> None:
    default = ExperimentSpec.from_dict(study_spec({"components": ["scaling"]}))
    assert default.ablator is not None and default.ablator.name == "loco"
    assert default.num_trials == 2
    nested = ExperimentSpec.from_dict(
        study_spec({"components": ["scaling"]}, ablator={"name": "loco", "options": {"repeats": 4}})
    )
    assert nested.num_trials == 2 * 4


def test_num_trials_that_agrees_with_the_plan_is_accepted() -> None:
    spec = ExperimentSpec.from_dict(
        study_spec({"components": ["a", "b"]}, ablator={"name": "loco", "repeats": 2}, num_trials=6)
    )
    assert spec.num_trials == 6


# ---------------------------------------------------------------- validation


DATA = {"dataset": "t.parquet", "label": "y"}


@pytest.mark.parametrize(
    ("data", "field", "message"),
    [
        pytest.param(
            study_spec({"components": ["s"], "featurez": ["a"]}),
            "ablation.featurez",
            "unknown key; allowed: dataset,",
            id="unknown-key",
        ),
        pytest.param(
            study_spec({"features": ["a"]}),
            "ablation.features",
            "need a dataset (or dataset_generator)",
            id="features-without-dataset",
        ),
        pytest.param(
            study_spec({**DATA, "dataset_generator": "m:g", "features": ["a"]}),
            "ablation.dataset",
            "give dataset or dataset_generator, not both",
            id="dataset-and-generator",
        ),
        pytest.param(
            study_spec({"dataset": "t.parquet", "features": ["a"]}),
            "ablation.label",
            "is required with a dataset",
            id="missing-label",
        ),
        pytest.param(
            study_spec({**DATA, "features": ["a", ["b", "y"]]}),
            "ablation.features[1]",
            "'y' is the label; it is never left out",
            id="label-as-feature",
        ),
        pytest.param(
            study_spec({"layers": ["dense_2"]}),
            "ablation.base_model",
            "is required to leave out layers",
            id="layers-without-base-model",
        ),
        pytest.param(
            study_spec({"base_model": "m:b", "layer_groups": [["dense_2"]]}),
            "ablation.layer_groups[0]",
            "a group needs at least two layers",
            id="one-layer-group",
        ),
        pytest.param(
            study_spec({"base_model": "m:b", "layer_groups": [["a", "b"], {"prefx": "dense"}]}),
            "ablation.layer_groups[1]",
            "as a mapping must be {prefix: <layer name prefix>}",
            id="bad-prefix-key",
        ),
        pytest.param(
            study_spec({"base_model": "m:b", "layer_groups": [{"prefix": ""}]}),
            "ablation.layer_groups[0]",
            "as a mapping must be {prefix: <layer name prefix>}",
            id="empty-prefix",
        ),
        pytest.param(
            study_spec({"custom_models": {"small": "mypkg/small.py"}}),
            "ablation.custom_models.small",
            "must be 'module:function', got 'mypkg/small.py'",
            id="custom-model-not-an-import-path",
        ),
        pytest.param(
            study_spec({"base_model": "m:b", "layers": ["dense_2"], "components": ["dense_2"]}),
            "ablation",
            "component 'dense_2' is listed twice",
            id="duplicate-component",
        ),
        pytest.param(
            study_spec({}),
            "ablation",
            "lists no component",
            id="empty-study",
        ),
        pytest.param(
            study_spec({"components": ["s"], "confidence": 1.0}),
            "ablation.confidence",
            "must be a number in (0, 1), got 1.0",
            id="confidence-1",
        ),
        pytest.param(
            study_spec({"components": ["s"], "confidence": 0}),
            "ablation.confidence",
            "must be a number in (0, 1), got 0",
            id="confidence-0",
        ),
        pytest.param(
            study_spec({"components": ["s"], "alpha": 1.5}),
            "ablation.alpha",
            "must be a number in (0, 1), got 1.5",
            id="alpha-above-1",
        ),
        pytest.param(
            study_spec({"components": ["s"], "alpha": -0.05}),
            "ablation.alpha",
            "must be a number in (0, 1), got -0.05",
            id="alpha-negative",
        ),
        pytest.param(
            study_spec({"components": ["s"]}, ablator={"name": "loco", "repeats": 0}),
            "ablator.repeats",
            "must be an integer >= 1, got 0",
            id="repeats-0",
        ),
        pytest.param(
            study_spec({"components": ["s"]}, ablator={"name": "loco", "repetitions": 3}),
            "ablator.repetitions",
            "unknown option for loco; allowed: repeats",
            id="unknown-ablator-option",
        ),
        pytest.param(
            study_spec({"components": ["s"]}, ablator="leave-two-out"),
            "ablator",
            "unknown ablator 'leave-two-out'; allowed: loco or 'module:Class'",
            id="unknown-ablator",
        ),
        pytest.param(
            study_spec({"components": ["s"]}, searchspace={"lr": ["DOUBLE", [0.001, 0.1]]}),
            "searchspace",
            "an ablation study takes no searchspace",
            id="searchspace-with-ablation",
        ),
        pytest.param(
            study_spec({"components": ["s"]}, es_policy="median"),
            "es_policy",
            "must be none for an ablation study",
            id="es-median",
        ),
        pytest.param(
            study_spec(
                {"components": ["a", "b"]}, ablator={"name": "loco", "repeats": 2}, num_trials=5
            ),
            "num_trials",
            "the ablation plan has 6 trials; leave num_trials out",
            id="num-trials-disagrees",
        ),
        pytest.param(
            {
                "train_fn": "mypkg.train:fit",
                "searchspace": {"lr": ["DOUBLE", [0.001, 0.1]]},
                "ablator": "loco",
            },
            "ablator",
            "needs an ablation block",
            id="ablator-without-ablation",
        ),
    ],
)
def test_invalid_study_names_the_field(data: dict[str, Any], field: str, message: str) -> None:
    problems = problems_of(data)
    assert [(f, m) for f, m in problems if f == field and message in m], problems


def test_every_problem_is_reported_at_once() -> None:
    data = study_spec(
        {"features": ["age"], "layers": ["dense_2"], "alpha": 2},
        searchspace={"lr": ["DOUBLE", [0.001, 0.1]]},
        es_policy="median",
        direction="sideways",
    )
    with pytest.raises(SpecError) as err:
        ExperimentSpec.from_dict(data)
    fields = [f for f, _ in err.value.problems]
    for wanted in (
        "ablation.alpha",
        "ablation.features",
        "ablation.base_model",
        "searchspace",
        "es_policy",
        "direction",
    ):
        assert wanted in fields, err.value.problems
    text = str(err.value)
    assert text.startswith("invalid spec:")
    assert "ablation.base_model: is required to leave out layers" in text
    assert "es_policy: must be none for an ablation study" in text


def test_ablation_block_must_be_a_mapping() -> None:
    problems = problems_of(study_spec(["age"]))  # type: ignore[arg-type]
    assert problems[0][0] == "ablation" and "must be a mapping" in problems[0][1]


@pytest.mark.parametrize(("key", "extra"), [("components", {}), ("layers", {"base_model": "m:b"})])
def test_a_scalar_name_is_one_component_or_refused(key: str, extra: dict[str, Any]) -> None:
    name = "batchnorm" if key == "components" else "dense_2"
    try:
        plan = AblationSpec.parse({key: name, **extra}).plan()
    except SpecError as err:
        assert any(f == f"ablation.{key}" for f, _ in err.problems), err.problems
        return
    assert [c.name for c in plan] == [name]


# ---------------------------------------------------------------- the Python API


def python_study() -> AblationStudy:
    study = AblationStudy("data/table.parquet", label_name="survived")
    study.features.include("age", ["fare", "sibsp"])
    study.model.set_base_model_generator(tabular.base_model)
    study.model.layers.include("dense_2")
    study.model.layers.include_groups(["dense_2", "dense_3"])
    study.model.layers.include_groups(prefix="dense")
    study.model.add_custom_model_generator(ablation_fixtures.small_model, "small")
    study.components.include("batchnorm")
    return study


def test_python_api_builds_the_same_plan_as_the_yaml(yaml_spec: ExperimentSpec) -> None:
    spec = python_study().to_spec()
    assert names_kinds(spec.plan()) == EXPECTED_PLAN
    assert [(c.members, c.prefix) for c in spec.plan()] == [
        (c.members, c.prefix) for c in yaml_spec.ablation.plan()
    ]
    assert spec.base_model == "maggy_core.examples.tabular:base_model"
    assert spec.custom_models == {"small": "ablation_fixtures:small_model"}
    assert (spec.dataset, spec.dataset_generator, spec.label) == (
        "data/table.parquet",
        None,
        "survived",
    )


def test_ablation_config_gives_a_valid_spec() -> None:
    study = python_study()
    spec = AblationConfig(study, ablator={"name": "loco", "repeats": 3}, workers=2, seed=1)
    assert isinstance(spec, ExperimentSpec)
    assert spec.ablation == study.to_spec()
    assert spec.num_trials == (1 + 7) * 3
    assert spec.ablator is not None
    assert (spec.ablator.name, spec.ablator.options) == ("loco", {"repeats": 3})
    assert (spec.workers, spec.seed, spec.es_policy, spec.direction) == (2, 1, "none", "max")
    assert spec.train_fn is None and len(spec.searchspace) == 0
    assert ExperimentSpec.from_dict(spec.to_dict(), require_train_fn=False) == spec


def test_ablation_config_refuses_an_invalid_study() -> None:
    study = AblationStudy()
    study.model.layers.include("dense_2")
    with pytest.raises(SpecError) as err:
        AblationConfig(study)
    assert ("ablation.base_model", "is required to leave out layers: 'module:function'") in (
        err.value.problems
    )


def test_dataset_given_as_a_function_is_a_generator() -> None:
    study = AblationStudy(ablation_fixtures.table_generator, label_name="y")
    study.features.include("a")
    spec = study.to_spec()
    assert spec.dataset is None
    assert spec.dataset_generator == "ablation_fixtures:table_generator"
    named = AblationStudy("ablation_fixtures:table_generator", label_name="y")
    named.features.include("a")
    assert named.to_spec().dataset_generator == "ablation_fixtures:table_generator"


def test_a_lambda_is_refused_as_base_model() -> None:
    study = AblationStudy()
    with pytest.raises(SpecError) as err:
        study.model.set_base_model_generator(lambda input_dim=4: None)
    field, message = err.value.problems[0]
    assert field == "ablation.base_model"
    assert "module-level function of an importable module" in message


def test_a_local_function_is_refused_as_custom_model() -> None:
    def local_model(input_dim: int = 4) -> None:
        return None

    study = AblationStudy()
    with pytest.raises(SpecError) as err:
        study.model.add_custom_model_generator(local_model, "tiny")
    field, message = err.value.problems[0]
    assert field == "ablation.custom_models.tiny"
    assert "local_model" in message and "module-level function" in message


def test_a_local_function_is_refused_as_dataset() -> None:
    def local_table() -> None:
        return None

    study = AblationStudy(local_table, label_name="y")
    study.features.include("a")
    with pytest.raises(SpecError) as err:
        study.to_spec()
    assert err.value.problems[0][0] == "ablation.dataset_generator"


# ---------------------------------------------------------------- the LOCO ablator


COMPONENTS = AblationSpec.parse({"components": ["a", "b", "c"]}).plan()


def drain(ablator: Ablator) -> list[dict[str, Any]]:
    out = []
    while True:
        s = ablator.suggest()
        if s is DONE:
            return out
        assert isinstance(s, Suggestion)
        out.append(s.params)
        assert len(out) <= 1000


def test_loco_runs_the_base_and_every_component_per_repeat_interleaved() -> None:
    ablator = get_ablator("loco", COMPONENTS, direction="max", seed=11, options={"repeats": 3})
    assert isinstance(ablator, LOCO)
    trials = drain(ablator)
    assert ablator.num_trials == len(trials) == (1 + 3) * 3
    assert [(t["ablated"], t["repeat"]) for t in trials] == [
        (ablated, r) for r in range(3) for ablated in (None, "a", "b", "c")
    ]
    seeds = {r: {t["seed"] for t in trials if t["repeat"] == r} for r in range(3)}
    assert all(len(s) == 1 for s in seeds.values()), seeds  # one seed per repeat
    assert len({next(iter(s)) for s in seeds.values()}) == 3  # different across repeats
    assert all(isinstance(t["seed"], int) and t["seed"] >= 0 for t in trials)
    assert ablator.suggest() is DONE  # and stays done


def test_loco_plan_is_deterministic_for_a_seed() -> None:
    def plan(seed: int | None) -> list[dict[str, Any]]:
        return drain(
            get_ablator("loco", COMPONENTS, direction="max", seed=seed, options={"repeats": 2})
        )

    assert plan(5) == plan(5)
    assert [t["seed"] for t in plan(5)] != [t["seed"] for t in plan(6)]
    assert len(plan(None)) == 8  # no seed: one is drawn


def test_loco_resumes_from_the_journals_trials() -> None:
    options = {"repeats": 3}
    whole = drain(get_ablator("loco", COMPONENTS, direction="max", seed=21, options=options))
    first = get_ablator("loco", COMPONENTS, direction="max", seed=21, options=options)
    made = [first.suggest() for _ in range(5)]
    assert all(isinstance(s, Suggestion) for s in made)
    # The journal's trials, as JSON: two ended, three had not.
    trials = [
        FrozenTrial(
            f"t{i:04d}",
            json.loads(json.dumps(s.params)),
            TrialStatus.FINISHED if i < 2 else TrialStatus.PENDING,
            0.5 if i < 2 else None,
            info=json.loads(json.dumps(s.info)),
        )
        for i, s in enumerate(made)
        if isinstance(s, Suggestion)
    ]
    again = get_ablator("loco", COMPONENTS, direction="max", seed=None, options=options)
    again.resume(trials)  # the drawn seed is replaced by the study's, from the trials
    assert again.seed == 21
    assert [t.params for t in trials] + drain(again) == whole
    with pytest.raises(SpecError) as err:
        get_ablator("loco", COMPONENTS, direction="max", seed=None, options=options).resume(
            [
                trials[0],
                FrozenTrial("t9", trials[1].params, TrialStatus.PENDING, info={"study_seed": 5}),
            ]
        )
    assert err.value.problems[0][0] == "ablator"
    # Nothing but the trials persists an ablator.
    assert not {"state_dict", "load_state_dict"} & (vars(Ablator).keys() | vars(LOCO).keys())


def test_a_custom_ablator_class_is_used() -> None:
    ablator = get_ablator(
        "ablation_fixtures:FirstOnly", COMPONENTS, direction="max", seed=3, options={"repeats": 2}
    )
    assert isinstance(ablator, ablation_fixtures.FirstOnly)
    trials = drain(ablator)
    assert [(t["ablated"], t["repeat"]) for t in trials] == [
        (None, 0),
        ("a", 0),
        (None, 1),
        ("a", 1),
    ]
    spec = ExperimentSpec.from_dict(
        study_spec(
            {"components": ["a", "b", "c"]},
            ablator={"name": "ablation_fixtures:FirstOnly", "repeats": 2},
            seed=3,
        )
    )
    assert spec.num_trials == 4
    assert spec.ablator is not None and spec.ablator.name == "ablation_fixtures:FirstOnly"
    made = _make_optimizer(spec)
    assert isinstance(made, ablation_fixtures.FirstOnly)
    assert drain(made) == trials


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("ablation_fixtures:NotAnAblator", "is not a subclass of maggy_core.ablation.Ablator"),
        ("ablation_fixtures:no_such_class", "is not a subclass of maggy_core.ablation.Ablator"),
        ("no_such_module_for_ablation:Cls", "cannot import 'no_such_module_for_ablation'"),
    ],
)
def test_a_class_that_is_not_an_ablator_is_refused(name: str, message: str) -> None:
    with pytest.raises(SpecError) as err:
        get_ablator(name, COMPONENTS, direction="max", seed=1)
    assert err.value.problems[0][0] == "ablator"
    assert message in err.value.problems[0][1]
    problems = problems_of(study_spec({"components": ["a"]}, ablator=name))
    assert any(f == "ablator" and message in m for f, m in problems), problems


# ---------------------------------------------------------------- checks before Spark


@pytest.fixture
def parquet_table(tmp_path: Path) -> Path:
    path = tmp_path / "table.parquet"
    ablation_fixtures.small_table().to_parquet(path, index=False)
    return path


@pytest.fixture
def csv_table(tmp_path: Path) -> Path:
    path = tmp_path / "table.csv"
    ablation_fixtures.small_table().to_csv(path, index=False)
    return path


def prepared_spec(ablation: dict[str, Any], train: str = "train_some_injections") -> ExperimentSpec:
    return ExperimentSpec.from_dict(
        study_spec(ablation, train_fn=f"ablation_fixtures:{train}", seed=1)
    )


def test_prepare_accepts_a_function_taking_some_injected_names(parquet_table: Path) -> None:
    spec = prepared_spec({"dataset": str(parquet_table), "label": "y", "features": ["a"]})
    assert prepare(spec) is ablation_fixtures.train_some_injections


def test_prepare_refuses_an_unknown_required_argument(parquet_table: Path) -> None:
    spec = prepared_spec(
        {"dataset": str(parquet_table), "label": "y", "features": ["a"]},
        train="train_unknown_argument",
    )
    with pytest.raises(SpecError) as err:
        prepare(spec)
    assert [f for f, _ in err.value.problems] == ["train_fn"]
    assert "'learning_rate'" in err.value.problems[0][1]


@pytest.mark.parametrize("table", ["parquet_table", "csv_table"])
def test_prepare_refuses_a_missing_feature_column(table: str, request: pytest.FixtureRequest):
    path = request.getfixturevalue(table)
    spec = prepared_spec({"dataset": str(path), "label": "y", "features": ["a", ["b", "zz"]]})
    with pytest.raises(SpecError) as err:
        prepare(spec)
    assert err.value.problems == [
        ("ablation.features", "'zz' is not a column; columns: a, b, c, y")
    ]


@pytest.mark.parametrize("table", ["parquet_table", "csv_table"])
def test_prepare_refuses_a_missing_label_column(table: str, request: pytest.FixtureRequest):
    path = request.getfixturevalue(table)
    spec = prepared_spec({"dataset": str(path), "label": "target", "features": ["a"]})
    with pytest.raises(SpecError) as err:
        prepare(spec)
    assert err.value.problems == [
        ("ablation.label", "'target' is not a column; columns: a, b, c, y")
    ]


def test_prepare_refuses_a_missing_table(tmp_path: Path) -> None:
    spec = prepared_spec(
        {"dataset": str(tmp_path / "nowhere.parquet"), "label": "y", "features": ["a"]}
    )
    with pytest.raises(SpecError) as err:
        prepare(spec)
    assert err.value.problems[0][0] == "ablation.dataset"
    assert "no such file" in err.value.problems[0][1]


@pytest.mark.parametrize(
    ("key", "path", "message"),
    [
        ("base_model", "no_such_module_for_ablation:base_model", "cannot import module"),
        ("base_model", "ablation_fixtures:no_such_function", "has no attribute"),
        ("dataset_generator", "no_such_module_for_ablation:table", "cannot import module"),
    ],
)
def test_prepare_refuses_a_generator_that_does_not_import(key: str, path: str, message: str):
    ablation: dict[str, Any] = {key: path, "label": "y", "features": ["a"]}
    if key == "base_model":
        ablation = {"base_model": path, "layers": ["dense_2"]}
    spec = prepared_spec(ablation)
    with pytest.raises(SpecError) as err:
        prepare(spec)
    assert [f for f, _ in err.value.problems] == [f"ablation.{key}"]
    assert message in err.value.problems[0][1]


def test_prepare_refuses_a_custom_model_that_does_not_import() -> None:
    spec = prepared_spec({"custom_models": {"tiny": "ablation_fixtures:tiny_model"}})
    with pytest.raises(SpecError) as err:
        prepare(spec)
    assert [f for f, _ in err.value.problems] == ["ablation.custom_models.tiny"]


# ---------------------------------------------------------------- what a trial is given


@pytest.mark.parametrize("table", ["parquet_table", "csv_table"])
def test_dataset_function_drops_exactly_the_ablated_feature_group(
    table: str, request: pytest.FixtureRequest
) -> None:
    import pandas as pd

    path = request.getfixturevalue(table)
    spec = AblationSpec.parse(
        {"dataset": str(path), "label": "y", "features": ["a", ["b", "c"]], "components": ["s"]}
    )
    context = TrialContext(spec)
    full = ablation_fixtures.small_table()
    expected = {None: full, "a": full.drop(columns=["a"]), "b+c": full.drop(columns=["b", "c"])}
    expected["s"] = full  # a switch leaves the table alone
    for ablated, want in expected.items():
        got = context.injections(ablated)["dataset_function"]()
        assert list(got.columns) == list(want.columns), ablated
        pd.testing.assert_frame_equal(got.reset_index(drop=True), want, check_dtype=False)


@pytest.mark.parametrize("ablated", [None, "a"])
def test_dataset_function_returns_a_fresh_copy_every_call(
    parquet_table: Path, ablated: str | None
) -> None:
    spec = AblationSpec.parse({"dataset": str(parquet_table), "label": "y", "features": ["a"]})
    context = TrialContext(spec)
    dataset = context.injections(ablated)["dataset_function"]
    first = dataset()
    first["b"] = -1.0
    first.loc[0, "y"] = 99
    first.drop(columns=["c"], inplace=True)
    second = dataset()
    assert "c" in second.columns
    assert second["b"].tolist() == ablation_fixtures.small_table()["b"].tolist()
    assert second.loc[0, "y"] == 0
    third = context.injections(None)["dataset_function"]()  # another trial, same worker
    assert third["b"].tolist() == ablation_fixtures.small_table()["b"].tolist()


def test_dataset_generator_feeds_the_trials() -> None:
    spec = AblationSpec.parse(
        {"dataset_generator": "ablation_fixtures:table_generator", "label": "y", "features": ["b"]}
    )
    got = TrialContext(spec).injections("b")["dataset_function"]()
    assert list(got.columns) == ["a", "c", "y"]
    assert len(got) == 6


def test_a_generator_that_returns_no_dataframe_is_a_clear_error() -> None:
    spec = AblationSpec.parse(
        {"dataset_generator": "ablation_fixtures:not_a_table", "label": "y", "features": ["b"]}
    )
    dataset = TrialContext(spec).injections(None)["dataset_function"]
    with pytest.raises(SpecError) as err:
        dataset()
    assert err.value.problems == [
        ("ablation.dataset_generator", "must return a pandas.DataFrame, returned list")
    ]


def test_a_generated_table_without_a_feature_column_is_refused() -> None:
    spec = AblationSpec.parse(
        {"dataset_generator": "ablation_fixtures:table_without_c", "label": "y", "features": ["c"]}
    )
    with pytest.raises(SpecError) as err:
        TrialContext(spec).injections(None)["dataset_function"]()
    assert err.value.problems == [("ablation.features", "'c' is not a column; columns: a, b, y")]


def layer_names(model: Any) -> list[str]:
    import keras

    return [layer.name for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]


@pytest.fixture(scope="module")
def model_context() -> TrialContext:
    return TrialContext(
        AblationSpec.parse(
            {
                "base_model": "maggy_core.examples.tabular:base_model",
                "layers": ["dense_2"],
                "layer_groups": [["dense_2", "dense_3"], {"prefix": "dense"}],
                "custom_models": {"small": "ablation_fixtures:small_model"},
                "components": ["batchnorm"],
            }
        )
    )


@pytest.mark.parametrize(
    ("ablated", "layers"),
    [
        (None, ["dense_1", "dense_2", "dense_3", "output"]),
        ("batchnorm", ["dense_1", "dense_2", "dense_3", "output"]),
        ("dense_2", ["dense_1", "dense_3", "output"]),
        ("dense_2+dense_3", ["dense_1", "output"]),
        ("dense*", ["output"]),
        ("small", ["small_1", "small_out"]),
    ],
)
def test_model_function_builds_the_trials_model(
    model_context: TrialContext, ablated: str | None, layers: list[str]
) -> None:
    model_function = model_context.injections(ablated)["model_function"]
    model = model_function(input_dim=5)
    assert layer_names(model) == layers
    assert tuple(model.inputs[0].shape) == (None, 5)
    assert model(np.zeros((2, 5), "float32")).shape == (2, 1)
    assert model_function(input_dim=5) is not model  # a fresh model per call


def test_no_base_model_means_no_model_and_no_table_means_no_dataset() -> None:
    injections = TrialContext(AblationSpec.parse({"components": ["s"]})).injections("s")
    assert injections["model_function"]() is None
    assert injections["model_function"](input_dim=3) is None
    assert injections["dataset_function"] is None


def test_prefix_group_that_matches_no_layer_is_refused() -> None:
    context = TrialContext(
        AblationSpec.parse(
            {
                "base_model": "maggy_core.examples.tabular:base_model",
                "layer_groups": [{"prefix": "conv"}],
            }
        )
    )
    with pytest.raises(SpecError) as err:
        context.injections("conv*")["model_function"](input_dim=3)
    assert err.value.problems[0][0] == "ablation.layer_groups"
    assert "'conv'" in err.value.problems[0][1]


def test_component_switches_turn_off_only_the_ablated_one() -> None:
    spec = AblationSpec.parse(
        {"dataset": "t.parquet", "label": "y", "features": ["a"], "components": ["bn", "scaling"]}
    )
    context = TrialContext(spec)
    assert context.injections(None)["components"] == {"bn": True, "scaling": True}
    assert context.injections("a")["components"] == {"bn": True, "scaling": True}
    assert context.injections("bn")["components"] == {"bn": False, "scaling": True}
    assert context.injections("scaling")["components"] == {"bn": True, "scaling": False}
    with pytest.raises(SpecError) as err:
        context.injections("dropout")
    assert err.value.problems == [("ablated", "'dropout' is not a component of the study")]


# ---------------------------------------------------------------- feature groups by correlation


def correlated_table(path: Path) -> Path:
    """x1, x2 (0.99 correlated with x1), x3 (0.95 with x2, so grouped with both),
    y (independent), a text column and the label."""
    import pandas as pd

    rng = np.random.default_rng(0)
    x1 = rng.normal(size=500)
    x2 = x1 + 0.1 * rng.normal(size=500)
    x3 = x2 + 0.3 * rng.normal(size=500)
    pd.DataFrame(
        {
            "x1": x1,
            "y": rng.normal(size=500),
            "x2": x2,
            "name": ["n"] * 500,
            "x3": x3,
            "label": (x1 > 0).astype("int64"),
        }
    ).to_parquet(path, index=False)
    return path


def test_auto_groups_join_correlated_features(tmp_path: Path) -> None:
    data = correlated_table(tmp_path / "t.parquet")
    spec = AblationSpec.parse(
        {"dataset": str(data), "label": "label", "features": {"auto_groups": 0.9}}
    )
    assert [(c.name, c.members) for c in spec.plan()] == [
        ("x1+x2+x3", ("x1", "x2", "x3")),
        ("y", ("y",)),
        ("name", ("name",)),
    ]
    # Round trip: the spec keeps the rule, not the groups of one day's table.
    assert AblationSpec.parse(spec.to_dict()) == spec
    assert spec.to_dict()["features"] == {"auto_groups": 0.9}
    strict = AblationSpec.parse(
        {
            "dataset": str(data),
            "label": "label",
            "features": {"auto_groups": 0.999, "columns": ["x1", "x2", "y"]},
        }
    )
    assert [c.name for c in strict.plan()] == ["x1", "x2", "y"]
    # A trial leaving the group out gets the table without all three columns.
    frame = TrialContext(spec).injections("x1+x2+x3")["dataset_function"]()
    assert list(frame.columns) == ["y", "name", "label"]


@pytest.mark.parametrize(
    ("features", "where"),
    [
        ({"auto_groups": 1.5}, "ablation.features.auto_groups"),
        ({"auto_groups": 0.9, "by": "pearson"}, "ablation.features.by"),
        ({"auto_groups": 0.9, "columns": ["nope"]}, "ablation.features.columns"),
    ],
)
def test_bad_auto_groups_name_their_field(
    tmp_path: Path, features: dict[str, Any], where: str
) -> None:
    data = correlated_table(tmp_path / "t.parquet")
    with pytest.raises(SpecError) as err:
        AblationSpec.parse({"dataset": str(data), "label": "label", "features": features})
    assert where in [field for field, _ in err.value.problems], err.value.problems


def test_auto_groups_need_a_readable_table(tmp_path: Path) -> None:
    with pytest.raises(SpecError) as err:
        AblationSpec.parse(
            {
                "dataset": str(tmp_path / "missing.parquet"),
                "label": "label",
                "features": {"auto_groups": 0.9},
            }
        )
    assert err.value.problems[0][0] == "ablation.features.auto_groups"
    assert "missing.parquet" in err.value.problems[0][1]


# ---------------------------------------------------------------- adaptive studies in the spec


def test_an_adaptive_study_plans_its_most_trials() -> None:
    ablator = {
        "name": "loco",
        "repeats": {"min": 3, "max": 10, "precision": 0.01},
        "interactions": 2,
    }
    spec = ExperimentSpec.from_dict(study_spec({"components": ["a", "b", "c"]}, ablator=ablator))
    assert spec.num_trials == (1 + 3) * 10 + 1 * 3  # every component to max, one pair
    budgeted = ExperimentSpec.from_dict(
        study_spec({"components": ["a", "b", "c"]}, ablator={**ablator, "budget": {"trials": 25}})
    )
    assert budgeted.num_trials == 25
    assert budgeted.ablator is not None and budgeted.ablator.options["budget"] == {"trials": 25}
    problems = problems_of(
        study_spec({"components": ["a"]}, ablator={"name": "loco", "repeats": {"min": 1}})
    )
    assert {"ablator.repeats.min", "ablator.repeats.max"} <= {f for f, _ in problems}


def test_a_pair_trial_leaves_both_components_out(tmp_path: Path) -> None:
    data = correlated_table(tmp_path / "t.parquet")
    spec = AblationSpec.parse(
        {"dataset": str(data), "label": "label", "features": ["x1", "y"], "components": ["scaling"]}
    )
    given = TrialContext(spec).injections(["x1", "scaling"])
    assert "x1" not in given["dataset_function"]().columns
    assert given["components"] == {"scaling": False}
    with pytest.raises(SpecError) as err:
        TrialContext(spec).injections(["x1", "nope"])
    assert err.value.problems[0][0] == "ablated"
