"""Ternary table-lookup engine in Verilator: cocotb benches over many configurations, and a
4096 x 4096 GEMV with the stimulus inside the simulation (C++ harness), bit-exact against the
golden model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from trilobit.hw.tlmm import TlmmEngine, TlmmParams
from trilobit.hw.tlmm_baseline import TlmmBaseline
from trilobit.sim.cocotb_tlmm import save_stimulus
from trilobit.sim.golden_tlmm import (
    gemv_streams,
    plane_count,
    random_weights,
    tlmm_golden,
    tlmm_reference,
)
from trilobit.sim.tlmm_longrun import harness_for, run_gemv_harness
from trilobit.sim.toolchain import build_cocotb, run_cocotb, verilog_for

SIM_DIR = Path(__file__).resolve().parents[2] / "sim"
#: ``-CFLAGS -O1``: these benches run few cycles, compile time dominates.
BENCH_BUILD_ARGS = ("-CFLAGS", "-O1")


def extreme_problem(params: TlmmParams, kind: str, n: int, seed: int):
    """Activations and weights covering the extremes plus random data, K = the largest K.

    Activation vectors: all -2**(b-1), all 2**(b-1)-1, alternating extremes, random.
    Weight rows: all zero, all the most negative weight, all the most positive, alternating,
    then random rows.
    """
    rng = np.random.default_rng(seed)
    k = params.max_k
    lo, hi = -(1 << (params.act_bits - 1)), (1 << (params.act_bits - 1)) - 1
    a = np.stack([np.full(k, lo), np.full(k, hi), np.where(np.arange(k) % 2, lo, hi),
                  rng.integers(lo, hi + 1, size=k)])
    b = plane_count(kind)
    w_lo, w_hi = (-1, 1) if kind == "ternary" else (-(1 << (b - 1)), (1 << (b - 1)) - 1)
    w = random_weights(rng, (n, k), kind).astype(np.int64)
    w[0] = 0
    w[1] = w_lo
    w[2] = w_hi
    w[3] = np.where(np.arange(k) % 2, w_lo, w_hi)
    return a, w


# (G, rows, units, act_bits, max_k, max_planes, weight kinds, stall probability)
CONFIGS = [
    (2, 4, 2, 8, 96, 1, ("ternary",), 0.3),
    (3, 4, 3, 8, 117, 4, ("ternary", "int4"), 0.3),
    (4, 4, 2, 8, 96, 2, ("ternary", "int2"), 0.25),
    (3, 4, 2, 8, 60, 4, ("int2", "int3"), 0.5),
    (2, 3, 1, 4, 40, 3, ("ternary", "int3"), 0.3),
    (4, 2, 3, 16, 72, 4, ("int4", "ternary"), 0.3),
    (3, 5, 1, 12, 45, 2, ("int2",), 0.1),
    (3, 8, 2, 8, 240, 1, ("ternary",), 0.0),
]


def _run_bench(design, params, kinds, stall, tmp_path, weight_format, seed):
    build = build_cocotb(verilog_for(design, "tlmm"), "tlmm", extra_args=BENCH_BUILD_ARGS)
    for i, kind in enumerate(kinds):
        a, w = extreme_problem(params, kind, n=2 * params.rows + 3, seed=seed + i)
        golden = tlmm_golden(params, a, w, kind)
        np.testing.assert_array_equal(golden, tlmm_reference(a, w))
        streams = gemv_streams(params, a, w, kind, weight_format=weight_format)
        expected = np.pad(golden, ((0, 0), (0, streams["rows_padded"] - golden.shape[1])))
        stimulus = tmp_path / f"stimulus_{kind}.npz"
        save_stimulus(stimulus, streams, expected.reshape(-1, params.rows))
        run_cocotb(build, "cocotb_tlmm", SIM_DIR, testcase="tlmm_streams",
                   params={"stimulus": str(stimulus), "engine": params.as_dict(),
                           "stall_prob": stall, "seed": seed + i})


@pytest.mark.verilator
@pytest.mark.parametrize("G, rows, units, act_bits, max_k, max_planes, kinds, stall", CONFIGS)
def test_tlmm_matches_golden_under_random_stalls(G, rows, units, act_bits, max_k, max_planes,
                                                kinds, stall, tmp_path):
    params = TlmmParams(group_size=G, rows=rows, units=units, act_bits=act_bits, max_k=max_k,
                        max_planes=max_planes)
    _run_bench(TlmmEngine(params), params, kinds, stall, tmp_path, "index", seed=G * rows)


@pytest.mark.verilator
def test_tlmm_baseline_matches_golden_under_random_stalls(tmp_path):
    params = TlmmParams(group_size=3, rows=4, units=2, max_k=60, max_planes=4)
    _run_bench(TlmmBaseline(params), params, ("int4", "ternary"), 0.3, tmp_path, "plain2",
               seed=11)


@pytest.mark.verilator
@pytest.mark.slow
def test_tlmm_long_gemv_4096_in_harness_matches_golden():
    params = TlmmParams(group_size=3, rows=8, units=2, max_k=4096, max_planes=1)
    rng = np.random.default_rng(4096)
    k = n = 4096
    a = rng.integers(-128, 128, size=(1, k))
    a[0, :64] = -128
    w = random_weights(rng, (n, k), "ternary")
    w[0] = -1
    streams = gemv_streams(params, a, w, "ternary")
    run = run_gemv_harness(harness_for(TlmmEngine(params), params), params, streams,
                           stall_prob=0.2, seed=3)
    got = run.outputs.reshape(-1)[:n]
    np.testing.assert_array_equal(got, tlmm_golden(params, a, w, "ternary")[0])
    assert got[0] == 64 * 128 - int(a[0, 64:].sum())
