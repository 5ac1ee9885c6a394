from __future__ import annotations

import json
import math
import random
import statistics

import pytest

from maggy_core.exceptions import SpecError
from maggy_core.searchspace import RESERVED_NAMES, Parameter, Searchspace


def fields(err: pytest.ExceptionInfo[SpecError]) -> list[str]:
    return [f for f, _ in err.value.problems]


def full_space() -> Searchspace:
    return Searchspace(
        lr=("DOUBLE", [1e-4, 1e-1], "log"),
        dropout=("DOUBLE", [0.0, 0.5], {"step": 0.1}),
        units=("INTEGER", [16, 256]),
        layers=("INTEGER", [1, 64], "log"),
        batch=("DISCRETE", [16, 32, 64.5]),
        act=("CATEGORICAL", ["relu", "tanh", True, 3]),
    )


# --- construction and forms -------------------------------------------------------


def test_maggy_1x_forms() -> None:
    sp = Searchspace(kernel=("INTEGER", [2, 8]), pool=("INTEGER", [2, 8]))
    sp.add("dropout", ("DOUBLE", [0.01, 0.99]))
    assert sp.names() == ["kernel", "pool", "dropout"]
    assert sp.get("dropout") == Parameter("dropout", "DOUBLE", (0.01, 0.99))
    assert Searchspace.DOUBLE == "DOUBLE" and Searchspace.CATEGORICAL == "CATEGORICAL"
    assert len(sp) == 3 and "kernel" in sp and "nope" not in sp
    assert list(sp) == ["kernel", "pool", "dropout"]
    assert [name for name, _ in sp.items()] == ["kernel", "pool", "dropout"]


def test_dict_list_and_options_forms_are_equivalent() -> None:
    a = Searchspace(lr=("DOUBLE", (1e-4, 1e-1), "log"))
    b = Searchspace(lr=["double", [1e-4, 1e-1], {"log": True}])
    c = Searchspace.from_dict({"lr": {"type": "Double", "values": [1e-4, 1e-1], "log": True}})
    assert a == b == c
    assert a.get("lr").type == "DOUBLE" and a.get("lr").log is True


def test_double_bounds_become_floats_and_integer_step_one_is_default() -> None:
    sp = Searchspace(x=("DOUBLE", [0, 1]), n=("INTEGER", [0, 9], {"step": 1}))
    assert sp.get("x").values == (0.0, 1.0)
    assert isinstance(sp.get("x").values[0], float)
    assert sp.get("n").step is None
    assert sp.to_dict()["n"] == ["INTEGER", [0, 9]]


def test_add_duplicate_name_is_an_error() -> None:
    sp = Searchspace(a=("INTEGER", [1, 2]))
    with pytest.raises(SpecError, match=r"searchspace\.a: .*exists"):
        sp.add("a", ("INTEGER", [1, 3]))
    assert sp.get("a").values == (1, 2)


def test_get_unknown_raises_key_error_listing_names() -> None:
    with pytest.raises(KeyError, match="units"):
        Searchspace(units=("INTEGER", [1, 2])).get("lr")


@pytest.mark.parametrize(
    ("entry", "needle"),
    [
        (("FLOAT", [0, 1]), "not one of DOUBLE, INTEGER, DISCRETE, CATEGORICAL"),
        (("DOUBLE", [1, 0]), "lo must be below hi"),
        (("DOUBLE", [0.5, 0.5]), "lo must be below hi"),
        (("DOUBLE", [0, math.inf]), "two finite numbers"),
        (("DOUBLE", [0, float("nan")]), "two finite numbers"),
        (("DOUBLE", [0, 1, 2]), "two finite numbers"),
        (("DOUBLE", ["a", 1]), "two finite numbers"),
        (("INTEGER", [1.0, 5]), "two integers"),
        (("INTEGER", [True, 5]), "two integers"),
        (("DOUBLE", [0, 1], "log"), "log scale needs lo > 0"),
        (("INTEGER", [-1, 5], {"log": True}), "log scale needs lo > 0"),
        (("DOUBLE", [1, 10], {"log": True, "step": 1}), "step and log cannot be combined"),
        (("DOUBLE", [0, 1], {"step": -0.1}), "step must be a positive number"),
        (("DOUBLE", [0, 1], {"step": 2}), "step must not exceed"),
        (("INTEGER", [0, 10], {"step": 1.5}), "step must be a positive integer"),
        (("DISCRETE", []), "at least one choice"),
        (("DISCRETE", [1, "a"]), "finite numbers"),
        (("DISCRETE", [1, True]), "finite numbers"),
        (("DISCRETE", [1, 2, 1]), "must not repeat"),
        (("CATEGORICAL", []), "at least one choice"),
        (("CATEGORICAL", ["a", "a"]), "must not repeat"),
        (("CATEGORICAL", ["a", None]), "strings, finite numbers or booleans"),
        (("CATEGORICAL", ["a", [1]]), "strings, finite numbers or booleans"),
        (("CATEGORICAL", ["a", "b"], "log"), "log and step apply only"),
        (("DISCRETE", [1, 2], {"step": 1}), "log and step apply only"),
        (("DOUBLE", [0, 1], {"log": "yes"}), "log must be true or false"),
        (("DOUBLE", [0, 1], "linear"), "third element must be 'log'"),
        (("DOUBLE", [0, 1], {"scale": "log"}), "third element must be 'log'"),
        (("DOUBLE",), "expected (TYPE, VALUES)"),
        ("DOUBLE", "expected (TYPE, VALUES)"),
        (("DOUBLE", "0..1"), "values must be a list"),
        ({"type": "DOUBLE"}, "type and values required"),
        ({"type": "DOUBLE", "values": [0, 1], "scale": "log"}, "unknown: scale"),
    ],
)
def test_invalid_entries_name_the_field(entry: object, needle: str) -> None:
    with pytest.raises(SpecError) as err:
        Searchspace(lr=entry)
    assert fields(err) == ["searchspace.lr"]
    assert needle in str(err.value)
    assert str(err.value).startswith("searchspace.lr: ")


def test_categorical_true_and_one_are_distinct() -> None:
    assert Searchspace(c=("CATEGORICAL", [1, True])).get("c").values == (1, True)


@pytest.mark.parametrize("name", sorted(RESERVED_NAMES))
def test_reserved_names_are_rejected(name: str) -> None:
    with pytest.raises(SpecError, match=rf"searchspace\.{name}: the name is reserved"):
        Searchspace.from_dict({name: ["INTEGER", [1, 2]]})


@pytest.mark.parametrize("name", ["2lr", "learning-rate", "class", "a b"])
def test_names_must_be_identifiers(name: str) -> None:
    with pytest.raises(SpecError, match="must be a Python identifier") as err:
        Searchspace.from_dict({name: ["INTEGER", [1, 2]]})
    assert fields(err) == [f"searchspace.{name}"]


def test_all_problems_are_reported_at_once() -> None:
    with pytest.raises(SpecError) as err:
        Searchspace(a=("DOUBLE", [1, 0]), b=("INTEGER", [1, 2]), c=("CATEGORICAL", []))
    assert fields(err) == ["searchspace.a", "searchspace.c"]


def test_parameter_validates_on_direct_construction() -> None:
    with pytest.raises(SpecError, match=r"searchspace\.x: lo must be below hi"):
        Parameter("x", "DOUBLE", (2.0, 1.0))
    assert Parameter("x", "integer", [1, 3]).type == "INTEGER"  # type: ignore[arg-type]


def test_from_dict_rejects_empty_and_non_mapping() -> None:
    with pytest.raises(SpecError, match="searchspace: is empty"):
        Searchspace.from_dict({})
    with pytest.raises(SpecError, match="searchspace: must be a mapping"):
        Searchspace.from_dict([["lr", "DOUBLE", [0, 1]]])
    with pytest.raises(SpecError, match="searchspace: is not valid JSON"):
        Searchspace.from_json("{lr: ")


def test_empty_space_cannot_be_sampled_or_gridded() -> None:
    with pytest.raises(SpecError, match="is empty"):
        Searchspace().sample(random.Random(0))
    with pytest.raises(SpecError, match="is empty"):
        Searchspace().grid()


# --- serialisation -----------------------------------------------------------------


def test_compact_form() -> None:
    assert full_space().to_dict() == {
        "lr": ["DOUBLE", [0.0001, 0.1], "log"],
        "dropout": ["DOUBLE", [0.0, 0.5], {"step": 0.1}],
        "units": ["INTEGER", [16, 256]],
        "layers": ["INTEGER", [1, 64], "log"],
        "batch": ["DISCRETE", [16, 32, 64.5]],
        "act": ["CATEGORICAL", ["relu", "tanh", True, 3]],
    }


def test_dict_and_json_round_trips_are_exact() -> None:
    sp = full_space()
    again = Searchspace.from_dict(sp.to_dict())
    assert again == sp and again.to_dict() == sp.to_dict()
    assert again.names() == sp.names()
    from_json = Searchspace.from_json(sp.to_json())
    assert from_json == sp
    assert json.loads(from_json.to_json()) == sp.to_dict()


def test_equality_depends_on_order_and_values() -> None:
    a = Searchspace(x=("INTEGER", [1, 2]), y=("INTEGER", [1, 3]))
    b = Searchspace(y=("INTEGER", [1, 3]), x=("INTEGER", [1, 2]))
    assert a != b
    assert a != Searchspace(x=("INTEGER", [1, 2]), y=("INTEGER", [1, 4]))


def test_repr_shows_the_compact_form() -> None:
    assert repr(Searchspace(n=("INTEGER", [1, 2]))) == "Searchspace(n=('INTEGER', [1, 2]))"


# --- sampling ----------------------------------------------------------------------


def test_samples_stay_in_the_space_and_are_repeatable() -> None:
    sp = full_space()
    rng = random.Random(7)
    samples = [sp.sample(rng) for _ in range(500)]
    for s in samples:
        sp.validate_params(s)
        assert isinstance(s["units"], int) and isinstance(s["layers"], int)
        assert isinstance(s["lr"], float)
    rng2 = random.Random(7)
    assert samples == [sp.sample(rng2) for _ in range(500)]


def test_log_double_median_is_near_the_geometric_mean() -> None:
    p = Searchspace(lr=("DOUBLE", [1e-6, 1.0], "log")).get("lr")
    rng = random.Random(0)
    values = [p.sample(rng) for _ in range(4000)]
    assert all(1e-6 <= v <= 1.0 for v in values)
    median = statistics.median(values)
    assert 10**-3.3 < median < 10**-2.7  # geometric mean 1e-3; a linear draw gives ~0.5


def test_log_integer_favours_small_values() -> None:
    p = Searchspace(n=("INTEGER", [1, 1000], "log")).get("n")
    rng = random.Random(1)
    values = [p.sample(rng) for _ in range(4000)]
    assert min(values) == 1 and max(values) <= 1000
    assert 20 < statistics.median(values) < 45  # log-uniform median ~ sqrt(1001)


def test_integer_sampling_includes_both_ends() -> None:
    p = Parameter("n", "INTEGER", (3, 5))
    rng = random.Random(3)
    assert {p.sample(rng) for _ in range(200)} == {3, 4, 5}


def test_stepped_values_are_sampled_from_the_grid() -> None:
    p = Parameter("x", "DOUBLE", (0.0, 1.0), step=0.25)
    rng = random.Random(3)
    assert {p.sample(rng) for _ in range(200)} == {0.0, 0.25, 0.5, 0.75, 1.0}
    q = Parameter("n", "INTEGER", (0, 10), step=5)
    assert {q.sample(rng) for _ in range(200)} == {0, 5, 10}


def test_discrete_and_categorical_sample_every_choice() -> None:
    sp = Searchspace(d=("DISCRETE", [1, 2.5]), c=("CATEGORICAL", ["a", False]))
    rng = random.Random(5)
    samples = [sp.sample(rng) for _ in range(100)]
    assert {s["d"] for s in samples} == {1, 2.5}
    assert {s["c"] for s in samples} == {"a", False}


# --- grid --------------------------------------------------------------------------


def test_grid_values_per_type() -> None:
    assert Parameter("x", "DOUBLE", (0.1, 0.5), step=0.1).grid_values() == [
        0.1,
        0.2,
        0.3,
        0.4,
        0.5,
    ]
    assert Parameter("n", "INTEGER", (1, 4)).grid_values() == [1, 2, 3, 4]
    assert Parameter("n", "INTEGER", (1, 8), step=3).grid_values() == [1, 4, 7]
    assert Parameter("c", "CATEGORICAL", ("b", "a")).grid_values() == ["b", "a"]


def test_grid_of_double_without_step_names_the_field_and_suggests_a_fix() -> None:
    p = Parameter("lr", "DOUBLE", (0.0, 1.0))
    assert not p.griddable
    with pytest.raises(SpecError, match=r"searchspace\.lr: .*add a step.*DISCRETE"):
        p.grid_values()
    with pytest.raises(SpecError) as err:
        Searchspace(lr=("DOUBLE", [0, 1]), m=("DOUBLE", [0, 1]), n=("INTEGER", [1, 2])).grid()
    assert fields(err) == ["searchspace.lr", "searchspace.m"]


def test_grid_is_the_cartesian_product_last_parameter_fastest() -> None:
    sp = Searchspace(a=("INTEGER", [1, 2]), b=("CATEGORICAL", ["x", "y", "z"]))
    assert sp.grid_size() == 6
    assert sp.grid() == [
        {"a": 1, "b": "x"},
        {"a": 1, "b": "y"},
        {"a": 1, "b": "z"},
        {"a": 2, "b": "x"},
        {"a": 2, "b": "y"},
        {"a": 2, "b": "z"},
    ]


def test_grid_size_matches_grid() -> None:
    sp = Searchspace(
        x=("DOUBLE", [0, 1], {"step": 0.1}), n=("INTEGER", [2, 9], {"step": 3}), d=("DISCRETE", [1])
    )
    assert sp.grid_size() == len(sp.grid()) == 11 * 3 * 1


# --- membership --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("entry", "inside", "outside"),
    [
        (("DOUBLE", [0, 1]), [0, 0.5, 1.0], [-0.1, 1.01, math.nan, "0.5", True]),
        (("DOUBLE", [0, 1], {"step": 0.25}), [0.25, 0.75], [0.3]),
        (("INTEGER", [1, 5]), [1, 5], [0, 6, 2.0, 2.5, False]),
        (("INTEGER", [0, 10], {"step": 5}), [0, 5, 10], [3]),
        (("DISCRETE", [1, 2.5]), [1, 2.5, 1.0], [2, True]),
        (("CATEGORICAL", ["a", 1]), ["a", 1], ["b", True, None]),
    ],
)
def test_contains(entry: object, inside: list[object], outside: list[object]) -> None:
    p = Searchspace(p=entry).get("p")
    assert all(p.contains(v) for v in inside)
    assert not any(p.contains(v) for v in outside)


def test_validate_params_reports_missing_unknown_and_outside() -> None:
    sp = Searchspace(a=("INTEGER", [1, 2]), b=("CATEGORICAL", ["x"]), c=("DOUBLE", [0, 1]))
    sp.validate_params({"a": 1, "b": "x", "c": 0.5})
    with pytest.raises(SpecError) as err:
        sp.validate_params({"a": 3, "c": 0.5, "z": 1})
    assert sorted(fields(err)) == ["params.a", "params.b", "params.z"]
    assert "3 is outside ['INTEGER', [1, 2]]" in str(err.value)
