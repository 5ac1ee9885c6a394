"""Optimisers behind one small interface (:class:`Optimizer`), and their registry.

A spec names an optimiser by its registered name (``"randomsearch"``,
``"gridsearch"``) or by the import path of a user's class (``"mypkg.opt:MyOpt"``),
imported only when needed.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from maggy_core.exceptions import SpecError
from maggy_core.optimizers._asha import ASHA, Hyperband
from maggy_core.optimizers._base import DONE, WAIT, Decision, Optimizer, Suggestion
from maggy_core.optimizers._grid import GridSearch
from maggy_core.optimizers._optuna import CmaEsSearch, GPSearch, OptunaSearch, TPESearch
from maggy_core.optimizers._random import RandomSearch
from maggy_core.searchspace import Searchspace

if TYPE_CHECKING:  # spec imports this package; at run time the spec is duck-typed
    from maggy_core.spec import OptimizerSpec

__all__ = [
    "ASHA",
    "DONE",
    "WAIT",
    "CmaEsSearch",
    "Decision",
    "GPSearch",
    "GridSearch",
    "Hyperband",
    "Optimizer",
    "OptunaSearch",
    "RandomSearch",
    "Suggestion",
    "TPESearch",
    "available_optimizers",
    "get_optimizer",
    "optuna_distributions",
    "register_optimizer",
    "resolve_optimizer",
]

_REGISTRY: dict[str, type[Optimizer]] = {}


def register_optimizer(cls: type[Optimizer]) -> type[Optimizer]:
    """Make ``cls`` available under ``cls.name``; usable as a class decorator.

    Raises:
        TypeError: If ``cls`` is not an :class:`Optimizer` subclass.
        ValueError: If ``cls.name`` is not a lower-case string without ``:`` or is
            taken by another class.
    """
    if not (isinstance(cls, type) and issubclass(cls, Optimizer)):
        raise TypeError(f"{cls!r} is not a subclass of Optimizer")
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name or name != name.lower() or ":" in name:
        raise ValueError(f"{cls.__name__}.name must be a lower-case string without ':'")
    if _REGISTRY.get(name, cls) is not cls:
        raise ValueError(f"optimizer name {name!r} is taken by {_REGISTRY[name].__name__}")
    _REGISTRY[name] = cls
    return cls


def available_optimizers() -> list[str]:
    """The registered optimiser names, sorted."""
    return sorted(_REGISTRY)


def resolve_optimizer(name: str) -> type[Optimizer]:
    """The class for a registered name or a ``"module:Class"`` import path.

    Raises:
        SpecError: Under ``optimizer.name`` if it is neither, or the import fails,
            or the class is not an :class:`Optimizer`.
    """
    where = "optimizer.name"
    if not isinstance(name, str) or ":" not in name:
        if isinstance(name, str) and name.lower() in _REGISTRY:
            return _REGISTRY[name.lower()]
        allowed = ", ".join(available_optimizers())
        message = f"unknown optimizer {name!r}; allowed: {allowed}, or 'module:Class'"
        raise SpecError.one(where, message)
    module_name, _, attr = name.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise SpecError.one(where, f"cannot import {module_name!r} for {name!r}: {err}") from None
    cls = getattr(module, attr, None)
    if not (isinstance(cls, type) and issubclass(cls, Optimizer)):
        raise SpecError.one(where, f"{name!r} is not a subclass of maggy_core.optimizers.Optimizer")
    return cls


def get_optimizer(
    spec_or_name: str | OptimizerSpec,
    searchspace: Searchspace,
    *,
    num_trials: int,
    direction: str,
    seed: int | None,
    options: Mapping[str, Any] | None = None,
) -> Optimizer:
    """Build an optimiser.

    Args:
        spec_or_name: A name (see :func:`resolve_optimizer`) or an
            :class:`~maggy_core.spec.OptimizerSpec`.
        searchspace: The space to search.
        num_trials: How many trials to suggest at most.
        direction: ``"max"`` or ``"min"``.
        seed: Seed for the optimiser's randomness, or ``None``.
        options: Options for the optimiser; they override the spec's own.

    Raises:
        SpecError: If the name, the space or an option is invalid.
    """
    if isinstance(spec_or_name, str):
        name, merged = spec_or_name, dict(options or {})
    else:
        name, merged = spec_or_name.name, {**spec_or_name.options, **(options or {})}
    cls = resolve_optimizer(name)
    return cls(searchspace, num_trials=num_trials, direction=direction, seed=seed, **merged)


register_optimizer(RandomSearch)
register_optimizer(GridSearch)
register_optimizer(TPESearch)
register_optimizer(GPSearch)
register_optimizer(CmaEsSearch)
register_optimizer(OptunaSearch)
register_optimizer(ASHA)
register_optimizer(Hyperband)


def optuna_distributions(space: Searchspace) -> dict[str, Any]:
    """Optuna's distribution of each parameter of ``space``, as the Optuna-backed
    optimisers ask with them (for readers such as the plugin's importance view)."""
    from maggy_core.optimizers._optuna import _distribution

    return {name: _distribution(param) for name, param in space.items()}
