"""Keras layer surgery for ablation studies: a model without some of its layers.

An ablation study removes a layer, or a group of layers, from a model to learn
what it contributes. :func:`remove_layers` returns a new, uncompiled model in
which every consumer of a removed layer's output is fed that layer's input
instead. The kept layers are rebuilt from their configs, so they have fresh
weights and their shapes are inferred again: removing a 64-unit ``Dense`` between
a 32-unit ``Dense`` and another ``Dense`` makes the latter accept 32 inputs.

Works for ``keras.Sequential`` and functional ``keras.Model`` graphs (branches,
merges, several inputs or outputs, shared layers). A model nested inside the
model is one layer. Keras is imported inside the functions, never when this
module is imported, so the engine does not load TensorFlow unless a training
function asks for it.

Example::

    from maggy_core.ablation.surgery import layers_with_prefix, remove_layers

    smaller = remove_layers(model, layers_with_prefix(model, "block_2"))
    smaller.compile(optimizer="adam", loss="mse")

Every problem raises :class:`~maggy_core.exceptions.SpecError` (field
``"ablation.layers"``) whose message names the layer and says why it cannot go.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from maggy_core.exceptions import SpecError

if TYPE_CHECKING:
    import keras

__all__ = ["FIELD", "layers_with_prefix", "removable_layers", "remove_layers"]

FIELD = "ablation.layers"
"""The spec field that surgery errors are reported against."""

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def remove_layers(model: keras.Model, names: Iterable[str]) -> keras.Model:
    """A new, uncompiled model: ``model`` without the layers named, graph kept valid.

    Every consumer of a removed layer's output is fed the layer's input instead,
    so only a layer with exactly one input tensor and one output tensor can be
    removed. The kept layers are rebuilt with
    ``layer.__class__.from_config(layer.get_config())``: they keep their names
    but get fresh weights (never shared with ``model``) and re-inferred shapes.
    Several layers, adjacent or not, can be removed at once. ``model`` itself is
    left unchanged. With no names, the result is a fresh copy of ``model``.

    A ``keras.Sequential`` gives a ``keras.Sequential``; any other functional
    model gives a functional ``keras.Model`` with the same name and the same
    input and output structure. A Sequential that has no input shape yet has
    no shapes to check: its layers are only listed, and shapes are inferred
    when it is first called.

    Args:
        model: A Sequential or functional Keras model. It is only read.
        names: Names of the layers to remove (a single string is taken as one
            name). Repeated names count once.

    Returns:
        The new model, uncompiled, with the model's name and the kept layers'
        names.

    Raises:
        SpecError: If a name is not a layer of ``model`` (the message lists the
            layers it has), names an ``InputLayer``, a layer that produces an
            output of the model, a layer with other than one input tensor (such
            as a merge layer) or one output tensor, or a layer whose removal
            breaks the graph (the rebuilt graph fails shape inference; the
            message names the removed layers, the layer that failed and the
            Keras error). Also if ``model`` is a subclassed model, whose layer
            graph is unknown.
    """
    import keras

    wanted = _unique([names] if isinstance(names, str) else list(names))
    facts = _Facts(model)
    problems = [(FIELD, problem) for name in wanted if (problem := facts.why_not(name))]
    if problems:
        raise SpecError.one(*problems[0]) if len(problems) == 1 else SpecError(problems)
    removed = {id(facts.by_name[name]) for name in wanted}
    layers = facts.layers

    if isinstance(model, keras.Sequential) and not facts.graph:
        kept = [_fresh(layer) for layer in layers if id(layer) not in removed]
        return keras.Sequential(kept, name=model.name, trainable=model.trainable)

    fresh, tensors = _rebuild(model, removed)
    broken = f"removing {_quoted(wanted)} breaks the graph of model {model.name!r}"
    if isinstance(model, keras.Sequential):
        kept = [fresh[id(layer)] for layer in layers if id(layer) not in removed]
        try:
            return keras.Sequential(kept, name=model.name, trainable=model.trainable)
        except Exception as exc:  # Keras raises ValueError, TypeError, ... on a bad graph
            raise SpecError.one(FIELD, f"{broken}: {_error_text(exc)}") from exc

    def new_tensor(tensor: Any) -> Any:
        return tensors[id(tensor)]

    try:
        new_model = keras.Model(
            inputs=keras.tree.map_structure(new_tensor, model.input),
            outputs=keras.tree.map_structure(new_tensor, model.output),
            name=model.name,
        )
    except Exception as exc:  # Keras raises ValueError, TypeError, ... on a bad graph
        raise SpecError.one(FIELD, f"{broken}: {_error_text(exc)}") from exc
    new_model.trainable = model.trainable
    return new_model


def layers_with_prefix(model: keras.Model, prefix: str) -> list[str]:
    """Names of the model's layers, in model order, that start with ``prefix``.

    Args:
        model: A Keras model.
        prefix: The start of the names wanted, e.g. ``"block_2"``.

    Returns:
        The matching names, in the order of ``model.layers``, without
        ``InputLayer`` s. Empty if none matches.
    """
    import keras

    return [
        layer.name
        for layer in model.layers
        if layer.name.startswith(prefix) and not isinstance(layer, keras.layers.InputLayer)
    ]


def removable_layers(model: keras.Model) -> list[str]:
    """Names of the layers that can be removed one at a time, in model order.

    A layer is removable when it is not an ``InputLayer``, does not produce an
    output of the model, and takes one input tensor and gives one output tensor
    at each of its calls. Whether the graph still infers its shapes without it
    is only known by removing it: :func:`remove_layers` checks that.

    Args:
        model: A Sequential or functional Keras model.

    Returns:
        The names of the structurally removable layers.

    Raises:
        SpecError: If ``model`` is a subclassed model, whose layer graph is unknown.
    """
    facts = _Facts(model)
    return [layer.name for layer in facts.layers if not facts.why_not(layer.name)]


# -- graph reading ---------------------------------------------------------------------------


def _unique(names: list[str]) -> list[str]:
    """``names`` without repeats, first occurrence kept."""
    return list(dict.fromkeys(names))


def _quoted(names: Iterable[str]) -> str:
    """``'a'``, or ``'a', 'b'`` as layers: for messages."""
    names = list(names)
    label = "layer" if len(names) == 1 else "layers"
    return f"{label} " + ", ".join(repr(name) for name in names)


def _error_text(exc: BaseException) -> str:
    """A Keras error's text on one line, without the terminal colour codes Keras adds."""
    lines = (line.strip() for line in _ANSI.sub("", str(exc)).splitlines())
    return " ".join(line for line in lines if line) or type(exc).__name__


def _is_graph(model: keras.Model) -> bool:
    """True if ``model`` has a symbolic graph (functional, or a built Sequential)."""
    try:
        return bool(model.outputs)
    except AttributeError:  # an unbuilt Sequential or a subclassed model
        return False


def _all_layers(model: keras.Model) -> list[keras.Layer]:
    """The model's layers, InputLayers included (a Sequential hides its own).

    Raises:
        SpecError: If ``model`` is a subclassed model.
    """
    import keras

    if isinstance(model, keras.Sequential):
        inputs = [_producer(x) for x in model.inputs] if _is_graph(model) else []
        return [*inputs, *model.layers]
    if not _is_graph(model):
        raise SpecError.one(
            FIELD,
            f"model {model.name!r} is a subclassed {type(model).__name__}: its layer graph is "
            "unknown, so layers cannot be removed from it (use a Sequential or functional model)",
        )
    return list(model.layers)


def _producer(tensor: Any) -> Any:
    """The operation (layer) whose call produced the symbolic ``tensor``."""
    return tensor._keras_history.operation


def _node(tensor: Any) -> Any:
    """The call (Keras ``Node``) that produced the symbolic ``tensor``."""
    operation, node_index, _ = tensor._keras_history
    return operation._inbound_nodes[node_index]


def _nodes(model: keras.Model) -> list[Any]:
    """The calls of ``model``'s graph, from its inputs to its outputs, in run order.

    Only the calls that lead to the model's outputs count: a layer also used in
    another model has calls there that are not part of this graph.
    """
    order: list[Any] = []
    done: set[int] = set()
    stack: list[tuple[Any, bool]] = [(_node(x), False) for x in reversed(model.outputs)]
    while stack:
        node, inputs_done = stack.pop()
        if id(node) in done:
            continue
        if inputs_done:
            done.add(id(node))
            order.append(node)
            continue
        stack.append((node, True))
        stack.extend((_node(x), False) for x in reversed(node.input_tensors))
    return order


class _Facts:
    """What decides whether a layer of a model can be removed, read once.

    Args:
        model: A Sequential or functional Keras model.

    Raises:
        SpecError: If ``model`` is a subclassed model.
    """

    def __init__(self, model: keras.Model) -> None:
        self.model = model
        self.layers = _all_layers(model)
        self.by_name = {layer.name: layer for layer in self.layers}
        self.graph = _is_graph(model)
        # (input tensors, output tensors) of each call, by id() of the layer called.
        self.calls: dict[int, list[tuple[int, int]]] = {}
        if self.graph:
            self.outputs = {_producer(x).name for x in model.outputs}
            for node in _nodes(model):
                counts = (len(node.input_tensors), len(node.output_tensors))
                self.calls.setdefault(id(node.operation), []).append(counts)
        else:  # an unbuilt Sequential: every layer takes the one tensor before it
            self.outputs = {model.layers[-1].name} if model.layers else set()

    def why_not(self, name: str) -> str | None:
        """Why layer ``name`` cannot be removed, or None if it can.

        Args:
            name: A layer name.

        Returns:
            A message that names the layer and says why, or None.
        """
        import keras

        model, layer = self.model, self.by_name.get(name)
        if layer is None:
            have = ", ".join(repr(known) for known in self.by_name) or "none"
            return f"layer {name!r} is not in model {model.name!r}; its layers are: {have}"
        if isinstance(layer, keras.layers.InputLayer):
            return f"layer {name!r} is an InputLayer: the model's inputs cannot be removed"
        if name in self.outputs:
            return (
                f"layer {name!r} produces an output of model {model.name!r}: an output layer "
                "cannot be removed"
            )
        for n_in, n_out in self.calls.get(id(layer), []):
            if n_in != 1:
                kind = " (a merge layer)" if n_in > 1 else ""
                return (
                    f"layer {name!r}{kind} takes {n_in} input tensors: only a layer with "
                    "exactly one input tensor can be removed (its consumers are fed that tensor)"
                )
            if n_out != 1:
                return (
                    f"layer {name!r} gives {n_out} output tensors: only a layer with exactly "
                    "one output tensor can be removed"
                )
        return None


# -- rebuilding ------------------------------------------------------------------------------


def _fresh(operation: Any) -> Any:
    """A new copy of ``operation`` from its config: same name, new weights."""
    return operation.__class__.from_config(operation.get_config())


def _rebuild(model: keras.Model, removed: set[int]) -> tuple[dict[int, Any], dict[int, Any]]:
    """Run ``model``'s graph again with fresh layers, skipping the ``removed`` ones.

    Args:
        model: A model with a symbolic graph.
        removed: ``id()`` of the layers to remove; each was checked to take one
            input tensor and give one output tensor.

    Returns:
        ``(fresh, tensors)``: the fresh copy of each kept operation, by ``id()`` of
        the original, and the new symbolic tensor for each of the model's
        tensors, by ``id()`` of the original.

    Raises:
        SpecError: If a kept layer fails on the inputs it gets once the removed
            layers are gone; names the removed layers upstream of it.
    """
    import keras

    fresh: dict[int, Any] = {}
    tensors: dict[int, Any] = {}
    # Which removed layers each tensor depends on: names the culprits of a failure.
    upstream: dict[int, frozenset[str]] = {}

    for node in _nodes(model):
        operation = node.operation
        sources = node.input_tensors
        before = frozenset().union(*(upstream.get(id(x), frozenset()) for x in sources))
        if not sources:  # an InputLayer
            fresh[id(operation)] = new_input = _fresh(operation)
            tensors[id(node.output_tensors[0])] = new_input.output
            continue
        if id(operation) in removed:
            (source,), (output,) = sources, node.output_tensors
            tensors[id(output)] = tensors[id(source)]
            upstream[id(output)] = before | {operation.name}
            continue
        if id(operation) not in fresh:
            fresh[id(operation)] = _fresh(operation)
        args, kwargs = node.arguments.fill_in(tensors)
        try:
            outputs = fresh[id(operation)](*args, **kwargs)
        except Exception as exc:  # Keras raises ValueError, TypeError, ... on bad shapes
            if not before:
                raise  # not caused by a removal: the model cannot be rebuilt at all
            raise SpecError.one(
                FIELD,
                f"removing {_quoted(sorted(before))} breaks the graph of model {model.name!r}: "
                f"layer {operation.name!r} ({type(operation).__name__}) fails on its new "
                f"input(s): {_error_text(exc)}",
            ) from exc
        for old, new in zip(node.output_tensors, keras.tree.flatten(outputs), strict=True):
            tensors[id(old)] = new
            upstream[id(old)] = before
    return fresh, tensors
