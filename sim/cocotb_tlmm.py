"""cocotb 2.x bench of the ternary table-lookup engine and its baseline.

Run through :func:`trilobit.sim.toolchain.run_cocotb` with ``params``:

``tlmm_streams`` (top: ``TlmmEngine``, ``TlmmBaseline`` or ``TlmmLutramEngine``)
    ``params = {"stimulus": path of an .npz written by ``save_stimulus``, "engine":
    TlmmParams.as_dict(), "stall_prob": p, "seed": s, "report": optional path}``. Drives ``cmd``,
    ``act`` and ``weights`` concurrently with random valid stalls, receives ``out`` with random
    ready stalls and compares every accumulator with the golden model's bit for bit (the
    expected ``out`` beats are whatever the stimulus holds, so the LUT-RAM engine's ``T``
    beats per command, from ``gemv_streams(..., row_slots=T)``, need nothing else). With
    ``report`` it writes the cycles spent and the wall time (for the simulation-speed bench).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import cocotb
import numpy as np
from cocotb.triggers import RisingEdge

from trilobit.hw.tlmm import TlmmParams
from trilobit.sim.golden_tlmm import beat_ints, unpack_out
from trilobit.sim.streams import StreamDriver, StreamMonitor, clock_and_reset
from trilobit.sim.toolchain import test_params

STREAMS_IN = ("cmd", "act", "weights")


def save_stimulus(path: Path, streams: dict, expected: np.ndarray) -> None:
    """Write the beats of ``trilobit.sim.golden_tlmm.gemv_streams`` and the expected output
    beats (``(blocks, rows)`` int64) for :func:`tlmm_streams`."""
    np.savez(path, cmd=streams["cmd"], act=streams["act"], weights=streams["weights"],
             expected=expected)


class TlmmBench:
    """Clock, reset, the three input drivers and the output monitor of one engine."""

    def __init__(self, dut, stall_prob: float, seed: int):
        self.dut = dut
        rngs = np.random.default_rng(seed).spawn(4)
        self.drivers = {
            name: StreamDriver(dut.clk, getattr(dut, f"{name}__valid"),
                               getattr(dut, f"{name}__ready"), getattr(dut, f"{name}__payload"),
                               stall_prob=stall_prob, rng=rng)
            for name, rng in zip(STREAMS_IN, rngs, strict=False)
        }
        self.monitor = StreamMonitor(dut.clk, dut.out__valid, dut.out__ready, dut.out__payload,
                                     stall_prob=stall_prob, rng=rngs[3])
        self.cycles = 0

    async def count(self) -> None:
        while True:
            await RisingEdge(self.dut.clk)
            self.cycles += 1


@cocotb.test()
async def tlmm_streams(dut):
    """Every output accumulator equals the golden model's, under random stalls on all streams."""
    params = test_params()
    stimulus = np.load(params["stimulus"])
    expected = stimulus["expected"]
    bench = TlmmBench(dut, params["stall_prob"], params.get("seed", 0))
    await clock_and_reset(dut.clk, dut.rst)
    cocotb.start_soon(bench.count())
    start_cycles, start_wall = bench.cycles, time.perf_counter()
    for name in STREAMS_IN:
        cocotb.start_soon(bench.drivers[name].send(beat_ints(stimulus[name])))
    received = await bench.monitor.recv(expected.shape[0])
    wall = time.perf_counter() - start_wall
    cycles = bench.cycles - start_cycles
    engine = TlmmParams(**params["engine"])
    got = np.array([unpack_out(int(v), engine) for v in received])
    mismatches = np.argwhere(got != expected)
    assert not mismatches.size, (
        f"{len(mismatches)} accumulators differ; first at (block, row) "
        f"{tuple(mismatches[0])}: got {got[tuple(mismatches[0])]}, "
        f"expected {expected[tuple(mismatches[0])]}"
    )
    if params.get("report"):
        Path(params["report"]).write_text(json.dumps({"cycles": cycles, "seconds": wall}))
