"""Ablation studies on a real Redis and a real Spark ``local[2]``.

A scikit-learn study on a table built so that one feature carries the label and
two do not: the analysis must find the one that matters, and a second run of the
same study on data where it stopped mattering must flag the change against the
first run's history. A small Keras study shows the model path (layer surgery
in the workers) works on Spark too.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# ablation_fixtures lives in tests/, which pytest puts on sys.path for
# tests/conftest.py; the Spark workers get it through addPyFile below.
import ablation_fixtures
import pytest

from maggy_core.runner import run_experiment
from maggy_core.spec import ExperimentSpec

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("local_spark")]


@pytest.fixture(scope="module", autouse=True)
def ship_fixtures(local_spark: Any) -> Iterator[None]:
    """The workers import the study's training function from ``ablation_fixtures``."""
    local_spark.addPyFile(ablation_fixtures.__file__)
    yield


def signal_study(dataset: Path) -> ExperimentSpec:
    return ExperimentSpec.from_dict(
        {
            "name": "signal-study",
            "train_fn": "ablation_fixtures:fit_logistic",
            "ablation": {
                "dataset": str(dataset),
                "label": ablation_fixtures.LABEL,
                "features": list(ablation_fixtures.FEATURES),
                "components": ["scaling"],
            },
            "ablator": {"name": "loco", "repeats": 5},
            "direction": "max",
            "optimization_key": "accuracy",
            "workers": 2,
            "seed": 3,
            "hb_interval": 0.5,
        }
    )


def by_component(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {entry["component"]: entry for entry in result["ablation"]["components"]}


def test_study_finds_the_feature_that_matters_and_notices_when_it_stops(
    redis_url: str, tmp_path: Path
) -> None:
    results = tmp_path / "results"
    spec = signal_study(ablation_fixtures.write_signal_table(tmp_path / "night1.parquet", seed=1))
    assert spec.num_trials == (1 + 4) * 5

    first = run_experiment(spec, redis_url=redis_url, results_dir=results)
    assert first["status"] == "finished", first["reason"]
    assert "error" not in first["ablation"], first["ablation"]
    assert len(first["trials"]) == 25
    assert {t["status"] for t in first["trials"]} == {"finished"}, [
        t.get("error") for t in first["trials"]
    ]
    # Every (component, repeat) ran once, with the seed of its repeat.
    seen = {(t["params"]["ablated"], t["params"]["repeat"]) for t in first["trials"]}
    assert seen == {
        (a, r) for a in (None, "signal", "noise_a", "noise_b", "scaling") for r in range(5)
    }

    analysis = first["ablation"]
    assert analysis["base"]["n"] == 5 and analysis["base"]["metric_mean"] > 0.8
    top = analysis["components"][0]
    assert top["component"] == "signal" and top["kind"] == "feature"
    assert top["n"] == 5
    assert top["significant"] is True
    assert top["delta"] > 0.2 and top["ci_low"] > 0
    entries = by_component(first)
    for useless in ("noise_a", "noise_b", "scaling"):
        assert entries[useless]["significant"] is False, entries[useless]
        assert abs(entries[useless]["delta"]) < 0.05, entries[useless]
    assert all(e["changed"] is False and e["previous"] is None for e in entries.values())

    experiment_dir = results / first["experiment_id"]
    table = experiment_dir / "ablation.csv"
    chart = experiment_dir / "ablation.svg"
    assert table.is_file() and chart.is_file()
    rows = table.read_text(encoding="utf-8").splitlines()
    assert rows[0].startswith("rank,component,kind") and rows[1].split(",")[1] == "signal"
    assert len(rows) == 1 + 4
    assert chart.read_text(encoding="utf-8").lstrip().startswith(("<svg", "<?xml"))
    history = results / "_ablation_history" / "signal-study.jsonl"
    assert Path(analysis["history"]) == history
    lines = history.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 1
    assert json.loads(lines[0])["experiment_id"] == first["experiment_id"]
    stored = json.loads((experiment_dir / "result.json").read_text(encoding="utf-8"))
    assert stored["ablation"]["components"][0]["component"] == "signal"

    # The next night: the same study on data where signal says nothing any more.
    spec = signal_study(
        ablation_fixtures.write_signal_table(
            tmp_path / "night2.parquet", seed=1, shuffle_signal=True
        )
    )
    second = run_experiment(spec, redis_url=redis_url, results_dir=results)
    assert second["status"] == "finished", second["reason"]
    assert second["experiment_id"] != first["experiment_id"]
    assert {t["status"] for t in second["trials"]} == {"finished"}
    now = by_component(second)
    assert now["signal"]["significant"] is False
    assert now["signal"]["changed"] is True, now["signal"]
    assert now["signal"]["previous"]["experiment_id"] == first["experiment_id"]
    assert now["signal"]["previous"]["delta"] == pytest.approx(entries["signal"]["delta"])
    assert now["signal"]["previous_delta"] == pytest.approx(entries["signal"]["delta"])
    assert now["noise_a"]["changed"] is False, now["noise_a"]
    assert now["noise_a"]["previous_delta"] == pytest.approx(entries["noise_a"]["delta"])
    assert second["ablation"]["history_runs"] == 1
    assert len(history.read_text(encoding="utf-8").splitlines()) == 2
    assert (results / second["experiment_id"] / "ablation.csv").is_file()


def graded_study(dataset: Path, repeats: Any) -> ExperimentSpec:
    return ExperimentSpec.from_dict(
        {
            "name": "graded-study",
            "train_fn": "ablation_fixtures:fit_logistic",
            "ablation": {
                "dataset": str(dataset),
                "label": ablation_fixtures.LABEL,
                "features": list(ablation_fixtures.GRADED),
            },
            "ablator": {"name": "loco", "repeats": repeats},
            "direction": "max",
            "optimization_key": "accuracy",
            "workers": 2,
            "seed": 4,
            "hb_interval": 0.5,
        }
    )


def test_adaptive_repeats_decide_strong_effects_early_and_spend_on_small_ones(
    redis_url: str, tmp_path: Path
) -> None:
    data = ablation_fixtures.write_graded_table(tmp_path / "graded.parquet")
    adaptive = {"min": 3, "max": 30, "precision": 0.003}
    spec = graded_study(data, adaptive)
    fixed = graded_study(data, 30)
    assert spec.num_trials == fixed.num_trials == (1 + 3) * 30  # the most it can run

    result = run_experiment(spec, redis_url=redis_url, results_dir=tmp_path / "results")
    assert result["status"] == "finished", result["reason"]
    assert {t["status"] for t in result["trials"]} == {"finished"}
    entries = by_component(result)
    strong, small, useless = (entries[name] for name in ablation_fixtures.GRADED)
    assert strong["significant"] and strong["stopped"] == "decided"
    assert strong["repeats"] <= adaptive["min"] + 2, strong
    assert small["significant"] and small["stopped"] == "decided", small
    assert small["repeats"] > strong["repeats"], (small, strong)
    assert not useless["significant"], useless
    assert useless["stopped"] in ("precise", "max")
    # Every effect is paired: each component's repeats ran with the base's seeds.
    seeds = {
        (t["params"]["ablated"], t["params"]["repeat"]): t["params"]["seed"]
        for t in result["trials"]
    }
    assert all(seeds[(None, r)] == seed for (_, r), seed in seeds.items())
    assert len(result["trials"]) < fixed.num_trials
    analysis = result["ablation"]
    assert analysis["test"].startswith("group-sequential")
    assert analysis["repeats"] == adaptive and analysis["looks"][0] == adaptive["min"]
    assert analysis["undecided"] == ([] if useless["stopped"] == "precise" else ["useless"])
    rows = (Path(result["results_dir"]) / "ablation.csv").read_text(encoding="utf-8").splitlines()
    assert rows[0].endswith(",repeats,stopped")


def test_one_run_builds_the_plan_once(
    redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """From the spec's validation to the analysis, the driver builds the study's
    components once (grouping the table's columns once) and the ablator once; the
    workers get the groups the driver made."""
    from maggy_core.ablation import ablators, study

    built: dict[str, int] = {"components": 0, "groups": 0, "ablator": 0, "loco_plan": 0}

    def counting(name: str, fn: Any) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            built[name] += 1
            return fn(*args, **kwargs)

        return wrapper

    monkeypatch.setattr(
        study.AblationSpec, "_build_plan", counting("components", study.AblationSpec._build_plan)
    )
    monkeypatch.setattr(study, "correlated_groups", counting("groups", study.correlated_groups))
    monkeypatch.setattr(
        ablators.Ablator, "__init__", counting("ablator", ablators.Ablator.__init__)
    )
    monkeypatch.setattr(ablators.LOCO, "plan", counting("loco_plan", ablators.LOCO.plan))

    data = ablation_fixtures.write_signal_table(tmp_path / "table.parquet", rows=200, seed=2)
    spec = ExperimentSpec.from_dict(
        {
            "name": "plan-once",
            "train_fn": "ablation_fixtures:fit_logistic",
            "ablation": {
                "dataset": str(data),
                "label": ablation_fixtures.LABEL,
                "features": {"auto_groups": 0.9},
                "components": ["scaling"],
            },
            "ablator": {"name": "loco", "repeats": {"min": 2, "max": 3}},
            "direction": "max",
            "optimization_key": "accuracy",
            "workers": 2,
            "seed": 5,
            "hb_interval": 0.5,
        }
    )
    assert spec.num_trials == (1 + 4) * 3
    result = run_experiment(spec, redis_url=redis_url, results_dir=tmp_path / "results")
    assert result["status"] == "finished", result["reason"]
    assert {t["status"] for t in result["trials"]} == {"finished"}, [
        t.get("error") for t in result["trials"]
    ]
    assert "error" not in result["ablation"], result["ablation"]
    assert {e["component"] for e in result["ablation"]["components"]} == {
        *ablation_fixtures.FEATURES,
        "scaling",
    }
    assert built == {"components": 1, "groups": 1, "ablator": 1, "loco_plan": 0}


def test_a_seconds_budget_counts_the_earlier_runs_time_after_a_resume(
    redis_url: str, tmp_path: Path
) -> None:
    """The driver dies 2 s into a study of ``budget: {seconds: 4}`` (the journal cut
    there); the resumed run starts its clock at the journal's 2 s, not at 0, and
    starts no trial past 4 s in all."""

    def sleepy(ablated: Any, seed: int) -> float:
        import time

        time.sleep(0.15)
        return 1.0 + (seed % 7) / 100

    spec = ExperimentSpec.from_dict(
        {
            "name": "seconds-budget",
            "ablation": {"components": ["a", "b"]},
            "ablator": {"name": "loco", "repeats": 60, "budget": {"seconds": 4}},
            "workers": 2,
            "seed": 6,
            "hb_interval": 0.5,
            "experiment_id": "seconds-budget-resume",
        },
        require_train_fn=False,
    )
    results = tmp_path / "results"
    first = run_experiment(spec, train_fn=sleepy, redis_url=redis_url, results_dir=results)
    assert first["status"] == "finished", first["reason"]
    elapsed = [t["info"]["elapsed"] for t in first["trials"]]
    assert max(elapsed) < 4.0 < (1 + 2) * 60 * 0.15 / 2  # the budget, not the plan, ended it
    journal = results / "seconds-budget-resume" / "journal.jsonl"
    records = [json.loads(line) for line in journal.read_text(encoding="utf-8").splitlines()]
    # Cut after the last trial that ended among those suggested in the first 2 s.
    early = {t["trial_id"] for t in first["trials"] if t["info"]["elapsed"] < 2.0}
    last = max(
        i for i, r in enumerate(records) if r["type"] == "trial_ended" and r["trial_id"] in early
    )
    cut = records[: last + 1]
    journal.write_text("".join(json.dumps(r) + "\n" for r in cut), encoding="utf-8")
    spent = max(r["info"]["elapsed"] for r in cut if r["type"] == "trial_started" and "info" in r)
    assert 1.0 < spent < 4.0

    second = run_experiment(spec, train_fn=sleepy, redis_url=redis_url, results_dir=results)
    assert second["status"] == "finished", second["reason"]
    before = {r["trial_id"] for r in cut if r["type"] == "trial_started"}
    new = [t["info"]["elapsed"] for t in second["trials"] if t["trial_id"] not in before]
    assert new, "the resumed run had budget left"
    assert min(new) >= spent  # its clock went on from the journal's
    assert max(new) < 4.0  # and stopped at the study's 4 s, not 4 s after the resume
    assert "error" not in second["ablation"], second["ablation"]


@pytest.mark.slow
def test_keras_study_runs_on_spark(redis_url: str, tmp_path: Path) -> None:
    from maggy_core.examples import tabular

    data = tabular.write_dataset(str(tmp_path / "cancer.parquet"), seed=0)
    spec = ExperimentSpec.from_dict(
        {
            "name": "keras-study",
            "train_fn": "maggy_core.examples.tabular:ablation_train",
            "ablation": {
                "dataset": data,
                "label": tabular.LABEL,
                "features": ["mean_radius"],
                "base_model": "maggy_core.examples.tabular:base_model",
                "layer_groups": [["dense_2", "dense_3"]],
            },
            "ablator": {"name": "loco", "repeats": 1},
            "train_kwargs": {"epochs": 2},
            "optimization_key": "accuracy",
            "workers": 2,
            "seed": 1,
        }
    )
    assert spec.num_trials == 3
    result = run_experiment(spec, redis_url=redis_url, results_dir=tmp_path / "results")
    assert result["status"] == "finished", result["reason"]
    assert [t["status"] for t in result["trials"]] == ["finished"] * 3, [
        t.get("error") for t in result["trials"]
    ]
    assert {t["params"]["ablated"] for t in result["trials"]} == {
        None,
        "mean_radius",
        "dense_2+dense_3",
    }
    for t in result["trials"]:
        assert 0.0 <= t["metric"] <= 1.0
    assert {e["component"] for e in result["ablation"]["components"]} == {
        "mean_radius",
        "dense_2+dense_3",
    }
    assert all(e["n"] == 1 for e in result["ablation"]["components"])
