"""Random program generator: valid tiled layers with known numpy answers, and adversarial ones.

:func:`random_layer_case` builds one quantized layer ``y = clip(requant(A @ W' + bias +
residual))`` of random shape, weight encoding, engine, tiling and requantization mode, as a
complete memory image (program + tensors) with double-buffered loads and dependency tokens
exactly as ``docs/isa.md`` prescribes. The expected output bytes are computed here straight
from ``trilobit.gemm`` / ``trilobit.requant`` and the datatype tables, independently of the
golden model, so the golden model and the RTL can both be checked against them.

:func:`adversarial_case` mutates a valid case into one that must stop with a given error
(illegal instruction, window violation, buffer range, bad field, missing token, runaway
loop), with the faulting instruction index where it is architecturally defined.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from trilobit.config import AcceleratorConfig
from trilobit.dtypes import BITMOD_CANDIDATES, get_dtype
from trilobit.gemm import gemm_int
from trilobit.isa import (
    ENGINE_FORMATS,
    INSN_BYTES,
    PARAM_BYTES_PER_CHANNEL,
    Buffer,
    Engine,
    ErrorCode,
    Opcode,
    PostMode,
    WeightEncoding,
    decode,
    encode,
    pack_group_meta,
    pack_post_params,
    pack_weight_rows,
    pad_rows,
    reserved_mask,
)
from trilobit.requant import dyadic_from_scale, requantize_dyadic, requantize_ort
from trilobit.sim.asm import Assembler
from trilobit.sim.golden import ceil_div, meta_row_lines, weight_row_lines, wrap_int32

__all__ = ["OutputCheck", "ProgramCase", "random_layer_case", "adversarial_case", "ADVERSARIAL"]


@dataclass
class OutputCheck:
    """Expected bytes ``expected[r]`` at ``address + r * stride`` (absolute addresses)."""

    address: int
    stride: int
    expected: np.ndarray  # (rows, n) uint8

    def read(self, memory: np.ndarray) -> np.ndarray:
        rows, n = self.expected.shape
        index = self.address + np.arange(rows)[:, None] * self.stride + np.arange(n)[None, :]
        return memory[index]


@dataclass
class ProgramCase:
    """A runnable program: initial memory image, registers, and what must come out."""

    config: AcceleratorConfig
    memory: np.ndarray  # uint8, initial image (program and tensors)
    program: bytes
    prog_base: int
    data_base: int
    window: tuple[int, int]
    watchdog: int
    outputs: list[OutputCheck] = field(default_factory=list)
    expect_error: ErrorCode = ErrorCode.NONE
    expect_pc: int | None = None  # None: not architecturally defined or not predicted
    description: str = ""

    def write_program(self, program: bytes) -> ProgramCase:
        """A copy with ``program`` replacing the instruction stream (same length or shorter)."""
        memory = self.memory.copy()
        memory[self.prog_base : self.prog_base + len(self.program)] = 0
        memory[self.prog_base : self.prog_base + len(program)] = np.frombuffer(program, np.uint8)
        return replace(self, memory=memory, program=program)


def _align(x: int, a: int) -> int:
    return ceil_div(x, a) * a


def _weights(rng, fmt: WeightEncoding, n: int, k: int, extreme: str | None):
    """Random codes (N, K) for ``fmt`` and, for FP formats, a value lookup by type id."""
    bits = fmt.code_bits
    if fmt == WeightEncoding.TERNARY:
        values = rng.integers(-1, 2, (n, k))
        if extreme == "ones":
            values = rng.choice([-1, 1], (n, k))
        codes = values & 3
        return codes, values
    if fmt in (WeightEncoding.FP4, WeightEncoding.FP3):
        codes = rng.integers(0, 1 << bits, (n, k))
        return codes, None
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1))
    values = rng.integers(lo, hi, (n, k))
    if extreme == "ones":
        values = rng.choice([-1, 1], (n, k))
    elif extreme == "max":
        values = rng.choice([lo, hi - 1], (n, k))
    if extreme == "zero":
        values[:] = 0
    codes = values & ((1 << bits) - 1)
    return codes, values


def random_layer_case(
    rng: np.random.Generator,
    config: AcceleratorConfig,
    *,
    max_m: int = 6,
    max_n: int = 40,
    max_k: int = 300,
    memory_bytes: int = 1 << 17,
) -> ProgramCase:
    """One random quantized layer as a complete, valid, double-buffered program."""
    line = config.line_bytes
    engines = [e for e in Engine if (config.tlmm if e == Engine.TLMM else config.bitserial)]
    engine = Engine(rng.choice(engines))
    fmt = WeightEncoding(rng.choice(ENGINE_FORMATS[engine]))
    use_meta = engine == Engine.BITSERIAL and bool(rng.integers(2))
    gs = config.bitserial.group_size if config.bitserial else 1
    extreme = rng.choice([None, None, None, "ones", "max", "zero", "act"])

    half_inp = config.inp_bytes // line // 2
    half_wgt = config.wgt_bytes // line // 2
    half_out = config.out_bytes // line // 2
    acc_entries = config.acc_bytes // 4
    param_lines = config.param_bytes // line
    for _ in range(1000):
        m = int(rng.integers(1, max_m + 1))
        n = int(rng.integers(1, max_n + 1))
        k = int(rng.integers(1, max_k + 1))
        tn = line * int(rng.integers(1, ceil_div(n, line) + 1))
        tk_unit = gs if use_meta else line
        tk = tk_unit * int(rng.integers(1, ceil_div(k, tk_unit) + 1))
        tn, tk = min(tn, _align(n, line)), min(tk, _align(k, tk_unit))
        wl = weight_row_lines(tk, fmt, line)
        ml = meta_row_lines(tk, gs, line) if use_meta else 0
        n_tiles = ceil_div(n, tn)
        fits = (
            m * ceil_div(tk, line) <= half_inp // 2
            and m * ceil_div(tn, line) * n_tiles <= half_inp
            and tn * (wl + ml) <= half_wgt
            and m * tn <= acc_entries
            and m * ceil_div(tn, line) <= half_out
            and ceil_div(n * PARAM_BYTES_PER_CHANNEL, line) <= param_lines
        )
        if fits:
            break
    else:  # pragma: no cover - the smallest shapes always fit
        raise RuntimeError("progen: no shape fits this configuration")

    mode = PostMode(rng.choice([PostMode.ORT, PostMode.DYADIC]))
    out_unsigned = bool(rng.integers(2))
    residual = bool(rng.integers(2))
    flip = bool(rng.integers(2))
    out_type = "uint8" if out_unsigned else "int8"

    # -- tensors ---------------------------------------------------------------------------
    if extreme == "act":
        x = rng.choice([0, 255] if flip else [-128, 127], (m, k))
    else:
        x = rng.integers(0, 256, (m, k)) if flip else rng.integers(-128, 128, (m, k))
    a = x - 128 if flip else x  # what the INP buffer holds
    x_bytes = (x if flip else x.astype(np.int8).view(np.uint8)).astype(np.uint8)
    codes, w = _weights(rng, fmt, n, k, extreme)
    groups = ceil_div(k, gs)
    type_ids = rng.integers(0, 4, (n, groups)) if use_meta else np.zeros((n, groups), int)
    scales = rng.integers(0, 256, (n, groups)) if use_meta else np.ones((n, groups), int)
    if fmt in (WeightEncoding.FP4, WeightEncoding.FP3):
        tables = np.array([get_dtype(t).values for t in BITMOD_CANDIDATES[fmt.code_bits]])
        w = tables[np.repeat(type_ids, gs, axis=1)[:, :k], codes].astype(np.int64)
    w_eff = w.astype(np.int64) * np.repeat(scales, gs, axis=1)[:, :k]
    bias = rng.integers(-(1 << 20), 1 << 20, n)
    r = rng.integers(-128, 128, (m, n))
    res_zp = int(rng.integers(-128, 128))
    res_mult = int(rng.integers(-(1 << 15), 1 << 15)) if residual else 0
    qmin, qmax = (0, 255) if out_unsigned else (-128, 127)
    zp = rng.integers(qmin, qmax + 1, n)
    clip_lo = np.where(rng.random(n) < 0.5, zp, qmin)  # ReLU on some channels
    clip_hi = np.where(rng.random(n) < 0.2, rng.integers(qmin, qmax + 1, n), qmax)
    # Scale so outputs span the range: accumulator spread ~ sqrt(k) * |a| * |w|.
    spread = max(1.0, float(np.sqrt(k)) * 70 * max(1.0, float(np.abs(w_eff).mean())))
    scale = (rng.uniform(20, 200, n) / spread).astype(np.float32)
    if mode == PostMode.DYADIC:
        pairs = [dyadic_from_scale(float(s)) for s in scale]
        mult = np.array([p[0] for p in pairs], dtype=np.int64)
        shift = np.array([p[1] for p in pairs], dtype=np.int64)
    else:
        mult, shift = scale, np.zeros(n, dtype=np.int64)

    # -- reference (independent of the golden model) ---------------------------------------
    acc = wrap_int32(gemm_int(a, w_eff.T).astype(np.int64)).astype(np.int64)
    v = acc + bias
    if residual:
        v = v + (r - res_zp) * res_mult
    v = wrap_int32(v)
    if mode == PostMode.DYADIC:
        y = requantize_dyadic(v, mult, shift, zp, out_type)
    else:
        y = requantize_ort(v, mult, zp, out_type)
    y = np.minimum(np.maximum(y, clip_lo), clip_hi)
    expected = (y.astype(np.int64) & 0xFF).astype(np.uint8)

    # -- external memory layout ------------------------------------------------------------
    prog_base = _align(int(rng.integers(0, 4096)), INSN_BYTES)
    data_base = _align(prog_base + 8192 + int(rng.integers(0, 4096)), line)
    cursor = 0
    regions = {}

    def place(name: str, nbytes: int) -> int:
        nonlocal cursor
        cursor = _align(cursor + int(rng.integers(0, 4)) * line, line)
        regions[name] = cursor
        cursor += _align(nbytes, line)
        return regions[name]

    x_img = pad_rows(x_bytes, line)
    a_stride = ceil_div(k, line) * line
    w_tiles, m_tiles = [], []
    for n0 in range(0, n, tn):
        for k0 in range(0, k, tk):
            w_tiles.append(pack_weight_rows(codes[n0 : n0 + tn, k0 : k0 + tk], fmt, line))
            if use_meta:
                g0, g1 = k0 // gs, ceil_div(min(k0 + tk, k), gs)
                m_tiles.append(pack_group_meta(type_ids[n0 : n0 + tn, g0:g1],
                                               scales[n0 : n0 + tn, g0:g1], line))
    w_img = np.concatenate(w_tiles)
    meta_img = np.concatenate(m_tiles) if use_meta else np.zeros(0, np.uint8)
    p_img = pack_post_params(bias, mult, shift, zp, clip_lo, clip_hi, n=n, mode=mode)
    out_stride = ceil_div(n, line) * line
    r_img = pad_rows(r.astype(np.int8).view(np.uint8), line)
    place("x", x_img.size)
    place("w", w_img.size)
    place("meta", meta_img.size)
    place("param", p_img.size)
    place("res", r_img.size)
    place("out", m * out_stride)

    # -- program ---------------------------------------------------------------------------
    asm = Assembler()
    res_base = half_inp  # residual tiles live in the upper half of INP, loaded up front
    asm.load(Buffer.PARAM, 0, regions["param"], row_lines=ceil_div(p_img.size, line))
    if residual:
        for ni, n0 in enumerate(range(0, n, tn)):
            nt = min(tn, n - n0)
            asm.load(Buffer.INP, res_base + ni * m * ceil_div(tn, line), regions["res"] + n0,
                     rows=m, row_lines=ceil_div(nt, line), stride=out_stride)
    slot_inp = half_inp // 2
    tile = 0
    w_cursor, meta_cursor = regions["w"], regions["meta"]
    for ni, n0 in enumerate(range(0, n, tn)):
        nt = min(tn, n - n0)
        for ki, k0 in enumerate(range(0, k, tk)):
            kt = min(tk, k - k0)
            slot = tile % 2
            wl_t = nt * weight_row_lines(kt, fmt, line)
            ml_t = nt * meta_row_lines(kt, gs, line) if use_meta else 0
            asm.load(Buffer.INP, slot * slot_inp, regions["x"] + k0, rows=m,
                     row_lines=ceil_div(kt, line), stride=a_stride, flip=flip,
                     pop_next=tile >= 2)
            asm.load(Buffer.WGT, slot * half_wgt, w_cursor, row_lines=wl_t,
                     push_next=not use_meta)
            w_cursor += wl_t * line
            if use_meta:
                asm.load(Buffer.WGT, slot * half_wgt + wl_t, meta_cursor, row_lines=ml_t,
                         push_next=True)
                meta_cursor += ml_t * line
            if rng.random() < 0.1:
                asm.sync()  # legal anywhere; only costs time
            asm.gemm(engine, fmt, m, nt, kt, inp=slot * slot_inp, wgt=slot * half_wgt,
                     acc=0, accumulate=ki > 0,
                     meta_line=slot * half_wgt + wl_t if use_meta else None,
                     pop_prev=True, push_prev=True)
            tile += 1
        oslot = ni % 2
        asm.post(mode, m, nt, acc=0, param=n0 * PARAM_BYTES_PER_CHANNEL // line,
                 out=oslot * half_out, bias=True, out_unsigned=out_unsigned,
                 residual_line=res_base + ni * m * ceil_div(tn, line) if residual else None,
                 res_zp=res_zp, res_mult=res_mult, pop_next=ni >= 2, push_next=True)
        asm.store(Buffer.OUT, oslot * half_out, regions["out"] + n0, rows=m,
                  row_lines=ceil_div(nt, line), stride=out_stride, pop_prev=True,
                  push_prev=True)
    asm.end()
    program = asm.assemble()

    memory = np.zeros(memory_bytes, dtype=np.uint8)
    memory[prog_base : prog_base + len(program)] = np.frombuffer(program, np.uint8)
    for name, img in (("x", x_img), ("w", w_img), ("meta", meta_img), ("param", p_img),
                      ("res", r_img)):
        memory[data_base + regions[name] : data_base + regions[name] + img.size] = img
    data_end = data_base + cursor
    if data_end + 4096 > memory_bytes:
        raise RuntimeError(f"progen: memory of {memory_bytes} bytes is too small")
    win_base = int(rng.integers(0, prog_base + 1))
    win_limit = int(rng.integers(data_end, min(memory_bytes, data_end + 4096) + 1))
    outputs = [OutputCheck(data_base + regions["out"], out_stride, expected)]
    return ProgramCase(
        config=config, memory=memory, program=program, prog_base=prog_base,
        data_base=data_base, window=(win_base, win_limit), watchdog=0, outputs=outputs,
        description=(f"{engine.name} {fmt.name} meta={use_meta} m={m} n={n} k={k} tn={tn} "
                     f"tk={tk} {mode.name} unsigned={out_unsigned} residual={residual} "
                     f"flip={flip} extreme={extreme}"),
    )


ADVERSARIAL = ("illegal", "reserved", "window", "range", "bad_field", "token", "runaway")


def _reencode(word: bytes, **changes: int) -> bytes:
    insn = decode(word)
    fields = {k: v for k, v in insn.fields.items() if k != "opcode"}
    fields.update(changes)
    return encode(insn.opcode, **fields)


def adversarial_case(rng: np.random.Generator, case: ProgramCase, kind: str) -> ProgramCase:
    """Mutate a valid case so that it must stop with the error ``kind`` names."""
    words = [case.program[i : i + INSN_BYTES] for i in range(0, len(case.program), INSN_BYTES)]
    insns = [decode(w) for w in words]
    transfers = [i for i, d in enumerate(insns) if d.opcode in (Opcode.LOAD, Opcode.STORE)]
    end = len(words) - 1
    expect, pc = None, None
    line = case.config.line_bytes
    if kind == "illegal":
        pc = int(rng.integers(0, end + 1))
        opcode = int(rng.choice([0, 8, 9, 10, 11, 12, 13, 14, 15]))
        noise = int.from_bytes(rng.bytes(INSN_BYTES), "little") & ~0xF
        words[pc] = (noise | opcode).to_bytes(INSN_BYTES, "little")
        expect = ErrorCode.ILLEGAL_INSTRUCTION
    elif kind == "reserved":
        pc = int(rng.integers(0, end + 1))
        mask = reserved_mask(insns[pc].opcode)
        bits = [b for b in range(128) if mask >> b & 1]
        word = int.from_bytes(words[pc], "little") | 1 << int(rng.choice(bits))
        words[pc] = word.to_bytes(INSN_BYTES, "little")
        expect = ErrorCode.ILLEGAL_INSTRUCTION
    elif kind == "window":
        pc = int(rng.choice(transfers))
        # Start at or beyond the window's limit (or straddle it when a row spans 2+ lines).
        offset = _align(case.window[1] - case.data_base, line) + line * int(rng.integers(0, 64))
        if insns[pc]["row_lines"] > 1 and rng.random() < 0.5:
            offset = _align(case.window[1] - case.data_base, line) - line
        words[pc] = _reencode(words[pc], dram=offset)
        expect = ErrorCode.WINDOW
    elif kind == "range":
        pc = int(rng.choice(transfers))
        buf = Buffer(insns[pc]["buf"])
        lines = case.config.buffer_bytes(buf.name.lower()) // line
        words[pc] = _reencode(words[pc], sram=min(lines, 0xFFFF))
        expect = ErrorCode.BUFFER_RANGE
    elif kind == "bad_field":
        pc = int(rng.choice(transfers))
        choice = rng.integers(3)
        change = ({"rows": 0}, {"row_lines": 0}, {"dram": insns[pc]["dram"] + 1})[choice]
        if line == 1:  # pragma: no cover - lines are at least 4 bytes
            change = {"rows": 0}
        words[pc] = _reencode(words[pc], **change)
        expect = ErrorCode.BAD_FIELD
    elif kind == "token":
        # Drop the push of a tile's last load: the GEMM of that tile then pops an empty channel.
        pushers = [i for i, d in enumerate(insns) if d.opcode == Opcode.LOAD and d["push_next"]]
        i = int(rng.choice(pushers))
        words[i] = _reencode(words[i], push_next=0)
        pc = next(j for j in range(i + 1, end) if insns[j].opcode == Opcode.GEMM)
        expect = ErrorCode.TOKEN
    elif kind == "runaway":
        words[end] = encode(Opcode.JUMP, target=end)  # END becomes an endless loop
        expect = ErrorCode.WATCHDOG
        case = replace(case, watchdog=max(20000, 50 * len(words)))
    else:
        raise ValueError(f"adversarial kind must be one of {ADVERSARIAL}, got {kind!r}")
    mutated = case.write_program(b"".join(words))
    return replace(mutated, expect_error=expect, expect_pc=pc, outputs=[],
                   description=f"{kind} at {pc}: {case.description}")
