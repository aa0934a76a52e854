"""LUT-RAM table-lookup engine in the Amaranth simulator: bit-exact against the golden model
under random stalls on every stream, exact cycle count without stalls, beat order of the
time-multiplexed weight stream, parameter checks."""

from __future__ import annotations

import numpy as np
import pytest
from test_tlmm import blocks_to_matrix, run_amaranth_gemv  # the engine's own stream driver

from trilobit.errors import ConfigError
from trilobit.hw.tlmm import TlmmParams
from trilobit.hw.tlmm_lutram import TlmmLutramEngine, gray_build_order, lutram_ideal_cycles
from trilobit.packing import balanced_ternary_digits, ternary_group_index, ternary_table_size
from trilobit.sim.golden_tlmm import gemv_streams, random_weights, tlmm_golden


def extreme_rows(params: TlmmParams, kind: str, m: int, n: int, k: int, seed: int):
    """Random activations and weights with extreme vectors and rows in front."""
    rng = np.random.default_rng(seed)
    lo, hi = -(1 << (params.act_bits - 1)), (1 << (params.act_bits - 1)) - 1
    a = rng.integers(lo, hi + 1, size=(m, k))
    a[0] = lo
    if m > 1:
        a[1] = hi
    w = random_weights(rng, (n, k), kind).astype(np.int64)
    w_lo = {"ternary": -1, "int2": -2, "int3": -4, "int4": -8}[kind]
    w_hi = -w_lo - 1 if kind != "ternary" else 1
    w[0], w[1], w[2] = 0, w_lo, w_hi
    return a, w


@pytest.mark.parametrize(
    "G, rows, units, slots, kind, stall",
    [
        (3, 2, 2, 16, "ternary", 0.3),
        (3, 3, 1, 14, "int3", 0.4),
        (2, 2, 2, 7, "ternary", 0.3),
        (2, 2, 1, 3, "int2", 0.2),  # slots < table build: the reader waits for tables
        (4, 2, 1, 4, "ternary", 0.2),
        (3, 2, 2, 16, "ternary", 0.0),
        (2, 3, 2, 6, "int2", 0.0),
    ],
)
def test_lutram_engine_matches_golden_under_random_stalls(G, rows, units, slots, kind, stall):
    params = TlmmParams(group_size=G, rows=rows, units=units, max_k=64, max_planes=3)
    m, n, k = 2, rows * slots + 3, 40
    a, w = extreme_rows(params, kind, m, n, k, seed=G * 7 + slots)
    streams = gemv_streams(params, a, w, kind, row_slots=slots)
    engine = TlmmLutramEngine(params, row_slots=slots)
    outputs, cycles = run_amaranth_gemv(engine, params, streams, stall, seed=G + slots,
                                        max_cycles=40_000)
    np.testing.assert_array_equal(blocks_to_matrix(outputs, streams, m, n),
                                  tlmm_golden(params, a, w, kind))
    if stall == 0.0:
        # Full rate: one weight beat per cycle once the first table is built (1 + table_size
        # cycles: accept, one write per entry), then 3 cycles to the output register.
        ideal = lutram_ideal_cycles(params, slots, k, n, streams["planes"], m)
        # Each finished output beat but the last waits for the one before it (3 cycles).
        extra = 3 * (slots - 1) * streams["commands"]
        assert cycles == ideal + 1 + params.table_size + 3 + extra


def test_weight_beats_run_beat_then_plane_then_slot():
    params = TlmmParams(group_size=3, rows=2, units=1, max_k=12, max_planes=2)
    slots = 3
    w = np.random.default_rng(0).integers(-2, 2, size=(6, 6))
    streams = gemv_streams(params, np.zeros((1, 6), dtype=np.int64), w, "int2", row_slots=slots)
    assert streams["commands"] == 1 and streams["blocks"] == slots
    beats = streams["weights"][:, 0]
    width = params.magnitude_bits + 1
    planes = np.stack([w & 1, -((w >> 1) & 1)])
    for b in range(2):
        for j in range(2):
            for t in range(slots):
                word = int(beats[(b * 2 + j) * slots + t])
                for r in range(params.rows):
                    group = planes[j, t * params.rows + r, 3 * b:3 * b + 3]
                    mag, sign = ternary_group_index(group[None], 3)
                    element = (word >> (r * width)) & ((1 << width) - 1)
                    assert element == int(mag[0, 0]) | (int(sign[0, 0]) << (width - 1))


@pytest.mark.parametrize("G", [2, 3, 4])
def test_gray_build_order_visits_every_entry_once_by_single_digit_steps(G):
    order = gray_build_order(G)
    entries = [entry for entry, _, _ in order]
    assert entries[0] == 0 and sorted(entries) == list(range(ternary_table_size(G)))
    digits = balanced_ternary_digits(np.arange(ternary_table_size(G)), G).astype(int)
    for (entry, digit, down), nxt in zip(order, entries[1:], strict=False):
        step = digits[nxt] - digits[entry]
        expected = np.zeros(G, dtype=int)
        expected[digit] = -1 if down else 1
        np.testing.assert_array_equal(step, expected)


@pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")
@pytest.mark.parametrize("slots", [0, 17, 2.0])
def test_row_slots_out_of_range_is_named(slots):
    with pytest.raises(ConfigError, match="row_slots"):
        TlmmLutramEngine(TlmmParams(), row_slots=slots)
