from __future__ import annotations

import pytest

from maggy_core.exceptions import SpecError
from maggy_core.optimizers import ASHA, DONE, WAIT, Hyperband, Suggestion, get_optimizer
from maggy_core.searchspace import Searchspace
from maggy_core.trial import FrozenTrial, TrialStatus

SPACE = Searchspace(x=("DOUBLE", [0.0, 1.0]))
OPTIONS = {"resource_min": 1, "resource_max": 9, "reduction_factor": 3}


def asha(direction: str = "max", num_trials: int = 100, **options: object) -> ASHA:
    opt = get_optimizer(
        "asha",
        SPACE,
        num_trials=num_trials,
        direction=direction,
        seed=3,
        options={**OPTIONS, **options},
    )
    assert isinstance(opt, ASHA)
    return opt


def end(opt: ASHA, s: Suggestion, metric: float | None, status=TrialStatus.FINISHED) -> None:
    opt.observe(FrozenTrial("t", s.params, status, metric, (), s.budget, s.info))


def take(opt: ASHA) -> Suggestion:
    s = opt.suggest()
    assert isinstance(s, Suggestion)
    return s


def test_rungs_and_budgets() -> None:
    assert asha().budgets == [1, 3, 9]
    assert asha(resource_min=0.5, resource_max=4.0, reduction_factor=2).budgets == [0.5, 1, 2, 4]
    # 10 is not a power of 3 times 1: the top rung is the largest below it.
    assert asha(resource_max=10).budgets == [1, 3, 9]


@pytest.mark.parametrize("direction", ["max", "min"])
def test_promotes_the_best_third_as_soon_as_the_rung_allows(direction: str) -> None:
    opt = asha(direction)
    first = [take(opt) for _ in range(3)]
    assert [s.budget for s in first] == [1, 1, 1]
    assert all(s.info["rung"] == 0 for s in first)
    values = {0: 0.2, 1: 0.9, 2: 0.5}
    for i, s in enumerate(first):
        end(opt, s, values[i])
    best = 1 if direction == "max" else 0  # 0.9 is best for max, 0.2 for min
    promoted = take(opt)
    assert promoted.budget == 3 and promoted.info["rung"] == 1
    assert promoted.params == first[best].params
    assert promoted.info["config"] == first[best].info["config"]
    # Only one of three may go up: the next is a new configuration at rung 0.
    nxt = take(opt)
    assert nxt.info["rung"] == 0 and nxt.info["config"] == 3


def test_a_running_promotion_does_not_block_and_higher_rungs_go_first() -> None:
    opt = asha()
    rung0 = [take(opt) for _ in range(9)]
    for i, s in enumerate(rung0):
        end(opt, s, i / 10)  # configs 8, 7, 6 are the best three
    ups = [take(opt) for _ in range(3)]
    assert [s.info["config"] for s in ups] == [8, 7, 6]
    assert all(s.budget == 3 for s in ups)
    for s, v in zip(ups, [0.3, 0.9, 0.1], strict=True):
        end(opt, s, v)
    top = take(opt)
    assert (top.info["rung"], top.info["config"], top.budget) == (2, 7, 9)
    # Nothing can go beyond the top rung.
    end(opt, top, 1.0)
    assert take(opt).info["rung"] == 0


def test_failed_trials_are_not_ranked() -> None:
    opt = asha()
    runs = [take(opt) for _ in range(3)]
    end(opt, runs[0], None, TrialStatus.FAILED)
    end(opt, runs[1], 0.1)
    end(opt, runs[2], 0.2)
    # Two ranked results: floor(2/3) = 0 may go up.
    assert take(opt).info["rung"] == 0


def test_num_trials_counts_configurations_then_waits_for_promotions_then_done() -> None:
    opt = asha(num_trials=3)
    runs = [take(opt) for _ in range(3)]
    assert opt.suggest() is WAIT  # 3 configurations started; they may earn promotions
    for i, s in enumerate(runs):
        end(opt, s, float(i))
    promoted = take(opt)  # a promotion is not a new configuration
    assert promoted.info["rung"] == 1 and promoted.info["config"] == 2
    assert opt.suggest() is WAIT
    end(opt, promoted, 5.0)
    # One result at rung 1: floor(1/3) = 0 may go up; nothing runs: the search is over.
    assert opt.suggest() is DONE
    assert len(opt.configs) == 3 and opt.count == 4


def test_a_promotion_names_the_trial_whose_checkpoint_it_continues() -> None:
    opt = asha()
    first = [take(opt) for _ in range(3)]
    assert all("checkpoint" not in s.info for s in first)
    for i, s in enumerate(first):
        opt.observe(
            FrozenTrial(f"t{i:04d}", s.params, TrialStatus.FINISHED, float(i), (), s.budget, s.info)
        )
    promoted = take(opt)
    assert promoted.info["config"] == 2 and promoted.info["checkpoint"] == "t0002"
    opt.observe(
        FrozenTrial(
            "t0003", promoted.params, TrialStatus.FINISHED, 9.0, (), promoted.budget, promoted.info
        )
    )
    # A resumed search names the same trials.
    again = asha()
    again.resume(
        [
            FrozenTrial(f"t{i:04d}", s.params, TrialStatus.FINISHED, float(i), (), s.budget, s.info)
            for i, s in enumerate(first)
        ]
    )
    assert take(again).info["checkpoint"] == "t0002"


def test_hyperband_brackets_start_higher() -> None:
    opt = get_optimizer("hyperband", SPACE, num_trials=30, direction="max", seed=1, options=OPTIONS)
    assert isinstance(opt, Hyperband) and opt.brackets == 3
    firsts = [take(opt) for _ in range(3)]
    assert [(s.info["bracket"], s.info["rung"], s.budget) for s in firsts] == [
        (0, 0, 1),
        (1, 1, 3),
        (2, 2, 9),
    ]


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"resource_min": 0}, "optimizer.options.resource_min"),
        ({"resource_max": 1}, "optimizer.options.resource_max"),
        ({"reduction_factor": 1}, "optimizer.options.reduction_factor"),
        ({"reduction_factor": "3"}, "optimizer.options.reduction_factor"),
        ({"brackets": 4}, "optimizer.options.brackets"),
        ({"eta": 3}, "optimizer.options.eta"),
        ({"sampler": "gp"}, "optimizer.options.sampler"),
        ({"sampler_options": {"multivariate": True}}, "optimizer.options.sampler_options"),
        ({"sampler": "tpe", "sampler_options": [1]}, "optimizer.options.sampler_options"),
        (
            {"sampler": "tpe", "sampler_options": {"n_startup": 3}},
            "optimizer.options.sampler_options.n_startup",
        ),
        (
            {"sampler": "tpe", "sampler_options": {"seed": 3}},
            "optimizer.options.sampler_options.seed",
        ),
    ],
)
def test_bad_options_name_the_field(options: dict[str, object], field: str) -> None:
    with pytest.raises(SpecError) as err:
        asha(**options)
    assert field in [f for f, _ in err.value.problems]


def test_a_hyperparameter_called_budget_is_refused() -> None:
    with pytest.raises(SpecError, match="searchspace.budget"):
        get_optimizer(
            "asha", Searchspace(budget=("INTEGER", [1, 3])), num_trials=3, direction="max", seed=1
        )


def _run_sequentially(opt: ASHA, value, rounds: int) -> list[Suggestion]:
    """One worker: every suggestion runs and ends with ``value(params, budget)``."""
    out = []
    for i in range(rounds):
        s = opt.suggest()
        if not isinstance(s, Suggestion):
            break
        out.append(s)
        metric = value(s.params, s.budget)
        opt.observe(
            FrozenTrial(f"t{i:04d}", s.params, TrialStatus.FINISHED, metric, (), s.budget, s.info)
        )
    return out


@pytest.mark.parametrize("direction", ["max", "min"])
def test_the_tpe_sampler_proposes_near_the_configurations_that_climbed_the_rungs(
    direction: str,
) -> None:
    # The best x is 0.8 whatever the budget; TPE's new configurations should be
    # nearer to it than random ones after its 10 random start-up configurations.
    sign = 1.0 if direction == "max" else -1.0

    def value(params: dict[str, float], budget: float) -> float:
        return sign * (budget / 9 - (params["x"] - 0.8) ** 2)

    def late_distance(sampler: str) -> float:
        opt = asha(direction, num_trials=40, sampler=sampler)
        suggestions = _run_sequentially(opt, value, 200)
        new = [s.params["x"] for s in suggestions if s.info["rung"] == 0][20:]
        assert len(new) == 20
        return sorted(abs(x - 0.8) for x in new)[10]

    tpe, rand = late_distance("tpe"), late_distance("random")
    assert tpe < 0.5 * rand, (tpe, rand)


def test_the_tpe_sampler_sees_rungs_as_optuna_trials() -> None:
    opt = asha(sampler="tpe", resource_max=3)  # rungs 1 and 3
    first = [take(opt) for _ in range(4)]
    for i, s in enumerate(first[:3]):
        end(opt, s, float(i))
    promoted = take(opt)  # config 2 to the top rung
    assert (promoted.info["config"], promoted.info["rung"]) == (2, 1)
    assert opt._config_outcome(2) == {"state": "pruned", "value": 2.0, "history": [(0, 2.0)]}
    end(opt, promoted, 7.0)
    assert opt._config_outcome(2) == {"state": "complete", "value": 7.0}
    assert opt._config_outcome(1) == {"state": "pruned", "value": 1.0, "history": [(0, 1.0)]}
    assert opt._config_outcome(3) == {"state": "running"}  # its first trial runs
    end(opt, first[3], None, TrialStatus.FAILED)
    assert opt._config_outcome(3) == {"state": "fail"}


def test_a_resumed_tpe_search_proposes_what_the_uninterrupted_one_does() -> None:
    def value(params: dict[str, float], budget: float) -> float:
        return budget / 9 - (params["x"] - 0.3) ** 2

    whole = asha(num_trials=30, sampler="tpe")
    done = _run_sequentially(whole, value, 25)
    trials = [
        FrozenTrial(
            f"t{i:04d}",
            s.params,
            TrialStatus.FINISHED,
            value(s.params, s.budget),
            (),
            s.budget,
            s.info,
        )
        for i, s in enumerate(done)
    ]
    resumed = asha(num_trials=30, sampler="tpe")
    resumed.resume(trials)
    nxt_whole, nxt_resumed = take(whole), take(resumed)
    assert nxt_resumed.params == nxt_whole.params
    assert nxt_resumed.info == nxt_whole.info
