"""Exact integer GEMM against onnxruntime's MatMulInteger and int64 numpy."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto
from onnx_helpers import run_ort, single_node_model, tensor

from trilobit.errors import QuantizationError
from trilobit.gemm import gemm_int


@pytest.mark.parametrize("a_type", ["uint8", "int8"])
@pytest.mark.parametrize("shape", [(1, 4096, 64), (16, 1000, 33), (3, 5, 2)])
def test_matches_matmulinteger(a_type, shape, rng):
    M, K, N = shape
    lo, hi = (0, 255) if a_type == "uint8" else (-128, 127)
    a = rng.integers(lo, hi, size=(M, K), endpoint=True).astype(a_type)
    a[0, :] = hi  # extreme row
    b = rng.integers(-128, 127, size=(K, N), endpoint=True).astype(np.int8)
    b[:, 0] = -128
    a_zp = rng.integers(lo, hi, endpoint=True)
    elem = TensorProto.UINT8 if a_type == "uint8" else TensorProto.INT8
    model = single_node_model(
        "MatMulInteger", {"a": a},
        {"b": tensor("b", TensorProto.INT8, b), "a_zp": tensor("a_zp", elem, a_zp)},
        TensorProto.INT32, (M, N), opset=21,
    )
    model.graph.node[0].input[:] = ["a", "b", "a_zp"]
    expected = run_ort(model, {"a": a})
    got = gemm_int(a, b, a_zp)
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, expected)


@settings(max_examples=80, deadline=None)
@given(
    m=st.integers(1, 6), k=st.integers(1, 3000), n=st.integers(1, 6),
    bits=st.sampled_from([2, 8, 16, 24]), seed=st.integers(0, 2**31),
)
def test_exact_for_any_operand_range(m, k, n, bits, seed):
    rng = np.random.default_rng(seed)
    top = 1 << (bits - 1)
    a = rng.integers(-top, top, size=(m, k))
    b = rng.integers(-top, top, size=(k, n))
    a[0, :] = -top
    b[:, 0] = -top  # the worst case: every product at its maximum
    ref = np.array([[sum(int(x) * int(y) for x, y in zip(a[i], b[:, j], strict=True))
                     for j in range(n)] for i in range(m)], dtype=object)
    got = gemm_int(a, b)
    assert (got.astype(object) == ref).all()


def test_vector_and_zero_points(rng):
    a = rng.integers(0, 256, size=(5, 300)).astype(np.uint8)
    b = rng.integers(-128, 128, size=(300, 7)).astype(np.int8)
    za, zb = np.arange(5), np.arange(7)
    ref = (a.astype(np.int64) - za[:, None]) @ (b.astype(np.int64) - zb)
    np.testing.assert_array_equal(gemm_int(a, b, za, zb), ref)
    np.testing.assert_array_equal(gemm_int(a[0], b), a[0].astype(np.int64) @ b)


def test_gemm_errors():
    with pytest.raises(QuantizationError, match="inner dimensions differ"):
        gemm_int(np.zeros((2, 3), np.int8), np.zeros((4, 2), np.int8))
    with pytest.raises(QuantizationError, match="must be an integer array"):
        gemm_int(np.zeros((2, 3)), np.zeros((3, 2), np.int8))
