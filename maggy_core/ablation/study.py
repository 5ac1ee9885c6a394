"""An ablation study: what is left out, trial by trial.

A study lists components: features of a table (one column or a group of
columns), layers and layer groups of a Keras base model, custom models, and
generic named switches the training function reads. It is written in the
experiment spec under ``ablation:`` or built in Python with
:class:`AblationStudy` (MAGGY 1.x's API)::

    ablation:
      dataset: data/table.parquet       # or dataset_generator: "module:fn"
      label: survived
      features: [age, [fare, sibsp]]    # a list inside the list is one group
      # or: features: {auto_groups: 0.9}  # group columns correlated above 0.9
      base_model: mypkg.train:base_model
      layers: [dense_2]
      layer_groups: [[dense_2, dense_3], {prefix: dense}]
      custom_models: {small: mypkg.train:small_model}
      components: [batchnorm]

Names of components: a feature or layer by its name, a group by its members
joined with ``+`` (``fare+sibsp``), a prefix group as ``dense*``, a custom model
or switch by its key. This module holds no TensorFlow or pandas import; the
worker side (:class:`TrialContext`) imports them only when a trial asks.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from maggy_core.exceptions import SpecError

KINDS = ("feature", "layer", "layer_group", "custom_model", "component")
#: What an ablation trial's training function may ask for by name.
INJECTED = ("dataset_function", "model_function", "ablated", "components", "seed", "repeat")
_KEYS = (
    "dataset",
    "dataset_generator",
    "label",
    "features",
    "base_model",
    "layers",
    "layer_groups",
    "custom_models",
    "components",
    "history",
    "confidence",
    "alpha",
)
_NAME = re.compile(r"[A-Za-z0-9_.:/\-]+")
_IMPORT = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*")


@dataclass(frozen=True)
class Component:
    """One thing an ablation trial leaves out.

    Attributes:
        name: Unique within the study; the trial's ``ablated``.
        kind: One of :data:`KINDS`.
        members: The columns of a feature (group) or the layers of a layer (group).
        prefix: For a layer group given by prefix: every layer whose name starts with it.
        generator: For a custom model: ``"module:function"`` that returns the model.
    """

    name: str
    kind: str
    members: tuple[str, ...] = ()
    prefix: str | None = None
    generator: str | None = None


def _str_list(value: Any, where: str, problems: list[tuple[str, str]]) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)) or not value:
        problems.append((where, f"must be a name or a non-empty list of names, got {value!r}"))
        return []
    bad = [v for v in value if not isinstance(v, str) or not _NAME.fullmatch(v)]
    if bad:
        problems.append((where, f"names must be non-empty strings, got {bad[0]!r}"))
        return []
    return list(value)


@dataclass(frozen=True)
class AblationSpec:
    """The ``ablation:`` block of a spec, validated (see the module docstring).

    Attributes:
        dataset: Path of a Parquet (any other suffix) or CSV (``.csv``) table.
        dataset_generator: ``"module:function"`` returning a ``pandas.DataFrame``;
            instead of ``dataset``.
        label: The label column: never ablated, always kept.
        features: Columns or column groups to leave out, one at a time; or
            ``{auto_groups: t, columns: [...]}``: the columns (default: all but the
            label) grouped by the table's correlations (:func:`correlated_groups`),
            which reads the table wherever the study is validated or planned.
        base_model: ``"module:function"`` returning a fresh Keras model.
        layers: Layers of the base model to leave out, one at a time.
        layer_groups: Lists of layers, or ``{"prefix": "dense"}``, left out together.
        custom_models: Name -> ``"module:function"``: models tried instead of the base.
        components: Names of switches the training function reads (``components``).
        history: File of earlier runs' effects (JSON lines); default beside the
            results: ``<results_dir>/_ablation_history/<name>.jsonl``.
        confidence: Level of the intervals (default 0.95).
        alpha: Significance level, after Holm's correction (default 0.05).
    """

    dataset: str | None = None
    dataset_generator: str | None = None
    label: str | None = None
    features: tuple[Any, ...] = ()
    base_model: str | None = None
    layers: tuple[str, ...] = ()
    layer_groups: tuple[Any, ...] = ()
    custom_models: dict[str, str] = field(default_factory=dict)
    components: tuple[str, ...] = ()
    history: str | None = None
    confidence: float = 0.95
    alpha: float = 0.05

    def __post_init__(self) -> None:
        # The components are built once, here, and kept: building them validates the
        # whole block and, with ``features: {auto_groups: t}``, reads the table and
        # its correlations, which must not happen again each time someone (the spec's
        # check, the mode, the coordinator, the analysis) asks for the plan.
        # Not a dataclass field, so equality, to_dict() and hashing ignore it.
        object.__setattr__(self, "_components", tuple(self._build_plan()))

    @classmethod
    def parse(cls, data: Any) -> AblationSpec:
        """Read the block from a mapping (parsed YAML/JSON) or an AblationSpec.

        Raises:
            SpecError: Listing every problem under ``ablation.<key>``.
        """
        if isinstance(data, AblationSpec):
            return data
        if isinstance(data, AblationStudy):
            return data.to_spec()
        if not isinstance(data, Mapping):
            raise SpecError.one("ablation", f"must be a mapping of {', '.join(_KEYS)}")
        unknown = [str(k) for k in data if k not in _KEYS]
        if unknown:
            raise SpecError.one(
                f"ablation.{unknown[0]}", f"unknown key; allowed: {', '.join(_KEYS)}"
            )
        values = dict(data)
        for key in ("features", "layers", "layer_groups", "components"):
            if key in values:
                raw = values[key]
                values[key] = tuple(raw) if isinstance(raw, (list, tuple)) else raw
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form that :meth:`parse` reads back equal."""
        out = dataclasses.asdict(self)
        for key in ("features", "layers", "layer_groups", "components"):
            value = getattr(self, key)
            out[key] = json.loads(json.dumps(value if isinstance(value, Mapping) else list(value)))
        return out

    def plan(self) -> list[Component]:
        """The study's components in order: features, layers, layer groups,
        custom models, switches; built once, when the block was made."""
        return list(self._components)  # type: ignore[attr-defined]

    def _build_plan(self) -> list[Component]:
        """Build (and validate) the components.

        Raises:
            SpecError: Every problem of the block, under ``ablation.<key>``.
        """
        problems: list[tuple[str, str]] = []
        out: list[Component] = []
        where = "ablation"
        for key in ("dataset", "dataset_generator", "label", "base_model", "history"):
            value = getattr(self, key)
            if value is not None and (not isinstance(value, str) or not value):
                problems.append((f"{where}.{key}", f"must be a non-empty string, got {value!r}"))
        for key in ("dataset_generator", "base_model"):
            value = getattr(self, key)
            if isinstance(value, str) and value and not _IMPORT.fullmatch(value):
                problems.append((f"{where}.{key}", f"must be 'module:function', got {value!r}"))
        if self.dataset is not None and self.dataset_generator is not None:
            problems.append((f"{where}.dataset", "give dataset or dataset_generator, not both"))
        has_data = self.dataset is not None or self.dataset_generator is not None
        if has_data and self.label is None:
            problems.append((f"{where}.label", "is required with a dataset: the label column"))
        for key in ("confidence", "alpha"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
                problems.append((f"{where}.{key}", f"must be a number in (0, 1), got {value!r}"))

        features: Any = self.features
        if isinstance(features, Mapping):
            features = self._auto_features(features, has_data, problems)
        if not isinstance(features, tuple):
            problems.append(
                (
                    f"{where}.features",
                    "must be a list of names or lists of names, or {auto_groups: threshold}",
                )
            )
        else:
            for i, feature in enumerate(features):
                cols = _str_list(feature, f"{where}.features[{i}]", problems)
                if cols and self.label in cols:
                    problems.append(
                        (
                            f"{where}.features[{i}]",
                            f"{self.label!r} is the label; it is never left out",
                        )
                    )
                if cols:
                    out.append(Component("+".join(cols), "feature", tuple(cols)))
            if features and not has_data and not isinstance(self.features, Mapping):
                problems.append(
                    (
                        f"{where}.features",
                        "need a dataset (or dataset_generator) to leave them out of",
                    )
                )

        # _str_list takes one name as a one-name list and refuses anything else that is
        # not a list of names (a tuple here, after parse()).
        layers = _str_list(self.layers, f"{where}.layers", problems) if self.layers else []
        out += [Component(name, "layer", (name,)) for name in layers]
        if not isinstance(self.layer_groups, tuple):
            problems.append((f"{where}.layer_groups", "must be a list of lists or {prefix: ...}"))
        else:
            for i, group in enumerate(self.layer_groups):
                here = f"{where}.layer_groups[{i}]"
                if isinstance(group, Mapping):
                    prefix = group.get("prefix")
                    if set(group) != {"prefix"} or not isinstance(prefix, str) or not prefix:
                        problems.append(
                            (here, "as a mapping must be {prefix: <layer name prefix>}")
                        )
                    else:
                        out.append(Component(f"{prefix}*", "layer_group", prefix=prefix))
                    continue
                members = _str_list(group, here, problems)
                if members and len(members) < 2:
                    problems.append((here, "a group needs at least two layers; use layers for one"))
                elif members:
                    out.append(Component("+".join(members), "layer_group", tuple(members)))
        if (layers or self.layer_groups) and self.base_model is None:
            problems.append(
                (f"{where}.base_model", "is required to leave out layers: 'module:function'")
            )

        if not isinstance(self.custom_models, Mapping):
            problems.append((f"{where}.custom_models", "must map a name to 'module:function'"))
        else:
            for name, path in self.custom_models.items():
                if not isinstance(path, str) or not _IMPORT.fullmatch(path):
                    problems.append(
                        (
                            f"{where}.custom_models.{name}",
                            f"must be 'module:function', got {path!r}",
                        )
                    )
                else:
                    out.append(Component(str(name), "custom_model", generator=path))
        switches = (
            _str_list(self.components, f"{where}.components", problems) if self.components else []
        )
        out += [Component(name, "component") for name in switches]

        seen: set[str] = set()
        for c in out:
            if c.name in seen:
                problems.append((where, f"component {c.name!r} is listed twice"))
            seen.add(c.name)
        if not out and not problems:
            problems.append(
                (
                    where,
                    "lists no component; give features, layers, layer_groups, "
                    "custom_models or components",
                )
            )
        if problems:
            raise SpecError(problems)
        return out

    def _auto_features(
        self, block: Mapping[str, Any], has_data: bool, problems: list[tuple[str, str]]
    ) -> tuple[Any, ...] | None:
        """``features: {auto_groups: t, columns: [...]}`` as explicit groups, from the
        table's correlations (see :func:`correlated_groups`); ``None`` after a problem."""
        where = "ablation.features"
        unknown = [str(k) for k in block if k not in ("auto_groups", "columns")]
        if unknown:
            problems.append((f"{where}.{unknown[0]}", "unknown key; allowed: auto_groups, columns"))
            return None
        threshold = block.get("auto_groups")
        if (
            isinstance(threshold, bool)
            or not isinstance(threshold, int | float)
            or not (0 < threshold < 1)
        ):
            problems.append(
                (f"{where}.auto_groups", f"must be a number in (0, 1), got {threshold!r}")
            )
            return None
        columns = None
        if block.get("columns") is not None:
            columns = _str_list(block["columns"], f"{where}.columns", problems)
            if not columns:
                return None
        if not has_data:
            problems.append((where, "need a dataset (or dataset_generator) to group"))
            return None
        try:
            table = _read_table(self)
        except SpecError as err:
            problems += [(f"{where}.auto_groups", f"needs the table: {m}") for _, m in err.problems]
            return None
        except Exception as err:  # pandas or pyarrow: the message says what is wrong
            problems.append((f"{where}.auto_groups", f"needs the table, unreadable: {err}"))
            return None
        have = [c for c in table.columns if c != self.label]
        missing = [c for c in columns or [] if c not in have]
        if missing:
            problems.append((f"{where}.columns", f"{missing[0]!r} is not a column of the table"))
            return None
        return tuple(correlated_groups(table, columns or have, float(threshold)))

    def kinds(self) -> dict[str, str]:
        """Component name -> kind, in study order."""
        return {c.name: c.kind for c in self.plan()}


def parse_ablator(value: Any) -> tuple[str, dict[str, Any]]:
    """Read ``ablator``: ``"loco"``, ``{name: loco, repeats: 5}`` or
    ``{name: loco, options: {repeats: 5}}``.

    Returns:
        The ablator's name and its options.

    Raises:
        SpecError: Under ``ablator`` when the form is wrong.
    """
    if value is None:
        return "loco", {}
    if isinstance(getattr(value, "name", None), str) and isinstance(
        getattr(value, "options", None), Mapping
    ):  # an OptimizerSpec: the stored form
        return value.name, dict(value.options)
    if isinstance(value, str) and value:
        return value, {}
    if isinstance(value, Mapping) and isinstance(value.get("name"), str):
        options = {k: v for k, v in value.items() if k not in ("name", "options")}
        nested = value.get("options") or {}
        if not isinstance(nested, Mapping):
            raise SpecError.one("ablator.options", "must be a mapping")
        return value["name"], {**options, **nested}
    raise SpecError.one("ablator", "must be a name (loco) or {name: loco, repeats: N}")


def correlated_groups(table: Any, columns: Sequence[str], threshold: float) -> list[Any]:
    """Group ``columns`` whose absolute (Pearson) correlation exceeds ``threshold``.

    Two columns correlated above the threshold always land in the same group (the
    groups are the connected components of the graph "|correlation| > threshold",
    single linkage): otherwise leaving one of them out would be hidden by the
    other, which still carries the same information. Columns that are not numeric,
    or constant, stay alone.

    Returns:
        The features in the order of ``columns``: a name, or a list of names (a group,
        in column order) placed where its first column is.
    """
    import numpy as np
    import pandas as pd
    from scipy.sparse.csgraph import connected_components

    numeric = [c for c in columns if pd.api.types.is_numeric_dtype(table[c])]
    corr = table[numeric].astype("float64").corr().abs().fillna(0.0).to_numpy()
    adjacency = corr > threshold
    np.fill_diagonal(adjacency, False)
    _, labels = connected_components(adjacency, directed=False)
    label_of = dict(zip(numeric, labels.tolist(), strict=True))
    out: list[Any] = []
    placed: set[int] = set()
    for column in columns:
        if column not in label_of:
            out.append(column)
            continue
        label = label_of[column]
        if label in placed:
            continue
        placed.add(label)
        members = [c for c in numeric if label_of[c] == label]
        out.append(members[0] if len(members) == 1 else [c for c in columns if c in members])
    return out


_TABLES: dict[tuple[Any, ...], Any] = {}


def _read_table(spec: AblationSpec) -> Any:
    """The study's table, read once per process for a file that has not changed
    (by path, size and modification time) or a generator (by name).

    Raises:
        SpecError: Under ``ablation.dataset`` / ``ablation.dataset_generator``.
    """
    if spec.dataset_generator is not None:
        key: tuple[Any, ...] = ("generator", spec.dataset_generator)
    else:
        path = Path(str(spec.dataset)).expanduser()
        try:
            st = path.stat()
        except OSError as err:
            raise SpecError.one("ablation.dataset", f"{spec.dataset}: {err.strerror}") from None
        key = ("file", str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _TABLES:
        _TABLES.clear()  # one table at a time: a worker runs one study
        _TABLES[key] = _load_table(spec)
    return _TABLES[key]


def _load_table(spec: AblationSpec) -> Any:
    """Read the table (or call the generator); its columns are checked by the caller."""
    import pandas as pd

    if spec.dataset_generator is not None:
        from maggy_core.loading import load_callable

        table = load_callable(spec.dataset_generator)()
        if not isinstance(table, pd.DataFrame):
            raise SpecError.one(
                "ablation.dataset_generator",
                f"must return a pandas.DataFrame, returned {type(table).__name__}",
            )
        return table
    path = str(spec.dataset)
    return pd.read_csv(path) if path.lower().endswith(".csv") else pd.read_parquet(path)


# ---------------------------------------------------------------- the Python API


def _import_path(fn: Callable[..., Any] | str, where: str) -> str:
    """``"module:qualname"`` of a function the Spark workers can import."""
    if isinstance(fn, str):
        return fn
    module = getattr(fn, "__module__", None)
    qualname = getattr(fn, "__qualname__", "")
    if not callable(fn) or not module or module == "__main__" or "<" in qualname:
        raise SpecError.one(
            where,
            f"{fn!r} must be a module-level function of an importable module (the Spark "
            "workers import it by name), or a 'module:function' string",
        )
    return f"{module}:{qualname}"


class _Features:
    def __init__(self) -> None:
        self.items: list[Any] = []

    def include(self, *features: str | list[str]) -> None:
        """Add features to leave out one at a time; a list is one group."""
        self.items += [list(f) if isinstance(f, (list, tuple)) else f for f in features]


class _Layers:
    def __init__(self) -> None:
        self.items: list[str] = []
        self.groups: list[Any] = []

    def include(self, *layers: str) -> None:
        """Add layers of the base model to leave out one at a time."""
        self.items += list(layers)

    def include_groups(self, *groups: list[str], prefix: str | None = None) -> None:
        """Add groups of layers left out together, or every layer named ``prefix*``."""
        self.groups += [list(g) for g in groups]
        if prefix is not None:
            self.groups.append({"prefix": prefix})


class _Model:
    def __init__(self) -> None:
        self.layers = _Layers()
        self.base: str | None = None
        self.custom: dict[str, str] = {}

    def set_base_model_generator(self, fn: Callable[..., Any] | str) -> None:
        """The function that returns a fresh base model (Keras)."""
        self.base = _import_path(fn, "ablation.base_model")

    def add_custom_model_generator(self, fn: Callable[..., Any] | str, name: str) -> None:
        """A model tried instead of the base model, under ``name``."""
        self.custom[name] = _import_path(fn, f"ablation.custom_models.{name}")


class _Switches:
    def __init__(self) -> None:
        self.items: list[str] = []

    def include(self, *names: str) -> None:
        """Add named switches; a trial turns one off, and the training function reads
        ``components[name]``."""
        self.items += list(names)


class AblationStudy:
    """MAGGY 1.x's ablation study, on a plain table instead of a feature store.

    Example::

        study = AblationStudy("data/titanic.parquet", label_name="survived")
        study.features.include("age", ["fare", "sibsp"])
        study.model.set_base_model_generator(base_model)
        study.model.layers.include("dense_2")
        study.model.layers.include_groups(prefix="dense")
        study.components.include("batchnorm")
        result = lagom(train, AblationConfig(study, ablator={"name": "loco", "repeats": 5}))

    Args:
        dataset: Path of a Parquet or CSV table, ``"module:function"`` returning a
            DataFrame, or such a function; ``None`` when no feature is ablated.
        label_name: The label column.
    """

    def __init__(
        self, dataset: str | Callable[..., Any] | None = None, label_name: str | None = None
    ) -> None:
        self.dataset = dataset
        self.label_name = label_name
        self.features = _Features()
        self.model = _Model()
        self.components = _Switches()

    def to_spec(self) -> AblationSpec:
        """The study as the spec's ``ablation:`` block (validated).

        Raises:
            SpecError: Naming the field of every problem.
        """
        dataset: str | None = None
        generator: str | None = None
        if callable(self.dataset):
            generator = _import_path(self.dataset, "ablation.dataset_generator")
        elif isinstance(self.dataset, str) and _IMPORT.fullmatch(self.dataset):
            generator = self.dataset
        else:
            dataset = self.dataset
        return AblationSpec(
            dataset=dataset,
            dataset_generator=generator,
            label=self.label_name,
            features=tuple(self.features.items),
            base_model=self.model.base,
            layers=tuple(self.model.layers.items),
            layer_groups=tuple(self.model.layers.groups),
            custom_models=dict(self.model.custom),
            components=tuple(self.components.items),
        )


# ---------------------------------------------------------------- checks in the driver


def check_dataset_columns(spec: AblationSpec) -> None:
    """Check, before Spark starts, that the table has the label and every feature.

    Reads only the Parquet schema or the CSV header. A ``dataset_generator`` is
    not called here (it may be slow); its columns are checked by the first trial.

    Raises:
        SpecError: Under ``ablation.dataset`` / ``ablation.label`` /
            ``ablation.features``, naming the missing column and the columns there are.
    """
    if spec.dataset is None:
        return
    path = Path(spec.dataset)
    if not path.exists():
        raise SpecError.one("ablation.dataset", f"{spec.dataset}: no such file or directory")
    try:
        columns = _columns(path)
    except Exception as err:  # pyarrow or csv: the message says what is wrong
        raise SpecError.one("ablation.dataset", f"{spec.dataset}: cannot read it: {err}") from None
    _check_columns(spec, columns)


def _columns(path: Path) -> list[str]:
    if path.suffix.lower() == ".csv":
        import csv

        with path.open(newline="", encoding="utf-8") as f:
            return next(csv.reader(f), [])
    import pyarrow.parquet as pq

    return list(pq.read_schema(path).names)


def _check_columns(spec: AblationSpec, columns: Iterable[str]) -> None:
    have = list(columns)
    problems = []
    shown = ", ".join(have[:40]) + (" ..." if len(have) > 40 else "")
    if spec.label is not None and spec.label not in have:
        problems.append(("ablation.label", f"{spec.label!r} is not a column; columns: {shown}"))
    for c in spec.plan():
        if c.kind == "feature":
            missing = [m for m in c.members if m not in have]
            if missing:
                problems.append(
                    ("ablation.features", f"{missing[0]!r} is not a column; columns: {shown}")
                )
    if problems:
        raise SpecError(problems)


# ---------------------------------------------------------------- the worker side


class TrialContext:
    """What an ablation trial's training function is given, built in the worker.

    The table is read once per worker process and kept; every call of
    ``dataset_function`` returns a fresh copy without the ablated columns.
    ``model_function(**kwargs)`` builds a fresh model on every call, passing
    ``kwargs`` to the generator: a generator that takes ``input_dim`` can follow
    a table that lost a feature.

    Args:
        spec: The study.
    """

    def __init__(self, spec: AblationSpec) -> None:
        self.spec = spec
        self.components = {c.name: c for c in spec.plan()}
        self._table: Any = None

    def injections(self, ablated: str | list[str] | None) -> dict[str, Any]:
        """``dataset_function``, ``model_function`` and ``components`` for a trial
        that leaves out ``ablated``: a component, a list of components left out
        together (an interaction pair), or ``None`` (the base trial).

        Raises:
            SpecError: If ``ablated`` names no component of the study, or a custom
                model in a list (a custom model replaces the whole model).
        """
        names = [] if ablated is None else [ablated] if isinstance(ablated, str) else ablated
        unknown = [n for n in names if n not in self.components]
        if unknown:
            raise SpecError.one("ablated", f"{unknown[0]!r} is not a component of the study")
        left_out = [self.components[n] for n in names]
        if len(left_out) > 1 and any(c.kind == "custom_model" for c in left_out):
            raise SpecError.one("ablated", "a custom model cannot be left out with another")
        switches = {
            name: name not in names for name, c in self.components.items() if c.kind == "component"
        }
        has_data = self.spec.dataset is not None or self.spec.dataset_generator is not None
        return {
            "dataset_function": (lambda: self.dataset(*left_out)) if has_data else None,
            "model_function": lambda **kwargs: self.model(*left_out, **kwargs),
            "components": switches,
        }

    def dataset(self, *components: Component | None) -> Any:
        """The table without the columns of the ``components`` that are features,
        label kept."""
        if self._table is None:
            self._table = _read_table(self.spec)
            if self.spec.dataset_generator is not None:
                _check_columns(self.spec, self._table.columns)
        table = self._table
        drop = [m for c in components if c is not None and c.kind == "feature" for m in c.members]
        return table.drop(columns=drop) if drop else table.copy()

    def model(self, *components: Component | None, **kwargs: Any) -> Any:
        """A fresh model: the custom one, the base one without the ablated layers,
        or the base one; ``None`` without a base model. ``kwargs`` go to the
        generator (e.g. ``input_dim`` after a feature was left out)."""
        from maggy_core.loading import load_callable

        present = [c for c in components if c is not None]
        custom = [c for c in present if c.kind == "custom_model"]
        if custom:
            return load_callable(custom[0].generator or "")(**kwargs)
        if self.spec.base_model is None:
            return None
        model = load_callable(self.spec.base_model)(**kwargs)
        layered = [c for c in present if c.kind in ("layer", "layer_group")]
        if not layered:
            return model
        from maggy_core.ablation.surgery import layers_with_prefix, remove_layers

        names: list[str] = []
        for component in layered:
            members = list(component.members)
            if component.prefix is not None:
                members = layers_with_prefix(model, component.prefix)
                if not members:
                    raise SpecError.one(
                        "ablation.layer_groups",
                        f"no layer of the base model starts with {component.prefix!r}",
                    )
            names += [m for m in members if m not in names]
        return remove_layers(model, names)
