"""LUT-RAM table-lookup engine in Verilator: the engine's cocotb bench (random stalls on every
stream, extreme and random data, K = max_k) and a long GEMV in the C++ harness, bit-exact
against the golden model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from test_tlmm_verilator import BENCH_BUILD_ARGS, extreme_problem

from trilobit.hw.tlmm import TlmmParams
from trilobit.hw.tlmm_lutram import TlmmLutramEngine
from trilobit.sim.cocotb_tlmm import save_stimulus
from trilobit.sim.golden_tlmm import gemv_streams, random_weights, tlmm_golden, tlmm_reference
from trilobit.sim.tlmm_longrun import harness_for, run_gemv_harness
from trilobit.sim.toolchain import build_cocotb, run_cocotb, verilog_for

SIM_DIR = Path(__file__).resolve().parents[2] / "sim"

# (G, rows, units, row_slots, act_bits, max_k, max_planes, weight kinds, stall probability)
CONFIGS = [
    (3, 2, 2, 16, 8, 60, 4, ("ternary", "int4"), 0.3),
    (2, 3, 2, 7, 8, 48, 2, ("ternary", "int2"), 0.4),
    (3, 4, 1, 14, 16, 45, 1, ("ternary",), 0.0),
    (3, 2, 3, 5, 4, 63, 3, ("int3",), 0.2),
]


@pytest.mark.verilator
@pytest.mark.parametrize(
    "G, rows, units, slots, act_bits, max_k, max_planes, kinds, stall", CONFIGS)
def test_lutram_engine_matches_golden_under_random_stalls(G, rows, units, slots, act_bits, max_k,
                                                          max_planes, kinds, stall, tmp_path):
    params = TlmmParams(group_size=G, rows=rows, units=units, act_bits=act_bits, max_k=max_k,
                        max_planes=max_planes)
    engine = TlmmLutramEngine(params, row_slots=slots)
    build = build_cocotb(verilog_for(engine, "tlmm"), "tlmm", extra_args=BENCH_BUILD_ARGS)
    for i, kind in enumerate(kinds):
        # More rows than one tile holds, and not a multiple of it.
        a, w = extreme_problem(params, kind, n=rows * slots + 5, seed=G * slots + i)
        golden = tlmm_golden(params, a, w, kind)
        np.testing.assert_array_equal(golden, tlmm_reference(a, w))
        streams = gemv_streams(params, a, w, kind, row_slots=slots)
        expected = np.pad(golden, ((0, 0), (0, streams["rows_padded"] - golden.shape[1])))
        stimulus = tmp_path / f"stimulus_{kind}.npz"
        save_stimulus(stimulus, streams, expected.reshape(-1, params.rows))
        run_cocotb(build, "cocotb_tlmm", SIM_DIR, testcase="tlmm_streams",
                   params={"stimulus": str(stimulus), "engine": params.as_dict(),
                           "stall_prob": stall, "seed": 100 + i})


@pytest.mark.verilator
@pytest.mark.slow
def test_lutram_long_gemv_in_harness_matches_golden():
    params = TlmmParams(group_size=3, rows=4, units=4, max_k=4096, max_planes=1)
    rng = np.random.default_rng(4097)
    k = n = 2048
    a = rng.integers(-128, 128, size=(1, k))
    a[0, :60] = -128
    w = random_weights(rng, (n, k), "ternary")
    w[0] = -1
    streams = gemv_streams(params, a, w, "ternary", row_slots=16)
    run = run_gemv_harness(harness_for(TlmmLutramEngine(params, row_slots=16), params), params,
                           streams, stall_prob=0.2, seed=5)
    got = run.outputs.reshape(-1)[:n]
    np.testing.assert_array_equal(got, tlmm_golden(params, a, w, "ternary")[0])
    assert got[0] == 60 * 128 - int(a[0, 60:].sum())
