"""Stream helpers move every payload exactly once under random stalls on both sides."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from amaranth.hdl import Module, Shape, signed, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.wiring import In, Out
from amaranth.sim import Simulator

from trilobit.sim.streams import (
    signed_field,
    stream_put,
    stream_recv,
    stream_send,
    unsigned_field,
)
from trilobit.sim.toolchain import build_cocotb, run_cocotb, verilog_for

BENCH = "stream_fifo_bench"
BENCH_DIR = Path(__file__).parent


class StreamFifo(wiring.Component):
    """A SyncFIFO with ``amaranth.lib.stream`` ports ``i`` and ``o``."""

    def __init__(self, shape, depth: int) -> None:
        self.depth = depth
        super().__init__({"i": In(stream.Signature(shape)), "o": Out(stream.Signature(shape))})

    def elaborate(self, platform):
        m = Module()
        m.submodules.fifo = fifo = SyncFIFO(width=Shape.cast(self.i.payload.shape()).width,
                                            depth=self.depth)
        # Wired by hand: the FIFO's own streams carry unsigned payloads.
        m.d.comb += [
            fifo.w_data.eq(self.i.payload),
            fifo.w_en.eq(self.i.valid),
            self.i.ready.eq(fifo.w_rdy),
            self.o.payload.eq(fifo.r_data),
            self.o.valid.eq(fifo.r_rdy),
            fifo.r_en.eq(self.o.ready),
        ]
        return m


def int8_values(rng: np.random.Generator, count: int) -> list[int]:
    """Random int8 values with both extremes and zero included."""
    values = rng.integers(-128, 128, size=count).tolist()
    values[:3] = [-128, 127, 0]
    return values


@pytest.fixture(scope="module")
def fifo_build():
    return build_cocotb(verilog_for(StreamFifo(signed(8), depth=4), "stream_fifo"),
                        "stream_fifo")


@pytest.mark.verilator
@pytest.mark.parametrize("stall_in, stall_out", [(0.0, 0.0), (0.5, 0.0), (0.0, 0.7),
                                                 (0.4, 0.6)])
def test_cocotb_streams_through_fifo_lose_and_duplicate_nothing(fifo_build, seed, rng,
                                                               stall_in, stall_out):
    values = int8_values(rng, 400)
    params = {"values": values, "signed": True, "stall_in": stall_in, "stall_out": stall_out,
              "seed": seed}
    if stall_in == stall_out == 0.0:
        # One transfer per cycle plus the FIFO's latency and the final handshake edge.
        params["max_cycles"] = len(values) + 3
    assert run_cocotb(fifo_build, BENCH, BENCH_DIR, testcase="fifo_passes_every_payload_once",
                      params=params).passed == 1


@pytest.mark.verilator
def test_cocotb_streams_unsigned_payloads(fifo_build, seed, rng):
    values = rng.integers(0, 256, size=200).tolist()
    values[:2] = [0, 255]
    params = {"values": values, "signed": False, "stall_in": 0.3, "stall_out": 0.3,
              "seed": seed}
    run_cocotb(fifo_build, BENCH, BENCH_DIR, testcase="fifo_passes_every_payload_once",
               params=params)


@pytest.mark.verilator
def test_run_cocotb_raises_listing_the_failed_test(fifo_build, fresh_cache):
    # fresh_cache: the failed run's kept folder lands in this test's temporary folder.
    with pytest.raises(AssertionError) as failure:
        run_cocotb(fifo_build, BENCH, BENCH_DIR, testcase="deliberately_failing")
    message = str(failure.value)
    assert "1 of 1 tests failed" in message
    assert "deliberately_failing" in message
    assert "fifo_passes_every_payload_once" not in message.split("\n")[0]
    kept = list((fresh_cache / "runs").iterdir())
    assert len(kept) == 1 and (kept[0] / "sim.log").is_file()  # logs kept for the failure
    assert str(kept[0]) in message


def simulate_fifo(values: list[int], shape, stall_in: float, stall_out: float,
                  rng: np.random.Generator) -> list[int]:
    dut = StreamFifo(shape, depth=4)
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    received: list[int] = []

    async def producer(ctx):
        await stream_send(ctx, dut.i, values, stall_prob=stall_in, rng=rng)

    async def consumer(ctx):
        received.extend(await stream_recv(ctx, dut.o, len(values), stall_prob=stall_out,
                                          rng=rng))

    sim.add_testbench(producer)
    sim.add_testbench(consumer)
    sim.run()
    return received


@pytest.mark.parametrize("stall_in, stall_out", [(0.0, 0.0), (0.6, 0.0), (0.0, 0.6),
                                                 (0.5, 0.5)])
def test_amaranth_streams_through_fifo_lose_and_duplicate_nothing(rng, stall_in, stall_out):
    values = int8_values(rng, 150)
    assert simulate_fifo(values, signed(8), stall_in, stall_out, rng) == values


def test_amaranth_streams_unsigned_payloads(rng):
    values = rng.integers(0, 1 << 12, size=100).tolist()
    assert simulate_fifo(values, unsigned(12), 0.3, 0.3, rng) == values


def test_stalls_need_a_generator():
    dut = StreamFifo(signed(8), depth=4)
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    raised: list[ValueError] = []

    async def producer(ctx):
        try:
            await stream_put(ctx, dut.i, 1, stall_prob=0.5, rng=None)
        except ValueError as error:
            raised.append(error)

    sim.add_testbench(producer)
    sim.run()
    assert raised and "needs rng" in str(raised[0])


def test_fields_of_raw_payloads():
    raw = (0b1000_0000 << 8) | 0b0111_1111  # field1 = -128, field0 = 127
    assert signed_field(raw, 0, 8) == 127
    assert signed_field(raw, 8, 8) == -128
    assert unsigned_field(raw, 8, 8) == 128
    assert signed_field(0b1, 0, 1) == -1


RUN_OUTSIDE_PYTEST = """
import sys
from trilobit.sim.toolchain import CocotbBuild, run_cocotb
build = CocotbBuild(directory=__import__("pathlib").Path(sys.argv[1]), toplevel="stream_fifo",
                    waves=False, built_now=False, build_seconds=0.0)
run_cocotb(build, sys.argv[2], sys.argv[3], testcase="deliberately_failing")
"""


@pytest.mark.verilator
def test_run_cocotb_raises_outside_pytest_too(fifo_build, fresh_cache):
    # cocotb's runner only raises under pytest (it looks at PYTEST_CURRENT_TEST).
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_CURRENT_TEST"}
    result = subprocess.run([sys.executable, "-c", RUN_OUTSIDE_PYTEST,
                             str(fifo_build.directory), BENCH, str(BENCH_DIR)],
                            env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert "AssertionError: cocotb stream_fifo_bench on stream_fifo: 1 of 1 tests failed: " \
           "stream_fifo_bench.deliberately_failing" in result.stderr
