"""Requantization: `ort` mode bit-identical to onnxruntime, `dyadic` within one unit of it."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto
from onnx_helpers import run_ort, single_node_model, tensor

from trilobit.errors import QuantizationError
from trilobit.gemm import gemm_int
from trilobit.requant import (
    RequantParams,
    dyadic_from_scale,
    ort_multiplier,
    requantize,
    requantize_dyadic,
    requantize_ort,
)

ELEM = {"int8": TensorProto.INT8, "uint8": TensorProto.UINT8}
NP = {"int8": np.int8, "uint8": np.uint8}


def _range(name):
    return (-128, 127) if name == "int8" else (0, 255)


# The type combinations onnxruntime 1.32 has QLinearMatMul kernels for (output type = a's).
ORT_QLINEARMATMUL = [("uint8", "uint8", "uint8"), ("uint8", "int8", "uint8"),
                     ("int8", "int8", "int8")]


@pytest.mark.parametrize("a_type,b_type,y_type", ORT_QLINEARMATMUL)
@pytest.mark.parametrize("per_column", [False, True])
def test_ort_mode_is_bit_identical_to_qlinearmatmul(a_type, b_type, y_type, per_column, rng):
    M, K, N = 9, 301, 17
    a = rng.integers(*_range(a_type), size=(M, K), endpoint=True).astype(NP[a_type])
    b = rng.integers(*_range(b_type), size=(K, N), endpoint=True).astype(NP[b_type])
    a_scale = np.float32(rng.uniform(0.001, 0.1))
    b_scale = rng.uniform(0.001, 0.1, size=(N,) if per_column else ()).astype(np.float32)
    y_scale = np.float32(rng.uniform(0.5, 30))
    a_zp = rng.integers(*_range(a_type), endpoint=True)
    b_zp = rng.integers(*_range(b_type), size=(N,) if per_column else (), endpoint=True)
    if b_type == "int8":
        b_zp = np.zeros_like(b_zp)  # onnxruntime requires symmetric int8 weights
    y_zp = rng.integers(*_range(y_type), endpoint=True)
    model = single_node_model(
        "QLinearMatMul", {"a": a},
        {
            "a_scale": tensor("a_scale", TensorProto.FLOAT, a_scale),
            "a_zp": tensor("a_zp", ELEM[a_type], a_zp),
            "b": tensor("b", ELEM[b_type], b),
            "b_scale": tensor("b_scale", TensorProto.FLOAT, b_scale),
            "b_zp": tensor("b_zp", ELEM[b_type], b_zp),
            "y_scale": tensor("y_scale", TensorProto.FLOAT, y_scale),
            "y_zp": tensor("y_zp", ELEM[y_type], y_zp),
        },
        ELEM[y_type], (M, N), opset=21,
    )
    expected = run_ort(model, {"a": a})
    acc = gemm_int(a, b, a_zp, b_zp)
    ours = requantize_ort(acc, ort_multiplier(a_scale, b_scale, y_scale), y_zp, y_type)
    np.testing.assert_array_equal(ours, expected)


def test_ort_mode_is_bit_identical_to_qlinearconv(rng):
    x = rng.integers(0, 256, size=(1, 3, 9, 9)).astype(np.uint8)
    w = rng.integers(-127, 128, size=(5, 3, 3, 3)).astype(np.int8)
    bias = rng.integers(-5000, 5000, size=5).astype(np.int32)
    x_scale, x_zp = np.float32(0.02), 113
    w_scale = rng.uniform(0.001, 0.05, size=5).astype(np.float32)
    y_scale, y_zp = np.float32(0.07), 3
    model = single_node_model(
        "QLinearConv", {"x": x},
        {
            "x_scale": tensor("x_scale", TensorProto.FLOAT, x_scale),
            "x_zp": tensor("x_zp", TensorProto.UINT8, x_zp),
            "w": tensor("w", TensorProto.INT8, w),
            "w_scale": tensor("w_scale", TensorProto.FLOAT, w_scale),
            "w_zp": tensor("w_zp", TensorProto.INT8, np.zeros(5, np.int8)),
            "y_scale": tensor("y_scale", TensorProto.FLOAT, y_scale),
            "y_zp": tensor("y_zp", TensorProto.UINT8, y_zp),
            "bias": tensor("bias", TensorProto.INT32, bias),
        },
        TensorProto.UINT8, (1, 5, 7, 7), opset=21,
    )
    expected = run_ort(model, {"x": x})
    # im2col: (positions, C*kh*kw) @ (C*kh*kw, out_channels)
    cols = np.stack([x[0, :, i:i + 3, j:j + 3].reshape(-1) for i in range(7) for j in range(7)])
    acc = gemm_int(cols, w.reshape(5, -1).T, x_zp, 0) + bias
    ours = requantize_ort(acc, ort_multiplier(x_scale, w_scale, y_scale), y_zp, "uint8")
    np.testing.assert_array_equal(ours.T.reshape(1, 5, 7, 7), expected)


@settings(max_examples=300, deadline=None)
@given(
    scale=st.floats(1e-9, 1e6, allow_nan=False, allow_infinity=False),
)
def test_dyadic_multiplier_is_normalised_and_accurate(scale):
    m, s = dyadic_from_scale(scale)
    assert 1 <= s <= 62
    if s < 62:
        assert 2**30 <= m < 2**31
        assert abs(m / 2.0**s - scale) <= scale * 2.0**-31
    else:
        assert abs(m / 2.0**s - scale) <= 2.0**-63


@settings(max_examples=300, deadline=None)
@given(
    seed=st.integers(0, 2**31),
    log_scale=st.floats(-14, 2),
    dtype=st.sampled_from(["int8", "uint8"]),
)
def test_dyadic_is_within_one_unit_of_ort(seed, log_scale, dtype):
    rng = np.random.default_rng(seed)
    acc = rng.integers(-(2**31), 2**31, size=500)
    acc[:50] = rng.integers(-3000, 3000, size=50)
    mult = np.float32(2.0**log_scale)
    zp = int(rng.integers(*_range(dtype), endpoint=True))
    m, s = dyadic_from_scale(float(mult))
    ort_y = requantize_ort(acc, mult, zp, dtype)
    dy = requantize_dyadic(acc, m, s, zp, dtype)
    assert np.abs(ort_y.astype(int) - dy).max() <= 1


def test_dyadic_rounds_half_up():
    # multiplier 0.5 exactly: 3 * 0.5 = 1.5 -> 2, -3 * 0.5 = -1.5 -> -1 (ort gives 2 and -2)
    m, s = dyadic_from_scale(0.5)
    np.testing.assert_array_equal(requantize_dyadic(np.array([3, -3, 5]), m, s), [2, -1, 3])
    np.testing.assert_array_equal(requantize_ort(np.array([3, -3, 5]), 0.5), [2, -2, 2])


def test_requantize_dispatch_and_per_channel(rng):
    acc = rng.integers(-10**6, 10**6, size=(4, 3))
    params = RequantParams.from_scales(0.02, np.array([0.01, 0.02, 0.03], np.float32), 5.0, 7)
    a = requantize(acc, params, "ort")
    b = requantize(acc, params, "dyadic")
    assert a.shape == b.shape == (4, 3)
    assert np.abs(a - b).max() <= 1
    with pytest.raises(QuantizationError, match="mode must be 'ort' or 'dyadic'"):
        requantize(acc, params, "float")


def test_requant_errors():
    with pytest.raises(QuantizationError, match="scale must be finite and > 0"):
        dyadic_from_scale(0.0)
    with pytest.raises(QuantizationError, match="accumulator exceeds int32"):
        requantize_dyadic(np.array([2**31]), 2**30, 31)
    with pytest.raises(QuantizationError, match="output type must be an integer type"):
        requantize_ort(np.array([1]), 1.0, 0, "fp4")
