"""Importing what a spec names (``"package.module:function"``) and checking how it is called.

A leaf module (it imports only the exception types), so the spec, the runner, the
worker and the ablation study can all use it without importing each other.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Iterable
from typing import Any

from maggy_core.exceptions import SpecError

#: Names a training function can ask for besides its hyperparameters.
INJECTED = ("hparams", "reporter", "budget", "trial_id")


def load_callable(path: str) -> Callable[..., Any]:
    """Import ``"package.module:function"``.

    Raises:
        SpecError: the path is malformed, the module does not import, or the
            attribute is missing or not callable (field ``train_fn``).
    """
    module_name, sep, attr = path.partition(":")
    if not sep or not module_name or not attr:
        raise SpecError.one("train_fn", f"must be 'module:function', got {path!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise SpecError.one("train_fn", f"cannot import module {module_name!r}: {exc}") from None
    obj: Any = module
    for part in attr.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            raise SpecError.one("train_fn", f"module {module_name!r} has no attribute {attr!r}")
    if not callable(obj):
        raise SpecError.one("train_fn", f"{path!r} is not callable")
    return obj


def check_signature(
    fn: Callable[..., Any], param_names: Iterable[str], fixed: Iterable[str] = ()
) -> list[tuple[str, str]]:
    """Problems with calling ``fn`` for a trial, as ``(field, message)`` pairs.

    A training function receives, by name, ``hparams`` (all hyperparameters),
    ``reporter``, ``budget``, ``trial_id``, each hyperparameter and each of the
    spec's ``train_kwargs`` (``fixed``); a ``**kwargs`` receives the
    hyperparameters it did not name. Each hyperparameter must reach the function
    one way or another, and every argument without a default must be one of these.
    """
    name = getattr(fn, "__name__", repr(fn))
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return []
    params = sig.parameters
    names = set(param_names)
    fixed_names = set(fixed)
    has_var_kw = any(p.kind is p.VAR_KEYWORD for p in params.values())
    problems = []
    for p in params.values():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        if p.kind is p.POSITIONAL_ONLY:
            problems.append(
                (
                    "train_fn",
                    f"{name}: argument {p.name!r} is positional-only; arguments are passed by name",
                )
            )
        elif (
            p.name not in names
            and p.name not in fixed_names
            and p.name not in INJECTED
            and p.default is p.empty
        ):
            problems.append(
                (
                    "train_fn",
                    f"{name}: argument {p.name!r} has no default and is neither a hyperparameter "
                    f"(the space has {sorted(names)}) nor one of {list(INJECTED)}",
                )
            )
    if not has_var_kw and "hparams" not in params:
        for missing in sorted(names - set(params)):
            problems.append(
                (
                    f"searchspace.{missing}",
                    f"{name} takes no argument {missing!r} (and no hparams or **kwargs)",
                )
            )
    return problems
