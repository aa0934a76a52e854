"""BitMoD per-group quantizer, integer scales and the engine packing order."""

from __future__ import annotations

import zlib

import numpy as np
import pytest

from trilobit.dtypes import BITMOD_CANDIDATES, get_dtype
from trilobit.errors import QuantizationError
from trilobit.hw.bitserial_format import WeightFormat
from trilobit.sim.golden_bitserial import EngineJob, engine_reference
from trilobit.sw.bitmod import (
    pack_engine_job,
    pack_engine_tiles,
    quantize_bitmod,
    quantize_rtn,
    quantize_scale,
)


@pytest.fixture
def rng(request) -> np.random.Generator:
    return np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))


def heavy_tailed(rng, n=16, k=256):
    w = rng.standard_t(3, size=(n, k)) * 0.02
    w[rng.random(w.shape) < 0.002] *= 20  # outliers
    return w


@pytest.mark.parametrize("bits", [3, 4])
@pytest.mark.parametrize("type_id", [0, 1, 2, 3])
def test_group_made_of_one_candidates_values_picks_that_candidate_exactly(bits, type_id, rng):
    name = BITMOD_CANDIDATES[bits][type_id]
    values = get_dtype(name).finite_values()
    extra = get_dtype(name).values[1 << (bits - 1)]
    group = rng.choice(values, size=32)
    group[:2] = [extra, extra]  # the extra value, the group's largest magnitude
    w = (group * 0.0625)[None, :]
    q = quantize_bitmod(w, f"fp{bits}", group_size=32)
    assert q.type_ids[0, 0] == type_id
    np.testing.assert_array_equal(q.dequantize(), w)


@pytest.mark.parametrize("fmt", ["fp3", "fp4"])
def test_chosen_type_has_least_squared_error_of_the_candidates(fmt, rng):
    w = heavy_tailed(rng)
    q = quantize_bitmod(w, fmt, group_size=64)
    bits = WeightFormat.parse(fmt).bits
    groups = w.reshape(w.shape[0], -1, 64)
    absmax = np.abs(groups).max(axis=2)
    for n in range(w.shape[0]):
        for g in range(groups.shape[1]):
            errs = []
            for name in BITMOD_CANDIDATES[bits]:
                dt = get_dtype(name)
                top = max(abs(dt.min), abs(dt.max))
                s = max(1, round(absmax[n, g] / top * 2.0**q.shift)) * 2.0**-q.shift
                errs.append(float(((dt.quantize(groups[n, g] / s) * s - groups[n, g]) ** 2).sum()))
            assert errs[q.type_ids[n, g]] == min(errs)


def test_mixed_fp4_never_worse_than_plain_fp4_at_same_scale(rng):
    """ER candidates are plain FP4 plus one value at the same scale, so the search can only
    lower the error."""
    w = heavy_tailed(rng)
    mixed = np.mean((quantize_bitmod(w, "fp4").dequantize() - w) ** 2)
    plain = np.mean((quantize_rtn(w, "fp4") - w) ** 2)
    assert mixed <= plain


def test_int_format_equals_round_to_nearest(rng):
    w = heavy_tailed(rng)
    q = quantize_bitmod(w, "int4", group_size=32)
    assert (q.type_ids == 0).all()
    np.testing.assert_array_equal(q.dequantize(), quantize_rtn(w, "int4", group_size=32))


def test_scale_integers_fill_the_mantissa(rng):
    s = rng.random(50) * 1e-3 + 1e-6
    ints, shift = quantize_scale(s, 8)
    assert 128 <= ints.max() <= 255
    np.testing.assert_allclose(ints * 2.0**-shift, s, atol=2.0**-shift)
    ints, shift = quantize_scale(np.zeros(3))
    assert (ints == 0).all()


def test_padding_zero_groups_and_bad_input():
    w = np.zeros((2, 40))
    q = quantize_bitmod(w, "fp4", group_size=32)
    assert q.codes.shape == (2, 64) and q.dequantize().shape == (2, 40)
    assert (q.dequantize() == 0).all()
    with pytest.raises(QuantizationError, match="2-D"):
        quantize_bitmod(np.zeros(8))
    with pytest.raises(QuantizationError, match="NaN"):
        quantize_bitmod(np.full((1, 8), np.nan), group_size=8)


def test_packing_order_is_chunk_then_column_then_lane():
    codes = np.arange(2 * 8).reshape(2, 8) % 16
    act = np.arange(3 * 8).reshape(3, 8) - 12
    beats = pack_engine_job(codes, ["fp4", "int4"], np.array([[1, 0], [3, 0]]),
                            np.array([[5, 6], [7, 8]]), act, width=2)
    assert beats["weights"].shape == (4, 2, 2)
    assert beats["weights"][1, 1].tolist() == [codes[1, 2], codes[1, 3]]
    assert beats["act"][3, 2].tolist() == [act[2, 6], act[2, 7]]
    assert beats["meta"][0] == (int(WeightFormat.FP4), False, [1, 3], [5, 7])
    assert beats["meta"][1] == (int(WeightFormat.INT4), True, [0, 0], [6, 8])


@pytest.mark.parametrize("fmt", ["fp3", "fp4", "int3", "int4", "int8"])
def test_engine_integer_result_is_the_dequantized_matmul(fmt, rng):
    """Quantizer -> engine golden: out * 2**-shift == activations @ dequantized weights."""
    w = heavy_tailed(rng, n=6, k=64)
    q = quantize_bitmod(w, fmt, group_size=16)
    act = rng.integers(-128, 128, size=(3, 64))
    job = EngineJob(act, q.codes, np.full(q.n_groups, int(WeightFormat.parse(fmt))),
                    q.type_ids, q.scale_int)
    out = engine_reference(job)
    np.testing.assert_array_equal(out * 2.0**-q.shift, act @ q.dequantize().T)
    tiles = pack_engine_tiles(q, columns=4, width=8)
    assert len(tiles) == 2 and tiles[1]["weights"].shape == (8, 4, 8)
    assert (tiles[1]["weights"][:, 2:] == 0).all()  # padded channels
