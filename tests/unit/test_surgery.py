"""Keras layer surgery for ablation studies, on tiny models."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402

from maggy_core.ablation.surgery import (  # noqa: E402
    layers_with_prefix,
    removable_layers,
    remove_layers,
)
from maggy_core.exceptions import SpecError  # noqa: E402

L = keras.layers


def sequential() -> keras.Sequential:
    """inp(8) -> dense_1(32) -> dense_2(64) -> dense_3(4)."""
    return keras.Sequential(
        [
            keras.Input((8,), name="inp"),
            L.Dense(32, activation="relu", name="dense_1"),
            L.Dense(64, activation="relu", name="dense_2"),
            L.Dense(4, name="dense_3"),
        ],
        name="seq",
    )


def residual() -> keras.Model:
    """block_input(8) -> stem(16) -> [block_1_a -> block_1_b] + stem -> merge_1 -> head(1)."""
    x = keras.Input((8,), name="block_input")
    stem = L.Dense(16, activation="relu", name="stem")(x)
    branch = L.Dense(24, activation="relu", name="block_1_a")(stem)
    branch = L.Dense(16, name="block_1_b")(branch)
    merged = L.Add(name="merge_1")([stem, branch])
    return keras.Model(x, L.Dense(1, name="head")(merged), name="res")


def two_inputs() -> keras.Model:
    """Dict inputs a(3), b(5), each through a Dense, concatenated, one Dense head."""
    a = keras.Input((3,), name="a")
    b = keras.Input((5,), name="b")
    joined = L.Concatenate(name="cat")([L.Dense(4, name="pa")(a), L.Dense(6, name="pb")(b)])
    return keras.Model({"a": a, "b": b}, L.Dense(2, name="out")(joined), name="two")


def names(model: keras.Model) -> list[str]:
    return [layer.name for layer in model.layers]


def error(model: keras.Model, remove: list[str]) -> SpecError:
    with pytest.raises(SpecError) as caught:
        remove_layers(model, remove)
    return caught.value


# -- removal -------------------------------------------------------------------------------


def test_sequential_removal_reinfers_shapes_and_trains() -> None:
    original = sequential()
    original.compile(optimizer="adam", loss="mse")

    smaller = remove_layers(original, ["dense_2"])

    assert isinstance(smaller, keras.Sequential)
    assert smaller.name == "seq"
    assert names(smaller) == ["dense_1", "dense_3"]
    assert tuple(smaller.get_layer("dense_3").kernel.shape) == (32, 4)
    assert not smaller.compiled
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(16, 8)), rng.normal(size=(16, 4))
    smaller.compile(optimizer="adam", loss="mse")
    history = smaller.fit(x, y, epochs=1, batch_size=8, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert smaller.predict(x[:3], verbose=0).shape == (3, 4)


def test_single_string_is_one_name() -> None:
    assert names(remove_layers(sequential(), "dense_2")) == ["dense_1", "dense_3"]


def test_layer_inside_residual_branch() -> None:
    smaller = remove_layers(residual(), ["block_1_a"])

    assert not isinstance(smaller, keras.Sequential)
    assert smaller.name == "res"
    assert names(smaller) == ["block_input", "stem", "block_1_b", "merge_1", "head"]
    assert tuple(smaller.get_layer("block_1_b").kernel.shape) == (16, 16)
    assert smaller.predict(np.ones((2, 8)), verbose=0).shape == (2, 1)


def test_group_of_adjacent_layers() -> None:
    smaller = remove_layers(residual(), ["block_1_a", "block_1_b"])
    assert names(smaller) == ["block_input", "stem", "merge_1", "head"]
    # Both inputs of the Add are now the stem's output.
    assert smaller.get_layer("merge_1").input[0] is smaller.get_layer("merge_1").input[1]

    flat = remove_layers(sequential(), ["dense_1", "dense_2"])
    assert names(flat) == ["dense_3"]
    assert tuple(flat.get_layer("dense_3").kernel.shape) == (8, 4)


def test_group_by_prefix_and_later_removals() -> None:
    model = residual()
    group = layers_with_prefix(model, "block_1")
    assert group == ["block_1_a", "block_1_b"]

    first = remove_layers(model, group[:1])
    assert layers_with_prefix(first, "block_1") == ["block_1_b"]
    second = remove_layers(first, layers_with_prefix(first, "block_1"))
    assert names(second) == ["block_input", "stem", "merge_1", "head"]
    assert second.name == "res"


def test_prefix_helper_keeps_order_and_skips_input_layers() -> None:
    model = residual()
    assert "block_input" in names(model)  # an InputLayer that matches the prefix
    assert layers_with_prefix(model, "block") == ["block_1_a", "block_1_b"]
    assert layers_with_prefix(sequential(), "dense") == ["dense_1", "dense_2", "dense_3"]
    assert layers_with_prefix(model, "nothing") == []


def test_multi_input_model_keeps_its_input_structure() -> None:
    smaller = remove_layers(two_inputs(), ["pa"])

    assert set(smaller.input) == {"a", "b"}
    assert tuple(smaller.get_layer("out").kernel.shape) == (3 + 6, 2)
    out = smaller.predict({"a": np.ones((2, 3)), "b": np.ones((2, 5))}, verbose=0)
    assert out.shape == (2, 2)


def test_shared_layer_is_bypassed_at_every_call() -> None:
    x = keras.Input((8,), name="x")
    shared = L.Dense(8, name="shared")
    model = keras.Model(x, L.Dense(1, name="out")(shared(shared(x))), name="shared_model")

    smaller = remove_layers(model, ["shared"])

    assert names(smaller) == ["x", "out"]
    assert smaller.get_layer("out").input is smaller.input


def test_nested_model_is_one_layer() -> None:
    x = keras.Input((8,), name="x")
    inner = keras.Sequential([keras.Input((8,)), L.Dense(5, name="inner_dense")], name="inner")
    after = L.Dense(3, name="after")(inner(x))
    model = keras.Model(x, L.Dense(1, name="out")(after), name="outer")

    without_inner = remove_layers(model, ["inner"])
    assert names(without_inner) == ["x", "after", "out"]
    assert tuple(without_inner.get_layer("after").kernel.shape) == (8, 3)

    kept_inner = remove_layers(model, ["after"]).get_layer("inner")
    assert kept_inner is not inner
    assert kept_inner.layers[0].kernel is not inner.layers[0].kernel


def test_unbuilt_sequential_infers_shapes_on_first_call() -> None:
    model = keras.Sequential([L.Dense(32, name="a"), L.Dense(64, name="b"), L.Dense(2, name="c")])

    smaller = remove_layers(model, ["b"])

    assert names(smaller) == ["a", "c"]
    assert smaller(np.ones((1, 6), dtype="float32")).shape == (1, 2)
    assert tuple(smaller.get_layer("c").kernel.shape) == (32, 2)


def test_kept_layers_get_fresh_weights() -> None:
    keras.utils.set_random_seed(0)
    original = residual()
    smaller = remove_layers(original, ["block_1_a"])

    for name in ("stem", "block_1_b", "head"):
        old_layer, new_layer = original.get_layer(name), smaller.get_layer(name)
        assert new_layer is not old_layer
        assert len(new_layer.weights) == len(old_layer.weights) == 2
        for old, new in zip(old_layer.weights, new_layer.weights, strict=True):
            assert new is not old
            assert new.value is not old.value
    stem_old, stem_new = original.get_layer("stem"), smaller.get_layer("stem")
    before = stem_old.kernel.numpy().copy()
    assert not np.allclose(stem_new.kernel.numpy(), before)  # a new random init
    stem_new.kernel.assign(np.zeros(stem_new.kernel.shape))
    np.testing.assert_array_equal(stem_old.kernel.numpy(), before)


def test_original_model_is_unchanged_and_usable() -> None:
    original = residual()
    x = np.random.default_rng(1).normal(size=(4, 8))
    prediction = original.predict(x, verbose=0)
    layer_names = names(original)
    calls = {layer.name: len(layer._inbound_nodes) for layer in original.layers}
    weights = [w.numpy().copy() for w in original.weights]

    remove_layers(original, ["block_1_a", "block_1_b"])

    assert names(original) == layer_names
    assert {layer.name: len(layer._inbound_nodes) for layer in original.layers} == calls
    for old, now in zip(weights, original.weights, strict=True):
        np.testing.assert_array_equal(old, now.numpy())
    np.testing.assert_allclose(original.predict(x, verbose=0), prediction)
    original.compile(optimizer="sgd", loss="mse")
    original.fit(x, np.zeros((4, 1)), epochs=1, verbose=0)


def test_removable_layers() -> None:
    assert removable_layers(residual()) == ["stem", "block_1_a", "block_1_b"]
    assert removable_layers(sequential()) == ["dense_1", "dense_2"]
    assert removable_layers(two_inputs()) == ["pa", "pb"]


# -- errors --------------------------------------------------------------------------------


def test_unknown_name_lists_the_layers() -> None:
    problem = error(residual(), ["dense_9"])
    text = str(problem)
    assert problem.problems[0][0] == "ablation.layers"
    assert "'dense_9' is not in model 'res'" in text
    for name in ("'stem'", "'block_1_a'", "'merge_1'", "'head'"):
        assert name in text


def test_input_layer_is_refused() -> None:
    assert "layer 'block_input' is an InputLayer" in str(error(residual(), ["block_input"]))
    assert "layer 'inp' is an InputLayer" in str(error(sequential(), ["inp"]))


def test_output_layer_is_refused() -> None:
    assert "layer 'head' produces an output of model 'res'" in str(error(residual(), ["head"]))
    assert "layer 'dense_3' produces an output" in str(error(sequential(), ["dense_3"]))


def test_merge_layer_is_refused() -> None:
    text = str(error(residual(), ["merge_1"]))
    assert "layer 'merge_1' (a merge layer) takes 2 input tensors" in text
    assert "layer 'cat' (a merge layer) takes 2 input tensors" in str(error(two_inputs(), ["cat"]))


def test_layer_with_several_outputs_is_refused() -> None:
    x = keras.Input((5, 3), name="x")
    sequence, _, _ = L.LSTM(4, return_sequences=True, return_state=True, name="lstm")(x)
    model = keras.Model(x, L.Dense(1, name="out")(L.Flatten(name="flat")(sequence)))
    assert "layer 'lstm' gives 3 output tensors" in str(error(model, ["lstm"]))


def test_removal_that_breaks_shape_inference_names_the_layers() -> None:
    problem = error(residual(), ["stem"])  # the Add gets (8,) and (16,)
    text = str(problem)
    assert "removing layer 'stem' breaks the graph of model 'res'" in text
    assert "layer 'merge_1' (Add) fails on its new input(s)" in text
    cause = problem.__cause__
    assert cause is not None
    first_line = re.sub(r"\x1b\[[0-9;]*m", "", str(cause)).strip().splitlines()[0].strip()
    assert first_line in text


def test_sequential_removal_that_breaks_shape_inference() -> None:
    model = keras.Sequential(
        [keras.Input((8,)), L.Dense(6, name="d6"), L.Reshape((2, 3), name="rs"), L.Dense(1)],
        name="reshaping",
    )
    text = str(error(model, ["d6"]))
    assert "removing layer 'd6' breaks the graph of model 'reshaping'" in text
    assert "layer 'rs' (Reshape) fails" in text
    assert "target_shape=(2, 3)" in text  # the Keras error's text


def test_all_problems_reported_at_once() -> None:
    problem = error(residual(), ["nope", "merge_1"])
    assert [field for field, _ in problem.problems] == ["ablation.layers"] * 2
    assert "'nope' is not in model" in str(problem)
    assert "'merge_1' (a merge layer)" in str(problem)


def test_subclassed_model_is_refused() -> None:
    class Custom(keras.Model):
        def __init__(self) -> None:
            super().__init__(name="custom")
            self.dense = L.Dense(2, name="dense")

        def call(self, inputs):
            return self.dense(inputs)

    text = str(error(Custom(), ["dense"]))
    assert "model 'custom' is a subclassed Custom" in text


def test_module_does_not_import_keras() -> None:
    code = (
        "import sys, maggy_core.ablation.surgery\n"
        "print('keras' in sys.modules, 'tensorflow' in sys.modules)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.split() == ["False", "False"]
