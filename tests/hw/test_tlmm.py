"""Ternary table-lookup engine: golden model, parameters, and the small blocks and the whole
engine in the Amaranth simulator (the Verilator benches are in test_tlmm_verilator.py)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from amaranth.sim import Simulator

from trilobit.errors import ConfigError
from trilobit.hw.tlmm import TernaryTableBuilder, TernaryTableReader, TlmmEngine, TlmmParams
from trilobit.hw.tlmm_baseline import TlmmBaseline
from trilobit.packing import balanced_ternary_digits, ternary_group_index, ternary_table_size
from trilobit.sim.golden_tlmm import (
    WEIGHT_KINDS,
    beat_ints,
    expected_cycles,
    gemv_streams,
    random_weights,
    tlmm_golden,
    tlmm_reference,
    unpack_out,
    weight_planes,
)
from trilobit.sim.streams import stream_recv, stream_send

# --------------------------------------------------------------------------------------
# Golden model against plain integer matmul


@pytest.mark.parametrize("G", [2, 3, 4])
@pytest.mark.parametrize("kind", WEIGHT_KINDS)
def test_golden_equals_integer_matmul(G, kind):
    rng = np.random.default_rng(G * 10 + len(kind))
    params = TlmmParams(group_size=G, rows=4, units=3, max_k=300)
    a = rng.integers(-128, 128, size=(3, 299))
    w = random_weights(rng, (9, 299), kind)
    np.testing.assert_array_equal(tlmm_golden(params, a, w, kind), tlmm_reference(a, w))


@pytest.mark.parametrize("kind", WEIGHT_KINDS)
def test_golden_extremes_reach_the_accumulator_bound(kind):
    params = TlmmParams(group_size=3, rows=2, units=2, max_k=600, max_planes=4)
    k = 600
    low = -(1 << (params.act_bits - 1))
    most_negative = {"ternary": -1, "int2": -2, "int3": -4, "int4": -8}[kind]
    a = np.full((1, k), low)
    w = np.full((2, k), most_negative)
    out = tlmm_golden(params, a, w, kind)
    assert out[0, 0] == k * low * most_negative
    assert abs(int(out[0, 0])) < 1 << (params.acc_bits - 1)


def test_weight_planes_recombine_to_the_weights():
    rng = np.random.default_rng(1)
    for kind, bits in (("int2", 2), ("int3", 3), ("int4", 4)):
        w = random_weights(rng, (5, 40), kind)
        planes = weight_planes(w, kind)
        assert planes.shape[0] == bits
        assert set(np.unique(planes[:-1])) <= {0, 1} and set(np.unique(planes[-1])) <= {-1, 0}
        recombined = sum(planes[j].astype(np.int64) << j for j in range(bits))
        np.testing.assert_array_equal(recombined, w)


def test_weight_planes_reject_out_of_range_weights():
    with pytest.raises(ConfigError, match="int2"):
        weight_planes(np.array([2]), "int2")
    with pytest.raises(ConfigError, match="ternary"):
        weight_planes(np.array([-2]), "ternary")


@pytest.mark.parametrize(
    "kwargs, parameter",
    [
        ({"group_size": 5}, "group_size"),
        ({"rows": 0}, "rows"),
        ({"units": 0}, "units"),
        ({"act_bits": 1}, "act_bits"),
        ({"act_bits": 17}, "act_bits"),
        ({"max_k": 0}, "max_k"),
        ({"max_planes": 5}, "max_planes"),
    ],
)
def test_bad_parameters_name_the_parameter_and_range(kwargs, parameter):
    with pytest.raises(ConfigError, match=parameter):
        TlmmParams(**kwargs)


def test_accumulator_width_covers_the_largest_k():
    params = TlmmParams(group_size=3, units=4, max_k=4096, max_planes=4)
    k = params.max_beats * params.activations_per_beat
    bound = k * 128 * 15
    assert bound < 1 << (params.acc_bits - 1)
    assert bound >= 1 << (params.acc_bits - 2)  # and is not wider than needed


# --------------------------------------------------------------------------------------
# Small blocks in the Amaranth simulator


def _run(dut, bench):
    sim = Simulator(dut)
    sim.add_testbench(bench)
    sim.run()


@pytest.mark.parametrize("G", [2, 3, 4])
def test_table_builder_holds_every_signed_sum(G):
    builder = TernaryTableBuilder(G, 8)
    digits = balanced_ternary_digits(np.arange(ternary_table_size(G)), G).astype(np.int64)
    rng = np.random.default_rng(G)
    cases = [np.full(G, -128), np.full(G, 127), np.zeros(G, dtype=np.int64),
             np.array([-128, 127, -128, 127][:G])]
    cases += [rng.integers(-128, 128, size=G) for _ in range(20)]

    async def bench(ctx):
        for acts in cases:
            for i, value in enumerate(acts):
                ctx.set(builder.activations[i], int(value))
            got = [ctx.get(builder.table[e]) for e in range(builder.table_size)]
            assert got == (digits @ acts).tolist()

    _run(builder, bench)


@pytest.mark.parametrize("G", [2, 3, 4])
def test_table_reader_returns_signed_entry_of_every_group(G):
    entry_bits = 11
    reader = TernaryTableReader(G, entry_bits)
    size = ternary_table_size(G)
    rng = np.random.default_rng(7)
    table = rng.integers(-(1 << 9), 1 << 9, size=size)
    table[-1] = -(1 << 9)  # most negative entry of this test table: its negation must fit
    all_groups = balanced_ternary_digits(np.arange(-(size - 1), size), G)
    magnitude, sign = ternary_group_index(all_groups.reshape(-1), G)

    async def bench(ctx):
        for e, value in enumerate(table):
            ctx.set(reader.table[e], int(value))
        for mag, s in zip(magnitude.tolist(), sign.tolist(), strict=True):
            ctx.set(reader.index.magnitude, mag)
            ctx.set(reader.index.sign, s)
            assert ctx.get(reader.value) == (-1 if s else 1) * int(table[mag])
        ctx.set(reader.index.magnitude, (1 << (size - 1).bit_length()) - 1)
        if (1 << (size - 1).bit_length()) - 1 >= size:
            assert ctx.get(reader.value) == 0

    _run(reader, bench)


# --------------------------------------------------------------------------------------
# Whole engine (and baseline) in the Amaranth simulator, random stalls on every stream


def _raw(port):
    """The stream with its payload seen as raw bits, for the int beats of gemv_streams."""
    return SimpleNamespace(payload=port.payload.as_value(), valid=port.valid, ready=port.ready)


def run_amaranth_gemv(dut, params, streams, stall, seed, max_cycles=20_000):
    """Drive all four streams with random stalls; return (outputs, cycles to the last one)."""
    rngs = np.random.default_rng(seed).spawn(4)
    outputs = []
    clock = {"cycles": 0, "at_last_output": None}

    def driver(name, rng):
        async def drive(ctx):
            await stream_send(ctx, _raw(getattr(dut, name)), beat_ints(streams[name]),
                              stall_prob=stall, rng=rng)

        return drive

    async def monitor(ctx):
        for value in await stream_recv(ctx, _raw(dut.out), streams["blocks"],
                                       stall_prob=stall, rng=rngs[3]):
            outputs.append(unpack_out(value, params))

    async def count_cycles(ctx):
        transfers = 0
        while True:
            *_, valid, ready = await ctx.tick().sample(dut.out.valid, dut.out.ready)
            clock["cycles"] += 1
            transfers += valid and ready
            if transfers == streams["blocks"] and clock["at_last_output"] is None:
                clock["at_last_output"] = clock["cycles"]
            assert clock["cycles"] < max_cycles, "engine stopped producing outputs"

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    for name, rng in zip(("cmd", "act", "weights"), rngs, strict=False):
        sim.add_testbench(driver(name, rng))
    sim.add_testbench(monitor)
    sim.add_testbench(count_cycles, background=True)
    sim.run()
    return np.array(outputs, dtype=np.int64), clock["at_last_output"]


def blocks_to_matrix(outputs, streams, m, n):
    """Output beats (vector-major, row blocks) -> (m, n)."""
    return outputs.reshape(m, streams["rows_padded"])[:, :n]


@pytest.mark.parametrize(
    "G, rows, units, kind, stall",
    [(2, 3, 2, "ternary", 0.3), (3, 2, 2, "int3", 0.4), (4, 2, 1, "int2", 0.2),
     (3, 4, 3, "ternary", 0.0)],
)
def test_engine_matches_golden_under_random_stalls(G, rows, units, kind, stall):
    params = TlmmParams(group_size=G, rows=rows, units=units, max_k=64)
    rng = np.random.default_rng(G + rows)
    m, n, k = 2, 2 * rows + 1, 50
    a = rng.integers(-128, 128, size=(m, k))
    a[0, :5] = -128
    a[1, :5] = 127
    w = random_weights(rng, (n, k), kind)
    streams = gemv_streams(params, a, w, kind)
    outputs, cycles = run_amaranth_gemv(TlmmEngine(params), params, streams, stall, seed=G)
    np.testing.assert_array_equal(blocks_to_matrix(outputs, streams, m, n),
                                  tlmm_golden(params, a, w, kind))
    if stall == 0.0:
        # monitor counts from cycle 0; the first beat is accepted in cycle 0
        assert cycles == expected_cycles(params, k, n, streams["planes"], m)


def test_baseline_matches_golden_under_random_stalls():
    params = TlmmParams(group_size=3, rows=3, units=2, max_k=64)
    rng = np.random.default_rng(5)
    m, n, k = 2, 7, 40
    a = rng.integers(-128, 128, size=(m, k))
    w = random_weights(rng, (n, k), "int4")
    streams = gemv_streams(params, a, w, "int4", weight_format="plain2")
    outputs, _ = run_amaranth_gemv(TlmmBaseline(params), params, streams, 0.3, seed=3)
    np.testing.assert_array_equal(blocks_to_matrix(outputs, streams, m, n),
                                  tlmm_golden(params, a, w, "int4"))
