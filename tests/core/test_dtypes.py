"""Datatype registry: value sets, nearest rounding with ties to even, and external cross-checks."""

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trilobit.dtypes import BITMOD_CANDIDATES, DATATYPES, get_dtype
from trilobit.errors import DatatypeError, TrilobitError

# Value sets as published (BitMoD, HPCA'25; integer forms, scale absorbs the unit).
PUBLISHED = {
    "fp3": {0, 1, 2, 4, -1, -2, -4},
    "fp3_er_pos": {0, 1, 2, 4, -1, -2, -4, 3},
    "fp3_er_neg": {0, 1, 2, 4, -1, -2, -4, -3},
    "fp3_ea_pos": {0, 1, 2, 4, -1, -2, -4, 6},
    "fp3_ea_neg": {0, 1, 2, 4, -1, -2, -4, -6},
    "fp4": {0, 1, 2, 3, 4, 6, 8, 12, -1, -2, -3, -4, -6, -8, -12},
    "fp4_er_pos": {0, 1, 2, 3, 4, 6, 8, 12, -1, -2, -3, -4, -6, -8, -12, 10},
    "fp4_er_neg": {0, 1, 2, 3, 4, 6, 8, 12, -1, -2, -3, -4, -6, -8, -12, -10},
    "fp4_ea_pos": {0, 1, 2, 3, 4, 6, 8, 12, -1, -2, -3, -4, -6, -8, -12, 16},
    "fp4_ea_neg": {0, 1, 2, 3, 4, 6, 8, 12, -1, -2, -3, -4, -6, -8, -12, -16},
    "int3": set(range(-4, 4)),
    "int4": set(range(-8, 8)),
    "uint2": {0, 1, 2, 3},
    "ternary": {-1, 0, 1},
    "binary": {-1, 1},
    "pow2_4": {0} | {s * 2**k for s in (1, -1) for k in range(7)},
}

ML_DTYPES = {
    "fp4_e2m1": ml_dtypes.float4_e2m1fn,
    "fp6_e2m3": ml_dtypes.float6_e2m3fn,
    "fp6_e3m2": ml_dtypes.float6_e3m2fn,
    "fp8_e4m3": ml_dtypes.float8_e4m3fn,
    "fp8_e5m2": ml_dtypes.float8_e5m2,
}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_value_sets_match_the_published_tables(name):
    assert set(get_dtype(name).finite_values().tolist()) == PUBLISHED[name]


def test_bitmod_extra_value_takes_the_negative_zero_code():
    for bits, names in BITMOD_CANDIDATES.items():
        for name in names:
            dt = get_dtype(name)
            assert dt.bits == bits
            assert dt.values[1 << (bits - 1)] != 0


@pytest.mark.parametrize("name", sorted(ML_DTYPES))
def test_fp_value_tables_match_ml_dtypes(name):
    dt = get_dtype(name)
    ref = np.arange(1 << dt.bits, dtype=np.uint8).view(np.uint8).astype(np.uint8)
    ref_vals = ref.view(ML_DTYPES[name]).astype(np.float64) if dt.bits == 8 else (
        _ml_decode(ref, ML_DTYPES[name]))
    np.testing.assert_array_equal(dt.values, ref_vals)


def _ml_decode(codes: np.ndarray, ml_type) -> np.ndarray:
    # Sub-byte ml_dtypes store one value per byte with the code in the low bits.
    return codes.astype(np.uint8).view(ml_type).astype(np.float64)


@pytest.mark.parametrize("name", sorted(ML_DTYPES))
def test_fp_encode_matches_ml_dtypes_rounding(name, rng):
    dt = get_dtype(name)
    top = dt.max
    x = np.concatenate([
        rng.uniform(-1.2 * top, 1.2 * top, 4000),
        rng.standard_normal(4000),
        dt.finite_values(),
        (dt.finite_values()[1:] + dt.finite_values()[:-1]) / 2,  # exact ties
    ]).astype(np.float32)
    ref = np.clip(x, -top, top).astype(ML_DTYPES[name]).astype(np.float64)
    np.testing.assert_array_equal(dt.quantize(x), ref)


@pytest.mark.parametrize("name", sorted(DATATYPES))
def test_every_code_round_trips(name):
    dt = get_dtype(name)
    codes = dt.valid_codes
    finite = np.isfinite(dt.values[codes])
    vals = dt.decode(codes)[finite]
    back = dt.encode(vals)
    np.testing.assert_array_equal(dt.decode(back), vals)


@settings(max_examples=200, deadline=None)
@given(
    name=st.sampled_from(sorted(DATATYPES)),
    x=st.lists(st.floats(-1e5, 1e5, allow_nan=False, width=32), min_size=1, max_size=50),
)
def test_encode_is_nearest_and_saturating(name, x):
    dt = get_dtype(name)
    x = np.array(x, dtype=np.float64)
    got = dt.quantize(x)
    vals = dt.finite_values()
    target = np.clip(x, vals[0], vals[-1])
    best = np.abs(target[:, None] - vals[None, :]).min(axis=1)
    np.testing.assert_array_equal(np.abs(got - target), best)


@settings(max_examples=100, deadline=None)
@given(
    name=st.sampled_from(sorted(DATATYPES)),
    a=st.floats(-1e4, 1e4, allow_nan=False),
    b=st.floats(-1e4, 1e4, allow_nan=False),
)
def test_encode_is_monotonic(name, a, b):
    dt = get_dtype(name)
    lo, hi = min(a, b), max(a, b)
    assert dt.quantize(np.array([lo]))[0] <= dt.quantize(np.array([hi]))[0]


def test_integer_ties_go_to_even():
    dt = get_dtype("int8")
    np.testing.assert_array_equal(
        dt.decode(dt.encode([0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 126.5, -127.5])),
        [0, 2, 2, 0, -2, -2, 126, -128],
    )


def test_errors_name_the_problem():
    with pytest.raises(DatatypeError, match="unknown datatype 'int9'"):
        get_dtype("int9")
    with pytest.raises(DatatypeError, match="not representable in int4"):
        get_dtype("int4").encode_exact([1, 2, 9])
    with pytest.raises(DatatypeError, match="codes must lie in 0..15"):
        get_dtype("int4").decode(np.array([16]))
    with pytest.raises(DatatypeError, match="code 2 is not used"):
        get_dtype("ternary").decode(np.array([2]))
    with pytest.raises(TrilobitError):
        get_dtype("int8").encode([np.nan])
