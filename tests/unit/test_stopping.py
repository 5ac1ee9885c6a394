from __future__ import annotations

from collections.abc import Sequence

import pytest

from maggy_core.exceptions import SpecError
from maggy_core.stopping import (
    MedianRule,
    NoStopping,
    StoppingRule,
    available_stopping_rules,
    get_stopping_rule,
)
from maggy_core.trial import FrozenTrial, TrialStatus


def trial(
    values: Sequence[float],
    status: TrialStatus = TrialStatus.RUNNING,
    steps: Sequence[int] | None = None,
    trial_id: str = "t",
) -> FrozenTrial:
    steps = list(range(len(values))) if steps is None else steps
    history = tuple(zip(steps, values, strict=True))
    metric = values[-1] if status is TrialStatus.FINISHED else None
    return FrozenTrial(trial_id, {}, status, metric, history)


def median_rule(direction: str = "max", min_trials: int = 3, interval: int = 1) -> StoppingRule:
    rule = get_stopping_rule(
        "median", direction=direction, min_trials=min_trials, interval=interval
    )
    assert isinstance(rule, MedianRule)
    return rule


def finish(rule: StoppingRule, *curves: Sequence[float]) -> None:
    for i, values in enumerate(curves):
        rule.observe_finished(trial(values, TrialStatus.FINISHED, trial_id=f"f{i}"))


GOOD = [0.5, 0.6, 0.7, 0.8]  # running averages at step 3: 0.65
MID = [0.4, 0.5, 0.6, 0.7]  # 0.55
LOW = [0.3, 0.4, 0.5, 0.6]  # 0.45


def test_registry() -> None:
    assert available_stopping_rules() == ["median", "none"]
    assert isinstance(
        get_stopping_rule("NONE", direction="max", min_trials=0, interval=1), NoStopping
    )
    with pytest.raises(SpecError, match="es_policy: unknown rule 'asha'; allowed: median, none"):
        get_stopping_rule("asha", direction="max", min_trials=0, interval=1)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"direction": "up", "min_trials": 1, "interval": 1}, "direction"),
        ({"direction": "max", "min_trials": -1, "interval": 1}, "es_min"),
        ({"direction": "max", "min_trials": True, "interval": 1}, "es_min"),
        ({"direction": "max", "min_trials": 1, "interval": 0}, "es_interval"),
    ],
)
def test_arguments_are_validated(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(SpecError, match=f"^{field}: ") as err:
        get_stopping_rule("median", **kwargs)  # type: ignore[arg-type]
    assert [f for f, _ in err.value.problems] == [field]


def test_unknown_option_is_rejected() -> None:
    with pytest.raises(SpecError, match=r"es_policy\.quantile: unknown option for median"):
        MedianRule(direction="max", min_trials=1, interval=1, quantile=0.5)


@pytest.mark.parametrize("rule_name", ["median", "none"])
def test_conformance_empty_history_and_fresh_rule_never_stop(rule_name: str) -> None:
    rule = get_stopping_rule(rule_name, direction="max", min_trials=0, interval=1)
    assert rule.should_stop(trial([])) is False
    assert rule.should_stop(trial([-100.0])) is False  # nothing finished yet


def test_no_stopping_never_stops() -> None:
    rule = get_stopping_rule("none", direction="max", min_trials=0, interval=1)
    finish(rule, GOOD, GOOD, GOOD)
    assert rule.should_stop(trial([0.0, 0.0, 0.0, 0.0])) is False


def test_median_stops_a_clearly_worse_trial() -> None:
    rule = median_rule()
    finish(rule, GOOD, MID, LOW)
    assert rule.should_stop(trial([0.1, 0.1, 0.1, 0.1])) is True


def test_median_keeps_a_good_trial() -> None:
    rule = median_rule()
    finish(rule, GOOD, MID, LOW)
    assert rule.should_stop(trial([0.5, 0.6, 0.7, 0.9])) is False


def test_median_compares_best_so_far_with_median_of_running_averages() -> None:
    rule = median_rule()
    finish(rule, GOOD, MID, LOW)  # median at step 3 is MID's running average 0.55
    assert rule.should_stop(trial([0.1, 0.1, 0.1, 0.56])) is False  # best 0.56 >= 0.55
    assert rule.should_stop(trial([0.1, 0.54, 0.1, 0.1])) is True  # best 0.54 < 0.55
    # The median is of running averages, not of last values (0.7): 0.6 does not stop.
    assert rule.should_stop(trial([0.6, 0.6, 0.6, 0.6])) is False


def test_median_of_an_even_count_is_the_mean_of_the_middle_two() -> None:
    rule = median_rule(min_trials=2)
    finish(rule, [1.0], [3.0])
    assert rule.should_stop(trial([1.9])) is True
    assert rule.should_stop(trial([2.0])) is False


def test_median_does_not_act_before_min_trials() -> None:
    rule = median_rule(min_trials=3)
    finish(rule, GOOD, MID)
    bad = trial([0.0, 0.0, 0.0, 0.0])
    assert rule.should_stop(bad) is False
    finish(rule, LOW)
    assert rule.should_stop(bad) is True


def test_median_counts_only_finished_trials_that_reached_the_step() -> None:
    rule = median_rule(min_trials=3)
    finish(rule, GOOD, MID, [0.3, 0.4])  # the third stopped reporting at step 1
    assert rule.should_stop(trial([0.0, 0.0])) is True  # step 1: three trials
    assert rule.should_stop(trial([0.0, 0.0, 0.0])) is False  # step 2: only two


def test_median_ignores_trials_that_did_not_finish_normally() -> None:
    rule = median_rule(min_trials=1)
    rule.observe_finished(trial(GOOD, TrialStatus.EARLY_STOPPED))
    rule.observe_finished(trial(GOOD, TrialStatus.FAILED))
    assert rule.should_stop(trial([0.0])) is False
    finish(rule, GOOD)
    assert rule.should_stop(trial([0.0])) is True


def test_median_respects_the_interval() -> None:
    rule = median_rule(min_trials=1, interval=2)
    finish(rule, GOOD)
    assert rule.should_stop(trial([0.0])) is True  # step 0
    assert rule.should_stop(trial([0.0, 0.0])) is False  # step 1: not a multiple of 2
    assert rule.should_stop(trial([0.0, 0.0, 0.0])) is True  # step 2


def test_median_with_sparse_and_unsorted_steps() -> None:
    rule = median_rule(min_trials=1, interval=5)
    rule.observe_finished(
        trial([0.4, 0.2, 0.6], TrialStatus.FINISHED, steps=[10, 5, 20])
    )  # running averages: step 5 -> 0.2, step 10 -> 0.3, step 20 -> 0.4
    assert rule.should_stop(trial([0.25], steps=[10])) is True
    assert rule.should_stop(trial([0.35], steps=[10])) is False
    assert rule.should_stop(trial([0.1], steps=[15])) is False  # no finished trial at 15


def test_median_for_minimisation() -> None:
    rule = median_rule(direction="min")
    finish(rule, [3.0, 2.0], [2.0, 1.0], [1.0, 0.5])  # running averages at step 1: 2.5, 1.5, 0.75
    assert rule.should_stop(trial([5.0, 4.0])) is True  # best 4.0 > 1.5
    assert rule.should_stop(trial([5.0, 1.0])) is False  # best 1.0 < 1.5


def test_same_curve_stops_under_max_but_not_under_min() -> None:
    finished = ([1.0, 1.0], [2.0, 2.0], [3.0, 3.0])
    low = trial([0.5, 0.5])
    up, down = median_rule("max"), median_rule("min")
    finish(up, *finished)
    finish(down, *finished)
    assert up.should_stop(low) is True
    assert down.should_stop(low) is False
