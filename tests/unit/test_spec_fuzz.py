"""Fuzzing the spec and search-space parsers: every input is accepted or refused
with SpecError, quickly. Seeded, so a failure reproduces.

Two generators: free-form specs built field by field, and valid specs (a search, a
study) mutated at random paths with deep nesting, huge counts, long strings and
long lists, parsed under a wall-clock alarm so that a parser that hangs is reported
instead of hanging the suite."""

from __future__ import annotations

import copy
import random
import signal
import time
from typing import Any

import pytest

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


# ---------------------------------------------------------------- mutated specs

MUTATIONS = 5_000
SEED = 20261202
#: CPU seconds one input may take (a bound that tells "slow" from "hangs", not a target).
LIMIT = 1.0
SEARCH = {
    "name": "fuzz",
    "train_fn": "maggy_core.examples.sleep:train",
    "searchspace": {
        "lr": ["DOUBLE", [1e-4, 1e-1], "log"],
        "units": ["INTEGER", [16, 256]],
        "steps": ["INTEGER", [1, 9], {"step": 2}],
        "act": ["CATEGORICAL", ["relu", "tanh"]],
        "bs": ["DISCRETE", [16, 32, 64]],
    },
    "optimizer": {"name": "randomsearch"},
    "num_trials": 8,
    "direction": "max",
    "optimization_key": "accuracy",
    "es_policy": "median",
    "es_min": 2,
    "workers": 2,
    "seed": 1,
}
STUDY = {
    "name": "fuzz-study",
    "train_fn": "maggy_core.examples.tabular:ablation_train",
    "ablation": {
        "dataset_generator": "maggy_core.examples.tabular:load_table",
        "label": "label",
        "features": ["mean_texture", ["worst_radius", "worst_area"]],
        "base_model": "maggy_core.examples.tabular:base_model",
        "layers": ["dense_2"],
        "layer_groups": [["dense_2", "dense_3"]],
        "components": ["scaling"],
    },
    "ablator": {"name": "loco", "repeats": 3},
    "direction": "max",
    "optimization_key": "accuracy",
}

MUTATION_HUGE = [10**6, 10**9, 10**12, 10**18, 10**100, 2**63, -(10**12)]
NAMES = ["DOUBLE", "INTEGER", "DISCRETE", "CATEGORICAL", "log", "step", "name", "options"]


def _value(rng: random.Random, depth: int = 0) -> Any:
    """A random JSON-able value (occasionally huge, deep or long)."""
    roll = rng.random()
    if roll < 0.04:
        deep: Any = rng.choice([[], {}, 0])
        for _ in range(rng.choice([50, 500, 5000])):
            deep = [deep] if rng.random() < 0.5 else {"k": deep}
        return deep
    if roll < 0.08:
        return rng.choice(MUTATION_HUGE)
    if roll < 0.10:
        return "x" * rng.choice([10_000, 1_000_000])
    if roll < 0.12:
        return list(range(rng.choice([1_000, 100_000])))
    kinds = ["none", "bool", "int", "float", "str", "name"]
    if depth < 3:
        kinds += ["list", "dict"]
    kind = rng.choice(kinds)
    if kind == "none":
        return None
    if kind == "bool":
        return rng.random() < 0.5
    if kind == "int":
        return rng.randint(-5, 50)
    if kind == "float":
        return rng.choice([0.0, -1.5, 0.5, 1e-300, 1e300, float("nan"), float("inf")])
    if kind == "str":
        return rng.choice(["", "a", "max", "min", "none", "t0000", "mod:fn", "é\x00", "../x"])
    if kind == "name":
        return rng.choice(NAMES)
    if kind == "list":
        return [_value(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    return {rng.choice([*NAMES, "x", "repeats", "min"]): _value(rng, depth + 1) for _ in range(3)}


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if len(prefix) >= 6:  # the templates are shallow; inserted deep values are leaves
        return out
    if isinstance(value, dict):
        for k, v in value.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += _paths(v, (*prefix, i))
    return out


def _mutate(rng: random.Random, spec: dict[str, Any]) -> Any:
    data = copy.deepcopy(spec)
    for _ in range(rng.randint(1, 3)):
        paths = [p for p in _paths(data) if p]
        if not paths:
            return _value(rng)
        path = rng.choice(paths)
        parent = data
        for key in path[:-1]:
            parent = parent[key]
        action = rng.random()
        if action < 0.15 and isinstance(parent, dict):
            del parent[path[-1]]
        elif action < 0.25 and isinstance(parent, dict):
            parent[rng.choice(["extra", "num_trial", "repeats", "budget"])] = _value(rng)
        else:
            parent[path[-1]] = _value(rng)
    return data


def _mutated_inputs() -> list[tuple[str, Any]]:
    rng = random.Random(SEED)
    out: list[tuple[str, Any]] = []
    for _ in range(MUTATIONS):
        roll = rng.random()
        if roll < 0.45:
            out.append(("spec", _mutate(rng, SEARCH)))
        elif roll < 0.8:
            out.append(("spec", _mutate(rng, STUDY)))
        elif roll < 0.95:
            mutated = _mutate(rng, {"space": SEARCH["searchspace"]})
            space = mutated.get("space") if isinstance(mutated, dict) else mutated
            out.append(("space", space if rng.random() < 0.8 else _value(rng)))
        else:
            out.append(("spec", _value(rng)))
    return out


def _parse(kind: str, data: Any) -> None:
    if kind == "spec":
        ExperimentSpec.from_dict(data, require_train_fn=False)
    else:
        Searchspace.from_dict(data)


class _Hung(Exception):
    pass


def _alarm(_signum: int, _frame: Any) -> None:
    raise _Hung


@pytest.mark.slow
def test_mutated_specs_deep_huge_and_long_values_are_refused_with_spec_error():
    accepted = refused = 0
    wrong: list[str] = []
    slow: list[str] = []
    previous = signal.signal(signal.SIGALRM, _alarm)
    try:
        for index, (kind, data) in enumerate(_mutated_inputs()):
            outcome = _check(index, kind, data, wrong, slow)
            accepted += outcome == "accepted"
            refused += outcome == "refused"
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert not wrong, f"{len(wrong)} inputs raised something else than SpecError:\n" + "\n".join(
        wrong[:20]
    )
    assert not slow, f"{len(slow)} inputs took more than {LIMIT} s:\n" + "\n".join(slow[:20])
    # The generator must reach both outcomes, or it tests nothing.
    assert accepted > 100 and refused > 1000, (accepted, refused)


def _check(index: int, kind: str, data: Any, wrong: list[str], slow: list[str]) -> str:
    """Parse one input under a wall-clock alarm (5 x the CPU limit: a parser that hangs
    is stopped and reported instead of hanging the suite)."""
    start = time.process_time()
    outcome = "wrong"
    signal.setitimer(signal.ITIMER_REAL, 5 * LIMIT)
    try:
        _parse(kind, data)
        outcome = "accepted"
    except SpecError as exc:
        outcome = "refused"
        if not str(exc):
            wrong.append(f"input {index} ({kind}): SpecError without a message")
    except _Hung:
        slow.append(f"input {index} ({kind}): still running after {5 * LIMIT:g} s")
        return "hung"
    except Exception as exc:  # noqa: BLE001 - what the test looks for
        wrong.append(f"input {index} ({kind}): {type(exc).__name__}: {str(exc)[:200]}")
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    spent = time.process_time() - start
    if spent > LIMIT:
        slow.append(f"input {index} ({kind}): {spent:.2f} s of CPU")
    return outcome
