"""Packings: ONNX sub-byte layouts checked against onnx's own packer, ternary group indices."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from trilobit.dtypes import get_dtype
from trilobit.errors import PackingError
from trilobit.packing import (
    pack_bits,
    pack_ternary_g2,
    pack_ternary_g3,
    pack_ternary_plain2,
    ternary_from_group_index,
    ternary_group_index,
    ternary_table_size,
    unpack_bits,
    unpack_ternary_g2,
    unpack_ternary_g3,
    unpack_ternary_plain2,
)

ONNX_SUBBYTE = [
    ("int4", TensorProto.INT4, 4),
    ("uint4", TensorProto.UINT4, 4),
    ("int2", TensorProto.INT2, 2),
    ("uint2", TensorProto.UINT2, 2),
    ("fp4_e2m1", TensorProto.FLOAT4E2M1, 4),
]


@pytest.mark.parametrize("name,elem_type,bits", ONNX_SUBBYTE)
@pytest.mark.parametrize("count", [1, 2, 3, 7, 64, 129])
def test_pack_bits_matches_onnx_raw_data(name, elem_type, bits, count, rng):
    dt = get_dtype(name)
    codes = rng.choice(dt.valid_codes, size=count).astype(np.uint8)
    values = dt.decode(codes)
    ref = helper.make_tensor("t", elem_type, [count], values.tolist())
    # onnx stores packed sub-byte tensors either as raw bytes or one byte per int32 field
    if ref.raw_data:
        ref_bytes = np.frombuffer(ref.raw_data, dtype=np.uint8)
    else:
        ref_bytes = np.array(ref.int32_data, dtype=np.uint8)
    packed = pack_bits(codes, bits)
    np.testing.assert_array_equal(packed, ref_bytes)
    # and onnx reads our bytes back as the same values
    ours = helper.make_tensor("t", elem_type, [count], packed.tobytes(), raw=True)
    back = numpy_helper.to_array(ours).astype(np.float64)
    np.testing.assert_array_equal(back, values)
    np.testing.assert_array_equal(unpack_bits(packed, bits, count), codes)


@settings(max_examples=100, deadline=None)
@given(bits=st.sampled_from([1, 2, 4, 8]), data=st.data())
def test_pack_unpack_round_trip(bits, data):
    codes = data.draw(st.lists(st.integers(0, (1 << bits) - 1), max_size=100))
    codes = np.array(codes, dtype=np.uint8)
    packed = pack_bits(codes, bits)
    assert packed.size == -(-codes.size * bits // 8)
    np.testing.assert_array_equal(unpack_bits(packed, bits, codes.size), codes)


@pytest.mark.parametrize("G", [2, 3, 4])
def test_ternary_group_index_covers_the_half_table(G):
    # every ternary group, exhaustively
    grids = np.stack(np.meshgrid(*[[-1, 0, 1]] * G, indexing="ij"), -1).reshape(-1, G)
    mag, sign = ternary_group_index(grids, G)
    assert set(mag.reshape(-1).tolist()) == set(range(ternary_table_size(G)))
    # sign symmetry: -w has the same magnitude and the opposite sign (zero has sign 0)
    mag_neg, sign_neg = ternary_group_index(-grids, G)
    np.testing.assert_array_equal(mag, mag_neg)
    nonzero = mag.reshape(-1) > 0
    np.testing.assert_array_equal(sign.reshape(-1)[nonzero], 1 - sign_neg.reshape(-1)[nonzero])
    # the index is the dot product of the weights with powers of three
    b = grids @ (3 ** np.arange(G - 1, -1, -1))
    signed = np.where(sign[:, 0] == 1, -mag[:, 0].astype(int), mag[:, 0].astype(int))
    np.testing.assert_array_equal(signed, b)
    np.testing.assert_array_equal(ternary_from_group_index(mag, sign, G), grids)


@settings(max_examples=60, deadline=None)
@given(groups=st.integers(1, 40), seed=st.integers(0, 2**31))
def test_ternary_packings_round_trip(groups, seed):
    rng = np.random.default_rng(seed)
    w6 = rng.integers(-1, 2, size=6 * groups).astype(np.int8)
    np.testing.assert_array_equal(unpack_ternary_g2(pack_ternary_g2(w6), w6.size), w6)
    mags, signs = pack_ternary_g3(w6)
    assert mags.size + signs.size <= -(-(w6.size // 3) // 2) + -(-(w6.size // 3) // 8)
    np.testing.assert_array_equal(unpack_ternary_g3(mags, signs, w6.size), w6)
    np.testing.assert_array_equal(unpack_ternary_plain2(pack_ternary_plain2(w6), w6.size), w6)


def test_g3_storage_is_five_thirds_bit_per_weight():
    w = np.zeros(3 * 8 * 100, dtype=np.int8)
    mags, signs = pack_ternary_g3(w)
    assert (mags.size + signs.size) * 8 / w.size == pytest.approx(5 / 3)


def test_plain2_is_onnx_int2(rng):
    w = rng.integers(-1, 2, size=37).astype(np.int8)
    t = helper.make_tensor("w", TensorProto.INT2, [w.size], pack_ternary_plain2(w).tobytes(),
                           raw=True)
    np.testing.assert_array_equal(numpy_helper.to_array(t).astype(np.int8), w)


def test_packing_errors_are_clear():
    with pytest.raises(PackingError, match="multiple of the group size G=3"):
        pack_ternary_g3(np.zeros(4, np.int8))
    with pytest.raises(PackingError, match=r"must be in \{-1, 0, 1\}"):
        pack_ternary_g2(np.array([0, 2]))
    with pytest.raises(PackingError, match="group size G must be one of"):
        ternary_group_index(np.zeros(5), 5)
    with pytest.raises(PackingError, match="codes must lie in 0..15"):
        pack_bits(np.array([16]), 4)
