"""Fuzzing the spec and search-space parsers: every input is accepted or refused
with SpecError, quickly. Seeded, so a failure reproduces."""

from __future__ import annotations

import random
import time
from typing import Any

from maggy_core.exceptions import SpecError
from maggy_core.searchspace import Searchspace
from maggy_core.spec import ExperimentSpec

FIELDS = [
    "name", "train_fn", "searchspace", "optimizer", "num_trials", "direction",
    "optimization_key", "es_policy", "es_options", "es_min", "es_interval", "hb_interval",
    "workers", "seed", "max_consecutive_failures", "max_attempts", "experiment_id",
    "description", "train_kwargs", "ablation", "ablator", "nonsense",
]  # fmt: skip
TYPES = ["DOUBLE", "INTEGER", "DISCRETE", "CATEGORICAL", "double", "FLOAT", ""]
HUGE = [10**18, 2**63, -(10**18), 1e308, float("inf"), float("nan"), -0.0]


def scalar(rng: random.Random) -> Any:
    return rng.choice(
        [
            None, True, False, 0, 1, -1, 3, 2**31, rng.random(), rng.uniform(-1e6, 1e6),
            "", "x", "max", "min", "median", "none", "loco", "randomsearch", "gridsearch",
            "asha", "tpe", "a:b", "maggy_core.examples.sleep:train", "é\x00", "1e3",
            rng.choice(HUGE),
        ]
    )  # fmt: skip


def value(rng: random.Random, depth: int = 0) -> Any:
    roll = rng.random()
    if depth > 3 or roll < 0.5:
        return scalar(rng)
    if roll < 0.75:
        return [value(rng, depth + 1) for _ in range(rng.randrange(4))]
    return {str(scalar(rng)): value(rng, depth + 1) for _ in range(rng.randrange(4))}


def parameter(rng: random.Random) -> Any:
    kind = rng.choice(TYPES)
    shape = rng.random()
    if shape < 0.3:
        return [kind, [scalar(rng), scalar(rng)]]
    if shape < 0.5:
        return [kind, [rng.uniform(-10, 10), rng.uniform(-10, 10)], rng.choice(["log", {}, None])]
    if shape < 0.6:
        return [kind, [0.0, 1.0], {"step": rng.choice([1e-300, 0.1, 0, -1, "x", 10**9])}]
    if shape < 0.7:
        return [kind, [0, rng.choice(HUGE)]]
    return value(rng)


def space(rng: random.Random) -> Any:
    if rng.random() < 0.1:
        return value(rng)
    return {rng.choice(["lr", "x", "budget", "", "1a", "units"]): parameter(rng) for _ in range(3)}


VALID = {
    "train_fn": "maggy_core.examples.sleep:train",
    "searchspace": {"x": ["DOUBLE", [-1, 1]], "n": ["INTEGER", [1, 5]]},
    "num_trials": 4,
    "es_policy": "none",
}


def spec_data(rng: random.Random) -> Any:
    if rng.random() < 0.03:
        return value(rng)
    if rng.random() < 0.35:  # a valid spec, perhaps with one field changed
        data = dict(VALID)
        if rng.random() < 0.7:
            data[rng.choice(FIELDS)] = rng.choice([value(rng), scalar(rng)])
        return data
    data: dict[str, Any] = {
        "searchspace": space(rng),
        "train_fn": "maggy_core.examples.sleep:train",
    }
    for name in rng.sample(FIELDS, rng.randrange(6)):
        if name == "searchspace":
            continue
        if name == "ablation":
            data[name] = {
                "components": value(rng),
                "features": rng.choice([["a", ["b", "c"]], value(rng)]),
                "dataset": rng.choice([None, "x.csv"]),
            }
        elif name == "ablator":
            data[name] = rng.choice(
                [value(rng), {"name": "loco", "repeats": rng.choice([1, 5, 10**9, 10**15, -1])}]
            )
        elif name == "optimizer":
            data[name] = rng.choice([value(rng), {"name": scalar(rng), "options": value(rng)}])
        elif name == "es_policy":
            data[name] = rng.choice([value(rng), {"name": "percentile", "options": value(rng)}])
        elif name in ("num_trials", "workers", "max_attempts", "es_min"):
            data[name] = rng.choice([*HUGE, 1, 10**7, value(rng)])
        else:
            data[name] = value(rng)
    return data


def test_10000_generated_specs_are_accepted_or_refused_with_spec_error_quickly():
    # The model-based optimisers import Optuna on first use (seconds, once per
    # process): pay that before timing inputs, which is what the bound is about.
    for name in ("tpe", "cmaes", "asha"):
        ExperimentSpec.from_dict({**VALID, "optimizer": name})
    rng = random.Random(20261201)
    accepted = refused = 0
    slowest = 0.0
    for i in range(10_000):
        data = spec_data(rng)
        t0 = time.perf_counter()
        try:
            ExperimentSpec.from_dict(data)
            accepted += 1
        except SpecError:
            refused += 1
        except Exception as exc:  # pragma: no cover - what the test exists to catch
            raise AssertionError(f"input {i} raised {type(exc).__name__}: {exc}\n{data!r}") from exc
        took = time.perf_counter() - t0
        slowest = max(slowest, took)
        assert took < 1.0, f"input {i} took {took:.2f} s: {data!r}"
    assert accepted > 500 and refused > 5000  # both paths were exercised


def test_generated_search_spaces_are_accepted_or_refused_with_spec_error():
    rng = random.Random(7)
    for i in range(3_000):
        data = space(rng)
        try:
            Searchspace.from_dict(data)
        except SpecError:
            pass
        except Exception as exc:  # pragma: no cover
            raise AssertionError(f"space {i} raised {type(exc).__name__}: {exc}\n{data!r}") from exc
