"""cocotb bench for tests/sim/test_streams.py: a FIFO between StreamDriver and StreamMonitor.

Parameters (``run_cocotb(params=...)``): ``values`` (list of ints to send), ``signed``,
``stall_in``, ``stall_out`` (stall probabilities), ``seed``, ``max_cycles`` (optional bound
on cycles for the whole transfer, checks the helpers add no bubbles of their own).
"""

import cocotb
import numpy as np
from cocotb.triggers import RisingEdge
from cocotb.utils import get_sim_time

from trilobit.sim.streams import StreamDriver, StreamMonitor, clock_and_reset
from trilobit.sim.toolchain import test_params

CLOCK_NS = 10


@cocotb.test()
async def fifo_passes_every_payload_once(dut):
    params = test_params()
    values = params["values"]
    rng = np.random.default_rng(params["seed"])
    await clock_and_reset(dut.clk, dut.rst, period_ns=CLOCK_NS)
    driver = StreamDriver(dut.clk, dut.i__valid, dut.i__ready, dut.i__payload,
                          stall_prob=params["stall_in"], rng=rng, signed=params["signed"])
    monitor = StreamMonitor(dut.clk, dut.o__valid, dut.o__ready, dut.o__payload,
                            stall_prob=params["stall_out"], rng=rng, signed=params["signed"])
    start = get_sim_time(unit="ns")
    sending = cocotb.start_soon(driver.send(values))
    received = await monitor.recv(len(values))
    await sending
    cycles = (get_sim_time(unit="ns") - start) // CLOCK_NS
    assert received == values
    if "max_cycles" in params:
        assert cycles <= params["max_cycles"], f"{len(values)} payloads took {cycles} cycles"
    # Nothing more may come out: the FIFO must be empty now.
    dut.o__ready.value = 1
    for _ in range(8):
        await RisingEdge(dut.clk)
        assert not dut.o__valid.value, "an extra payload came out of the FIFO"


@cocotb.test()
async def deliberately_failing(dut):
    """Used to check that run_cocotb reports failures; selected by name only."""
    await clock_and_reset(dut.clk, dut.rst, period_ns=CLOCK_NS)
    assert int(dut.o__valid.value) == 1, "the FIFO is empty after reset"
