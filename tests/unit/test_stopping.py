from __future__ import annotations

import itertools
import random
from collections.abc import Sequence

import pytest

from maggy_core.exceptions import SpecError
from maggy_core.stopping import (
    MedianRule,
    NoStopping,
    PercentileRule,
    StoppingRule,
    available_stopping_rules,
    get_stopping_rule,
)
from maggy_core.stopping._percentile import _kth
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


_ids = itertools.count()


def should_stop(rule: StoppingRule, t: FrozenTrial) -> bool:
    """Report ``t``'s history live, as the coordinator does, under a fresh id; the
    answer to the last report; then the trial is forgotten (as if stopped)."""
    tid = f"r{next(_ids)}"
    answer = False
    for step, value in t.history:
        answer = rule.report(tid, step, value)
    rule.trial_ended(FrozenTrial(tid, {}, TrialStatus.EARLY_STOPPED))
    return answer


def median_rule(direction: str = "max", min_trials: int = 3, interval: int = 1) -> StoppingRule:
    rule = get_stopping_rule(
        "median", direction=direction, min_trials=min_trials, interval=interval
    )
    assert isinstance(rule, MedianRule)
    return rule


def finish(rule: StoppingRule, *curves: Sequence[float]) -> None:
    for i, values in enumerate(curves):
        rule.trial_ended(trial(values, TrialStatus.FINISHED, trial_id=f"f{i}"))


GOOD = [0.5, 0.6, 0.7, 0.8]  # running averages at step 3: 0.65
MID = [0.4, 0.5, 0.6, 0.7]  # 0.55
LOW = [0.3, 0.4, 0.5, 0.6]  # 0.45


def test_registry() -> None:
    assert available_stopping_rules() == ["asha", "hyperband", "median", "none", "percentile"]
    assert isinstance(
        get_stopping_rule("NONE", direction="max", min_trials=0, interval=1), NoStopping
    )
    with pytest.raises(
        SpecError,
        match="es_policy: unknown rule 'bohb'; allowed: asha, hyperband, median, none, percentile",
    ):
        get_stopping_rule("bohb", direction="max", min_trials=0, interval=1)


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
    with pytest.raises(SpecError, match=r"es_options\.quantile: unknown option for median"):
        MedianRule(direction="max", min_trials=1, interval=1, quantile=0.5)


@pytest.mark.parametrize("rule_name", ["asha", "hyperband", "median", "none", "percentile"])
def test_conformance_empty_history_and_fresh_rule_never_stop(rule_name: str) -> None:
    rule = get_stopping_rule(rule_name, direction="max", min_trials=0, interval=1)
    assert should_stop(rule, trial([])) is False
    assert should_stop(rule, trial([-100.0])) is False  # nothing finished yet


def test_no_stopping_never_stops() -> None:
    rule = get_stopping_rule("none", direction="max", min_trials=0, interval=1)
    finish(rule, GOOD, GOOD, GOOD)
    assert should_stop(rule, trial([0.0, 0.0, 0.0, 0.0])) is False


def test_median_stops_a_clearly_worse_trial() -> None:
    rule = median_rule()
    finish(rule, GOOD, MID, LOW)
    assert should_stop(rule, trial([0.1, 0.1, 0.1, 0.1])) is True


def test_median_keeps_a_good_trial() -> None:
    rule = median_rule()
    finish(rule, GOOD, MID, LOW)
    assert should_stop(rule, trial([0.5, 0.6, 0.7, 0.9])) is False


def test_median_compares_best_so_far_with_median_of_running_averages() -> None:
    rule = median_rule()
    finish(rule, GOOD, MID, LOW)  # median at step 3 is MID's running average 0.55
    assert should_stop(rule, trial([0.1, 0.1, 0.1, 0.56])) is False  # best 0.56 >= 0.55
    assert should_stop(rule, trial([0.1, 0.54, 0.1, 0.1])) is True  # best 0.54 < 0.55
    # The median is of running averages, not of last values (0.7): 0.6 does not stop.
    assert should_stop(rule, trial([0.6, 0.6, 0.6, 0.6])) is False


def test_median_of_an_even_count_is_the_mean_of_the_middle_two() -> None:
    rule = median_rule(min_trials=2)
    finish(rule, [1.0], [3.0])
    assert should_stop(rule, trial([1.9])) is True
    assert should_stop(rule, trial([2.0])) is False


def test_median_does_not_act_before_min_trials() -> None:
    rule = median_rule(min_trials=3)
    finish(rule, GOOD, MID)
    bad = trial([0.0, 0.0, 0.0, 0.0])
    assert should_stop(rule, bad) is False
    finish(rule, LOW)
    assert should_stop(rule, bad) is True


def test_median_counts_only_finished_trials_that_reached_the_step() -> None:
    rule = median_rule(min_trials=3)
    finish(rule, GOOD, MID, [0.3, 0.4])  # the third stopped reporting at step 1
    assert should_stop(rule, trial([0.0, 0.0])) is True  # step 1: three trials
    assert should_stop(rule, trial([0.0, 0.0, 0.0])) is False  # step 2: only two


def test_median_ignores_trials_that_did_not_finish_normally() -> None:
    rule = median_rule(min_trials=1)
    rule.trial_ended(trial(GOOD, TrialStatus.EARLY_STOPPED))
    rule.trial_ended(trial(GOOD, TrialStatus.FAILED))
    assert should_stop(rule, trial([0.0])) is False
    finish(rule, GOOD)
    assert should_stop(rule, trial([0.0])) is True


def test_median_respects_the_interval() -> None:
    rule = median_rule(min_trials=1, interval=2)
    finish(rule, GOOD)
    assert should_stop(rule, trial([0.0])) is True  # step 0
    assert should_stop(rule, trial([0.0, 0.0])) is False  # step 1: not a multiple of 2
    assert should_stop(rule, trial([0.0, 0.0, 0.0])) is True  # step 2


def test_median_with_sparse_and_unsorted_steps() -> None:
    rule = median_rule(min_trials=1, interval=5)
    rule.trial_ended(
        trial([0.4, 0.2, 0.6], TrialStatus.FINISHED, steps=[10, 5, 20])
    )  # running averages: step 5 -> 0.2, step 10 -> 0.3, step 20 -> 0.4
    assert should_stop(rule, trial([0.25], steps=[10])) is True
    assert should_stop(rule, trial([0.35], steps=[10])) is False
    assert should_stop(rule, trial([0.1], steps=[15])) is False  # no finished trial at 15


def test_median_for_minimisation() -> None:
    rule = median_rule(direction="min")
    finish(rule, [3.0, 2.0], [2.0, 1.0], [1.0, 0.5])  # running averages at step 1: 2.5, 1.5, 0.75
    assert should_stop(rule, trial([5.0, 4.0])) is True  # best 4.0 > 1.5
    assert should_stop(rule, trial([5.0, 1.0])) is False  # best 1.0 < 1.5


def test_same_curve_stops_under_max_but_not_under_min() -> None:
    finished = ([1.0, 1.0], [2.0, 2.0], [3.0, 3.0])
    low = trial([0.5, 0.5])
    up, down = median_rule("max"), median_rule("min")
    finish(up, *finished)
    finish(down, *finished)
    assert should_stop(up, low) is True
    assert should_stop(down, low) is False


# ---------------------------------------------------------------- live reports


def test_a_trial_that_reported_live_and_finished_counts_as_finished() -> None:
    rule = median_rule(min_trials=1)
    for step, value in enumerate(GOOD):
        assert rule.report("live", step, value) is False  # nothing finished yet
    assert rule.running_at[3] == [pytest.approx(0.65)]
    rule.trial_ended(trial(GOOD, TrialStatus.FINISHED, trial_id="live"))
    assert 3 not in rule.running_at  # moved from the running to the finished averages
    assert rule.finished_at[3] == [pytest.approx(0.65)]
    assert should_stop(rule, trial([0.0, 0.0, 0.0, 0.0])) is True


def test_a_step_reported_twice_keeps_its_last_running_average() -> None:
    rule = median_rule(min_trials=0)
    rule.report("a", 0, 1.0)
    rule.report("a", 0, 3.0)  # running average over both reports: 2.0
    assert rule.running_at[0] == [2.0]


# ---------------------------------------------------------------- percentile


def percentile_rule(p: float = 50, direction: str = "max", min_trials: int = 0) -> StoppingRule:
    rule = get_stopping_rule(
        "percentile",
        direction=direction,
        min_trials=min_trials,
        interval=1,
        options={"percentile": p},
    )
    assert isinstance(rule, PercentileRule)
    return rule


@pytest.mark.parametrize("bad", [0, 100, -5, "25", True, None])
def test_percentile_option_is_validated(bad: object) -> None:
    with pytest.raises(SpecError, match=r"^es_options\.percentile: must be a number"):
        percentile_rule(bad)  # type: ignore[arg-type]


def test_percentile_uses_running_trials_before_any_finished() -> None:
    rule = percentile_rule(50)
    # Three trials running side by side, nothing finished: the rule still acts.
    assert rule.report("a", 0, 0.9) is False  # alone at step 0: needs two
    assert rule.report("b", 0, 0.8) is True  # below the median of 0.8 and 0.9, 0.85
    assert rule.report("c", 0, 0.1) is True  # median of 0.1, 0.8, 0.9 is 0.8
    assert rule.report("d", 0, 0.85) is False  # median of 0.1, 0.8, 0.85, 0.9 is 0.825


def test_percentile_cut_off_for_a_quarter() -> None:
    rule = percentile_rule(25)  # keep the best quarter: cut-off at the 75th percentile
    finish(rule, *([[v] for v in (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)]))
    # Finished 0.1..0.8 plus the trial itself: 75th percentile of nine values.
    assert should_stop(rule, trial([0.55])) is True  # cut-off: 0.6, the 7th of nine
    assert should_stop(rule, trial([0.75])) is False  # cut-off: 0.7


def test_percentile_for_minimisation() -> None:
    rule = percentile_rule(50, direction="min")
    finish(rule, [1.0], [2.0], [3.0])
    assert should_stop(rule, trial([2.5])) is True  # worse than the median (2.0 ... 2.25)
    assert should_stop(rule, trial([1.5])) is False


def test_percentile_waits_for_min_trials() -> None:
    rule = percentile_rule(50, min_trials=2)
    rule.report("a", 0, 0.9)
    rule.report("b", 0, 0.8)
    assert rule.report("c", 0, 0.1) is False  # nothing finished yet
    finish(rule, [0.9], [0.8])
    assert rule.report("d", 0, 0.1) is True


def test_kth_of_two_sorted_lists_matches_sorting() -> None:
    rng = random.Random(3)
    for _ in range(300):
        a = sorted(rng.random() for _ in range(rng.randrange(0, 7)))
        b = sorted(rng.random() for _ in range(rng.randrange(0, 7)))
        merged = sorted(a + b)
        for k in range(len(merged)):
            assert _kth(a, b, k) == merged[k]
