"""The sequential design of adaptive ablation studies, and the LOCO ablator that runs it.

The statistical tests drive the real ablator through simulated studies: a
stand-in for the coordinator hands its suggestions to simulated workers whose
trials end in random order, and feeds the simulated metrics back. Metrics depend
on (study seed, component, repeat) only, so a study is reproducible and a resumed
one can be compared with an uninterrupted one.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pytest
from scipy import stats

from maggy_core.ablation.ablators import LOCO, get_ablator
from maggy_core.ablation.analysis import Observation, analyse
from maggy_core.ablation.sequential import Repeats, sequential_stats
from maggy_core.ablation.study import AblationSpec
from maggy_core.exceptions import SpecError
from maggy_core.optimizers import DONE, WAIT, Suggestion
from maggy_core.trial import FrozenTrial, TrialStatus

ADAPTIVE = {"min": 3, "max": 20, "precision": 0.25}


def metric(
    seed: int,
    ablated: str | list[str] | None,
    repeat: int,
    effects: Mapping[str, float],
    sd: float,
    pair_effects: Mapping[tuple[str, str], float] | None = None,
) -> float:
    """The simulated metric of a trial: the repeat's base level (shared by every
    trial of the repeat: the pairing), less the left-out effect, plus noise."""
    base = random.Random(f"{seed}/base/{repeat}").gauss(10.0, 1.0)
    if ablated is None:
        return base
    noise = random.Random(f"{seed}/{ablated}/{repeat}").gauss(0.0, sd)
    if isinstance(ablated, list):
        pair = (ablated[0], ablated[1])
        lost = (pair_effects or {}).get(pair, effects[pair[0]] + effects[pair[1]])
        return base - lost + noise
    return base - effects[ablated] + noise


def make(effects: Mapping[str, float], options: Mapping[str, Any], seed: int) -> LOCO:
    components = AblationSpec.parse({"components": list(effects)}).plan()
    ablator = get_ablator("loco", components, direction="max", seed=seed, options=options)
    assert isinstance(ablator, LOCO)
    return ablator


def run(
    ablator: LOCO,
    effects: Mapping[str, float],
    sd: float,
    seed: int,
    *,
    workers: int = 4,
    pair_effects: Mapping[tuple[str, str], float] | None = None,
    stop_after: int | None = None,
    trials: list[FrozenTrial] | None = None,
    slow: str | None = None,
) -> tuple[list[FrozenTrial], list[FrozenTrial]]:
    """Run a simulated study; returns (ended trials, trials still running when it
    was cut off after ``stop_after`` ended ones). ``trials`` resumes: pending ones
    run again first, as the coordinator does. Trials of ``slow`` take 3 times as long."""
    rng = random.Random(seed)
    ended: list[FrozenTrial] = [t for t in trials or [] if t.status.is_terminal]
    queue = [t for t in trials or [] if not t.status.is_terminal]
    running: list[tuple[float, FrozenTrial]] = []
    now, done, count = 0.0, False, len(trials or [])
    while True:
        while len(running) < workers and (queue or not done):
            if queue:
                pending = queue.pop(0)
                params, info, trial_id = pending.params, pending.info, pending.trial_id
            else:
                decision = ablator.suggest()
                if decision is DONE:
                    done = True
                    break
                if decision is WAIT:
                    break
                assert isinstance(decision, Suggestion)
                params, info, trial_id = decision.params, decision.info, f"t{count:04d}"
                count += 1
            value = metric(seed, params["ablated"], params["repeat"], effects, sd, pair_effects)
            trial = FrozenTrial(trial_id, params, TrialStatus.FINISHED, value, info=info)
            seconds = rng.uniform(0.3, 1.5) * (3.0 if params["ablated"] == slow else 1.0)
            running.append((now + seconds, trial))
        if not running:
            assert done, "the ablator waits with nothing running"
            return ended, []
        if stop_after is not None and len(ended) >= stop_after:
            return ended, [t for _, t in running]
        running.sort(key=lambda item: item[0])
        now, trial = running.pop(0)
        ablator.observe(trial)
        ended.append(trial)


def observations(trials: Sequence[FrozenTrial]) -> list[Observation]:
    return [
        Observation(
            tuple(a) if isinstance(a := t.params["ablated"], list) else a,
            t.params["repeat"],
            t.metric,
            t.status.value,
            t.trial_id,
        )
        for t in trials
    ]


def analysed(
    trials: Sequence[FrozenTrial], effects: Mapping[str, float], options: Mapping[str, Any]
) -> dict[str, dict[str, Any]]:
    analysis = analyse(
        observations(trials),
        {name: "component" for name in effects},
        direction="max",
        repeats=Repeats.parse(options["repeats"]),
        budget=options.get("budget"),
    )
    return {e["component"]: e for e in analysis["components"]} | {"": analysis}


# ---------------------------------------------------------------- the design


def test_repeats_forms_and_their_errors() -> None:
    assert Repeats.parse(5) == Repeats(5, 5) and not Repeats(5, 5).adaptive
    assert Repeats.parse({"min": 3, "max": 30, "precision": 0.01}) == Repeats(3, 30, 0.01)
    assert Repeats(3, 30, 0.01).to_dict() == {"min": 3, "max": 30, "precision": 0.01}
    assert Repeats(4, 4).to_dict() == 4
    cases = [
        (0, "ablator.repeats"),
        ("3", "ablator.repeats"),
        ({"min": 1, "max": 5}, "ablator.repeats.min"),
        ({"min": 4, "max": 3}, "ablator.repeats.max"),
        ({"min": 3}, "ablator.repeats.max"),
        ({"min": 3, "max": 9, "precision": -1}, "ablator.repeats.precision"),
        ({"min": 3, "max": 9, "every": 2}, "ablator.repeats.every"),
    ]
    for value, where in cases:
        with pytest.raises(SpecError) as err:
            Repeats.parse(value)
        assert where in [field for field, _ in err.value.problems], (value, err.value.problems)


def test_looks_grow_geometrically_and_spend_the_error_rate_once() -> None:
    assert Repeats(3, 30).looks() == (3, 5, 8, 12, 18, 27, 30)
    assert Repeats(2, 3).looks() == (2, 3)
    assert Repeats(6, 6).looks() == (6,) and Repeats(6, 6).weights() == (1.0,)
    for repeats in (Repeats(3, 30), Repeats(2, 7), Repeats(5, 100)):
        weights = repeats.weights()
        assert len(weights) == len(repeats.looks())
        assert math.isclose(sum(weights), 1.0) and all(w > 0 for w in weights)


def test_a_single_look_is_scipys_paired_t_test() -> None:
    deltas = np.random.default_rng(3).normal(0.3, 1.0, 9).tolist()
    expected = stats.ttest_1samp(deltas, 0.0)
    interval = expected.confidence_interval(0.95)
    for repeats in (None, Repeats(9, 9)):
        got = sequential_stats(deltas, repeats, 0.95)
        assert got.p_value == pytest.approx(expected.pvalue, rel=1e-12)
        assert (got.ci_low, got.ci_high) == pytest.approx((interval.low, interval.high))
        assert got.look == 1 and got.n == 9


def test_the_sequential_interval_is_wider_and_its_p_value_larger_than_a_single_looks() -> None:
    deltas = np.random.default_rng(4).normal(0.5, 1.0, 8).tolist()
    single = sequential_stats(deltas, None, 0.95)
    sequential = sequential_stats(deltas, Repeats(3, 30), 0.95)
    assert sequential.look == 3  # 8 pairs: the third look
    assert sequential.half_width is not None and single.half_width is not None
    assert sequential.half_width > single.half_width
    assert sequential.p_value is not None and single.p_value is not None
    assert sequential.p_value > single.p_value


@pytest.mark.slow
def test_adaptive_plan_keeps_false_positives_below_alpha_and_intervals_cover() -> None:
    """2,000 simulated studies of a useless component and one with a small effect
    (0.5 noise sd), each run through the adaptive ablator and analysed: the useless
    one is significant in at most alpha of them, and the intervals cover the true
    effects at least 95 % of the time, though the plan chose each study's repeats
    by peeking at the results."""
    effects = {"none": 0.0, "some": 0.5}
    options = {"repeats": ADAPTIVE}
    studies = 2000
    false_positives = covered_none = covered_some = 0
    repeats_some: list[int] = []
    for seed in range(studies):
        trials, _ = run(make(effects, options, seed), effects, 1.0, seed)
        result = analysed(trials, effects, options)
        none, some = result["none"], result["some"]
        false_positives += none["significant"]
        covered_none += none["ci_low"] <= 0.0 <= none["ci_high"]
        covered_some += some["ci_low"] <= 0.5 <= some["ci_high"]
        repeats_some.append(some["repeats"])
    assert false_positives / studies <= 0.05
    assert covered_none / studies >= 0.95
    assert covered_some / studies >= 0.95
    # The plan adapted: the small effect's studies stopped at different looks.
    assert len(set(repeats_some)) >= 3


def test_peeking_with_a_plain_t_test_would_not_keep_alpha() -> None:
    """Why the design is needed: stopping at the first plain t-test with p < 0.05,
    looking after every pair from 3 to 20, flags a useless component far more often
    than 5 % (what the test above guards against)."""
    rng = np.random.default_rng(0)
    data = rng.normal(0.0, 1.0, (2000, 20))
    flagged = np.zeros(2000, dtype=bool)
    for n in range(3, 21):
        flagged |= stats.ttest_1samp(data[:, :n], 0.0, axis=1).pvalue < 0.05
    assert flagged.mean() > 0.15


# ---------------------------------------------------------------- the LOCO ablator


EFFECTS = {"strong": 5.0, "small": 0.8, "none": 0.0}


def test_strong_effects_stop_at_min_and_small_ones_get_more() -> None:
    options = {"repeats": {"min": 3, "max": 30, "precision": 0.2}}
    ablator = make(EFFECTS, options, 7)
    trials, _ = run(ablator, EFFECTS, 0.5, 7)
    got = Counter(t.params["ablated"] for t in trials)
    result = analysed(trials, EFFECTS, options)
    assert ablator.status()["strong"] == result["strong"]["stopped"] == "decided"
    assert got["strong"] <= 3 + 2
    assert got["small"] > got["strong"] and result["small"]["significant"]
    assert not result["none"]["significant"]
    assert result["none"]["stopped"] in ("precise", "max")
    assert got[None] == max(got.values())  # the base ran every repeat anyone needed
    assert len(trials) < (1 + len(EFFECTS)) * 30 == ablator.num_trials


def test_the_ablator_waits_while_a_look_is_incomplete_and_never_runs_a_pair_twice() -> None:
    ablator = make({"a": 0.0}, {"repeats": {"min": 2, "max": 10}}, 1)
    first = [ablator.suggest() for _ in range(4)]
    assert all(isinstance(s, Suggestion) for s in first)
    assert ablator.suggest() is WAIT  # nothing is decided before the first look
    # (base, a) for repeats 0 and 1: deltas -0.1 and +0.2, nothing decided
    for i, (s, value) in enumerate(zip(first, (1.0, 1.1, 1.0, 0.8), strict=True)):
        assert isinstance(s, Suggestion)
        ablator.observe(FrozenTrial(f"t{i}", s.params, TrialStatus.FINISHED, value, info=s.info))
    more = ablator.suggest()
    assert isinstance(more, Suggestion) and more.params["repeat"] == 2
    seen = {(s.params["ablated"], s.params["repeat"]) for s in first if isinstance(s, Suggestion)}
    assert len(seen) == 4


def test_a_fixed_plan_is_done_without_waiting() -> None:
    ablator = make({"a": 0.0, "b": 1.0}, {"repeats": 2}, 1)
    made = []
    while isinstance(s := ablator.suggest(), Suggestion):
        made.append(s)
    assert s is DONE and len(made) == ablator.num_trials == 6


def test_a_resumed_study_decides_as_the_uninterrupted_one() -> None:
    options = {"repeats": {"min": 3, "max": 30, "precision": 0.2}}
    whole, _ = run(make(EFFECTS, options, 5), EFFECTS, 0.5, 5)
    for cut in (4, 20, 31):
        ended, running = run(make(EFFECTS, options, 5), EFFECTS, 0.5, 5, stop_after=cut)
        journal = sorted(
            [
                *ended,
                *(
                    FrozenTrial(t.trial_id, t.params, TrialStatus.PENDING, info=t.info)
                    for t in running
                ),
            ],
            key=lambda t: t.trial_id,
        )
        again = make(EFFECTS, options, 99)  # the seed comes back from the trials
        again.resume(journal)
        resumed, _ = run(again, EFFECTS, 0.5, 5, trials=journal)
        key = lambda ts: Counter((str(t.params["ablated"]), t.params["repeat"]) for t in ts)  # noqa: E731
        assert key(resumed) == key(whole), cut
        assert (
            analysed(resumed, EFFECTS, options)[""]["components"]
            == analysed(whole, EFFECTS, options)[""]["components"]
        )


def test_a_trial_budget_is_spent_on_open_decisions_and_reported() -> None:
    options = {"repeats": {"min": 3, "max": 30}, "budget": {"trials": 30}}
    ablator = make(EFFECTS, options, 2)
    assert ablator.num_trials == 30
    trials, _ = run(ablator, EFFECTS, 0.5, 2)
    assert len(trials) == 30
    got = Counter(t.params["ablated"] for t in trials)
    assert got["strong"] <= 3 + 2 and got["none"] > got["strong"]
    result = analysed(trials, EFFECTS, options)
    assert result["strong"]["stopped"] == "decided"
    assert result["none"]["stopped"] == "budget"
    assert "none" in result[""]["undecided"] and "strong" not in result[""]["undecided"]


def test_a_trial_budget_goes_to_the_decision_nearest_first() -> None:
    """A clear but noisy effect whose trials are slow (its first look completes last)
    and two useless components that could only be found precise: the budget is kept
    for the one projected to be decided instead of being spent, first come, on the
    others. The earlier first-come plan decided ``big`` in 12 of these 40 studies."""
    effects = {"a": 0.0, "b": 0.0, "big": 1.0}
    options = {"repeats": {"min": 3, "max": 8, "precision": 0.4}, "budget": {"trials": 28}}
    decided = 0
    for seed in range(40):
        ablator = make(effects, options, seed)
        trials, _ = run(ablator, effects, 0.5, seed, workers=2, slow="big")
        assert len(trials) <= 28
        result = analysed(trials, effects, options)
        assert result["big"]["stopped"] in ("decided", "budget")
        decided += result["big"]["stopped"] == "decided"
    assert decided >= 24


def test_a_seconds_budget_stops_suggesting() -> None:
    ablator = make(EFFECTS, {"repeats": {"min": 3, "max": 30}, "budget": {"seconds": 1e-9}}, 2)
    assert isinstance(ablator.suggest(), Suggestion) or True  # starts the clock
    assert ablator.suggest() is DONE


def test_a_seconds_budget_counts_the_earlier_runs_seconds_after_a_resume(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from types import SimpleNamespace

    from maggy_core.ablation import ablators

    clock = [100.0]
    monkeypatch.setattr(ablators, "time", SimpleNamespace(monotonic=lambda: clock[0]))
    options = {"repeats": {"min": 3, "max": 30}, "budget": {"seconds": 60}}
    first = make(EFFECTS, options, 3)
    made = [first.suggest(), first.suggest()]
    clock[0] += 40.0  # the first run goes on for 40 s, then dies
    made.append(first.suggest())
    assert all(isinstance(s, Suggestion) for s in made)
    assert [s.info["elapsed"] for s in made if isinstance(s, Suggestion)] == [0.0, 0.0, 40.0]
    journal = [
        FrozenTrial(
            f"t{i}",
            s.params,
            TrialStatus.FINISHED if i < 2 else TrialStatus.PENDING,
            1.0 if i < 2 else None,
            info=s.info,
        )
        for i, s in enumerate(made)
        if isinstance(s, Suggestion)
    ]
    clock[0] = 5000.0  # a new process: its monotonic clock has nothing to do with the old
    again = make(EFFECTS, options, 3)
    again.resume(journal)
    assert again.elapsed() == 40.0
    resumed = again.suggest()
    assert isinstance(resumed, Suggestion) and resumed.info["elapsed"] == 40.0
    clock[0] += 19.0
    assert isinstance(again.suggest(), Suggestion)  # 59 s of 60
    clock[0] += 2.0
    assert again.suggest() is DONE  # 61 s: the earlier run's 40 s counted


def test_interactions_tell_redundant_from_complementary_pairs() -> None:
    """a and b carry the same information (either is enough: leaving both out
    costs far more than the sum of each alone); c and d are both needed (each
    alone already costs what both cost)."""
    effects = {"a": 0.5, "b": 0.5, "c": 3.0, "d": 3.0, "e": 0.0}
    pair_effects = {("a", "b"): 4.0, ("b", "a"): 4.0, ("c", "d"): 3.0, ("d", "c"): 3.0}
    options = {"repeats": {"min": 4, "max": 8}, "interactions": 4}
    ablator = make(effects, options, 3)
    suggested: list[tuple[Any, dict[str, str]]] = []
    suggest = ablator.suggest

    def recording() -> Any:
        decision = suggest()
        if isinstance(decision, Suggestion):
            suggested.append((decision.params["ablated"], ablator.status()))
        return decision

    ablator.suggest = recording  # type: ignore[method-assign]
    trials, _ = run(ablator, effects, 0.1, 3, pair_effects=pair_effects)
    pairs = [t for t in trials if isinstance(t.params["ablated"], list)]
    assert pairs
    # Pairs are suggested once every component has stopped, not before.
    assert all("open" not in status.values() for a, status in suggested if isinstance(a, list))
    assert len({tuple(t.params["ablated"]) for t in pairs}) == math.comb(4, 2)  # top 4
    assert all(t.params["repeat"] < 4 for t in pairs)
    analysis = analysed(trials, effects, options)[""]
    reading = {tuple(sorted(i["pair"])): i for i in analysis["interactions"]}
    assert reading[("a", "b")]["reading"] == "redundant"
    assert reading[("a", "b")]["interaction"] == pytest.approx(3.0, abs=0.3)
    assert reading[("c", "d")]["reading"] == "complementary"
    assert reading[("c", "d")]["ci_low"] < -3.0 + 0.5 < reading[("c", "d")]["ci_high"] + 0.5
    assert "e" not in {n for i in analysis["interactions"] for n in i["pair"]}


@pytest.mark.parametrize(
    ("options", "where"),
    [
        ({"repeats": {"min": 3, "max": 2}}, "ablator.repeats.max"),
        ({"budget": {"trials": 0}}, "ablator.budget.trials"),
        ({"budget": {"hours": 2}}, "ablator.budget"),
        ({"budget": 5}, "ablator.budget"),
        ({"interactions": 1}, "ablator.interactions"),
        ({"interactions": 3, "repeats": 1}, "ablator.interactions"),
        ({"every": 1}, "ablator.every"),
    ],
)
def test_bad_loco_options_name_their_field(options: dict[str, Any], where: str) -> None:
    with pytest.raises(SpecError) as err:
        make(EFFECTS, options, 1)
    assert where in [field for field, _ in err.value.problems], err.value.problems
