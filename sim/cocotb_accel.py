"""cocotb 2.x bench of the whole accelerator with the memory served from Python every cycle.

This is the slow reference point of ``bench/bench_accel.py`` (Python on the clock); the
everyday path is the C++ harness of :mod:`trilobit.sim.accel_verilator`. The bus behaviour
is the same: while ``clk`` is low the bench answers the Wishbone data master from the
memory image, holding ``ack`` low with probability ``stall_prob``.

``accel_program`` params (:func:`trilobit.sim.toolchain.test_params`): ``memory`` (path of
a raw image), ``out`` (path for the final image), ``prog_base``, ``data_base``, ``window``
``[base, limit]``, ``watchdog``, ``stall_prob``, ``seed``, ``line_bytes``, ``report`` (JSON
path: status, error_pc, cycles, seconds, cpu_seconds = processor time of the simulator
process over the same span).
"""

from __future__ import annotations

import json
import random
import time

import cocotb
import numpy as np
from cocotb.triggers import FallingEdge

from trilobit.hw.accel_csr import COUNTERS, REGISTERS
from trilobit.sim.streams import clock_and_reset
from trilobit.sim.toolchain import test_params


class AccelBench:
    """Clock, reset, CSR master and the per-cycle memory model of one accelerator."""

    def __init__(self, dut, memory: np.ndarray, line_bytes: int, stall_prob: float, seed: int):
        self.dut = dut
        self.memory = memory
        self.line = line_bytes
        self.stall_prob = stall_prob
        self.rng = random.Random(seed)

    async def start(self) -> None:
        for name in ("csr_cyc", "csr_stb", "csr_we", "mem_ack"):
            getattr(self.dut, name).value = 0
        await clock_and_reset(self.dut.clk, self.dut.rst)

    async def csr(self, offset: int, value: int | None = None) -> int:
        """One Wishbone CSR access (write when ``value`` is given); returns the read data."""
        dut = self.dut
        await FallingEdge(dut.clk)
        dut.csr_cyc.value = 1
        dut.csr_stb.value = 1
        dut.csr_we.value = int(value is not None)
        dut.csr_adr.value = offset >> 2
        dut.csr_dat_w.value = value or 0
        while True:
            await FallingEdge(dut.clk)
            if int(dut.csr_ack.value):
                break
        data = int(dut.csr_dat_r.value)
        dut.csr_cyc.value = 0
        dut.csr_stb.value = 0
        dut.csr_we.value = 0
        return data

    async def serve_until_irq(self) -> int:
        """Answer the data bus every cycle until ``irq``; returns the cycles taken."""
        dut, mem, line = self.dut, self.memory, self.line
        cycles = 0
        while True:
            await FallingEdge(dut.clk)
            if int(dut.irq.value):
                dut.mem_ack.value = 0
                return cycles
            cycles += 1
            ack = 0
            if int(dut.mem_cyc.value) and int(dut.mem_stb.value) \
                    and self.rng.random() >= self.stall_prob:
                address = int(dut.mem_adr.value) * line
                ack = 1
                if int(dut.mem_we.value):
                    data = int(dut.mem_dat_w.value)
                    mem[address : address + line] = np.frombuffer(
                        data.to_bytes(line, "little"), np.uint8)
                else:
                    dut.mem_dat_r.value = int.from_bytes(
                        mem[address : address + line].tobytes(), "little")
            dut.mem_ack.value = ack


@cocotb.test()
async def accel_program(dut):
    p = test_params()
    memory = np.fromfile(p["memory"], dtype=np.uint8)
    bench = AccelBench(dut, memory, p["line_bytes"], p["stall_prob"], p["seed"])
    await bench.start()
    await bench.csr(REGISTERS["PROG_BASE"], p["prog_base"])
    await bench.csr(REGISTERS["DATA_BASE"], p["data_base"])
    await bench.csr(REGISTERS["WIN_BASE"], p["window"][0])
    await bench.csr(REGISTERS["WIN_LIMIT"], p["window"][1])
    await bench.csr(REGISTERS["WATCHDOG"], p["watchdog"])
    await bench.csr(REGISTERS["CTRL"], 0x3)
    t0, cpu0 = time.perf_counter(), time.process_time()
    cycles = await bench.serve_until_irq()
    seconds, cpu_seconds = time.perf_counter() - t0, time.process_time() - cpu0
    status = await bench.csr(REGISTERS["STATUS"])
    report = {
        "status": status,
        "error_pc": await bench.csr(REGISTERS["ERROR_PC"]),
        "sim_cycles": cycles,
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
    }
    for name, offset in COUNTERS.items():
        report[name] = await bench.csr(offset)
    memory.tofile(p["out"])
    with open(p["report"], "w") as f:
        json.dump(report, f)
    assert status & 3 == 2, f"run ended with status {status:#x}"
