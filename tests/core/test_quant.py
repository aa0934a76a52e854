"""Quantize/DequantizeLinear and DynamicQuantizeLinear against onnx's reference and onnxruntime."""

import numpy as np
import onnxruntime as ort
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator
from onnx_helpers import append_dequantize, run_ort, run_reference, single_node_model, tensor

from trilobit.dtypes import get_dtype
from trilobit.errors import QuantizationError
from trilobit.quant import (
    choose_qparams,
    dequantize_linear,
    dynamic_quantize_linear,
    quantize_linear,
)

# (our name, ONNX element type, opset, onnxruntime can run it)
TYPES = [
    ("int8", TensorProto.INT8, 21, True),
    ("uint8", TensorProto.UINT8, 21, True),
    ("int4", TensorProto.INT4, 21, True),
    ("uint4", TensorProto.UINT4, 21, True),
    ("int2", TensorProto.INT2, 25, True),
    ("uint2", TensorProto.UINT2, 25, True),
    ("fp4_e2m1", TensorProto.FLOAT4E2M1, 23, False),  # onnxruntime 1.32 has no kernel
    ("fp8_e4m3", TensorProto.FLOAT8E4M3FN, 21, True),
]

# (description, x shape, axis, block_size)
LAYOUTS = [
    ("per-tensor", (6, 10), None, 0),
    ("per-axis-0", (6, 10), 0, 0),
    ("per-axis-1", (6, 10), 1, 0),
    ("blocked-axis-1", (6, 12), 1, 4),
    ("blocked-ragged", (6, 10), 1, 4),  # last block holds 2 elements
    ("blocked-axis-0", (8, 5), 0, 2),
]


def _params(name, shape, axis, block_size, rng):
    dt = get_dtype(name)
    if axis is None:
        sshape = ()
    elif block_size:
        sshape = tuple(-(-d // block_size) if i == axis else d for i, d in enumerate(shape))
    else:
        sshape = (shape[axis],)
    scale = rng.uniform(0.05, 0.6, size=sshape).astype(np.float32)
    if dt.kind in ("int", "uint"):
        zp = rng.integers(int(dt.min), int(dt.max) + 1, size=sshape)
    else:
        zp = np.zeros(sshape)
    return scale, zp


def _attrs(axis, block_size):
    attrs = {}
    if axis is not None:
        attrs["axis"] = axis
    if block_size:
        attrs["block_size"] = block_size
    return attrs


def _ours_as_float(name, q):
    dt = get_dtype(name)
    return q.astype(np.float64) if dt.kind in ("int", "uint") else dt.decode(q)


@pytest.mark.parametrize("layout", LAYOUTS, ids=[lay[0] for lay in LAYOUTS])
@pytest.mark.parametrize("name,elem_type,opset,ort_ok", TYPES, ids=[t[0] for t in TYPES])
def test_quantize_linear_matches_onnx(name, elem_type, opset, ort_ok, layout, rng):
    _, shape, axis, block_size = layout
    scale, zp = _params(name, shape, axis, block_size, rng)
    x = (rng.standard_normal(shape) * 4).astype(np.float32)
    x.flat[:6] = [0.0, -0.0, 1e6, -1e6, 0.5 * scale.flat[0], -1.5 * scale.flat[0]]
    ours = quantize_linear(x, scale, zp, dtype=name, axis=1 if axis is None else axis,
                           block_size=block_size)
    model = single_node_model(
        "QuantizeLinear", {"x": x, "s": scale}, {"z": tensor("z", elem_type, zp)},
        elem_type, shape, opset=opset, **_attrs(axis, block_size),
    )
    ref = run_reference(model, {"x": x, "s": scale}).astype(np.float64)
    got = _ours_as_float(name, ours)
    np.testing.assert_array_equal(got, ref)
    np.testing.assert_array_equal(np.signbit(got), np.signbit(ref))  # float4/8 keep -0
    if ort_ok:
        model = append_dequantize(model, elem_type, shape)
        np.testing.assert_array_equal(got, run_ort(model, {"x": x, "s": scale}))


@pytest.mark.parametrize("layout", LAYOUTS, ids=[lay[0] for lay in LAYOUTS])
@pytest.mark.parametrize("name,elem_type,opset,ort_ok", TYPES, ids=[t[0] for t in TYPES])
def test_dequantize_linear_matches_onnx(name, elem_type, opset, ort_ok, layout, rng):
    _, shape, axis, block_size = layout
    dt = get_dtype(name)
    scale, zp = _params(name, shape, axis, block_size, rng)
    codes = rng.choice(dt.valid_codes, size=shape)
    finite = np.isfinite(dt.values[codes])
    codes = np.where(finite, codes, 0)
    q = dt.decode(codes) if dt.kind in ("int", "uint") else codes
    ours = dequantize_linear(q.astype(np.int32) if dt.kind in ("int", "uint") else codes, scale,
                             zp if dt.kind in ("int", "uint") else None, dtype=name,
                             axis=1 if axis is None else axis, block_size=block_size)
    model = single_node_model(
        "DequantizeLinear", {"s": scale},
        {"q": tensor("q", elem_type, dt.decode(codes)), "z": tensor("z", elem_type, zp)},
        TensorProto.FLOAT, shape, opset=opset, **_attrs(axis, block_size),
    )
    # DequantizeLinear inputs are (x, scale, zero_point): put q first
    node = model.graph.node[0]
    node.input[:] = ["q", "s", "z"]
    ref = run_reference(model, {"s": scale})
    np.testing.assert_array_equal(ours, ref)
    assert ours.dtype == np.float32
    if ort_ok:
        np.testing.assert_array_equal(ours, run_ort(model, {"s": scale}))


@pytest.mark.parametrize("scale_mul", [1.0, 1e-3, 37.0])
def test_dynamic_quantize_linear_matches_onnx(scale_mul, rng):
    x = (rng.standard_normal((7, 33)) * scale_mul).astype(np.float32)
    model = single_node_model("DynamicQuantizeLinear", {"x": x}, {}, TensorProto.UINT8, x.shape,
                              opset=21)
    node = model.graph.node[0]
    node.output[:] = ["y", "y_scale", "y_zero_point"]
    model.graph.output.extend([
        helper.make_tensor_value_info("y_scale", TensorProto.FLOAT, []),
        helper.make_tensor_value_info("y_zero_point", TensorProto.UINT8, []),
    ])
    y, s, z = dynamic_quantize_linear(x)
    ref = ReferenceEvaluator(model).run(None, {"x": x})
    got = ort.InferenceSession(model.SerializeToString(),
                               providers=["CPUExecutionProvider"]).run(None, {"x": x})
    for other in (ref, got):
        np.testing.assert_array_equal(y, other[0])
        assert s == other[1] and z == other[2]


@settings(max_examples=100, deadline=None)
@given(
    name=st.sampled_from(["int8", "uint8", "int4", "uint4", "int2"]),
    symmetric=st.booleans(),
    seed=st.integers(0, 2**31),
)
def test_quantize_dequantize_error_is_half_a_step_inside_the_range(name, symmetric, seed):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((4, 16)) * rng.uniform(0.1, 10)).astype(np.float32)
    scale, zp = choose_qparams(x, name, symmetric=symmetric, axis=0)
    q = quantize_linear(x, scale, zp, dtype=name, axis=0)
    dt = get_dtype(name)
    assert q.min() >= dt.min and q.max() <= dt.max
    back = dequantize_linear(q, scale, zp, dtype=name, axis=0)
    inside = (q > dt.min) & (q < dt.max)
    err = np.abs(back - x)[inside]
    assert (err <= scale[:, None].repeat(16, 1)[inside] * 0.5001 + 1e-6).all()


def test_quantize_saturates():
    q = quantize_linear(np.array([-1e9, 1e9], np.float32), np.float32(1.0), 3, dtype="uint4")
    np.testing.assert_array_equal(q, [0, 15])


def test_quantization_errors_name_the_problem():
    x = np.zeros((4, 10), np.float32)
    with pytest.raises(QuantizationError, match=r"must have shape \(4, 3\)"):
        quantize_linear(x, np.ones((4, 2), np.float32), dtype="int4", axis=1, block_size=4)
    with pytest.raises(QuantizationError, match="per-axis scale must be 1-D of length 10"):
        quantize_linear(x, np.ones(4, np.float32), axis=1)
    with pytest.raises(QuantizationError, match="non-zero"):
        quantize_linear(x, np.float32(0.0))
    with pytest.raises(QuantizationError, match="exceed int4"):
        dequantize_linear(np.array([9]), np.float32(1.0), dtype="int4")
