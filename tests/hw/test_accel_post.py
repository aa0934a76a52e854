"""The post-processing unit's float32 (ORT) rounding against trilobit.requant, in the
Amaranth simulator (no C++ build)."""

import numpy as np
from amaranth import Module, Signal, signed
from amaranth.sim import Simulator

from trilobit.hw.accel_core import ort_round
from trilobit.requant import requantize_ort
from trilobit.sim.golden import ort_multiplier_from_bits


def ort_cases(rng, n):
    v = np.concatenate([
        rng.integers(-(1 << 31), 1 << 31, n // 2),
        rng.integers(-100000, 100000, n // 4),
        np.array([0, 1, -1, (1 << 31) - 1, -(1 << 31), (1 << 24) + 1, -(1 << 24) - 3]),
    ]).astype(np.int64)
    v = np.concatenate([v, rng.integers(-(1 << 26), 1 << 26, n - v.size)])
    # Multipliers around the scales that matter (|v*m| near 0.5 .. 512) plus special values.
    mags = rng.uniform(-40, 5, v.size)
    mult = (2.0 ** mags * np.abs(rng.standard_normal(v.size)) + 1e-30).astype(np.float32)
    # Half of them land |v * m| in 0..300, where both roundings decide the result.
    aimed = rng.uniform(0, 300, v.size) / np.maximum(np.abs(v), 1)
    mult = np.where(np.arange(v.size) % 2 == 1, aimed, mult).astype(np.float32)
    bits = mult.view(np.uint32).copy()
    bits[:8] = [0, 0x7F800000, 0x7FC00000, 0x80000001, 0x00000001, 0x3F000000, 0x3F800000,
                0xBF800000]
    # Ties: v * m exactly at .5 after float32 rounding.
    v[8:16] = [1, 3, 5, -5, 7, 2049, -2049, 6]
    bits[8:16] = np.float32(0.5).view(np.uint32)
    return v, bits


def test_ort_rounding_matches_onnxruntime_semantics(rng):
    v_values, bit_values = ort_cases(rng, 1500)
    m = Module()
    v = Signal(signed(32))
    bits = Signal(32)
    result = ort_round(m, v, bits)
    expected = []
    for vv, bb in zip(v_values, bit_values, strict=True):
        mult = ort_multiplier_from_bits(np.array([bb], dtype=np.uint32))
        # The widest window an output type can need is [-255, 255]: uint8 with zero point 0
        # gives the positive half, uint8 with zero point 255 the negative half.
        positive = int(requantize_ort(np.array([vv]), mult, 0, "uint8")[0])
        negative = int(requantize_ort(np.array([vv]), mult, 255, "uint8")[0]) - 255
        expected.append(positive if positive > 0 else negative)
    got = []

    async def bench(ctx):
        for vv, bb in zip(v_values, bit_values, strict=True):
            ctx.set(v, int(vv))
            ctx.set(bits, int(bb))
            await ctx.delay(1e-9)
            got.append(ctx.get(result))

    sim = Simulator(m)
    sim.add_testbench(bench)
    sim.run()
    got = np.clip(np.array(got), -255, 255)
    want = np.array(expected)
    bad = np.flatnonzero(got != want)
    assert bad.size == 0, [(int(v_values[i]), hex(bit_values[i]), got[i], want[i]) for i in bad[:5]]
