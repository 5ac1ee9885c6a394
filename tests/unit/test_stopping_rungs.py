"""The rung-based stopping rules (asha, hyperband): exactly what the rung rule says."""

from __future__ import annotations

import random

import pytest

from maggy_core.exceptions import SpecError
from maggy_core.spec import ExperimentSpec
from maggy_core.stopping import ASHARule, HyperbandRule, get_stopping_rule
from maggy_core.stopping._rungs import rung_steps
from maggy_core.trial import FrozenTrial, TrialStatus


def rule(name: str = "asha", direction: str = "max", **options: object) -> ASHARule:
    made = get_stopping_rule(name, direction=direction, min_trials=5, interval=7, options=options)
    assert isinstance(made, ASHARule)
    return made


def expected_stop(earlier: list[float], value: float, eta: int, direction: str) -> bool:
    """The rung rule written out plainly: with the trial's own value, n values at
    the rung; it stops when at least max(1, n // eta) of them are strictly better."""
    values = [*earlier, value]
    keep = max(1, len(values) // eta)
    if direction == "max":
        better = sum(1 for v in values if v > value)
    else:
        better = sum(1 for v in values if v < value)
    return better >= keep


def test_rungs_are_min_step_times_powers_below_max_step() -> None:
    assert rung_steps(1, 27, 3) == [1, 3, 9]
    assert rung_steps(2, 100, 4) == [2, 8, 32]
    assert rung_steps(0.5, 2, 2) == [0.5, 1]
    assert rule(min_step=1, max_step=27, reduction_factor=3).rungs == [1, 3, 9]


@pytest.mark.parametrize("direction", ["max", "min"])
@pytest.mark.parametrize("eta", [2, 3, 4])
def test_each_arrival_at_a_rung_is_judged_against_the_values_recorded_there(
    direction: str, eta: int
) -> None:
    r = rule(direction=direction, min_step=1, max_step=100, reduction_factor=eta)
    rng = random.Random(eta)
    seen: list[float] = []
    decisions = []
    for i in range(60):
        value = round(rng.uniform(0, 1), 2)  # rounding makes ties happen
        stop = r.report(f"t{i:04d}", 1, value)
        assert stop is expected_stop(seen, value, eta, direction), (i, value, seen)
        decisions.append(stop)
        seen.append(value)
    assert any(decisions) and not all(decisions)
    # Roughly 1 in eta continues at a rung.
    kept = decisions.count(False) / len(decisions)
    assert 0.5 / eta < kept < 2.0 / eta


def test_first_trial_continues_and_second_only_if_better_while_the_first_runs() -> None:
    r = rule()
    assert r.report("t0000", 1, 0.5) is False  # alone at rung 1
    assert r.report("t0001", 1, 0.4) is True  # 1 of 2 better: outside the top 1/3
    assert r.report("t0002", 1, 0.6) is False  # the best of 3
    assert r.report("t0003", 1, 0.55) is True  # keep max(1, 4 // 3) = 1; 0.6 is better
    assert r.report("t0004", 1, 0.5) is True
    assert r.report("t0005", 1, 0.58) is False  # keep 6 // 3 = 2; only 0.6 is better
    # t0000 is still running: nobody waited for it, and it goes on being judged.
    assert r.report("t0000", 2, 0.7) is False  # step 2 is no rung
    assert r.report("t0000", 3, 0.8) is False  # alone at rung 3


def test_minimisation_is_the_same_rule_with_the_sign_flipped() -> None:
    up, down = rule(direction="max"), rule(direction="min")
    values = [0.5, 0.4, 0.6, 0.55, 0.3, 0.7, 0.65]
    for i, v in enumerate(values):
        assert up.report(f"t{i}", 1, v) is down.report(f"t{i}", 1, -v)
    assert rule(direction="min").report("a", 1, 1.0) is False
    down = rule(direction="min")
    down.report("a", 1, 1.0)
    assert down.report("b", 1, 2.0) is True  # larger loss: worse
    assert down.report("c", 1, 0.5) is False


def test_only_rung_steps_decide_and_a_skipped_rung_is_recorded_once() -> None:
    r = rule()
    r.report("t0", 1, 0.9)
    r.report("t0", 3, 0.9)
    assert r.report("t1", 2, 0.1) is True  # crosses rung 1 at step 2: recorded there
    assert r.recorded[0][0] == [0.1, 0.9]
    r2 = rule()
    assert r2.report("t0", 5, 0.5) is False  # crosses rungs 1 and 3 at once
    assert r2.recorded[0][0] == [0.5] and r2.recorded[0][1] == [0.5]
    assert r2.report("t0", 6, 0.0) is False  # no rung at 6, and rung 3 is behind it
    assert r2.recorded[0][1] == [0.5]


def test_trials_run_to_max_step_and_are_stopped_past_it() -> None:
    r = rule(max_step=9)
    assert r.rungs == [1, 3]
    for step in range(1, 10):
        assert r.report("t0", step, 0.5) is False  # reaching max_step is fine
    assert r.report("t0", 10, 0.5) is True


def test_es_min_and_es_interval_do_not_delay_the_rungs() -> None:
    r = rule()  # built with min_trials=5 and interval=7
    r.report("t0", 1, 0.9)
    assert r.report("t1", 1, 0.1) is True


def test_void_reports_are_taken_back_and_ended_trials_keep_theirs() -> None:
    r = rule()
    r.report("t0", 1, 0.9)
    r.report("t1", 1, 0.8)
    r.trial_ended(FrozenTrial("t0", {}, TrialStatus.PENDING))  # worker lost: runs again
    assert r.recorded[0][0] == [0.8]
    r.trial_ended(FrozenTrial("t1", {}, TrialStatus.EARLY_STOPPED, 0.8, ((1, 0.8),)))
    assert r.recorded[0][0] == [0.8]  # kept, and not counted twice
    assert r.report("t2", 1, 0.7) is True


def test_a_rule_rebuilt_from_ended_trials_records_the_same_values() -> None:
    live = rule()
    rng = random.Random(3)
    ended = []
    for i in range(30):
        history = []
        for step in range(1, 28):
            value = rng.random()
            history.append((step, value))
            if live.report(f"t{i:04d}", step, value):
                break
        status = TrialStatus.EARLY_STOPPED if len(history) < 27 else TrialStatus.FINISHED
        trial = FrozenTrial(f"t{i:04d}", {}, status, history[-1][1], tuple(history))
        live.trial_ended(trial)
        ended.append(trial)
    rebuilt = rule()
    for trial in ended:
        rebuilt.trial_ended(trial)
    assert rebuilt.recorded == live.recorded
    assert any(len(rung) > 0 for rung in live.recorded[0][1:])


def test_hyperband_brackets_start_at_higher_rungs_and_compete_apart() -> None:
    r = rule("hyperband")
    assert isinstance(r, HyperbandRule)
    assert r.brackets == 4  # rungs 1, 3, 9 and one bracket without any
    assert [r.bracket_of(f"t{i:04d}") for i in range(6)] == [0, 1, 2, 3, 0, 1]
    # Bracket 0 (t0000, t0004): rung 1 decides.
    assert r.report("t0000", 1, 0.9) is False
    assert r.report("t0004", 1, 0.1) is True
    # Bracket 1 (t0001, t0005): nothing at step 1, rung 3 decides among them only.
    assert r.report("t0001", 1, 0.05) is False
    assert r.report("t0005", 1, 0.01) is False
    assert r.report("t0001", 3, 0.5) is False
    assert r.report("t0005", 3, 0.4) is True
    # Bracket 3 (t0003): no rung before max_step: however bad, it runs.
    for step in range(1, 28):
        assert r.report("t0003", step, 0.0) is False
    assert r.report("t0003", 28, 0.0) is True
    assert rule("hyperband", brackets=2).brackets == 2


@pytest.mark.parametrize(
    ("name", "options", "field"),
    [
        ("asha", {"min_step": 0}, "es_options.min_step"),
        ("asha", {"max_step": 1}, "es_options.max_step"),
        ("asha", {"reduction_factor": 1}, "es_options.reduction_factor"),
        ("asha", {"reduction_factor": True}, "es_options.reduction_factor"),
        ("asha", {"rungs": 3}, "es_options.rungs"),
        ("hyperband", {"brackets": 5}, "es_options.brackets"),
        ("hyperband", {"brackets": 0}, "es_options.brackets"),
    ],
)
def test_bad_options_name_the_field(name: str, options: dict[str, object], field: str) -> None:
    with pytest.raises(SpecError) as err:
        get_stopping_rule(name, direction="max", min_trials=0, interval=1, options=options)
    assert [f for f, _ in err.value.problems] == [field]


def test_the_spec_takes_asha_with_its_options() -> None:
    spec = ExperimentSpec.from_dict(
        {
            "train_fn": "maggy_core.examples.sleep:train",
            "searchspace": {"x": ["DOUBLE", [0, 1]]},
            "num_trials": 4,
            "optimizer": "tpe",
            "es_policy": {"name": "asha", "options": {"min_step": 1, "max_step": 27}},
        }
    )
    assert spec.es_policy == "asha"
    assert spec.es_options == {"min_step": 1, "max_step": 27}
    with pytest.raises(SpecError, match=r"es_options\.reduction_factor"):
        ExperimentSpec.from_dict(
            {
                "train_fn": "maggy_core.examples.sleep:train",
                "searchspace": {"x": ["DOUBLE", [0, 1]]},
                "num_trials": 4,
                "es_policy": {"name": "hyperband", "options": {"reduction_factor": 0.5}},
            }
        )
