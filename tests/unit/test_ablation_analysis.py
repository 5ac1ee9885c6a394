from __future__ import annotations

import csv
import json
import math
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy import stats

from maggy_core.ablation.analysis import (
    AblationHistory,
    Observation,
    analyse,
    compare_with_history,
    holm_adjust,
    welch_p_value,
    write_chart_svg,
    write_table_csv,
)
from maggy_core.exceptions import SpecError

SVG_NS = "{http://www.w3.org/2000/svg}"


def study(
    base: Sequence[float | None],
    ablated: Mapping[str, Sequence[float | None]],
) -> list[Observation]:
    """Observations of a study; ``None`` metrics are failed trials."""
    observations = []
    for name, metrics in [(None, base), *ablated.items()]:
        for r, metric in enumerate(metrics):
            status = "failed" if metric is None else "finished"
            observations.append(Observation(name, r, metric, status, f"{name}-{r}"))
    return observations


def entry(analysis: dict[str, Any], name: str) -> dict[str, Any]:
    matches = [e for e in analysis["components"] if e["component"] == name]
    assert len(matches) == 1
    return matches[0]


def random_study(seed: int, repeats: int = 8) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    base = rng.normal(0.8, 0.05, repeats)
    ablated = {
        "dropout": base - rng.normal(0.04, 0.02, repeats),
        "age": base - rng.normal(0.0, 0.03, repeats),
        "embedding": base + rng.normal(0.01, 0.05, repeats),
    }
    return base, ablated


# --------------------------------------------------------------------------- statistics


@pytest.mark.parametrize("direction", ["max", "min"])
@pytest.mark.parametrize("seed", [0, 1, 7])
def test_delta_ci_and_p_value_match_scipy(direction: str, seed: int) -> None:
    base, ablated = random_study(seed)
    components = {name: "feature" for name in ablated}
    analysis = analyse(
        study(base.tolist(), {k: v.tolist() for k, v in ablated.items()}),
        components,
        direction=direction,
        confidence=0.9,
    )
    sign = 1.0 if direction == "max" else -1.0
    for name, values in ablated.items():
        e = entry(analysis, name)
        expected = sign * (base - values)
        assert e["n"] == len(base)
        assert e["deltas"] == pytest.approx(expected.tolist(), rel=1e-12)
        assert e["delta"] == pytest.approx(expected.mean(), rel=1e-12)
        assert e["delta_std"] == pytest.approx(expected.std(ddof=1), rel=1e-12)
        # ttest_rel(a, b) tests mean(a - b) == 0: with the sign folded in, it is the
        # same two-sided test as ours
        a, b = (base, values) if direction == "max" else (values, base)
        assert e["p_value"] == pytest.approx(stats.ttest_rel(a, b).pvalue, rel=1e-9)
        low, high = stats.t.interval(
            0.9, len(expected) - 1, loc=expected.mean(), scale=stats.sem(expected)
        )
        assert e["ci_low"] == pytest.approx(low, rel=1e-9)
        assert e["ci_high"] == pytest.approx(high, rel=1e-9)
        assert e["metric_mean"] == pytest.approx(values.mean(), rel=1e-12)
        assert e["metric_std"] == pytest.approx(values.std(ddof=1), rel=1e-12)
    assert analysis["base"]["metric_mean"] == pytest.approx(base.mean(), rel=1e-12)
    assert analysis["base"]["metric_std"] == pytest.approx(base.std(ddof=1), rel=1e-12)
    assert analysis["base"]["n"] == len(base)
    assert analysis["confidence"] == 0.9
    assert analysis["test"] == "paired t-test (two-sided), Holm-adjusted"
    json.dumps(analysis, allow_nan=False)  # plain JSON data


def test_min_direction_flips_the_sign_of_delta() -> None:
    # a loss: removing "reg" raises the loss by 0.1, so "reg" helps
    observations = study([1.0, 1.1, 0.9], {"reg": [1.1, 1.2, 1.0]})
    assert entry(analyse(observations, {"reg": "layer"}, direction="min"), "reg")[
        "delta"
    ] == pytest.approx(0.1)
    assert entry(analyse(observations, {"reg": "layer"}, direction="max"), "reg")[
        "delta"
    ] == pytest.approx(-0.1)


def test_holm_against_hand_computation() -> None:
    p = [0.01, 0.04, 0.03, 0.005]
    # sorted: 0.005 (x4 = 0.02), 0.01 (x3 = 0.03), 0.03 (x2 = 0.06), 0.04 (x1 = 0.04 -> 0.06)
    assert holm_adjust(p) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm_adjust([0.5, 0.6]) == pytest.approx([1.0, 1.0])  # capped at 1
    assert holm_adjust([]) == []


def test_analyse_applies_holm_across_components() -> None:
    base, ablated = random_study(3)
    analysis = analyse(
        study(base.tolist(), {k: v.tolist() for k, v in ablated.items()}),
        {name: "feature" for name in ablated},
        direction="max",
    )
    raw = {e["component"]: e["p_value"] for e in analysis["components"]}
    ordered = sorted(raw.items(), key=lambda kv: kv[1])
    m = len(ordered)
    expected: dict[str, float] = {}
    running = 0.0
    for i, (name, p) in enumerate(ordered):
        running = max(running, min(1.0, (m - i) * p))
        expected[name] = running
    for e in analysis["components"]:
        assert e["p_adjusted"] == pytest.approx(expected[e["component"]])
        assert e["p_adjusted"] >= e["p_value"]
        assert e["significant"] is (e["p_adjusted"] < 0.05)


def test_significance_uses_the_holm_adjusted_p_value() -> None:
    # three components with the same moderate effect: each p is below alpha on its own,
    # but not after adjusting for three tests at once
    deltas = [0.12, 0.3, 0.08, 0.2, 0.02]
    base = [1.0] * len(deltas)
    ablated = [b - d for b, d in zip(base, deltas, strict=True)]
    names = ("x", "y", "z")
    analysis = analyse(
        study(base, dict.fromkeys(names, ablated)),
        dict.fromkeys(names, "feature"),
        direction="max",
    )
    raw = stats.ttest_1samp([b - a for b, a in zip(base, ablated, strict=True)], 0.0).pvalue
    assert raw < 0.05 < 3 * raw
    for e in analysis["components"]:
        assert e["p_value"] == pytest.approx(raw, rel=1e-9)
        assert e["p_adjusted"] == pytest.approx(min(1.0, 3 * raw), rel=1e-9)
        assert e["significant"] is False
    # with a looser alpha the same adjusted p-values are significant
    loose = analyse(
        study(base, dict.fromkeys(names, ablated)),
        dict.fromkeys(names, "feature"),
        direction="max",
        alpha=0.2,
    )
    assert all(e["significant"] for e in loose["components"])


def test_equal_deltas_with_rounding_in_the_mean_still_have_zero_std() -> None:
    # 0.9 - 0.7 five times: fsum / 5 is one ulp off the value itself
    analysis = analyse(study([0.9] * 5, {"a": [0.7] * 5}), {"a": "layer"}, direction="max")
    a = entry(analysis, "a")
    assert a["delta_std"] == 0.0
    assert a["delta"] == 0.9 - 0.7
    assert a["p_value"] == 0.0


@pytest.mark.parametrize("seed", [0, 5])
def test_welch_matches_scipy(seed: int) -> None:
    rng = np.random.default_rng(seed)
    a = rng.normal(0.3, 0.05, 6)
    b = rng.normal(0.25, 0.2, 9)
    expected = stats.ttest_ind(a, b, equal_var=False).pvalue
    assert welch_p_value(a.tolist(), b.tolist()) == pytest.approx(expected, rel=1e-9)
    assert welch_p_value([1.0], b.tolist()) is None


# --------------------------------------------------------------------------- analysis


def test_component_that_matters_ranks_first_and_is_significant() -> None:
    rng = np.random.default_rng(42)
    base = rng.normal(0.9, 0.01, 6)
    observations = study(
        base.tolist(),
        {
            "useless": (base + rng.normal(0.0, 0.01, 6)).tolist(),
            "crucial": (base - 0.3 + rng.normal(0.0, 0.01, 6)).tolist(),
            "harmful": (base + 0.05 + rng.normal(0.0, 0.01, 6)).tolist(),
        },
    )
    analysis = analyse(
        observations,
        {"useless": "feature", "crucial": "layer", "harmful": "feature"},
        direction="max",
    )
    names = [e["component"] for e in analysis["components"]]
    assert names == ["crucial", "useless", "harmful"]
    assert [e["rank"] for e in analysis["components"]] == [1, 2, 3]
    crucial, useless = entry(analysis, "crucial"), entry(analysis, "useless")
    assert crucial["kind"] == "layer"
    assert crucial["significant"] is True
    assert crucial["delta"] == pytest.approx(0.3, abs=0.02)
    assert crucial["ci_low"] > 0
    assert useless["significant"] is False
    assert useless["ci_low"] < 0 < useless["ci_high"]
    assert entry(analysis, "harmful")["delta"] < 0


def test_failed_trials_drop_their_pairs() -> None:
    observations = study(
        [0.9, None, 0.8, 0.85, 0.7],
        {"a": [0.7, 0.6, None, 0.6, 0.6], "b": [0.9, 0.9, 0.8, 0.85, None]},
    )
    observations.append(Observation("b", 4, 0.1, "early_stopped"))  # not counted
    analysis = analyse(observations, {"a": "feature", "b": "feature"}, direction="max")
    a = entry(analysis, "a")
    assert a["n"] == 3  # repeat 1: base failed; repeat 2: ablated failed
    assert a["deltas"] == pytest.approx([0.2, 0.25, 0.1])
    assert a["delta"] == pytest.approx(np.mean([0.2, 0.25, 0.1]))
    assert a["metric_mean"] == pytest.approx(np.mean([0.7, 0.6, 0.6, 0.6]))  # all its finished
    assert a["p_value"] == pytest.approx(
        stats.ttest_rel([0.9, 0.85, 0.7], [0.7, 0.6, 0.6]).pvalue, rel=1e-9
    )
    assert analysis["base"]["n"] == 4
    assert entry(analysis, "b")["n"] == 3  # repeat 1 (base failed), repeat 4 (early stopped)


def test_equal_deltas_have_zero_std_and_a_degenerate_test() -> None:
    base = [0.75, 0.5, 0.625]  # dyadic values: the differences are exact
    observations = study(base, {"a": [b - 0.25 for b in base], "same": base})
    analysis = analyse(observations, {"a": "feature", "same": "feature"}, direction="max")
    a, same = entry(analysis, "a"), entry(analysis, "same")
    # non-zero mean: p 0, interval collapsed to the mean
    assert a["delta_std"] == 0.0
    assert a["ci_low"] == a["ci_high"] == a["delta"] == 0.25
    assert a["p_value"] == 0.0
    assert a["significant"] is True
    # zero mean: p 1
    assert same["deltas"] == [0.0, 0.0, 0.0]
    assert same["p_value"] == 1.0
    assert same["significant"] is False


def test_fewer_than_two_pairs_gives_none_fields() -> None:
    observations = study([0.9, 0.8], {"one": [0.5, None], "none": [None, None]})
    analysis = analyse(
        observations, {"one": "layer", "none": "layer", "absent": "layer"}, direction="max"
    )
    one = entry(analysis, "one")
    assert one["n"] == 1
    assert one["delta"] == pytest.approx(0.4)
    for field in ("delta_std", "ci_low", "ci_high", "p_value", "p_adjusted", "metric_std"):
        assert one[field] is None, field
    assert one["significant"] is False
    for name in ("none", "absent"):
        e = entry(analysis, name)
        assert e["n"] == 0
        assert e["delta"] is None
        assert e["deltas"] == []
        assert e["metric_mean"] is None
    # components without a delta rank last, in study order
    assert [e["component"] for e in analysis["components"]] == ["one", "none", "absent"]


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"direction": "maximise"}, "direction"),
        ({"direction": "max", "confidence": 1.0}, "ablation.confidence"),
        ({"direction": "max", "confidence": 0.0}, "ablation.confidence"),
        ({"direction": "max", "alpha": 1.5}, "ablation.alpha"),
        ({"direction": "max", "alpha": float("nan")}, "ablation.alpha"),
    ],
)
def test_bad_arguments_raise_spec_error_naming_the_field(
    kwargs: dict[str, Any], field: str
) -> None:
    observations = study([0.9, 0.8], {"a": [0.5, 0.4]})
    with pytest.raises(SpecError) as info:
        analyse(observations, {"a": "feature"}, **kwargs)
    assert [f for f, _ in info.value.problems] == [field]


def test_unknown_component_raises_spec_error_naming_it() -> None:
    observations = study([0.9, 0.8], {"a": [0.5, 0.4], "ghost": [0.5, 0.4]})
    with pytest.raises(SpecError) as info:
        analyse(observations, {"a": "feature"}, direction="max")
    assert info.value.problems[0][0] == "ablation.components"
    assert "ghost" in str(info.value)


def test_duplicate_finished_trial_raises() -> None:
    observations = [*study([0.9, 0.8], {"a": [0.5, 0.4]}), Observation("a", 1, 0.3, "finished")]
    with pytest.raises(SpecError, match="repeat 1"):
        analyse(observations, {"a": "feature"}, direction="max")


# --------------------------------------------------------------------------- outputs


def sample_analysis(names: Sequence[str] = ("dropout", "age", "embedding")) -> dict[str, Any]:
    base, ablated = random_study(11)
    data = dict(zip(names, ablated.values(), strict=False))
    return analyse(
        study(base.tolist(), {k: v.tolist() for k, v in data.items()}),
        {name: "feature" for name in names},
        direction="max",
    )


def test_csv_table(tmp_path: Path) -> None:
    analysis = sample_analysis()
    path = write_table_csv(analysis, tmp_path / "out" / "ablation.csv")
    with path.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == [
        "rank", "component", "kind", "n", "metric_mean", "delta", "ci_low", "ci_high",
        "p_value", "p_adjusted", "significant", "changed", "previous_delta", "repeats",
        "stopped",
    ]  # fmt: skip
    body = rows[1:]
    assert [row[1] for row in body] == [e["component"] for e in analysis["components"]]
    for row, e in zip(body, analysis["components"], strict=True):
        assert int(row[0]) == e["rank"]
        assert float(row[5]) == e["delta"]  # full precision
        assert float(row[9]) == e["p_adjusted"]
        assert row[10] == ("true" if e["significant"] else "false")
        assert row[11] == "" and row[12] == ""  # no history compared


def test_csv_with_history_columns_and_missing_values(tmp_path: Path) -> None:
    analysis = analyse(
        study([0.9, 0.8], {"a": [0.5, 0.4], "b": [0.5, None]}),
        {"a": "feature", "b": "feature"},
        direction="max",
    )
    previous = {"experiment_id": "e0", "components": {"a": {"delta": 0.1, "deltas": [0.1]}}}
    compared = compare_with_history(analysis, [previous])
    rows = list(csv.DictReader(write_table_csv(compared, tmp_path / "t.csv").open()))
    assert rows[0]["component"] == "a"
    assert rows[0]["changed"] == "false"
    assert float(rows[0]["previous_delta"]) == 0.1
    assert rows[1]["component"] == "b"
    assert rows[1]["ci_low"] == "" and rows[1]["p_value"] == "" and rows[1]["previous_delta"] == ""


def test_svg_is_valid_and_labels_components(tmp_path: Path) -> None:
    analysis = sample_analysis(("dropout", "a<b&c", "embedding"))
    path = write_chart_svg(analysis, tmp_path / "chart.svg", title="Nightly <ablation>")
    text = path.read_text(encoding="utf-8")
    root = ET.fromstring(text)
    assert root.tag == f"{SVG_NS}svg"
    labels = [t.text for t in root.iter(f"{SVG_NS}text")]
    for name in ("dropout", "a<b&c", "embedding"):
        assert name in labels
    assert "Nightly <ablation>" in labels
    assert "a&lt;b&amp;c" in text and "a<b&c" not in text
    # one dot per component with a delta, whiskers, and numeric tick labels
    assert len(list(root.iter(f"{SVG_NS}circle"))) == 3 + 1  # + the legend dot
    ticks = [t for t in labels if t is not None and _is_number(t)]
    assert len(ticks) >= 3
    assert "0" in ticks


def test_svg_colours_significant_components_differently(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    base = rng.normal(0.9, 0.01, 6)
    analysis = analyse(
        study(
            base.tolist(),
            {"big": (base - 0.3).tolist(), "zero": (base + rng.normal(0, 0.01, 6)).tolist()},
        ),
        {"big": "layer", "zero": "layer", "nodata": "layer"},
        direction="max",
    )
    assert entry(analysis, "big")["significant"] and not entry(analysis, "zero")["significant"]
    root = ET.fromstring(write_chart_svg(analysis, tmp_path / "c.svg").read_text())
    fills = {
        c.findtext(f"{SVG_NS}title", "").split(":")[0]: c.get("fill")
        for c in root.iter(f"{SVG_NS}circle")
        if c.find(f"{SVG_NS}title") is not None
    }
    assert set(fills) == {"big", "zero"}
    assert fills["big"] != fills["zero"]
    assert "no data" in [t.text for t in root.iter(f"{SVG_NS}text")]


def _is_number(text: str) -> bool:
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


# --------------------------------------------------------------------------- history


def shifted_study(seed: int, shift_useful: float) -> dict[str, Any]:
    """``useful`` has deltas around ``shift_useful``; ``steady`` around +0.1 always."""
    rng = np.random.default_rng(seed)
    base = rng.normal(0.9, 0.01, 6)
    return analyse(
        study(
            base.tolist(),
            {
                "useful": (base - shift_useful + rng.normal(0, 0.02, 6)).tolist(),
                "steady": (base - 0.1 + rng.normal(0, 0.02, 6)).tolist(),
            },
        ),
        {"useful": "feature", "steady": "layer"},
        direction="max",
    )


def test_history_append_and_read_back(tmp_path: Path) -> None:
    history = AblationHistory(tmp_path / "hist" / "study.jsonl")
    assert history.runs() == []
    first, second = shifted_study(1, 0.3), shifted_study(2, 0.0)
    history.append("run-1", first, 100.0)
    history.append("run-2", second, 200.0)
    runs = history.runs()
    assert [r["experiment_id"] for r in runs] == ["run-1", "run-2"]
    assert [r["ended"] for r in runs] == [100.0, 200.0]
    useful = runs[0]["components"]["useful"]
    assert useful["delta"] == pytest.approx(entry(first, "useful")["delta"])
    assert useful["deltas"] == pytest.approx(entry(first, "useful")["deltas"])
    assert useful["kind"] == "feature"
    assert useful["n"] == 6
    assert set(useful) >= {"delta", "ci_low", "ci_high", "n", "deltas", "kind"}


def test_history_skips_torn_last_line_and_recovers(tmp_path: Path) -> None:
    path = tmp_path / "study.jsonl"
    history = AblationHistory(path)
    history.append("run-1", shifted_study(1, 0.3), 100.0)
    with path.open("a", encoding="utf-8") as fh:
        fh.write('{"experiment_id": "run-2", "comp')  # the writer died mid-line
    assert [r["experiment_id"] for r in history.runs()] == ["run-1"]
    history.append("run-3", shifted_study(3, 0.3), 300.0)  # must not glue onto the torn line
    assert [r["experiment_id"] for r in history.runs()] == ["run-1", "run-3"]


def test_compare_flags_a_component_whose_effect_moved() -> None:
    before, now = shifted_study(1, 0.3), shifted_study(2, 0.0)
    runs = [
        {
            "experiment_id": "run-1",
            "ended": 1.0,
            "components": {e["component"]: e for e in before["components"]},
        }
    ]
    compared = compare_with_history(now, runs)
    assert compared["history_runs"] == 1
    useful, steady = entry(compared, "useful"), entry(compared, "steady")
    assert useful["changed"] is True
    assert steady["changed"] is False
    assert useful["previous"] == {
        "experiment_id": "run-1",
        "delta": entry(before, "useful")["delta"],
        "ci_low": entry(before, "useful")["ci_low"],
        "ci_high": entry(before, "useful")["ci_high"],
        "n": 6,
    }
    assert useful["previous_delta"] == entry(before, "useful")["delta"]
    expected_p = stats.ttest_ind(
        entry(now, "useful")["deltas"], entry(before, "useful")["deltas"], equal_var=False
    ).pvalue
    assert useful["change_p_value"] == pytest.approx(expected_p, rel=1e-9)
    assert "changed" not in entry(now, "useful")  # the input is not modified


def test_compare_through_history_file_uses_latest_run(tmp_path: Path) -> None:
    history = AblationHistory(tmp_path / "study.jsonl")
    history.append("run-1", shifted_study(1, 0.0), 100.0)
    history.append("run-2", shifted_study(2, 0.3), 200.0)
    compared = compare_with_history(shifted_study(3, 0.3), history.runs())
    assert compared["history_runs"] == 2
    useful = entry(compared, "useful")
    assert useful["previous"]["experiment_id"] == "run-2"
    assert useful["changed"] is False


def test_compare_without_history() -> None:
    compared = compare_with_history(shifted_study(1, 0.3), [])
    assert compared["history_runs"] == 0
    for e in compared["components"]:
        assert e["changed"] is False
        assert e["previous"] is None
        assert e["previous_delta"] is None


def test_compare_falls_back_to_interval_overlap_with_few_deltas() -> None:
    now = shifted_study(2, 0.0)
    far = {"delta": 0.3, "ci_low": 0.25, "ci_high": 0.35, "n": 1, "deltas": [0.3]}
    near = {"delta": 0.1, "ci_low": 0.05, "ci_high": 0.15, "n": 1, "deltas": [0.1]}
    runs = [{"experiment_id": "old", "components": {"useful": far, "steady": near}}]
    compared = compare_with_history(now, runs)
    assert entry(compared, "useful")["changed"] is True  # intervals disjoint
    assert entry(compared, "useful")["change_p_value"] is None
    assert entry(compared, "steady")["changed"] is False  # intervals overlap
    no_ci = {"experiment_id": "old", "components": {"useful": {"delta": 0.9, "deltas": [0.9]}}}
    assert entry(compare_with_history(now, [no_ci]), "useful")["changed"] is False
