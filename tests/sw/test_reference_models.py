"""The IR reference executor reproduces onnxruntime on every shipped example model."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from sw_models import EXACT_MODELS, WEIGHT_ONLY_MODELS, digits_inputs, model_path, ort_outputs

from trilobit.sw.legalise import legalise
from trilobit.sw.onnx_import import import_model
from trilobit.sw.reference import ReferenceExecutor


def _run(name: str):
    feeds, labels = digits_inputs(name)
    graph = import_model(model_path(name))
    ours = ReferenceExecutor(graph).run(feeds)
    theirs = ort_outputs(name, feeds)
    return graph, list(ours.values()), theirs, labels


@pytest.mark.parametrize("name", EXACT_MODELS)
def test_reference_outputs_equal_onnxruntime_exactly(name):
    graph, ours, theirs, labels = _run(name)
    assert [o.shape for o in ours] == [t.shape for t in theirs]
    assert [o.dtype for o in ours] == [t.dtype for t in theirs]
    for o, t in zip(ours, theirs, strict=True):
        np.testing.assert_array_equal(o, t)
    assert (ours[0].argmax(1) == labels).mean() == (theirs[0].argmax(1) == labels).mean()


@pytest.mark.parametrize("name", EXACT_MODELS)
def test_quantized_models_put_their_products_on_an_engine(name):
    graph = legalise(import_model(model_path(name)))
    engines = {n.engine for n in graph.nodes if n.kind in ("QMatMul", "QConv")}
    assert engines and engines <= {"tlmm", "bitserial"}
    if name == "mlp_ternary":
        assert engines == {"tlmm"}


@pytest.mark.parametrize("name", WEIGHT_ONLY_MODELS)
def test_weight_only_models_are_faithful_to_onnxruntime(name):
    graph, ours, theirs, labels = _run(name)
    assert {n.kind for n in graph.nodes} >= {"WeightOnlyMatMul"}
    o, t = ours[0], theirs[0]
    assert o.shape == t.shape and o.dtype == t.dtype
    relative = np.linalg.norm(o - t) / np.linalg.norm(t)
    assert relative <= 0.02, relative
    np.testing.assert_array_equal(o.argmax(1), t.argmax(1))


@pytest.mark.parametrize("dtype", [onnx.TensorProto.UINT8, onnx.TensorProto.INT8])
def test_qdq_add_with_a_constant_operand_matches_onnxruntime(rng, dtype):
    """DQ(a) + DQ(b) -> Q imports as QAdd; onnxruntime fuses the same into QLinearAdd."""
    from onnx import helper, numpy_helper

    np_t = helper.tensor_dtype_to_np_dtype(dtype)
    lo, hi = (0, 255) if dtype == onnx.TensorProto.UINT8 else (-128, 127)
    b = rng.integers(lo, hi + 1, (3, 40)).astype(np_t)
    inits = [numpy_helper.from_array(np.array(0.037, np.float32), "as"),
             numpy_helper.from_array(np.array(lo + 100, np_t), "az"),
             numpy_helper.from_array(b, "b"),
             numpy_helper.from_array(np.array(0.021, np.float32), "bs"),
             numpy_helper.from_array(np.array(lo + 7, np_t), "bz"),
             numpy_helper.from_array(np.array(0.05, np.float32), "ys"),
             numpy_helper.from_array(np.array(lo + 60, np_t), "yz")]
    nodes = [helper.make_node("DequantizeLinear", ["a", "as", "az"], ["af"]),
             helper.make_node("DequantizeLinear", ["b", "bs", "bz"], ["bf"]),
             helper.make_node("Add", ["af", "bf"], ["s"], name="add"),
             helper.make_node("QuantizeLinear", ["s", "ys", "yz"], ["y"])]
    graph = helper.make_graph(nodes, "add", [helper.make_tensor_value_info("a", dtype, [3, 40])],
                              [helper.make_tensor_value_info("y", dtype, [3, 40])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    model.ir_version = 10
    imported = import_model(model)
    assert [n.kind for n in imported.nodes] == ["QAdd"]
    a = rng.integers(lo, hi + 1, (3, 40)).astype(np_t)
    a[0, :2] = lo, hi
    theirs = ort.InferenceSession(model.SerializeToString()).run(None, {"a": a})[0]
    np.testing.assert_array_equal(ReferenceExecutor(imported).run({"a": a})["y"], theirs)


def test_fma_f32_rounds_once_including_double_rounding_midpoints(rng):
    from fractions import Fraction

    from trilobit.sw.reference import fma_f32

    x = rng.normal(size=400).astype(np.float32)
    y = rng.normal(size=400).astype(np.float32)
    z = rng.normal(size=400).astype(np.float32)
    # Crafted: x*y lands half an ulp above a float32 value plus a tiny z (double rounding).
    x[:3] = np.float32(1 + 2**-12)
    y[:3] = np.float32(1 + 2**-12)
    z[:3] = np.float32([2**-60, -(2**-60), 0.0])
    got = fma_f32(x, y, z)
    for xi, yi, zi, gi in zip(x, y, z, got, strict=True):
        exact = Fraction(float(xi)) * Fraction(float(yi)) + Fraction(float(zi))
        lo = np.float32(float(exact))
        candidates = [lo, np.nextafter(lo, np.float32(np.inf)),
                      np.nextafter(lo, np.float32(-np.inf))]
        best = min(candidates, key=lambda c: (abs(Fraction(float(c)) - exact),
                                              int(np.float32(c).view(np.uint32)) & 1))
        assert gi == best, (xi, yi, zi)


@pytest.mark.parametrize("dtype", [onnx.TensorProto.UINT8, onnx.TensorProto.INT8])
def test_random_qlinear_add_scales_match_onnxruntime(rng, dtype):
    from onnx import helper, numpy_helper

    from trilobit.sw.ir import QAdd
    from trilobit.sw.reference import quantized_add

    np_t = helper.tensor_dtype_to_np_dtype(dtype)
    lo, hi = (0, 255) if dtype == onnx.TensorProto.UINT8 else (-128, 127)
    for _ in range(25):
        sa, sb, sc = (float(np.float32(rng.uniform(0.001, 0.1))) for _ in range(3))
        za, zb, zc = (int(rng.integers(lo, hi + 1)) for _ in range(3))
        a = rng.integers(lo, hi + 1, (3, 50)).astype(np_t)
        b = rng.integers(lo, hi + 1, (3, 50)).astype(np_t)
        inits = [numpy_helper.from_array(np.array(v, t), n) for v, t, n in (
            (sa, np.float32, "as"), (za, np_t, "az"), (sb, np.float32, "bs"), (zb, np_t, "bz"),
            (sc, np.float32, "ys"), (zc, np_t, "yz"))]
        node = helper.make_node("QLinearAdd", ["a", "as", "az", "b", "bs", "bz", "ys", "yz"],
                                ["y"], domain="com.microsoft")
        graph = helper.make_graph(
            [node], "qadd", [helper.make_tensor_value_info(n, dtype, [3, 50]) for n in "ab"],
            [helper.make_tensor_value_info("y", dtype, [3, 50])], inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21),
                                                        helper.make_opsetid("com.microsoft", 1)])
        model.ir_version = 10
        theirs = ort.InferenceSession(model.SerializeToString()).run(None, {"a": a, "b": b})[0]
        spec = QAdd("add", ["a", "b"], ["y"], a_scale=sa, a_zero_point=za, b_scale=sb,
                    b_zero_point=zb, y_scale=sc, y_zero_point=zc,
                    dtype="uint8" if lo == 0 else "int8")
        np.testing.assert_array_equal(quantized_add(a, b, spec), theirs)
