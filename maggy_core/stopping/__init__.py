"""Early-stopping rules behind one small interface (:class:`StoppingRule`), and
their registry, named by the spec's ``es_policy`` (options in ``es_options``)."""

from __future__ import annotations

from typing import Any

from maggy_core.exceptions import SpecError
from maggy_core.stopping._base import StoppingRule
from maggy_core.stopping._median import MedianRule
from maggy_core.stopping._none import NoStopping
from maggy_core.stopping._percentile import PercentileRule
from maggy_core.stopping._rungs import ASHARule, HyperbandRule

__all__ = [
    "ASHARule",
    "HyperbandRule",
    "MedianRule",
    "NoStopping",
    "PercentileRule",
    "StoppingRule",
    "available_stopping_rules",
    "get_stopping_rule",
    "register_stopping_rule",
]

_REGISTRY: dict[str, type[StoppingRule]] = {}


def register_stopping_rule(cls: type[StoppingRule]) -> type[StoppingRule]:
    """Make ``cls`` available under ``cls.name``; usable as a class decorator.

    Raises:
        TypeError: If ``cls`` is not a :class:`StoppingRule` subclass.
        ValueError: If ``cls.name`` is not a lower-case string or is taken.
    """
    if not (isinstance(cls, type) and issubclass(cls, StoppingRule)):
        raise TypeError(f"{cls!r} is not a subclass of StoppingRule")
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name or name != name.lower():
        raise ValueError(f"{cls.__name__}.name must be a lower-case string")
    if _REGISTRY.get(name, cls) is not cls:
        raise ValueError(f"stopping rule name {name!r} is taken by {_REGISTRY[name].__name__}")
    _REGISTRY[name] = cls
    return cls


def available_stopping_rules() -> list[str]:
    """The registered rule names, sorted."""
    return sorted(_REGISTRY)


def get_stopping_rule(
    name: str,
    *,
    direction: str,
    min_trials: int,
    interval: int,
    options: dict[str, Any] | None = None,
) -> StoppingRule:
    """Build the rule registered as ``name`` (case-insensitive) with ``options``.

    Raises:
        SpecError: Under ``es_policy`` if no rule has that name, or naming an
            invalid argument.
    """
    cls = _REGISTRY.get(name.lower()) if isinstance(name, str) else None
    if cls is None:
        allowed = ", ".join(available_stopping_rules())
        raise SpecError.one("es_policy", f"unknown rule {name!r}; allowed: {allowed}")
    return cls(direction=direction, min_trials=min_trials, interval=interval, **(options or {}))


register_stopping_rule(ASHARule)
register_stopping_rule(HyperbandRule)
register_stopping_rule(MedianRule)
register_stopping_rule(NoStopping)
register_stopping_rule(PercentileRule)
