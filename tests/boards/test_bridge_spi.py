"""The SPI target of the bridge link in the Amaranth simulator: a host bit-bangs SPI mode 0."""

from __future__ import annotations

import numpy as np
from amaranth.sim import Simulator

from trilobit.hw.bridge_protocol import IDLE
from trilobit.hw.bridge_spi import SpiTarget

HALF_PERIOD = 8  # system cycles per half SCK period: SCK = clk / 16


def _run(host_bytes: list[int], reply_bytes: list[int], frames: list[int]):
    """Clock ``host_bytes`` in (chip-select released after each count of ``frames``), offer
    ``reply_bytes`` on tx; returns (bytes on rx, bytes seen on MISO)."""
    dut = SpiTarget()
    received, miso_bytes = [], []

    async def host(ctx):
        index = 0
        for frame in frames:
            ctx.set(dut.cs_n, 0)
            await ctx.tick().repeat(HALF_PERIOD)
            for _ in range(frame):
                value, got = host_bytes[index], 0
                index += 1
                for bit in range(7, -1, -1):
                    ctx.set(dut.mosi, (value >> bit) & 1)
                    await ctx.tick().repeat(HALF_PERIOD)
                    got = got << 1 | ctx.get(dut.miso)  # sampled at the rising edge
                    ctx.set(dut.sck, 1)
                    await ctx.tick().repeat(HALF_PERIOD)
                    ctx.set(dut.sck, 0)
                miso_bytes.append(got)
            await ctx.tick().repeat(HALF_PERIOD)
            ctx.set(dut.cs_n, 1)
            await ctx.tick().repeat(4 * HALF_PERIOD)

    async def replies(ctx):
        for value in reply_bytes:
            ctx.set(dut.tx.payload, value)
            ctx.set(dut.tx.valid, 1)
            await ctx.tick().until(dut.tx.ready)
        ctx.set(dut.tx.valid, 0)

    async def sink(ctx):
        ctx.set(dut.rx.ready, 1)
        while True:
            _, _, valid, payload = await ctx.tick().sample(dut.rx.valid, dut.rx.payload)
            if valid:
                received.append(payload)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(host)
    sim.add_testbench(replies)
    sim.add_process(sink)
    sim.run_until(1e-6 * (len(host_bytes) * 17 * HALF_PERIOD + len(frames) * 80))
    return received, miso_bytes


def test_spi_target_moves_random_bytes_both_ways_across_frames():
    rng = np.random.default_rng(11)
    host_bytes = [0x00, 0xFF, 0xA5, 0x5A] + [int(v) for v in rng.integers(0, 256, 12)]
    replies = [int(v) for v in rng.integers(0, 255, 10)]
    received, miso = _run(host_bytes, replies, frames=[7, 9])
    assert received == host_bytes
    # Replies fill the bytes as they start; idle bytes (0xFF) once the replies run out.
    assert miso == replies + [IDLE] * (len(host_bytes) - len(replies))


def test_spi_target_says_idle_when_nothing_is_waiting():
    received, miso = _run([1, 2, 3], [], frames=[3])
    assert received == [1, 2, 3] and miso == [IDLE] * 3
