"""Golden ISA model on hand-written programs, checked against plain numpy (gemm_int, requant)."""

import numpy as np
import pytest

from trilobit.config import preset
from trilobit.dtypes import BITMOD_CANDIDATES, get_dtype
from trilobit.gemm import gemm_int
from trilobit.isa import (
    Buffer,
    Engine,
    ErrorCode,
    Opcode,
    PostMode,
    WeightEncoding,
    encode,
    pack_group_meta,
    pack_post_params,
    pack_weight_rows,
    pad_rows,
)
from trilobit.requant import dyadic_from_scale, requantize_dyadic, requantize_ort
from trilobit.sim.asm import Assembler, disassemble
from trilobit.sim.golden import GoldenMachine, Status, meta_row_lines, weight_row_lines

CFG = preset("small")
LINE = CFG.line_bytes
PROG, DATA = 0x0000, 0x1000


def lines(nbytes: int) -> int:
    return -(-nbytes // LINE)


def machine(program: bytes, data: dict[int, np.ndarray], size: int = 1 << 16) -> GoldenMachine:
    """A machine with ``program`` at PROG and ``data`` (offset from DATA -> bytes) loaded."""
    gm = GoldenMachine(CFG, size)
    gm.write(PROG, program)
    for offset, blob in data.items():
        gm.write(DATA + offset, np.asarray(blob, dtype=np.uint8))
    gm.prog_base, gm.data_base = PROG, DATA
    return gm


def read_rows(gm: GoldenMachine, offset: int, rows: int, n: int, stride: int) -> np.ndarray:
    return np.stack([gm.read(DATA + offset + r * stride, n) for r in range(rows)])


def dyadic_params(n, rng, zp_range=(-5, 5), lo=-128, hi=127):
    scales = rng.uniform(1e-3, 2e-2, n).astype(np.float32)
    ms, ss = zip(*(dyadic_from_scale(float(s)) for s in scales), strict=True)
    bias = rng.integers(-3000, 3000, n)
    zp = rng.integers(*zp_range, n)
    return dict(bias=bias, multiplier=np.array(ms), shift=np.array(ss), zero_point=zp,
                clip_lo=np.full(n, lo), clip_hi=np.full(n, hi))


def dyadic_reference(acc, p):
    y = requantize_dyadic(acc + p["bias"], p["multiplier"], p["shift"], p["zero_point"], "int8")
    return np.clip(y, p["clip_lo"], p["clip_hi"])


def test_gemv_int8_bitserial_dyadic(rng):
    k, n = 40, 12
    a = rng.integers(-128, 128, (1, k))
    a[0, :3] = [-128, 127, -128]  # extremes
    w = rng.integers(-128, 128, (n, k))
    p = dyadic_params(n, rng)
    asm = Assembler()
    asm.load(Buffer.INP, 0, 0x000, row_lines=lines(k))
    asm.load(Buffer.WGT, 0, 0x100, row_lines=n * lines(k))
    asm.load(Buffer.PARAM, 0, 0x800, row_lines=lines(16 * n), push_next=True)
    asm.gemm(Engine.BITSERIAL, WeightEncoding.INT8, 1, n, k, inp=0, wgt=0, acc=0, pop_prev=True)
    asm.post(PostMode.DYADIC, 1, n, acc=0, param=0, out=0, bias=True, push_next=True)
    asm.store(Buffer.OUT, 0, 0xC00, row_lines=lines(n), pop_prev=True)
    asm.end()
    gm = machine(asm.assemble(), {
        0x000: pad_rows(a.astype(np.int8).view(np.uint8), LINE),
        0x100: pack_weight_rows(w.astype(np.int8).view(np.uint8), WeightEncoding.INT8, LINE),
        0x800: pack_post_params(**p),
    })
    result = gm.run(window=(0, 1 << 16))
    assert result.ok, result
    expected = dyadic_reference(gemm_int(a, w.T), p)
    assert np.array_equal(gm.read(DATA + 0xC00, n).view(np.int8), expected.reshape(-1))
    assert result.counters["macs"] == n * k
    assert result.counters["bytes_read"] == LINE * (lines(k) + n * lines(k) + lines(16 * n))
    assert result.counters["bytes_written"] == LINE * lines(n)
    assert result.counters["insns"] == 7


def double_buffered_gemm(asm, m, n, k, tn, tk, fmt, engine, a_off, w_off, p_off, out_off,
                         wlines_of, mode=PostMode.DYADIC, out_unsigned=False, flip=False):
    """Tiled GEMM with two INP/WGT slots and two OUT slots, tokens as docs/isa.md shows."""
    half_inp = CFG.inp_bytes // LINE // 2
    half_wgt = CFG.wgt_bytes // LINE // 2
    half_out = CFG.out_bytes // LINE // 2
    a_stride = lines(k) * LINE
    asm.load(Buffer.PARAM, 0, p_off, row_lines=lines(16 * n))
    tile = 0
    w_cursor = w_off
    for ni, n0 in enumerate(range(0, n, tn)):
        nt = min(tn, n - n0)
        for ki, k0 in enumerate(range(0, k, tk)):
            kt = min(tk, k - k0)
            slot = tile % 2
            asm.load(Buffer.INP, slot * half_inp, a_off + k0, rows=m, row_lines=lines(kt),
                     stride=a_stride, flip=flip, pop_next=tile >= 2)
            wl = nt * wlines_of(kt)
            asm.load(Buffer.WGT, slot * half_wgt, w_cursor, row_lines=wl, push_next=True)
            w_cursor += wl * LINE
            asm.gemm(engine, fmt, m, nt, kt, inp=slot * half_inp, wgt=slot * half_wgt,
                     acc=0, accumulate=ki > 0, pop_prev=True, push_prev=True)
            tile += 1
        oslot = ni % 2
        asm.post(mode, m, nt, acc=0, param=lines(16 * n0) if n0 else 0,
                 out=oslot * half_out, bias=True, out_unsigned=out_unsigned,
                 pop_next=ni >= 2, push_next=True)
        asm.store(Buffer.OUT, oslot * half_out, out_off + n0, rows=m, row_lines=lines(nt),
                  stride=lines(n) * LINE, pop_prev=True, push_prev=True)
    return w_cursor


def tiled_weights(codes, tn, tk, fmt):
    """WGT images of each (n tile, k tile) in program order, concatenated."""
    blobs = []
    n, k = codes.shape
    for n0 in range(0, n, tn):
        for k0 in range(0, k, tk):
            blobs.append(pack_weight_rows(codes[n0 : n0 + tn, k0 : k0 + tk], fmt, LINE))
    return np.concatenate(blobs)


@pytest.mark.parametrize("engine, fmt, lo, hi", [
    (Engine.BITSERIAL, WeightEncoding.INT4, -8, 8),
    (Engine.TLMM, WeightEncoding.TERNARY, -1, 2),
    (Engine.TLMM, WeightEncoding.INT2, -2, 2),
    (Engine.BITSERIAL, WeightEncoding.INT6, -32, 32),
])
def test_tiled_gemm_with_double_buffering(engine, fmt, lo, hi, rng):
    m, n, k, tn, tk = 5, 20, 100, 8, 32
    a = rng.integers(-128, 128, (m, k))
    w = rng.integers(lo, hi, (n, k))
    codes = w & ((1 << fmt.code_bits) - 1)  # two's complement codes in their slots
    p = dyadic_params(n, rng)
    asm = Assembler()
    double_buffered_gemm(asm, m, n, k, tn, tk, fmt, engine, 0x0, 0x1000, 0x3000, 0x3800,
                         lambda kt: weight_row_lines(kt, fmt, LINE))
    asm.end()
    gm = machine(asm.assemble(), {
        0x0: pad_rows(a.astype(np.int8).view(np.uint8), LINE),
        0x1000: tiled_weights(codes, tn, tk, fmt),
        0x3000: pack_post_params(**p),
    })
    result = gm.run(window=(0, 1 << 16))
    assert result.ok, (result, disassemble(asm.assemble()))
    expected = dyadic_reference(gemm_int(a, w.T), p)
    got = read_rows(gm, 0x3800, m, n, lines(n) * LINE).view(np.int8)
    assert np.array_equal(got, expected)
    assert result.counters["macs"] == m * n * k
    # Decoupled units overlap: the estimate is shorter than the sum of the unit busy times.
    c = result.counters
    assert c["cycles"] < c["load_busy"] + c["compute_busy"] + c["store_busy"]


def test_requant_chain_uint8_with_zero_points_ort_mode(rng):
    """Two QLinearMatMul layers, uint8 activations with zero points: layer 1 writes uint8, layer
    2 loads it with flip and the bias carries (128 - za) * colsum(W) (docs/isa.md)."""
    m, k1, n1, n2 = 3, 24, 16, 8
    x = rng.integers(0, 256, (m, k1))
    zx = 131
    w1 = rng.integers(-128, 128, (n1, k1))
    w2 = rng.integers(-128, 128, (n2, n1))
    mult1 = np.float32(0.0007)
    mult2 = np.float32(0.0011)
    z1, z2 = 117, 12
    bias1 = (128 - zx) * w1.sum(axis=1)
    bias2 = (128 - z1) * w2.sum(axis=1)
    p1 = pack_post_params(bias1, mult1, 0, z1, 0, 255, n=n1, mode=PostMode.ORT)
    p2 = pack_post_params(bias2, mult2, 0, z2, z2, 255, n=n2, mode=PostMode.ORT)  # + ReLU
    asm = Assembler()
    asm.load(Buffer.INP, 0, 0x000, rows=m, row_lines=lines(k1), stride=lines(k1) * LINE, flip=True)
    asm.load(Buffer.WGT, 0, 0x200, row_lines=n1 * lines(k1))
    asm.load(Buffer.WGT, 64, 0x600, row_lines=n2 * lines(n1))
    asm.load(Buffer.PARAM, 0, 0xA00, row_lines=lines(16 * n1))
    asm.load(Buffer.PARAM, 32, 0xB00, row_lines=lines(16 * n2), push_next=True)
    asm.gemm(Engine.BITSERIAL, WeightEncoding.INT8, m, n1, k1, 0, 0, 0, pop_prev=True)
    asm.post(PostMode.ORT, m, n1, acc=0, param=0, out=0, bias=True, out_unsigned=True,
             push_next=True)
    asm.store(Buffer.OUT, 0, 0xC00, rows=m, row_lines=lines(n1), stride=lines(n1) * LINE,
              pop_prev=True)
    asm.sync()  # the next load reads what the store wrote
    asm.load(Buffer.INP, 100, 0xC00, rows=m, row_lines=lines(n1), stride=lines(n1) * LINE,
             flip=True, push_next=True)
    asm.gemm(Engine.BITSERIAL, WeightEncoding.INT8, m, n2, n1, 100, 64, 0, pop_prev=True)
    asm.post(PostMode.ORT, m, n2, acc=0, param=32, out=16, bias=True, out_unsigned=True,
             push_next=True)
    asm.store(Buffer.OUT, 16, 0xE00, rows=m, row_lines=lines(n2), stride=LINE * lines(n2),
              pop_prev=True)
    asm.end()
    gm = machine(asm.assemble(), {
        0x000: pad_rows(x.astype(np.uint8), LINE),
        0x200: pack_weight_rows(w1.astype(np.int8).view(np.uint8), WeightEncoding.INT8, LINE),
        0x600: pack_weight_rows(w2.astype(np.int8).view(np.uint8), WeightEncoding.INT8, LINE),
        0xA00: p1, 0xB00: p2,
    })
    result = gm.run(window=(0, 1 << 16))
    assert result.ok, result
    # Reference: QLinearMatMul semantics straight from the zero points.
    y1 = requantize_ort(gemm_int(x, w1.T, a_zero_point=zx), mult1, z1, "uint8")
    y2 = requantize_ort(gemm_int(y1, w2.T, a_zero_point=z1), mult2, z2, "uint8")
    y2 = np.maximum(y2, z2)
    assert np.array_equal(read_rows(gm, 0xC00, m, n1, lines(n1) * LINE), y1)
    assert np.array_equal(read_rows(gm, 0xE00, m, n2, lines(n2) * LINE), y2)


def test_residual_add_two_tensors_and_fused_residual(rng):
    """QLinearAdd-style y = rq((x1 - z1)*k1 + (x2 - z2)*k2) with POST ACC then POST DYADIC,
    and a GEMM output with a fused residual."""
    m, n = 4, 24
    x1 = rng.integers(-128, 128, (m, n))
    x2 = rng.integers(-128, 128, (m, n))
    x1[0, 0], x2[0, 0] = -128, 127
    z1, z2, k1, k2 = 3, -7, 300, -1200
    mult, shift = dyadic_from_scale(0.004)
    params = pack_post_params(0, mult, shift, 5, -128, 127, n=n)
    asm = Assembler()
    asm.load(Buffer.INP, 0, 0x000, rows=m, row_lines=lines(n), stride=lines(n) * LINE)
    asm.load(Buffer.INP, 40, 0x100, rows=m, row_lines=lines(n), stride=lines(n) * LINE)
    asm.load(Buffer.PARAM, 0, 0x200, row_lines=lines(16 * n), push_next=True)
    asm.post(PostMode.ACC, m, n, acc=8, no_acc=True, residual_line=0, res_zp=z1, res_mult=k1,
             pop_prev=True)
    asm.post(PostMode.DYADIC, m, n, acc=8, param=0, out=0, residual_line=40, res_zp=z2,
             res_mult=k2, push_next=True)
    asm.store(Buffer.OUT, 0, 0x400, rows=m, row_lines=lines(n), stride=lines(n) * LINE,
              pop_prev=True)
    asm.store(Buffer.ACC, 8 * 4 // LINE, 0x600, row_lines=lines(4 * m * n))  # int32 intermediate
    asm.end()
    gm = machine(asm.assemble(), {
        0x000: pad_rows(x1.astype(np.int8).view(np.uint8), LINE),
        0x100: pad_rows(x2.astype(np.int8).view(np.uint8), LINE),
        0x200: params,
    })
    result = gm.run(window=(0, 1 << 16))
    assert result.ok, result
    inter = (x1 - z1) * k1
    total = inter + (x2 - z2) * k2
    expected = requantize_dyadic(total, mult, shift, 5, "int8")
    assert np.array_equal(read_rows(gm, 0x400, m, n, lines(n) * LINE).view(np.int8), expected)
    assert np.array_equal(gm.read(DATA + 0x600, 4 * m * n).view("<i4").reshape(m, n), inter)


def test_bitmod_fp4_groups_with_type_ids_and_scales(rng):
    cfg_gs = CFG.bitserial.group_size
    m, n, k = 2, 6, 2 * cfg_gs + 40  # a partial last group
    groups = -(-k // cfg_gs)
    a = rng.integers(-128, 128, (m, k))
    codes = rng.integers(0, 16, (n, k))
    type_ids = rng.integers(0, 4, (n, groups))
    scales = rng.integers(0, 256, (n, groups))
    scales[0, 0] = 255
    # Reference from the datatype tables, group by group.
    tables = np.array([get_dtype(t).values for t in BITMOD_CANDIDATES[4]])
    w = np.zeros((n, k), dtype=np.int64)
    for j in range(n):
        for g in range(groups):
            sl = slice(g * cfg_gs, (g + 1) * cfg_gs)
            w[j, sl] = tables[type_ids[j, g]][codes[j, sl]].astype(np.int64) * scales[j, g]
    wl = weight_row_lines(k, WeightEncoding.FP4, LINE)
    asm = Assembler()
    asm.load(Buffer.INP, 0, 0x0, rows=m, row_lines=lines(k), stride=lines(k) * LINE)
    asm.load(Buffer.WGT, 0, 0x400, row_lines=n * wl)
    asm.load(Buffer.WGT, 200, 0x1000, row_lines=n * meta_row_lines(k, cfg_gs, LINE),
             push_next=True)
    asm.gemm(Engine.BITSERIAL, WeightEncoding.FP4, m, n, k, 0, 0, 0, meta_line=200,
             pop_prev=True, push_next=True)
    asm.store(Buffer.ACC, 0, 0x2000, row_lines=lines(4 * m * n), pop_prev=True)
    asm.end()
    gm = machine(asm.assemble(), {
        0x0: pad_rows(a.astype(np.int8).view(np.uint8), LINE),
        0x400: pack_weight_rows(codes, WeightEncoding.FP4, LINE),
        0x1000: pack_group_meta(type_ids, scales, LINE),
    })
    assert gm.run(window=(0, 1 << 16)).ok
    got = gm.read(DATA + 0x2000, 4 * m * n).view("<i4").reshape(m, n)
    assert np.array_equal(got, a @ w.T)


def test_accumulator_wraps_modulo_2_32(rng):
    k = 4096
    a = np.full((1, k), -128)
    w = np.full((1, k), -128)
    asm = Assembler()
    asm.load(Buffer.INP, 0, 0x0, row_lines=lines(k))
    asm.load(Buffer.WGT, 0, 0x1000, row_lines=lines(k), push_next=True)
    for i in range(40):  # 40 * 2**26 overflows int32
        asm.gemm(Engine.BITSERIAL, WeightEncoding.INT8, 1, 1, k, 0, 0, 0, accumulate=i > 0,
                 pop_prev=i == 0, push_next=i == 39)
    asm.store(Buffer.ACC, 0, 0x2000, pop_prev=True)
    asm.end()
    gm = machine(asm.assemble(), {0x0: pad_rows(a.astype(np.int8).view(np.uint8), LINE),
                                  0x1000: pad_rows(w.astype(np.int8).view(np.uint8), LINE)})
    assert gm.run(window=(0, 1 << 16)).ok
    expected = np.array([40 * k * 128 * 128], dtype=np.int64).astype(np.uint32).view(np.int32)
    assert gm.read(DATA + 0x2000, 4).view("<i4")[0] == expected[0]


# -- errors -----------------------------------------------------------------------------------


def simple_store_program(asm: Assembler) -> None:
    asm.load(Buffer.INP, 0, 0x0, row_lines=1, push_next=True)
    asm.post(PostMode.ACC, 1, 2, acc=0, no_acc=True, residual_line=0, res_mult=1,
             pop_prev=True, push_next=True)
    asm.store(Buffer.ACC, 0, 0x100, row_lines=1, pop_prev=True)


END_WITH_RESERVED_BIT = int.from_bytes(encode(Opcode.END), "little") | 1 << 100


@pytest.mark.parametrize("word", [0, 8, 15, END_WITH_RESERVED_BIT])
def test_illegal_instruction_stops_after_earlier_effects(word):
    asm = Assembler()
    simple_store_program(asm)
    bad = asm.raw(word)
    asm.store(Buffer.ACC, 0, 0x200, row_lines=1)
    asm.end()
    gm = machine(asm.assemble(), {0x0: np.array([5, 250, 0, 0, 0, 0, 0, 0])})
    result = gm.run(window=(0, 1 << 16))
    assert (result.state, result.error, result.error_pc) == (
        Status.ERROR, ErrorCode.ILLEGAL_INSTRUCTION, bad)
    assert list(gm.read(DATA + 0x100, 8).view("<i4")) == [5, -6]  # the earlier store happened
    assert not gm.read(DATA + 0x200, 8).any()  # the later one did not
    assert result.counters["insns"] == 3


def test_window_violation_issues_no_access_and_reports_pc():
    for offset in (0x8000 - 8, 0x7000):  # straddles the limit, entirely outside
        asm = Assembler()
        simple_store_program(asm)
        asm.store(Buffer.ACC, 0, offset, row_lines=2, pop_prev=False)
        asm.end()
        gm = machine(asm.assemble(), {0x0: np.array([1, 2, 3, 4, 5, 6, 7, 8])})
        before = gm.memory.copy()
        result = gm.run(window=(0, DATA + 0x7FF8 - 0x1000))
        assert (result.error, result.error_pc) == (ErrorCode.WINDOW, 3)
        changed = np.flatnonzero(gm.memory != before)
        assert changed.size and changed.max() < DATA + 0x108  # only the legal store wrote
        assert result.counters["bytes_written"] == LINE


def test_fetch_outside_window_and_below_base():
    asm = Assembler()
    asm.jump(0x100)  # lands outside a window that ends at 0x1000
    gm = machine(asm.assemble(), {})
    result = gm.run(window=(0, 0x1000))
    assert (result.error, result.error_pc) == (ErrorCode.WINDOW, 0x100)
    result = gm.run(window=(0x10, 0x1000))  # program itself below the window
    assert (result.error, result.error_pc) == (ErrorCode.WINDOW, 0)


def test_load_below_window_base():
    asm = Assembler()
    asm.load(Buffer.INP, 0, 0x0)
    asm.end()
    gm = machine(asm.assemble(), {})
    gm.prog_base = 0x2000
    gm.write(0x2000, asm.assemble())
    assert gm.run(window=(0x1008, 0x3000)).error == ErrorCode.WINDOW


@pytest.mark.parametrize("build, code", [
    (lambda a: a.gemm(Engine.BITSERIAL, WeightEncoding.INT8, 1, 1, 1, 0, 0, 0, pop_prev=True),
     ErrorCode.TOKEN),
    (lambda a: a.store(Buffer.OUT, 0, 0, pop_prev=True), ErrorCode.TOKEN),
    (lambda a: a.emit(Opcode.LOAD, buf=0, rows=1, row_lines=1, pop_prev=1), ErrorCode.BAD_FIELD),
    (lambda a: a.emit(Opcode.END, push_next=1), ErrorCode.BAD_FIELD),
    (lambda a: a.load(Buffer.OUT, 0, 0), ErrorCode.BAD_FIELD),
    (lambda a: a.store(Buffer.INP, 0, 0), ErrorCode.BAD_FIELD),
    (lambda a: a.load(Buffer.INP, 0, 4), ErrorCode.BAD_FIELD),  # misaligned
    (lambda a: a.load(Buffer.INP, 0, 0, rows=2, stride=12), ErrorCode.BAD_FIELD),
    (lambda a: a.load(Buffer.WGT, 0, 0, flip=True), ErrorCode.BAD_FIELD),
    (lambda a: a.gemm(Engine.TLMM, WeightEncoding.INT8, 1, 1, 1, 0, 0, 0), ErrorCode.BAD_FIELD),
    (lambda a: a.gemm(Engine.BITSERIAL, WeightEncoding.TERNARY, 1, 1, 1, 0, 0, 0),
     ErrorCode.BAD_FIELD),
    (lambda a: a.gemm(Engine.TLMM, WeightEncoding.TERNARY, 1, 1, 8, 0, 0, 0, meta_line=0),
     ErrorCode.BAD_FIELD),
    (lambda a: a.gemm(Engine.BITSERIAL, WeightEncoding.INT8, 0, 1, 1, 0, 0, 0),
     ErrorCode.BAD_FIELD),
    (lambda a: a.emit(Opcode.POST, mode=3, m=1, n=1), ErrorCode.BAD_FIELD),
    (lambda a: a.post(PostMode.DYADIC, 1, 1, param=1, no_acc=True), ErrorCode.BAD_FIELD),
    (lambda a: a.load(Buffer.INP, CFG.inp_bytes // LINE - 1, 0, row_lines=2),
     ErrorCode.BUFFER_RANGE),
    (lambda a: a.gemm(Engine.BITSERIAL, WeightEncoding.INT8, 1, 1, CFG.inp_bytes + 1, 0, 0, 0),
     ErrorCode.BUFFER_RANGE),
    (lambda a: a.gemm(Engine.BITSERIAL, WeightEncoding.INT8, 200, 100, 1, 0, 0, 0),
     ErrorCode.BUFFER_RANGE),
    (lambda a: a.post(PostMode.DYADIC, 1, 4095, no_acc=True), ErrorCode.BUFFER_RANGE),
])
def test_checks_report_their_error_code_at_the_faulting_pc(build, code):
    asm = Assembler()
    asm.sync()
    build(asm)
    asm.end()
    gm = machine(asm.assemble(), {})
    result = gm.run(window=(0, 1 << 16))
    assert (result.state, result.error, result.error_pc) == (Status.ERROR, code, 1)


def test_token_overflow_beyond_token_depth():
    asm = Assembler()
    for _ in range(CFG.token_depth + 1):
        asm.load(Buffer.INP, 0, 0, push_next=True)
    asm.end()
    result = machine(asm.assemble(), {}).run(window=(0, 1 << 16))
    assert (result.error, result.error_pc) == (ErrorCode.TOKEN, CFG.token_depth)


def test_runaway_loop_ends_in_watchdog():
    asm = Assembler()
    asm.load(Buffer.INP, 0, 0)
    asm.jump(0)
    result = machine(asm.assemble(), {}).run(window=(0, 1 << 16), watchdog=20000)
    assert (result.state, result.error) == (Status.ERROR, ErrorCode.WATCHDOG)
    assert result.counters["load_insns"] > 100


def test_engine_absent_from_config_is_bad_field():
    gm = GoldenMachine(CFG.replace(tlmm=None), 1 << 16)
    asm = Assembler()
    asm.gemm(Engine.TLMM, WeightEncoding.TERNARY, 1, 1, 4, 0, 0, 0)
    asm.end()
    gm.write(0, asm.assemble())
    assert gm.run(window=(0, 1 << 16)).error == ErrorCode.BAD_FIELD


def test_ort_multiplier_special_values_read_as_zero():
    n = 4
    bits = np.array([0xFF800000, 0x7FC00000, 0x00000001, 0xBF800000], dtype=np.uint32)
    params = pack_post_params(bias=1000, n=n, zero_point=3, mode=PostMode.DYADIC).reshape(n, 16)
    params[:, 4:8] = bits.view(np.uint8).reshape(n, 4)
    asm = Assembler()
    asm.load(Buffer.PARAM, 0, 0x0, row_lines=lines(16 * n), push_next=True)
    asm.post(PostMode.ORT, 1, n, no_acc=True, bias=True, pop_prev=True, push_next=True)
    asm.store(Buffer.OUT, 0, 0x100, pop_prev=True)
    asm.end()
    gm = machine(asm.assemble(), {0x0: params.reshape(-1)})
    assert gm.run(window=(0, 1 << 16)).ok
    assert list(gm.read(DATA + 0x100, n)) == [3, 3, 3, 3]
