"""GEMM units of the accelerator (hw/accel_compute.py) in the Amaranth simulator.

Each test fills INP/WGT/ACC buffers (numpy images laid out as docs/isa.md says), runs one
GEMM tile on the unit and compares ACC with the ISA semantics computed independently:
``trilobit.gemm.gemm_int`` on weights decoded by the golden model's ``decode_weights``.
"""

from __future__ import annotations

import numpy as np
import pytest
from amaranth.hdl import Module, unsigned
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.sim import Simulator

from trilobit.config import AcceleratorConfig, BitSerialParams, TlmmParams, preset
from trilobit.errors import ConfigError
from trilobit.gemm import gemm_int
from trilobit.hw.accel_compute import (
    BitSerialGemmUnit,
    TlmmGemmUnit,
    group_index_lut,
    ternary_code_value,
)
from trilobit.isa import Engine, WeightEncoding, pack_group_meta, pack_weight_rows
from trilobit.packing import balanced_ternary_digits
from trilobit.sim.golden import (
    CycleModel,
    decode_weights,
    meta_row_lines,
    weight_row_lines,
    wrap_int32,
)

TLMM_FORMATS = (WeightEncoding.TERNARY, WeightEncoding.INT2, WeightEncoding.INT4)
BITSERIAL_FORMATS = (WeightEncoding.INT8, WeightEncoding.INT6, WeightEncoding.INT4,
                     WeightEncoding.INT3, WeightEncoding.FP4, WeightEncoding.FP3)


class UnitBench(wiring.Component):
    """A GEMM unit with its own INP, WGT and ACC buffers, initialised from byte images."""

    def __init__(self, unit, inp: np.ndarray, wgt: np.ndarray, acc: np.ndarray):
        self.unit = unit
        self.line = unit.line
        self.images = {"inp": inp, "wgt": wgt, "acc": acc.view(np.uint8)}
        super().__init__({})
        width = 8 * self.line

        def lines(image):
            words = np.asarray(image, dtype=np.uint8).reshape(-1, self.line)
            return [int.from_bytes(bytes(w), "little") for w in words]

        self.mems = {name: Memory(shape=unsigned(width), depth=len(image) // self.line,
                                  init=lines(image))
                     for name, image in self.images.items()}

    def elaborate(self, platform):
        m = Module()
        u = self.unit
        m.submodules.unit = u
        for name, mem in self.mems.items():
            m.submodules[name] = mem
        inp_r = self.mems["inp"].read_port()
        wgt_r = self.mems["wgt"].read_port()
        meta_r = self.mems["wgt"].read_port()
        acc_r = self.mems["acc"].read_port()
        acc_w = self.mems["acc"].write_port(granularity=32)
        m.d.comb += [
            inp_r.addr.eq(u.inp_addr), u.inp_data.eq(inp_r.data),
            wgt_r.addr.eq(u.wgt_addr), u.wgt_data.eq(wgt_r.data),
            meta_r.addr.eq(u.meta_addr), u.meta_data.eq(meta_r.data),
            acc_r.addr.eq(u.acc_raddr), u.acc_rdata.eq(acc_r.data),
            acc_w.addr.eq(u.acc_waddr), acc_w.data.eq(u.acc_wdata), acc_w.en.eq(u.acc_wen),
        ]
        return m


def make_case(config, fmt, m, n, k, rng, *, meta=False, accumulate=False, extreme=None):
    """Random buffers for one GEMM and the ISA's answer. Returns (images, fields, expected)."""
    line = config.line_bytes
    a_row = -(-k // line)
    w_row = weight_row_lines(k, fmt, line)
    bits = fmt.slot_bits
    if extreme == "max":
        a = np.full((m, k), -128, dtype=np.int8)
        a[:, 1::2] = 127
    else:
        a = rng.integers(-128, 128, size=(m, k), dtype=np.int8)
    codes = rng.integers(0, 1 << bits, size=(n, k))
    if extreme == "zero":
        codes[:] = 0
    elif extreme == "max":
        # the largest-magnitude code of each format where activations are -128
        big = {WeightEncoding.TERNARY: 3, WeightEncoding.INT2: 2, WeightEncoding.INT4: 8,
               WeightEncoding.INT8: 0x80, WeightEncoding.INT6: 0x20, WeightEncoding.INT3: 4,
               WeightEncoding.FP4: 0xF, WeightEncoding.FP3: 7}[fmt]
        codes[:] = big
    elif extreme == "ones":
        codes[:] = {2: 1, 4: 1, 8: 1}[bits] if fmt != WeightEncoding.FP3 else 1
    gs = config.bitserial.group_size if config.bitserial else 1
    groups = -(-k // gs)
    m_row = meta_row_lines(k, gs, line)
    wgt_rows = pack_weight_rows(codes, fmt, line).reshape(n, -1)
    # garbage in the padding bytes of each row must not matter: fill it at random
    row_bytes = -(-k * bits // 8)
    noise = rng.integers(0, 256, size=wgt_rows.shape, dtype=np.uint8)
    noise[:, :row_bytes] = 0
    if k * bits % 8 == 0:
        wgt_rows = wgt_rows | noise
    type_ids = rng.integers(0, 4, size=(n, groups))
    scales = rng.integers(0, 256, size=(n, groups))
    if extreme == "max":
        scales[:] = 255
    meta_rows = pack_group_meta(type_ids, scales, line).reshape(n, -1)
    wgt_line = 1  # leave line 0 to catch off-by-one reads
    meta_line = wgt_line + n * w_row
    wgt = np.zeros(((meta_line + n * m_row + 2) * line,), dtype=np.uint8)
    wgt[wgt_line * line: (wgt_line + n * w_row) * line] = wgt_rows.reshape(-1)
    if meta:
        wgt[meta_line * line: (meta_line + n * m_row) * line] = meta_rows.reshape(-1)
    inp_line = 1
    inp = rng.integers(0, 256, size=((inp_line + m * a_row + 1) * line,), dtype=np.uint8)
    a_img = np.zeros((m, a_row * line), dtype=np.int8)
    a_img[:, :k] = a
    # bytes past k in each activation row are garbage too
    a_img[:, k:] = rng.integers(-128, 128, size=(m, a_row * line - k), dtype=np.int8)
    inp[inp_line * line: (inp_line + m * a_row) * line] = a_img.view(np.uint8).reshape(-1)
    acc_base = 3
    acc = rng.integers(-2**31, 2**31, size=(acc_base + m * n + line,)).astype(np.int32)
    acc_lines = -(-len(acc) * 4 // line)
    acc = np.concatenate([acc, np.zeros(acc_lines * line // 4 - len(acc), np.int32)])

    # the ISA's answer, independent of the unit
    if meta:
        w = decode_weights(wgt_rows[:, :row_bytes], fmt, k, type_ids, gs).astype(np.int64)
        w = w * np.repeat(scales, gs, axis=1)[:, :k]
    else:
        w = decode_weights(wgt_rows[:, :row_bytes], fmt, k).astype(np.int64)
    result = gemm_int(a, w.T).astype(np.int64)
    expected = acc.astype(np.int64).copy()
    target = expected[acc_base: acc_base + m * n]
    if accumulate:
        target += result.reshape(-1)
    else:
        target[:] = result.reshape(-1)
    expected = wrap_int32(expected)
    fields = dict(m=m, n=n, k=k, wfmt=int(fmt), accumulate=int(accumulate), meta=int(meta),
                  inp=inp_line, wgt=wgt_line, meta_line=meta_line, acc=acc_base,
                  a_row=a_row, w_row=w_row, m_row=m_row)
    return (inp, wgt, acc), fields, expected


def run_unit(unit_class, config, cases, *, stall_prob=0.3, seed=0, max_cycles=200_000):
    """Run ``cases`` (fields, expected) back to back on one unit sharing one set of buffers
    (the first case's images) and return the ACC image after each case."""
    rng = np.random.default_rng(seed)
    (inp, wgt, acc), _, _ = cases[0]
    unit = unit_class(config)
    bench = UnitBench(unit, inp, wgt, acc)
    results = []
    cycles = []

    async def testbench(ctx):
        for _, fields, _ in cases:
            idle = int(rng.geometric(1 - stall_prob)) - 1 if stall_prob else 0
            if idle:
                await ctx.tick().repeat(idle)
            ctx.set(unit.tile.payload, fields)
            ctx.set(unit.tile.valid, 1)
            await ctx.tick().until(unit.tile.ready)
            ctx.set(unit.tile.valid, 0)
            await ctx.tick()
            count = 0
            while ctx.get(unit.busy):
                await ctx.tick()
                count += 1
                assert count < max_cycles, "GEMM unit did not finish"
            cycles.append(count)
            mem = bench.mems["acc"]
            words = [ctx.get(mem.data[i]) for i in range(mem.depth)]
            raw = b"".join(int(w).to_bytes(config.line_bytes, "little") for w in words)
            results.append(np.frombuffer(raw, dtype=np.int32).copy())

    sim = Simulator(bench)
    sim.add_clock(1e-6)
    sim.add_testbench(testbench)
    sim.run()
    return results, cycles


def small_tlmm(group_size=3, rows=4, units=2, mem_width=64):
    return AcceleratorConfig(tlmm=TlmmParams(group_size=group_size, rows=rows, units=units),
                             bitserial=None, mem_width=mem_width)


def small_bitserial(rows=3, lanes=8, group_size=16, mem_width=64, bits_per_cycle=2):
    return AcceleratorConfig(
        tlmm=None, mem_width=mem_width,
        bitserial=BitSerialParams(rows=rows, lanes=lanes, bits_per_cycle=bits_per_cycle,
                                  group_size=group_size))


# -- elaboration-time tables ----------------------------------------------------------------

@pytest.mark.parametrize("G", [2, 3, 4])
def test_group_index_lut_agrees_with_balanced_ternary(G):
    lut = group_index_lut(G)
    assert len(lut) == 4 ** G
    for word, (magnitude, sign) in enumerate(lut):
        w = [ternary_code_value((word >> (2 * g)) & 3) for g in range(G)]
        b = sum(v * 3 ** (G - 1 - g) for g, v in enumerate(w))
        assert (magnitude, sign) == (abs(b), int(b < 0))
        digits = balanced_ternary_digits(np.array([magnitude]), G)[0]
        assert [int(d) * (-1 if sign else 1) for d in digits] == w


def test_ternary_slot_values_follow_the_isa():
    assert [ternary_code_value(c) for c in range(4)] == [0, 1, 0, -1]


def test_bitserial_unit_rejects_lanes_wider_than_a_line():
    config = small_bitserial(lanes=16, mem_width=64)
    with pytest.raises(ConfigError, match="lanes"):
        BitSerialGemmUnit(config)


# -- table-lookup unit ------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", TLMM_FORMATS, ids=lambda f: f.name)
def test_tlmm_unit_matches_isa_on_random_shapes(fmt):
    config = small_tlmm()
    rng = np.random.default_rng(int(fmt))
    for m, n, k, acc in [(2, 5, 37, False), (1, 9, 70, True), (3, 4, 8, True)]:
        case = make_case(config, fmt, m, n, k, rng, accumulate=acc)
        (results, _) = run_unit(TlmmGemmUnit, config, [case], seed=k)
        np.testing.assert_array_equal(results[0], case[2], err_msg=f"m={m} n={n} k={k}")


@pytest.mark.parametrize("extreme", ["max", "zero", "ones"])
@pytest.mark.parametrize("fmt", TLMM_FORMATS, ids=lambda f: f.name)
def test_tlmm_unit_extremes(fmt, extreme):
    config = small_tlmm(group_size=4, rows=2, units=1, mem_width=32)
    rng = np.random.default_rng(7)
    case = make_case(config, fmt, 2, 3, 29, rng, accumulate=True, extreme=extreme)
    results, _ = run_unit(TlmmGemmUnit, config, [case])
    np.testing.assert_array_equal(results[0], case[2])


@pytest.mark.parametrize("G,rows,units,width", [(2, 3, 1, 32), (4, 2, 3, 128), (3, 1, 4, 64)])
def test_tlmm_unit_engine_shapes(G, rows, units, width):
    config = small_tlmm(group_size=G, rows=rows, units=units, mem_width=width)
    rng = np.random.default_rng(G * 100 + rows)
    for fmt in TLMM_FORMATS:
        case = make_case(config, fmt, 2, 5, int(rng.integers(1, 60)), rng, accumulate=True)
        results, _ = run_unit(TlmmGemmUnit, config, [case], seed=G)
        np.testing.assert_array_equal(results[0], case[2], err_msg=fmt.name)


def test_tlmm_unit_wraps_modulo_2_32():
    """ACC near 2**31 plus a large positive product carries past int32 and wraps."""
    config = small_tlmm(group_size=2, rows=2, units=1, mem_width=32)
    rng = np.random.default_rng(3)
    (inp, wgt, acc), fields, _ = make_case(config, WeightEncoding.INT4, 1, 2, 40, rng,
                                           accumulate=True, extreme="max")
    k, line, base = fields["k"], config.line_bytes, fields["acc"]
    # every weight is int4 -8; activations -128 at even and 127 at odd positions
    act = np.where(np.arange(k) % 2 == 0, -128, 127).astype(np.int64)
    dot = int((act * -8).sum())
    assert dot > 0
    acc[base: base + 2] = 2**31 - 5
    expected = acc.astype(np.int64)
    expected[base: base + 2] += dot
    assert np.frombuffer(inp.tobytes(), np.int8)[fields["inp"] * line] == -128
    results, _ = run_unit(TlmmGemmUnit, config, [((inp, wgt, acc), fields, None)])
    np.testing.assert_array_equal(results[0], wrap_int32(expected))


# -- bit-serial unit --------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", BITSERIAL_FORMATS, ids=lambda f: f.name)
def test_bitserial_unit_matches_isa_on_random_shapes(fmt):
    config = small_bitserial()
    rng = np.random.default_rng(10 + int(fmt))
    for m, n, k, meta, acc in [(2, 4, 37, True, False), (1, 3, 16, False, True),
                               (1, 7, 50, True, True)]:
        case = make_case(config, fmt, m, n, k, rng, meta=meta, accumulate=acc)
        results, _ = run_unit(BitSerialGemmUnit, config, [case], seed=k)
        np.testing.assert_array_equal(results[0], case[2], err_msg=f"m={m} n={n} k={k}")


@pytest.mark.parametrize("extreme", ["max", "zero", "ones"])
@pytest.mark.parametrize("fmt", [WeightEncoding.INT8, WeightEncoding.FP4, WeightEncoding.INT3],
                         ids=lambda f: f.name)
def test_bitserial_unit_extremes(fmt, extreme):
    config = small_bitserial(rows=2, lanes=4, group_size=8, mem_width=32)
    rng = np.random.default_rng(11)
    case = make_case(config, fmt, 2, 3, 21, rng, meta=True, accumulate=True, extreme=extreme)
    results, _ = run_unit(BitSerialGemmUnit, config, [case])
    np.testing.assert_array_equal(results[0], case[2])


def test_bitserial_unit_radix2_and_wide_lines():
    config = small_bitserial(rows=2, lanes=4, group_size=8, mem_width=128, bits_per_cycle=1)
    rng = np.random.default_rng(12)
    for fmt in (WeightEncoding.INT6, WeightEncoding.FP3):
        case = make_case(config, fmt, 2, 3, 45, rng, meta=True, accumulate=True)
        results, _ = run_unit(BitSerialGemmUnit, config, [case])
        np.testing.assert_array_equal(results[0], case[2], err_msg=fmt.name)


def test_units_of_the_small_preset_run_back_to_back_tiles():
    config = preset("small")
    rng = np.random.default_rng(13)
    for unit_class, fmts, kw in [(TlmmGemmUnit, TLMM_FORMATS, {}),
                                 (BitSerialGemmUnit, (WeightEncoding.INT4,), {"meta": True})]:
        for fmt in fmts:
            first = make_case(config, fmt, 1, 10, 140, rng, accumulate=False, **kw)
            # the same tile again with accumulate: ACC must hold twice the product
            second_fields = dict(first[1], accumulate=1)
            base = first[2].astype(np.int64)
            doubled = base.copy()
            lo, hi = first[1]["acc"], first[1]["acc"] + 10
            doubled[lo:hi] = base[lo:hi] * 2
            results, _ = run_unit(unit_class, config,
                                  [first, (first[0], second_fields, wrap_int32(doubled))])
            np.testing.assert_array_equal(results[0], first[2], err_msg=fmt.name)
            np.testing.assert_array_equal(results[1], wrap_int32(doubled), err_msg=fmt.name)


def test_tlmm_unit_rejects_beats_wider_than_two_lines_of_int4():
    config = small_tlmm(group_size=4, rows=2, units=3, mem_width=32)  # 12 > 2 * 4 bytes
    with pytest.raises(ConfigError, match="group_size \\* tlmm.units"):
        TlmmGemmUnit(config)


@pytest.mark.parametrize("fmt", TLMM_FORMATS, ids=lambda f: f.name)
def test_tlmm_unit_keeps_the_engine_fed(fmt):
    """Beats of G*units activations step across INP and WGT lines (no padding) and staging
    keeps up: a GEMV on the small preset (G*units = 6 does not divide the 8-byte line) takes
    one cycle per weight beat plus a fixed fill and drain, and the golden cycle estimate
    follows it."""
    config = preset("small")
    t = config.tlmm
    m, n, k = 1, 2 * t.rows, 512
    planes = {WeightEncoding.TERNARY: 1, WeightEncoding.INT2: 2, WeightEncoding.INT4: 4}[fmt]
    beats = m * -(-n // t.rows) * -(-k // (t.group_size * t.units)) * planes
    case = make_case(config, fmt, m, n, k, np.random.default_rng(21))
    results, cycles = run_unit(TlmmGemmUnit, config, [case], stall_prob=0)
    np.testing.assert_array_equal(results[0], case[2])
    assert beats <= cycles[0] <= beats + 2 * t.rows + 8, (cycles[0], beats)
    estimate = CycleModel(config).gemm(Engine.TLMM, fmt, m, n, k)
    assert abs(estimate - cycles[0]) <= 0.02 * cycles[0] + 4, (estimate, cycles[0])


@pytest.mark.parametrize("fmt,meta", [(WeightEncoding.INT4, False), (WeightEncoding.INT8, True),
                                      (WeightEncoding.FP4, True), (WeightEncoding.INT6, True)],
                         ids=["int4", "int8-meta", "fp4-meta", "int6-meta"])
def test_bitserial_unit_keeps_the_engine_fed(fmt, meta):
    """Two WGT lines a cycle (the WGT and metadata ports) feed the small preset's engine
    (8 channels x 8 lanes): INT4/INT8 run at the engine's cycles per chunk, metadata reads
    cost half a cycle per line; INT6 (3 cycles a chunk from an 8-bit slot) is bound by the
    reads. The golden cycle estimate follows the unit."""
    config = preset("small")
    b = config.bitserial
    m, n, k = 1, 2 * b.rows, 512
    per_weight = -(-max(fmt.code_bits, 4) // b.bits_per_cycle)
    engine_cycles = m * -(-n // b.rows) * (k // b.lanes) * per_weight
    reads = m * -(-n // b.rows) * (k * fmt.slot_bits // (8 * config.line_bytes)) * b.rows // 2
    groups = -(-k // b.group_size)
    meta_lines = -(-groups // (config.line_bytes // 2))  # per channel
    meta_reads = m * -(-n // b.rows) * b.rows * meta_lines if meta else 0
    bound = max(engine_cycles, reads + meta_reads // 2)
    case = make_case(config, fmt, m, n, k, np.random.default_rng(22), meta=meta)
    results, cycles = run_unit(BitSerialGemmUnit, config, [case], stall_prob=0)
    np.testing.assert_array_equal(results[0], case[2])
    assert bound <= cycles[0] <= bound + 2 * b.rows + 12, (cycles[0], bound)
    estimate = CycleModel(config).gemm(Engine.BITSERIAL, fmt, m, n, k, meta)
    assert abs(estimate - cycles[0]) <= 0.02 * cycles[0] + 4, (estimate, cycles[0])


def test_tlmm_unit_at_the_largest_k_across_lines():
    """k = 65535 on the small preset (beats of 6 activations straddle the 8-byte INP lines
    and the 32-weight WGT lines) with activations -128/127 and all weights -1."""
    config = preset("small")
    rng = np.random.default_rng(32)
    case = make_case(config, WeightEncoding.TERNARY, 1, 3, 65535, rng, accumulate=True,
                     extreme="max")
    results, _ = run_unit(TlmmGemmUnit, config, [case], max_cycles=1_000_000)
    np.testing.assert_array_equal(results[0], case[2])


@pytest.mark.parametrize("unit_class,fmt", [(TlmmGemmUnit, WeightEncoding.INT4),
                                            (BitSerialGemmUnit, WeightEncoding.INT8)],
                         ids=["tlmm-int4", "bitserial-int8"])
def test_units_at_the_largest_k_with_extreme_values(unit_class, fmt):
    """k = 65535 (the ISA maximum) with activations -128/127 and the largest weights: the
    engine accumulators hold the exact sum and ACC keeps its low 32 bits."""
    config = small_tlmm(group_size=4, rows=2, units=2, mem_width=128) if unit_class is \
        TlmmGemmUnit else small_bitserial(rows=2, lanes=16, group_size=1024, mem_width=128)
    rng = np.random.default_rng(31)
    case = make_case(config, fmt, 1, 2, 65535, rng, meta=unit_class is BitSerialGemmUnit,
                     accumulate=True, extreme="max")
    results, _ = run_unit(unit_class, config, [case], max_cycles=1_000_000)
    np.testing.assert_array_equal(results[0], case[2])


@pytest.mark.parametrize("k", [1, 16, 17])
def test_units_at_tiny_and_line_sized_k(k):
    rng = np.random.default_rng(k)
    for unit_class, config, fmt in [
        (TlmmGemmUnit, small_tlmm(group_size=3, rows=2, units=2, mem_width=128),
         WeightEncoding.TERNARY),
        (BitSerialGemmUnit, small_bitserial(rows=2, lanes=8, group_size=16, mem_width=128),
         WeightEncoding.FP4),
    ]:
        case = make_case(config, fmt, 2, 3, k, rng, meta=unit_class is BitSerialGemmUnit,
                         accumulate=True)
        results, _ = run_unit(unit_class, config, [case])
        np.testing.assert_array_equal(results[0], case[2], err_msg=unit_class.__name__)


def test_bitserial_unit_blocks_of_one_chunk():
    """group_size == lanes and k <= group_size: every block is a single chunk, back to back
    over activation rows and channel blocks."""
    config = small_bitserial(rows=2, lanes=8, group_size=8, mem_width=64)
    rng = np.random.default_rng(41)
    for fmt, k in [(WeightEncoding.INT8, 8), (WeightEncoding.FP4, 5), (WeightEncoding.INT3, 1)]:
        case = make_case(config, fmt, 3, 5, k, rng, meta=True, accumulate=True)
        results, _ = run_unit(BitSerialGemmUnit, config, [case])
        np.testing.assert_array_equal(results[0], case[2], err_msg=f"{fmt.name} k={k}")


# -- the compact form (config.compact): fewer registers, same results -------------------------

def compact_case(config, fmt, m, n, k, rng, **kw):
    """``make_case`` for the compact form of ``config`` with buffers exactly as large as the
    images (padded to powers of two), so the units' pointers are as narrow as the buffers'
    addresses: an address computed one bit too narrow reads the wrong line."""
    images, fields, expected = make_case(config, fmt, m, n, k, rng, **kw)
    if config.bitserial is None:  # no metadata: WGT ends after the weight rows (and a line)
        inp, wgt, acc = images
        images = (inp, wgt[: (fields["meta_line"] + 1) * config.line_bytes], acc)
    sizes = {name: 1 << max(int(image.nbytes - 1).bit_length(), 2)
             for name, image in zip(("inp", "wgt", "acc"), images, strict=True)}
    inp, wgt, acc = (np.concatenate([image.view(np.uint8),
                                     np.zeros(sizes[name] - image.nbytes, np.uint8)])
                     for name, image in zip(("inp", "wgt", "acc"), images, strict=True))
    acc = acc.view(np.int32)
    expected = np.concatenate([expected, acc[len(expected):].astype(np.int64)])
    compact = config.replace(compact=True, inp_bytes=sizes["inp"], wgt_bytes=sizes["wgt"],
                             acc_bytes=sizes["acc"])
    return compact, ((inp, wgt, acc), fields, expected)


@pytest.mark.parametrize("fmt", TLMM_FORMATS, ids=lambda f: f.name)
def test_compact_tlmm_unit_matches_isa_under_stalls(fmt):
    rng = np.random.default_rng(50 + int(fmt))
    for base, (m, n, k, acc) in [
        (small_tlmm(group_size=2, rows=2, units=1, mem_width=32), (2, 5, 37, True)),
        (small_tlmm(), (1, 9, 70, False)),
        (small_tlmm(group_size=4, rows=3, units=1, mem_width=32), (3, 4, 8, True)),
    ]:
        config, case = compact_case(base, fmt, m, n, k, rng, accumulate=acc)
        results, _ = run_unit(TlmmGemmUnit, config, [case], seed=k)
        np.testing.assert_array_equal(results[0], case[2], err_msg=f"m={m} n={n} k={k}")


@pytest.mark.parametrize("extreme", ["max", "zero", "ones"])
def test_compact_tlmm_unit_extremes(extreme):
    rng = np.random.default_rng(51)
    base = small_tlmm(group_size=2, rows=2, units=1, mem_width=32)
    for fmt in TLMM_FORMATS:
        config, case = compact_case(base, fmt, 2, 3, 29, rng, accumulate=True, extreme=extreme)
        results, _ = run_unit(TlmmGemmUnit, config, [case])
        np.testing.assert_array_equal(results[0], case[2], err_msg=fmt.name)


def test_compact_tlmm_unit_at_the_largest_k_and_wrapping():
    """k = 65535 with activations -128/127 and all weights -1, accumulated onto ACC values
    near 2**31 so the sums wrap modulo 2**32, on the iCEBreaker's engine shape and line
    width, two channel blocks. With 32-bit lines k = 65535 takes 16384 INP lines per row,
    the widest ``a_row`` of GEMM_TILE."""
    rng = np.random.default_rng(52)
    base = small_tlmm(group_size=2, rows=2, units=1, mem_width=32)
    config, ((inp, wgt, acc), fields, _) = compact_case(
        base, WeightEncoding.TERNARY, 1, 3, 65535, rng, accumulate=True, extreme="max")
    k, first = fields["k"], fields["acc"]
    act = np.where(np.arange(k) % 2 == 0, -128, 127).astype(np.int64)
    dot = int(-act.sum())  # every weight is -1
    acc[first: first + 3] = [2**31 - 1, -2**31, 2**31 - 100]
    expected = acc.astype(np.int64)
    expected[first: first + 3] += dot
    results, _ = run_unit(TlmmGemmUnit, config, [((inp, wgt, acc), fields, None)],
                          max_cycles=1_000_000)
    np.testing.assert_array_equal(results[0], wrap_int32(expected))


@pytest.mark.parametrize("fmt", [WeightEncoding.INT8, WeightEncoding.FP4, WeightEncoding.INT3],
                         ids=lambda f: f.name)
def test_compact_bitserial_unit_matches_isa_under_stalls(fmt):
    rng = np.random.default_rng(53 + int(fmt))
    for base, (m, n, k, meta, acc) in [
        (small_bitserial(), (2, 4, 37, True, False)),
        (small_bitserial(rows=2, lanes=4, group_size=8, mem_width=32), (2, 3, 21, True, True)),
    ]:
        config, case = compact_case(base, fmt, m, n, k, rng, meta=meta, accumulate=acc)
        results, _ = run_unit(BitSerialGemmUnit, config, [case], seed=k)
        np.testing.assert_array_equal(results[0], case[2], err_msg=f"m={m} n={n} k={k}")


def test_compact_units_run_back_to_back_tiles():
    rng = np.random.default_rng(54)
    for unit_class, base, fmt, kw in [
        (TlmmGemmUnit, small_tlmm(group_size=2, rows=2, units=1, mem_width=32),
         WeightEncoding.INT4, {}),
        (BitSerialGemmUnit, small_bitserial(rows=2, lanes=4, group_size=8, mem_width=32),
         WeightEncoding.INT4, {"meta": True}),
    ]:
        config, first = compact_case(base, fmt, 2, 5, 40, rng, accumulate=False, **kw)
        base_result = first[2].astype(np.int64)
        doubled = base_result.copy()
        lo, hi = first[1]["acc"], first[1]["acc"] + 10
        doubled[lo:hi] = base_result[lo:hi] * 2
        second = (first[0], dict(first[1], accumulate=1), wrap_int32(doubled))
        results, _ = run_unit(unit_class, config, [first, second])
        np.testing.assert_array_equal(results[0], first[2], err_msg=unit_class.__name__)
        np.testing.assert_array_equal(results[1], second[2], err_msg=unit_class.__name__)


def test_compact_bitserial_unit_at_the_largest_k_with_extreme_values():
    """k = 65535 with activations -128/127, the largest FP4 weights and group scales 255:
    the engine's accumulators hold the exact sum and ACC keeps its low 32 bits."""
    rng = np.random.default_rng(55)
    base = small_bitserial(rows=2, lanes=16, group_size=1024, mem_width=128)
    config, case = compact_case(base, WeightEncoding.FP4, 1, 2, 65535, rng, meta=True,
                                accumulate=True, extreme="max")
    results, _ = run_unit(BitSerialGemmUnit, config, [case], max_cycles=1_000_000)
    np.testing.assert_array_equal(results[0], case[2])
