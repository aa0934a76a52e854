"""cocotb + Verilator benches of the bit-serial engine and its baseline (bit-exact)."""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import numpy as np
import pytest

import trilobit.sim.cocotb_bitserial as bench_module
from trilobit.hw.bitserial import BitSerialEngine, BitSerialParams
from trilobit.hw.bitserial_baseline import BitParallelMacArray
from trilobit.hw.bitserial_format import WeightFormat
from trilobit.hw.bitserial_selfcheck import SelfCheckingEngine
from trilobit.sim.golden_bitserial import ideal_cycles, job_stream_words, random_job
from trilobit.sim.toolchain import build_cocotb, run_cocotb, verilog_for

pytestmark = pytest.mark.verilator

BENCH_DIR = Path(bench_module.__file__).parent
BENCH = "cocotb_bitserial"


@pytest.fixture
def rng(request) -> np.random.Generator:
    return np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))


def every_case(rng, params: BitSerialParams) -> list:
    """One job per format, random per-group format mixes, and the extremes."""
    R, C, G = params.rows, params.columns, params.group_size
    jobs = [random_job(rng, R, C, G, [fmt] * 2, act_bits=params.act_bits,
                       scale_bits=params.scale_bits) for fmt in WeightFormat]
    jobs += [random_job(rng, R, C, G, rng.choice([int(f) for f in WeightFormat], size=5),
                        act_bits=params.act_bits, scale_bits=params.scale_bits)
             for _ in range(3)]
    jobs += [random_job(rng, R, C, G, list(WeightFormat), extremes=e, act_bits=params.act_bits,
                        scale_bits=params.scale_bits)
             for e in ("max", "min", "zero_weights", "unit_weights")]
    return jobs


def run_streams(dut, params: BitSerialParams, jobs, tmp_path: Path, toplevel: str) -> None:
    words = job_stream_words(params, jobs)
    path = tmp_path / "words.json"
    path.write_text(json.dumps(words))
    build = build_cocotb(verilog_for(dut, toplevel), toplevel)
    run_cocotb(build, BENCH, BENCH_DIR, testcase="bitserial_streams",
               params={"engine": params.as_dict(), "words": str(path), "stall_prob": 0.3})


@pytest.mark.parametrize(
    "params",
    [
        BitSerialParams(width=4, rows=2, columns=2, group_size=8, max_groups=16),
        BitSerialParams(width=3, rows=1, columns=3, group_size=12, max_groups=8,
                        scale_bits=5, bits_per_cycle=1),
        BitSerialParams(width=8, rows=1, columns=1, group_size=16, max_groups=8),
    ],
    ids=["w4r2c2g8", "w3r1c3g12s5b1", "w8r1c1g16"],
)


def test_engine_matches_golden_under_random_stalls(params, rng, tmp_path):
    run_streams(BitSerialEngine(params), params, every_case(rng, params), tmp_path,
                "bitserial_engine")


def test_baseline_matches_golden_under_random_stalls(rng, tmp_path):
    params = BitSerialParams(width=4, rows=2, columns=2, group_size=8, max_groups=16)
    jobs = [random_job(rng, 2, 2, 8, [fmt] * 3) for fmt in ("INT3", "INT4", "INT6", "INT8")]
    jobs += [random_job(rng, 2, 2, 8, ["INT8"] * 3, extremes=e) for e in ("max", "min")]
    run_streams(BitParallelMacArray(params), params, jobs, tmp_path, "bitparallel_baseline")


def test_engine_long_run_checked_inside_the_simulation(rng, tmp_path):
    """~4 x 10^5 cycles of mixed formats with random stalls; no Python runs per cycle."""
    params = BitSerialParams(width=4, rows=2, columns=2, group_size=8, max_groups=16)
    jobs = [random_job(rng, 2, 2, 8, rng.choice([int(f) for f in WeightFormat], size=8))
            for _ in range(8)]
    jobs.append(random_job(rng, 2, 2, 8, list(WeightFormat), extremes="min"))
    words = job_stream_words(params, jobs)
    repeats = 1000
    dut = SelfCheckingEngine(params, words["meta"], words["act"], words["weights"],
                             words["expected"], repeats=repeats, stall_num=1)
    build = build_cocotb(verilog_for(dut, "bitserial_selfcheck"), "bitserial_selfcheck")
    report = tmp_path / "report.json"
    ideal = repeats * sum(ideal_cycles(j.fmts, 8, 4) for j in jobs)
    run_cocotb(build, BENCH, BENCH_DIR, testcase="bitserial_selfcheck",
               params={"outputs": repeats * len(jobs), "max_cycles": 20 * ideal,
                       "report": str(report)})
    cycles = json.loads(report.read_text())["cycles"]
    # stalls only ever add cycles
    assert cycles >= ideal
