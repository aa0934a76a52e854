"""cocotb bench for tests/sim/test_toolchain.py: a free-running counter.

Parameter ``cycles``: how many rising edges to wait after reset; the counter must then
read exactly that many (it counts modulo 2**width, ``width`` also a parameter).
"""

import cocotb
from cocotb.triggers import ClockCycles, ReadOnly

from trilobit.sim.streams import clock_and_reset
from trilobit.sim.toolchain import test_params


@cocotb.test()
async def counter_counts_cycles(dut):
    params = test_params()
    await clock_and_reset(dut.clk, dut.rst)
    await ClockCycles(dut.clk, params["cycles"])
    await ReadOnly()
    assert int(dut.count.value) == params["cycles"] % (1 << params["width"])
