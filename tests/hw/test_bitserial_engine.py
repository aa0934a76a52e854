"""Amaranth-simulator tests of the bit-serial engine and its bit-parallel baseline."""

from __future__ import annotations

import zlib

import numpy as np
import pytest
from amaranth.sim import Simulator

from trilobit.errors import ConfigError
from trilobit.hw.bitserial import BitSerialEngine, BitSerialParams
from trilobit.hw.bitserial_baseline import BitParallelMacArray
from trilobit.hw.bitserial_format import WeightFormat
from trilobit.sim.golden_bitserial import engine_reference, ideal_cycles, random_job
from trilobit.sw.bitmod import pack_engine_job


def run_engine(dut, params: BitSerialParams, jobs, rng=None, stall_prob=0.0):
    """Drive ``jobs`` through ``dut`` in the Amaranth simulator with random valid/ready
    stalls; returns (outputs per job as int64 arrays, cycles from first beat to last output)."""
    rng = rng or np.random.default_rng(0)
    beats = [pack_engine_job(j.codes, j.fmts, j.type_ids, j.scales, j.act, params.width)
             for j in jobs]
    results = []
    cycles = {}

    def source(stream, words):
        async def bench(ctx):
            for word in words:
                while stall_prob and rng.random() < stall_prob:
                    ctx.set(stream.valid, 0)
                    await ctx.tick()
                ctx.set(stream.payload.as_value(), word)
                ctx.set(stream.valid, 1)
                await ctx.tick().until(stream.ready)
                ctx.set(stream.valid, 0)
        return bench

    meta_words = [params.pack_meta(*m) for b in beats for m in b["meta"]]
    act_words = [params.pack_act(a) for b in beats for a in b["act"]]
    w_words = [params.pack_weights(w) for b in beats for w in b["weights"]]

    async def sink(ctx):
        start = None
        for _ in jobs:
            while True:
                ready = not (stall_prob and rng.random() < stall_prob)
                ctx.set(dut.out.ready, ready)
                _, _, valid, payload = await ctx.tick().sample(
                    dut.out.valid, dut.out.payload.as_value())
                if start is None:
                    start = 0
                start += 1
                if valid and ready:
                    results.append(np.array(params.unpack_out(int(payload))))
                    break
        ctx.set(dut.out.ready, 0)
        cycles["total"] = start

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(source(dut.meta, meta_words), background=True)
    sim.add_testbench(source(dut.act, act_words), background=True)
    sim.add_testbench(source(dut.weights, w_words), background=True)
    sim.add_testbench(sink)
    sim.run()
    return results, cycles["total"]


@pytest.fixture
def rng(request) -> np.random.Generator:
    """Seeded from the test id, so a failure replays the same data."""
    return np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))


SMALL = BitSerialParams(width=4, rows=2, columns=3, group_size=8, max_groups=8)


@pytest.mark.parametrize("fmt", [f.name for f in WeightFormat])
def test_engine_matches_golden_for_each_format(fmt, rng):
    job = random_job(rng, SMALL.rows, SMALL.columns, SMALL.group_size, [fmt] * 3)
    (out,), _ = run_engine(BitSerialEngine(SMALL), SMALL, [job], rng, stall_prob=0.3)
    np.testing.assert_array_equal(out, engine_reference(job))


def test_engine_random_type_mix_per_group_under_stalls(rng):
    fmts = rng.choice([int(f) for f in WeightFormat], size=6)
    jobs = [random_job(rng, SMALL.rows, SMALL.columns, SMALL.group_size, fmts) for _ in range(2)]
    outs, _ = run_engine(BitSerialEngine(SMALL), SMALL, jobs, rng, stall_prob=0.4)
    for out, job in zip(outs, jobs, strict=True):
        np.testing.assert_array_equal(out, engine_reference(job))


@pytest.mark.parametrize("extremes", ["max", "min", "zero_weights", "unit_weights"])
def test_engine_extremes(extremes, rng):
    fmts = list(WeightFormat)
    job = random_job(rng, SMALL.rows, SMALL.columns, SMALL.group_size, fmts, extremes=extremes)
    (out,), _ = run_engine(BitSerialEngine(SMALL), SMALL, [job], rng, stall_prob=0.2)
    np.testing.assert_array_equal(out, engine_reference(job))


def test_engine_one_bit_per_cycle(rng):
    params = BitSerialParams(width=2, rows=1, columns=2, group_size=4, bits_per_cycle=1,
                             max_groups=8)
    job = random_job(rng, 1, 2, 4, list(WeightFormat))
    (out,), _ = run_engine(BitSerialEngine(params), params, [job], rng, stall_prob=0.3)
    np.testing.assert_array_equal(out, engine_reference(job))


@pytest.mark.parametrize("fmt", ["INT3", "INT4", "INT6", "INT8"])
def test_engine_cycles_scale_with_weight_bits(fmt, rng):
    """Stall-free, the chunks take cycles_per_weight cycles each; the rest is a fixed
    latency (metadata, dequantizer, output register) independent of the format."""
    n_groups = 4
    job = random_job(rng, SMALL.rows, SMALL.columns, SMALL.group_size, [fmt] * n_groups)
    (out,), cycles = run_engine(BitSerialEngine(SMALL), SMALL, [job], rng)
    np.testing.assert_array_equal(out, engine_reference(job))
    ideal = ideal_cycles(job.fmts, SMALL.group_size, SMALL.width)
    assert ideal == n_groups * SMALL.chunks_per_group * {"INT3": 2, "INT4": 2, "INT6": 3,
                                                          "INT8": 4}[fmt]
    fixed_latency = 4 + SMALL.dequant_cycles
    assert cycles == ideal + fixed_latency


@pytest.mark.parametrize("fmt", ["INT3", "INT4", "INT6", "INT8"])
def test_baseline_matches_golden_one_chunk_per_cycle(fmt, rng):
    job = random_job(rng, SMALL.rows, SMALL.columns, SMALL.group_size, [fmt] * 3)
    (out,), cycles = run_engine(BitParallelMacArray(SMALL), SMALL, [job], rng)
    np.testing.assert_array_equal(out, engine_reference(job))
    chunks = 3 * SMALL.chunks_per_group
    assert cycles <= chunks + 4


def test_baseline_under_stalls_and_extremes(rng):
    jobs = [random_job(rng, SMALL.rows, SMALL.columns, SMALL.group_size, ["INT8"] * 2,
                       extremes=e) for e in ("min", "max", None)]
    outs, _ = run_engine(BitParallelMacArray(SMALL), SMALL, jobs, rng, stall_prob=0.4)
    for out, job in zip(outs, jobs, strict=True):
        np.testing.assert_array_equal(out, engine_reference(job))


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [({"width": 0}, "width"), ({"bits_per_cycle": 3}, "bits_per_cycle"),
     ({"group_size": 12, "width": 8}, "group_size"), ({"act_bits": 9}, "act_bits"),
     ({"scale_bits": 0}, "scale_bits"), ({"rows": 65}, "rows")],
)
def test_params_reject_bad_values_naming_the_parameter(kwargs, name):
    with pytest.raises(ConfigError, match=name):
        BitSerialParams(**kwargs)


@pytest.mark.parametrize("extremes", ["min", "max"])
def test_engine_maximal_k_extremes_fit_the_accumulator(extremes, rng):
    """max_groups full groups of the largest products at the largest scale: the
    accumulator must hold the exact sum (no wrap-around)."""
    params = BitSerialParams(width=8, rows=1, columns=2, group_size=64, max_groups=4)
    job = random_job(rng, 1, 2, 64, ["INT8"] * params.max_groups, extremes=extremes)
    (out,), _ = run_engine(BitSerialEngine(params), params, [job], rng, stall_prob=0.2)
    a = -128 if extremes == "min" else 127
    w = -128  # int8 code of the largest magnitude
    expected = params.max_k * a * w * 255
    np.testing.assert_array_equal(out, np.full((1, 2), expected))
    assert expected.bit_length() < params.acc_bits
