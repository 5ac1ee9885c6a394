"""Search spaces: the hyperparameters of an experiment and the values they may take.

Four types, as in MAGGY 1.x:

- ``DOUBLE``: a float in ``[lo, hi]``; optionally log-scaled, or quantised by a
  ``step`` (values ``lo + k * step``), which also makes it usable by grid search.
- ``INTEGER``: an int in ``[lo, hi]``, both ends included; optionally log-scaled,
  or with a ``step`` (default 1).
- ``DISCRETE``: one of a list of numbers.
- ``CATEGORICAL``: one of a list of JSON scalars (str, int, float, bool).

A space is written in the MAGGY 1.x form or as dicts (what YAML and JSON give)::

    Searchspace(lr=("DOUBLE", [1e-4, 1e-1], "log"), units=("INTEGER", [16, 256]))
    Searchspace.from_dict({"lr": {"type": "DOUBLE", "values": [0, 1], "step": 0.25}})

``to_dict`` gives the compact form (``{"lr": ["DOUBLE", [0.0001, 0.1], "log"]}``),
which ``from_dict`` reads back exactly. Every problem found is reported at once in
one :class:`~maggy_core.exceptions.SpecError`, each under ``searchspace.<name>``.

``step`` and ``log`` cannot be combined: a log-spaced grid is a ``DISCRETE``.
"""

from __future__ import annotations

import itertools
import json
import keyword
import math
import numbers
import random
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from maggy_core.exceptions import SpecError

DOUBLE = "DOUBLE"
INTEGER = "INTEGER"
DISCRETE = "DISCRETE"
CATEGORICAL = "CATEGORICAL"
TYPES = (DOUBLE, INTEGER, DISCRETE, CATEGORICAL)

#: Names injected into training functions by keyword; a hyperparameter may not use them.
RESERVED_NAMES = frozenset({"hparams", "reporter", "budget", "trial_id"})

#: Bounds on what a spec may hold, so that validating any input takes bounded time
#: and memory (a search space with more choices than this is a mistake, not a plan).
MAX_CHOICES = 10_000
MAX_PARAMETERS = 1_000
MAX_DEPTH = 32
MAX_ITEMS = 10_000
MAX_STRING = 100_000

_ENTRY_KEYS = ("type", "values", "log", "step")
_OPTION_KEYS = ("log", "step")
_FORM = (
    "expected (TYPE, VALUES), (TYPE, VALUES, 'log'), (TYPE, VALUES, {'log': ..., 'step': ...})"
    " or {'type': TYPE, 'values': VALUES, ...}"
)


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _finite(value: Any) -> bool:
    """A real number that is not inf or nan (ints always are; bools are not numbers)."""
    return _is_int(value) or (_is_number(value) and math.isfinite(value))


def _plain(value: Any) -> Any:
    """A number as a plain Python int or float (numpy scalars become JSON-able)."""
    if _is_int(value):
        return int(value)
    if _is_number(value):
        return float(value)
    return value


def _snap(value: float) -> float:
    # lo + k * step accumulates binary noise (0.1 * 3 = 0.30000000000000004);
    # 12 significant digits give the value the user meant.
    return float(f"{value:.12g}")


def _same(a: Any, b: Any) -> bool:
    """JSON equality: True is not 1."""
    return isinstance(a, bool) == isinstance(b, bool) and a == b


def _has_duplicates(values: tuple[Any, ...]) -> bool:
    """Whether two values are :func:`_same` (in linear time: equal values hash alike)."""
    seen: set[tuple[bool, Any]] = set()
    for v in values:
        key = (isinstance(v, bool), v)
        if key in seen:
            return True
        seen.add(key)
    return False


def check_nesting(value: Any, where: str, limit: int = MAX_DEPTH) -> None:
    """Refuse a value nested deeper than ``limit`` lists or mappings, a list or
    mapping of more than :data:`MAX_ITEMS` items and a string of more than
    :data:`MAX_STRING` characters, before anything walks the value recursively or
    quotes it in a message (Python's recursion limit is about 1,000, and a message
    that quotes a million-item list takes seconds to make).

    Raises:
        SpecError: Under ``where`` and the path to the first value that is too big.
    """
    stack: list[tuple[Any, str, int]] = [(value, where, 0)]
    while stack:
        item, path, depth = stack.pop()
        if isinstance(item, str):
            if len(item) > MAX_STRING:
                raise SpecError.one(
                    path or where,
                    f"a string of at most {MAX_STRING:,} characters, got {len(item):,}",
                )
            continue
        if isinstance(item, Mapping):
            children: Any = ((f"{path}.{k}" if path else str(k), v) for k, v in item.items())
        elif isinstance(item, (list, tuple)):
            children = ((f"{path}[{i}]", v) for i, v in enumerate(item))
        else:
            continue
        if depth >= limit:
            raise SpecError.one(path or where, f"is nested deeper than {limit} levels")
        if len(item) > MAX_ITEMS:
            raise SpecError.one(path or where, f"at most {MAX_ITEMS:,} items, got {len(item):,}")
        stack.extend((v, p, depth + 1) for p, v in children)


def _grid_error(name: str) -> SpecError:
    return SpecError.one(
        f"searchspace.{name}",
        "a DOUBLE without a step has no grid; add a step "
        "(e.g. ('DOUBLE', [0.0, 1.0], {'step': 0.1})) or use DISCRETE with the values to try",
    )


@dataclass(frozen=True)
class Parameter:
    """One hyperparameter, validated on construction.

    Attributes:
        name: A Python identifier, not one of :data:`RESERVED_NAMES`.
        type: ``"DOUBLE"``, ``"INTEGER"``, ``"DISCRETE"`` or ``"CATEGORICAL"``
            (given in any case, stored upper case).
        values: ``(lo, hi)`` for DOUBLE and INTEGER, else the choices.
        log: Sample on a log scale (DOUBLE and INTEGER only; needs ``lo > 0``).
        step: DOUBLE and INTEGER only: values are ``lo + k * step`` up to ``hi``.
            An INTEGER's step defaults to 1 (stored as ``None``).

    Raises:
        SpecError: Listing every problem, under ``searchspace.<name>``.
    """

    name: str
    type: str
    values: tuple[Any, ...]
    log: bool = False
    step: float | None = None

    def __post_init__(self) -> None:
        problems = self._normalise()
        if problems:
            raise SpecError((f"searchspace.{self.name}", p) for p in problems)

    def _normalise(self) -> list[str]:
        """Check every field, store the canonical form, return the problems."""
        problems: list[str] = []
        name, kind, values, log, step = self.name, self.type, self.values, self.log, self.step
        if not isinstance(name, str) or not name.isidentifier() or keyword.iskeyword(name):
            problems.append("the name must be a Python identifier")
        elif name in RESERVED_NAMES:
            problems.append(f"the name is reserved ({', '.join(sorted(RESERVED_NAMES))})")
        if not isinstance(log, bool):
            problems.append("log must be true or false")
        if not isinstance(kind, str) or kind.upper() not in TYPES:
            return [*problems, f"type {kind!r} is not one of {', '.join(TYPES)}"]
        kind = kind.upper()
        if not isinstance(values, (list, tuple)):
            return [*problems, f"values must be a list, not {type(values).__name__}"]
        if len(values) > MAX_CHOICES:
            return [*problems, f"values: at most {MAX_CHOICES:,} choices, got {len(values):,}"]
        values, step = tuple(_plain(v) for v in values), _plain(step)
        if kind in (DOUBLE, INTEGER):
            problems += self._check_range(kind, values, log, step)
            if kind == DOUBLE and not problems:
                values = (float(values[0]), float(values[1]))
                step = None if step is None else float(step)
            if kind == INTEGER and step == 1:
                step = None
        else:
            if log is not False or step is not None:
                problems.append(f"log and step apply only to {DOUBLE} and {INTEGER}")
            if not values:
                problems.append("values must list at least one choice")
            if kind == DISCRETE and not all(_finite(v) for v in values):
                problems.append("DISCRETE values must be finite numbers")
            elif kind == CATEGORICAL and not all(
                isinstance(v, (str, bool)) or _finite(v) for v in values
            ):
                problems.append("CATEGORICAL values must be strings, finite numbers or booleans")
            elif _has_duplicates(values):  # only scalars get here, so they hash
                problems.append("values must not repeat")
        if not problems:
            object.__setattr__(self, "type", kind)
            object.__setattr__(self, "values", values)
            object.__setattr__(self, "step", step)
        return problems

    @staticmethod
    def _check_range(kind: str, values: tuple[Any, ...], log: Any, step: Any) -> list[str]:
        valid = _is_int if kind == INTEGER else _finite
        one, what = ("integer", "integers") if kind == INTEGER else ("number", "finite numbers")
        if len(values) != 2 or not all(valid(v) for v in values):
            return [f"{kind} values must be [lo, hi], two {what}"]
        lo, hi = values
        problems = []
        if not lo < hi:
            problems.append(f"lo must be below hi, got [{lo}, {hi}]")
        if log is True and lo <= 0:
            problems.append("log scale needs lo > 0")
        if step is not None:
            if log is True:
                problems.append("step and log cannot be combined; use DISCRETE for a log grid")
            if not valid(step) or not step > 0:
                problems.append(f"step must be a positive {one}")
            elif lo < hi and step > hi - lo:
                problems.append(f"step must not exceed hi - lo ({hi - lo})")
        return problems

    @property
    def griddable(self) -> bool:
        """Whether the parameter has a finite set of values (all but DOUBLE without step)."""
        return self.type != DOUBLE or self.step is not None

    def grid_size(self) -> int:
        """The number of values in :meth:`grid_values`, without listing them.

        Raises:
            SpecError: For a DOUBLE without a step.
        """
        if self.type in (DISCRETE, CATEGORICAL):
            return len(self.values)
        if not self.griddable:
            raise _grid_error(self.name)
        lo, hi = self.values
        step = self.step or 1
        # The small tolerance keeps hi on the grid when (hi - lo) / step is 9.999999.
        return int(math.floor((hi - lo) / step + 1e-9)) + 1

    def grid_values(self) -> list[Any]:
        """Every value, in increasing order (declared order for DISCRETE/CATEGORICAL).

        Raises:
            SpecError: For a DOUBLE without a step, naming the field.
        """
        if self.type in (DISCRETE, CATEGORICAL):
            return list(self.values)
        return [self._grid_value(k) for k in range(self.grid_size())]

    def _grid_value(self, k: int) -> Any:
        lo, hi = self.values
        if self.type == INTEGER:
            return lo + k * (self.step or 1)
        return min(_snap(lo + k * self.step), hi)  # type: ignore[operator]

    def sample(self, rng: random.Random) -> Any:
        """Draw one value using ``rng`` only (so a seeded search is repeatable).

        DOUBLE: uniform, or log-uniform when ``log``, or uniform over the step grid.
        INTEGER: uniform over ``lo..hi`` both included; with ``log`` each integer
        ``k`` has a chance proportional to ``log((k + 1) / k)``.
        """
        if self.type in (DISCRETE, CATEGORICAL):
            return rng.choice(self.values)
        if self.step is not None:
            return self._grid_value(rng.randrange(self.grid_size()))
        lo, hi = self.values
        if self.type == INTEGER:
            if not self.log:
                return rng.randint(lo, hi)
            k = math.floor(math.exp(rng.uniform(math.log(lo), math.log(hi + 1))))
            return min(max(int(k), lo), hi)
        if self.log:
            return min(max(math.exp(rng.uniform(math.log(lo), math.log(hi))), lo), hi)
        return rng.uniform(lo, hi)

    def contains(self, value: Any) -> bool:
        """Whether ``value`` is one this parameter can take (on the grid if ``step``)."""
        if self.type == CATEGORICAL:
            return any(_same(value, v) for v in self.values)
        if not _finite(value):
            return False
        if self.type == DISCRETE:
            return value in self.values
        if self.type == INTEGER and not _is_int(value):
            return False
        lo, hi = self.values
        if not lo <= value <= hi:
            return False
        if self.step is None:
            return True
        k = (value - lo) / self.step
        return abs(k - round(k)) <= 1e-6

    def to_json(self) -> list[Any]:
        """The compact form: ``[TYPE, VALUES]`` plus ``"log"`` or ``{"step": ...}``."""
        out: list[Any] = [self.type, list(self.values)]
        if self.step is not None:
            out.append({"log": True, "step": self.step} if self.log else {"step": self.step})
        elif self.log:
            out.append("log")
        return out


def _parse_entry(name: Any, value: Any) -> Parameter:
    """Read one entry in any accepted form.

    Raises:
        SpecError: Under ``searchspace.<name>``.
    """
    where = f"searchspace.{name}"
    if isinstance(value, Parameter):
        if value.name != name:
            raise SpecError.one(where, f"the Parameter is named {value.name!r}")
        return value
    if isinstance(value, Mapping):
        unknown = sorted(str(k) for k in value if k not in _ENTRY_KEYS)
        if unknown or "type" not in value or "values" not in value:
            raise SpecError.one(
                where,
                f"a dict entry takes keys {', '.join(_ENTRY_KEYS)} (type and values required)"
                + (f"; unknown: {', '.join(unknown)}" if unknown else ""),
            )
        options: Any = {k: value[k] for k in _OPTION_KEYS if k in value}
        kind, values = value["type"], value["values"]
    elif isinstance(value, (list, tuple)) and len(value) in (2, 3):
        kind, values = value[0], value[1]
        options = value[2] if len(value) == 3 else {}
        if isinstance(options, str) and options.lower() == "log":
            options = {"log": True}
        if not isinstance(options, Mapping) or any(k not in _OPTION_KEYS for k in options):
            raise SpecError.one(
                where, f"the third element must be 'log' or a dict with keys log, step; {_FORM}"
            )
    else:
        raise SpecError.one(where, _FORM)
    return Parameter(
        str(name), kind, values, log=options.get("log", False), step=options.get("step")
    )


class Searchspace:
    """An ordered set of hyperparameters.

    Args:
        **params: name -> ``(TYPE, VALUES)``, ``(TYPE, VALUES, "log")``,
            ``(TYPE, VALUES, {"log": bool, "step": number})``, a dict
            ``{"type": ..., "values": ..., "log": ..., "step": ...}`` or a
            :class:`Parameter`. Lists work wherever tuples do.

    An empty space may be built and filled with :meth:`add` (as in MAGGY 1.x), but
    sampling it, listing its grid or using it in an experiment is an error.
    Treat a space as read-only once it is in an experiment spec.

    Raises:
        SpecError: Listing every invalid parameter.
    """

    DOUBLE = DOUBLE
    INTEGER = INTEGER
    DISCRETE = DISCRETE
    CATEGORICAL = CATEGORICAL

    def __init__(self, **params: Any) -> None:
        self._params: dict[str, Parameter] = {}
        problems: list[tuple[str, str]] = []
        for name, value in params.items():
            try:
                self._params[name] = _parse_entry(name, value)
            except SpecError as err:
                problems += err.problems
        if problems:
            raise SpecError(problems)

    def add(self, name: str, value: Any) -> None:
        """Add a hyperparameter (MAGGY 1.x), in any form the constructor takes.

        Raises:
            SpecError: If ``name`` is taken or the entry is invalid.
        """
        if name in self._params:
            raise SpecError.one(f"searchspace.{name}", "a hyperparameter of this name exists")
        self._params[name] = _parse_entry(name, value)

    def names(self) -> list[str]:
        """The hyperparameter names, in the order they were given."""
        return list(self._params)

    def items(self) -> list[tuple[str, Parameter]]:
        """``(name, Parameter)`` pairs, in the order they were given."""
        return list(self._params.items())

    def get(self, name: str) -> Parameter:
        """The parameter called ``name``.

        Raises:
            KeyError: If there is none.
        """
        if name not in self._params:
            raise KeyError(f"no hyperparameter {name!r}; the space has {', '.join(self._params)}")
        return self._params[name]

    def __len__(self) -> int:
        return len(self._params)

    def __iter__(self) -> Iterator[str]:
        return iter(self._params)

    def __contains__(self, name: object) -> bool:
        return name in self._params

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Searchspace):
            return NotImplemented
        return list(self._params.values()) == list(other._params.values())

    __hash__ = None  # type: ignore[assignment]  # mutable through add()

    def __repr__(self) -> str:
        inner = ", ".join(f"{n}={tuple(p.to_json())!r}" for n, p in self._params.items())
        return f"Searchspace({inner})"

    def to_dict(self) -> dict[str, list[Any]]:
        """The compact JSON form, e.g. ``{"lr": ["DOUBLE", [0.0001, 0.1], "log"]}``."""
        return {name: p.to_json() for name, p in self._params.items()}

    @classmethod
    def from_dict(cls, data: Any) -> Searchspace:
        """Read a space from :meth:`to_dict`'s form or any form the constructor takes.

        Raises:
            SpecError: If ``data`` is not a non-empty mapping or an entry is invalid.
        """
        if not isinstance(data, Mapping):
            raise SpecError.one("searchspace", "must be a mapping of name -> [TYPE, VALUES]")
        if not data:
            raise SpecError.one("searchspace", "is empty; give at least one hyperparameter")
        if len(data) > MAX_PARAMETERS:
            raise SpecError.one(
                "searchspace", f"at most {MAX_PARAMETERS:,} hyperparameters, got {len(data):,}"
            )
        check_nesting(data, "searchspace")
        bad = [k for k in data if not isinstance(k, str)]
        if bad:
            raise SpecError.one("searchspace", f"names must be strings, got {bad!r}")
        return cls(**data)

    def to_json(self) -> str:
        """:meth:`to_dict` as a JSON string."""
        return json.dumps(self.to_dict())

    @classmethod
    def from_json(cls, text: str) -> Searchspace:
        """Read :meth:`to_json`'s output.

        Raises:
            SpecError: If ``text`` is not JSON or not a valid space.
        """
        try:
            data = json.loads(text)
        except ValueError as err:
            raise SpecError.one("searchspace", f"is not valid JSON: {err}") from None
        return cls.from_dict(data)

    def _require_nonempty(self) -> None:
        if not self._params:
            raise SpecError.one("searchspace", "is empty; give at least one hyperparameter")

    def sample(self, rng: random.Random) -> dict[str, Any]:
        """One random point: name -> value, drawn with ``rng`` in declared order.

        Raises:
            SpecError: If the space is empty.
        """
        self._require_nonempty()
        return {name: p.sample(rng) for name, p in self._params.items()}

    def grid_size(self) -> int:
        """The number of points in :meth:`grid`, without listing them.

        Raises:
            SpecError: If the space is empty or has a DOUBLE without step.
        """
        self._require_nonempty()
        self._require_griddable()
        return math.prod(p.grid_size() for p in self._params.values())

    def grid(self) -> list[dict[str, Any]]:
        """Every point of the cartesian product of the parameters' grid values.

        Order: as ``itertools.product`` over the parameters in declared order, so
        the last parameter varies fastest.

        Raises:
            SpecError: If the space is empty or has a DOUBLE without step (each such
                parameter named).
        """
        self._require_nonempty()
        self._require_griddable()
        names = list(self._params)
        axes = [p.grid_values() for p in self._params.values()]
        return [dict(zip(names, point, strict=True)) for point in itertools.product(*axes)]

    def _require_griddable(self) -> None:
        problems = [
            _grid_error(name).problems[0] for name, p in self._params.items() if not p.griddable
        ]
        if problems:
            raise SpecError(problems)

    def validate_params(self, params: Mapping[str, Any]) -> None:
        """Check that ``params`` assigns every hyperparameter a value in the space.

        Raises:
            SpecError: Listing missing, unknown and out-of-space values, each under
                ``params.<name>``.
        """
        problems = [(f"params.{n}", "missing") for n in self._params if n not in params]
        problems += [(f"params.{n}", "not in the search space") for n in params if n not in self]
        problems += [
            (f"params.{n}", f"{v!r} is outside {self._params[n].to_json()}")
            for n, v in params.items()
            if n in self and not self._params[n].contains(v)
        ]
        if problems:
            raise SpecError(problems)
