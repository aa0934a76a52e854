"""The accelerator core: fetch, decode and check (from the ISA field table), LOAD/STORE over a
Wishbone master, GEMM on the table-lookup and bit-serial engines, the post-processing unit,
CSRs on a Wishbone slave.

The dispatcher fetches instructions in program order, runs every architectural check
(illegal, bad field, buffer range, window, tokens counted in program order) and hands LOAD,
GEMM/POST and STORE to three instruction queues (``config.queue_depth`` deep). The load,
compute and store units each execute their queue in order and synchronise only through the
dependency tokens, as in VTA, so transfers overlap computation. SYNC and END wait until all
queues are empty and all units idle; an error stops dispatch, lets everything dispatched
before it finish, then reports. A transfer to or from ACC and a compute instruction never run
at the same time (they share ACC's ports); the tokens already order them.

Ports (flat, so the Verilog and the C++ harness see plain names):

* data bus, Wishbone B4 classic master, ``mem_width`` bits, word (line) addresses:
  ``mem_cyc mem_stb mem_we mem_adr mem_dat_w mem_sel`` out, ``mem_dat_r mem_ack`` in.
  One transfer at a time; the slave may stall any number of cycles by holding ``ack`` low.
* CSR bus, Wishbone B4 classic slave, 32 bits, word addresses (``trilobit.hw.accel_csr``):
  ``csr_cyc csr_stb csr_we csr_adr csr_dat_w`` in, ``csr_dat_r csr_ack`` out; ``ack`` comes
  one cycle after ``stb``.
* ``irq``: high while IRQ pending and enabled (a run finished, in DONE or ERROR).

GEMM instructions run on the engine their ``engine`` field names, through the units of
:mod:`trilobit.hw.accel_compute`: ``TlmmGemmUnit`` (TERNARY, INT2, INT4 on
:class:`~trilobit.hw.tlmm.TlmmEngine`) and ``BitSerialGemmUnit`` (INT8/6/4/3, FP4/FP3 on
:class:`~trilobit.hw.bitserial.BitSerialEngine`). A unit owns the INP/WGT/ACC read ports and
ACC's write port while it runs; the compute unit waits for its last ACC write before it sends
the instruction's tokens. START and the watchdog reset the units together with the queues.
AXI4 / AXI4-Lite: :mod:`trilobit.hw.accel_axi` wraps this core.
"""

from __future__ import annotations

import dataclasses
from contextlib import nullcontext
from dataclasses import dataclass

from amaranth import Cat, Const, Module, Mux, ResetInserter, Signal, Value, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.data import StructLayout
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from trilobit.config import AcceleratorConfig
from trilobit.hw.accel_compute import BitSerialGemmUnit, TlmmGemmUnit, exact_log2
from trilobit.hw.accel_csr import COUNTERS, REGISTERS
from trilobit.hw.accel_post import PARAM_BITS, PostUnit
from trilobit.isa import (
    ENGINE_FORMATS,
    FORMATS,
    HEADER,
    INSN_BITS,
    INSN_BYTES,
    Buffer,
    Engine,
    ErrorCode,
    Opcode,
    PostMode,
    WeightEncoding,
    reserved_mask,
)

__all__ = ["AcceleratorCore", "field_values"]

STATE_IDLE, STATE_BUSY, STATE_DONE, STATE_ERROR = 0, 1, 2, 3


def field_values(insn: Signal, opcode: Opcode) -> dict:
    """Amaranth values of every field of ``opcode``'s format, sliced from ``insn``.

    Generated from :data:`trilobit.isa.FORMATS`: the same table as the Python decoder.
    """
    values = {}
    for f in HEADER + FORMATS[opcode]:
        v = insn[f.lsb : f.lsb + f.width]
        values[f.name] = v.as_signed() if f.signed else v
    return values


@dataclass(frozen=True)
class _SequenceEntry:
    """One product or check of a compact core's dispatch sequence (``AcceleratorCore``):
    ``factors[0] * factors[1] + sum(terms)``, compared with ``limit`` (``<`` if ``below``,
    else ``>``) into the 1-bit ``result``; without terms the product itself is the result.
    Skipped unless ``when``."""

    factors: tuple | None
    terms: tuple
    limit: object
    below: bool
    result: Signal
    when: object

    def narrower_last(self) -> _SequenceEntry:
        """The same entry with the narrower factor second (it sets the cycle count)."""
        if self.factors and len(self.factors[0]) < len(self.factors[1]):
            return dataclasses.replace(self, factors=self.factors[::-1])
        return self

    @property
    def width(self) -> int:
        """Bits the running sum needs (exact for checks, the result's width for products)."""
        if not self.terms:
            return len(self.result)
        largest = (((1 << len(self.factors[0])) - 1) * ((1 << len(self.factors[1])) - 1)
                   if self.factors else 0)
        largest += sum((1 << len(Value.cast(t))) - 1 for t in self.terms)
        return largest.bit_length()

    @property
    def kept_width(self) -> int:
        """Bits the running sum keeps: a ``>`` check only needs to know the sum passed its
        limit, so it keeps one bit more than the limit and notes a carry out of them (the
        sum only grows) instead of the exact sum."""
        if self.terms and not self.below:
            return min(self.width, len(Value.cast(self.limit)) + 1)
        return self.width


def _ceil_shift(value, shift: int):
    """ceil(value / 2**shift) for unsigned values."""
    return (value + ((1 << shift) - 1)) >> shift


def gemm_rows(m: Module, fields: dict, lb: int, lgs: int) -> tuple[Signal, Signal, Signal]:
    """Lines per activation row, per weight row and per metadata row of a GEMM (docs/isa.md),
    for a line of ``2**lb`` bytes and groups of ``2**lgs`` weights."""
    slot_bytes = Signal(17)
    with m.Switch(fields["wfmt"]):
        for fmt in WeightEncoding:
            with m.Case(int(fmt)):
                shift = {8: 0, 4: 1, 2: 2}[fmt.slot_bits]
                m.d.comb += slot_bytes.eq(_ceil_shift(fields["k"], shift))
    # a_row: k (16 bits) over lines of at least 4 bytes is up to 16384 lines, 15 bits.
    a_row, w_row, meta_row = Signal(15), Signal(17), Signal(17)
    m.d.comb += [
        a_row.eq(_ceil_shift(fields["k"], lb)),
        w_row.eq(_ceil_shift(slot_bytes, lb)),
        meta_row.eq(_ceil_shift(_ceil_shift(fields["k"], lgs) << 1, lb)),
    ]
    return a_row, w_row, meta_row


class AcceleratorCore(wiring.Component):
    """The whole accelerator for ``config`` (see module docstring for ports)."""

    def __init__(self, config: AcceleratorConfig):
        self.config = config
        self.width = config.mem_width
        self.line = config.line_bytes
        self.lb = exact_log2(self.line)
        super().__init__({
            "mem_cyc": Out(1),
            "mem_stb": Out(1),
            "mem_we": Out(1),
            "mem_adr": Out(32 - self.lb),
            "mem_dat_w": Out(self.width),
            "mem_sel": Out(self.width // 8),
            "mem_dat_r": In(self.width),
            "mem_ack": In(1),
            "csr_cyc": In(1),
            "csr_stb": In(1),
            "csr_we": In(1),
            "csr_adr": In(5),
            "csr_dat_w": In(32),
            "csr_dat_r": Out(32),
            "csr_ack": Out(1),
            "irq": Out(1),
        })

    def elaborate(self, platform):  # noqa: C901 - one FSM, narrated state by state
        m = Module()
        cfg, line, lb, width = self.config, self.line, self.lb, self.width
        eb = lb - 2  # log2 of int32 entries per line
        lines = {b: cfg.buffer_bytes(b.name.lower()) // line for b in Buffer}
        acc_entries = cfg.acc_bytes // 4
        gs = cfg.bitserial.group_size if cfg.bitserial else 1
        lgs = exact_log2(gs)

        # -- buffers ----------------------------------------------------------------------
        m.submodules.inp = inp = Memory(shape=unsigned(width), depth=lines[Buffer.INP], init=[])
        m.submodules.wgt = wgt = Memory(shape=unsigned(width), depth=lines[Buffer.WGT], init=[])
        m.submodules.acc = acc = Memory(shape=unsigned(width), depth=lines[Buffer.ACC], init=[])
        # PARAM holds one 16-byte channel per entry so POST reads a channel in one access;
        # LOAD writes it a line at a time through byte-lane groups.
        param_depth = cfg.param_bytes // 16
        param_parts = 16 // line
        m.submodules.param = param = Memory(shape=unsigned(128), depth=param_depth, init=[])
        m.submodules.out = out = Memory(shape=unsigned(width), depth=lines[Buffer.OUT], init=[])
        inp_r, inp_w = inp.read_port(), inp.write_port()
        wgt_r, wgt_m, wgt_w = wgt.read_port(), wgt.read_port(), wgt.write_port()
        acc_r, acc_w = acc.read_port(), acc.write_port(granularity=32)
        param_r, param_w = param.read_port(), param.write_port(granularity=width)
        out_r, out_w = out.read_port(), out.write_port(granularity=8)

        # -- CSRs -------------------------------------------------------------------------
        # External byte addresses are addr_bits wide: the bases keep their low bits, the
        # window's ends saturate at 2**addr_bits (one bit more), so nothing at or beyond
        # 2**addr_bits is ever inside the window (docs/isa.md).
        abits = cfg.addr_bits
        window_bits = 32 if abits == 32 else abits + 1
        prog_base = Signal(abits)
        data_base = Signal(abits)
        win_base = Signal(window_bits)
        win_limit = Signal(window_bits)

        def window_end(data):
            if abits == 32:
                return data
            return Mux(data[abits:].any(), 1 << abits, data[:abits])
        watchdog = Signal(32, init=cfg.watchdog_cycles)
        irq_enable = Signal()
        irq_pending = Signal()
        state = Signal(2)
        error_code = Signal(8)
        pc = Signal(32)  # index of the instruction the dispatcher is at
        error_pc = Signal(32)  # pc holds still from a run's end until the next START
        m.d.comb += error_pc.eq(Mux(state == STATE_ERROR, pc, 0))
        start = Signal()
        counters = {name: Signal(32, name=f"cnt_{name}") for name in COUNTERS}
        # Without perf_counters only the watchdog's cycle counter exists; the others read 0.
        built_counters = list(COUNTERS) if cfg.perf_counters else ["cycles"]

        def count(name: str, amount: int = 1) -> None:
            if name in built_counters:
                m.d.sync += counters[name].eq(counters[name] + amount)

        csr_read = Signal(32)
        word = self.csr_adr
        with m.Switch(word):
            for name, offset in REGISTERS.items():
                with m.Case(offset // 4):
                    value = {
                        "CTRL": Cat(Const(0, 1), irq_enable),
                        "STATUS": Cat(state, Const(0, 6), error_code, irq_pending),
                        "ERROR_PC": error_pc,
                        "PROG_BASE": prog_base,
                        "DATA_BASE": data_base,
                        "WIN_BASE": win_base,
                        "WIN_LIMIT": win_limit,
                        "WATCHDOG": watchdog,
                        "ID": Const(cfg.hash32(), 32),
                    }[name]
                    m.d.comb += csr_read.eq(value)
            for name, offset in COUNTERS.items():
                with m.Case(offset // 4):
                    m.d.comb += csr_read.eq(counters[name])
        csr_access = self.csr_cyc & self.csr_stb & ~self.csr_ack
        m.d.sync += self.csr_ack.eq(csr_access)
        with m.If(csr_access):
            m.d.sync += self.csr_dat_r.eq(csr_read)
        with m.If(csr_access & self.csr_we):
            data = self.csr_dat_w
            with m.Switch(word):
                with m.Case(REGISTERS["CTRL"] // 4):
                    m.d.sync += irq_enable.eq(data[1])
                    m.d.comb += start.eq(data[0] & (state != STATE_BUSY))
                with m.Case(REGISTERS["STATUS"] // 4):
                    with m.If(data[16]):
                        m.d.sync += irq_pending.eq(0)
                with m.Case(REGISTERS["PROG_BASE"] // 4):
                    m.d.sync += prog_base.eq(data & ~(INSN_BYTES - 1))
                with m.Case(REGISTERS["DATA_BASE"] // 4):
                    m.d.sync += data_base.eq(data & ~(line - 1))
                with m.Case(REGISTERS["WIN_BASE"] // 4):
                    m.d.sync += win_base.eq(window_end(data))
                with m.Case(REGISTERS["WIN_LIMIT"] // 4):
                    m.d.sync += win_limit.eq(window_end(data))
                with m.Case(REGISTERS["WATCHDOG"] // 4):
                    m.d.sync += watchdog.eq(data)
        m.d.comb += self.irq.eq(irq_pending & irq_enable)

        # -- instruction register and decode ----------------------------------------------
        insn = Signal(INSN_BITS)
        opcode = insn[0:4]
        F = {op: field_values(insn, op) for op in Opcode}
        hdr = F[Opcode.END]
        # (a compact core's token counters only as wide as token_depth: a push beyond it is an
        # error, so they never exceed it)
        token_bits = range(cfg.token_depth + 1) if cfg.compact else 8
        tokens = {ch: Signal(token_bits, name=f"tokens_{ch}")
                  for ch in ("l2c", "c2l", "c2s", "s2c")}

        # The checks run over three cycles (DECODE, CHECK, RANGE) and the dispatcher acts in
        # ISSUE: every intermediate below is re-registered each cycle from the instruction
        # register and CSRs, which hold still from the end of FETCH to ISSUE, so no enables.
        # A compact core keeps none of these registers: the checks are combinational from the
        # instruction register, the CSRs and the products below, and ISSUE follows PRODUCTS.
        def registered(value, shape=None, name="check"):
            r = Signal(shape if shape is not None else value.shape(), name=name)
            if cfg.compact:
                m.d.comb += r.eq(value)
            else:
                m.d.sync += r.eq(value)
            return r

        # Products, range and window checks. A full core works them out in parallel (DSP
        # blocks, inside the registered checks). A compact core works them out one after
        # another in PRODUCTS on one adder, only those the opcode uses (dispatch is rare next
        # to GEMM cycles): a product takes one bit of its narrower factor per cycle (shift and
        # add, most significant first), then each further term one cycle, the last of which
        # also compares the sum with the limit; a check keeps only the outcome.
        sequence = []  # compact: _SequenceEntry, in this order

        def product(a, b, width: int, name: str, when):
            """``a * b`` (truncated to ``width`` bits where it is registered)."""
            if not cfg.compact:
                return a * b
            result = Signal(width, name=name)
            sequence.append(_SequenceEntry((a, b), (), None, False, result, when))
            return result

        def exceeds(name: str, when, factors, terms, limit, below: bool = False) -> Signal:
            """Compact core: a flag register, ``a * b + sum(terms) > limit`` (``< limit`` if
            ``below``), exact; ``factors`` is ``(a, b)`` or None."""
            flag = Signal(name=name)
            sequence.append(_SequenceEntry(factors, tuple(terms), limit, below, flag, when))
            return flag

        is_xfer = (opcode == Opcode.LOAD) | (opcode == Opcode.STORE)
        is_gemm = opcode == Opcode.GEMM
        is_post = opcode == Opcode.POST
        # First in a compact core's sequence, before the instruction is fetched (FETCH_CHECK):
        # the whole instruction must lie in the window. A pc whose bytes start at
        # 2**addr_bits or beyond is outside whatever the bases (the window ends there).
        pc_low = Cat(Const(0, 4), pc[:abits - 4])  # 16 * pc, its low addr_bits bits
        fetch_outside = cfg.compact and (
            pc[abits - 4:].any()
            | exceeds("fetch_before_window", Const(1), None, [prog_base, pc_low],
                      win_base, below=True)
            | exceeds("fetch_after_window", Const(1), None,
                      [prog_base, pc_low, Const(INSN_BYTES)], win_limit))
        fetch_entries = len(sequence)

        decode_error = Signal(8)
        legal_now = Signal()
        # A POST in a requantization mode the config leaves out is illegal (no hardware).
        post_mode_built = Signal()
        with m.Switch(F[Opcode.POST]["mode"]):
            with m.Case(PostMode.ORT):
                m.d.comb += post_mode_built.eq("ort" in cfg.requant_modes)
            with m.Case(PostMode.DYADIC):
                m.d.comb += post_mode_built.eq("dyadic" in cfg.requant_modes)
            with m.Default():
                m.d.comb += post_mode_built.eq(1)
        with m.Switch(opcode):
            for op in Opcode:
                with m.Case(int(op)):
                    no_reserved = (insn & Const(reserved_mask(op), INSN_BITS)) == 0
                    if op == Opcode.POST:
                        no_reserved &= post_mode_built
                    m.d.comb += legal_now.eq(no_reserved)
        legal = registered(legal_now, name="legal")

        # Per-opcode field, range and window checks (priority as docs/isa.md).
        bad_field = Signal()
        bad_range = Signal()
        bad_window = Signal()
        bad_token = Signal()
        token_next = {ch: Signal(len(tokens[ch]) + 1, name=f"tokens_next_{ch}") for ch in tokens}
        for ch in tokens:
            m.d.comb += token_next[ch].eq(tokens[ch])

        def pop(ch, flag):
            """Count a pop; returns its error term (channel empty in program order)."""
            with m.If(flag):
                m.d.comb += token_next[ch].eq(tokens[ch] - 1)
            return flag & (tokens[ch] == 0)

        def push(ch, flag):
            """Count a push; returns its error term (channel full)."""
            with m.If(flag):
                m.d.comb += token_next[ch].eq(tokens[ch] + 1)
            return flag & (tokens[ch] == cfg.token_depth)

        # LOAD / STORE spans (products in CHECK, ends in RANGE, comparisons in ISSUE)
        T = F[Opcode.LOAD]
        buf_lines = Signal(range(max(lines.values()) + 1) if cfg.compact else 24)
        with m.Switch(T["buf"]):
            for b in Buffer:
                with m.Case(int(b)):
                    m.d.comb += buf_lines.eq(lines[b])
        if cfg.compact:
            xfer_range = exceeds("xfer_range", is_xfer, (T["rows"], T["row_lines"]),
                                 [T["sram"]], buf_lines)
        else:
            span_lines = registered(T["rows"] * T["row_lines"], 24, "span_lines")
            xfer_range = T["sram"] + span_lines > buf_lines
        if cfg.compact:
            # The first byte in the window, the last row's end at most its limit; an offset
            # or a stride (of more than one row) reaching 2**addr_bits is outside already.
            dram, stride = T["dram"][:abits], T["stride"][:abits]
            xfer_window_ok = ~(
                (T["dram"][abits:].any() if abits < len(T["dram"]) else 0)
                | ((T["stride"][abits:].any() & (T["rows"] > 1))
                   if abits < len(T["stride"]) else 0)
                | exceeds("xfer_before_window", is_xfer, None, [data_base, dram], win_base,
                          below=True)
                | exceeds("xfer_after_window", is_xfer, (T["rows"] - 1, stride),
                          [data_base, dram, T["row_lines"] << lb], win_limit))
        else:
            xfer_start = registered(data_base + T["dram"], 34, "xfer_start")
            xfer_rows = registered((T["rows"] - 1) * T["stride"], 36, "xfer_rows")
            xfer_end = registered(xfer_start + xfer_rows + (T["row_lines"] << lb), 40,
                                  "xfer_end")
            xfer_window_ok = registered((xfer_start >= win_base) & (xfer_end <= win_limit),
                                        name="xfer_window_ok")
        xfer_bad = (T["rows"] == 0) | (T["row_lines"] == 0) | (T["dram"][:lb] != 0) | (
            T["stride"][:lb] != 0)

        # GEMM geometry
        G = F[Opcode.GEMM]
        wfmt = G["wfmt"]
        a_row, w_row, meta_row = (registered(v, name=n) for v, n in zip(
            gemm_rows(m, G, lb, lgs), ("a_row", "w_row", "meta_row"), strict=True))
        engine_ok = Signal()
        with m.Switch(Cat(wfmt, G["engine"])):
            for engine, fmts in ENGINE_FORMATS.items():
                present = (cfg.tlmm if engine == Engine.TLMM else cfg.bitserial) is not None
                for fmt in fmts:
                    with m.Case(int(fmt) | int(engine) << 4):
                        m.d.comb += engine_ok.eq(present)
        gemm_bad = ~engine_ok | (G["meta"] & (G["engine"] != Engine.BITSERIAL)) | (
            G["m"] == 0) | (G["n"] == 0) | (G["k"] == 0)
        # GEMM and POST share the positions of m and n (one product serves both).
        assert ({(f.name, f.lsb, f.width) for f in FORMATS[Opcode.GEMM] if f.name in ("m", "n")}
                == {(f.name, f.lsb, f.width) for f in FORMATS[Opcode.POST] if f.name in ("m", "n")})
        if cfg.compact:
            # Only the macs counter reads tile_macs.
            if cfg.perf_counters:
                tile = product(G["m"], G["n"], 20, "tile_entries", is_gemm)
                tile_macs = product(tile, G["k"], 36, "tile_macs", is_gemm)
            else:
                tile_macs = Const(0, 36)
            gemm_range = (
                exceeds("inp_beyond", is_gemm, (G["m"], a_row), [G["inp"]], lines[Buffer.INP])
                | exceeds("wgt_beyond", is_gemm, (G["n"], w_row), [G["wgt"]],
                          lines[Buffer.WGT])
                # (metadata only on the bit-serial engine: without it, meta is BAD_FIELD)
                | ((G["meta"] & exceeds("meta_beyond", is_gemm & G["meta"],
                                        (G["n"], meta_row), [G["meta_line"]],
                                        lines[Buffer.WGT])) if cfg.bitserial else 0)
                | exceeds("gemm_acc_beyond", is_gemm, (G["m"], G["n"]), [G["acc"]],
                          acc_entries))
        else:
            tile = registered(G["m"] * G["n"], 20, "tile_entries")
            tile_macs = registered(tile * G["k"], 36, "tile_macs")
            gemm_ends = [
                (registered(G["inp"] + G["m"] * a_row, 24, "inp_end"), lines[Buffer.INP], 1),
                (registered(G["wgt"] + G["n"] * w_row, 30, "wgt_end"), lines[Buffer.WGT], 1),
                (registered(G["meta_line"] + G["n"] * meta_row, 30, "meta_end"),
                 lines[Buffer.WGT], G["meta"]),
                (registered(G["acc"] + tile, 21, "gemm_acc_end"), acc_entries, 1),
            ]
            gemm_range = registered(
                Cat(*((end > limit) & when for end, limit, when in gemm_ends)).any(),
                name="gemm_range")

        # POST geometry
        P = F[Opcode.POST]
        o_row = registered(_ceil_shift(P["n"], lb), 10, "o_row")
        mode_acc = P["mode"] == PostMode.ACC
        post_bad = (P["mode"] == 3) | (P["m"] == 0) | (
            P["n"] == 0) | (((P["param"] << lb) & 15) != 0)
        if cfg.compact:  # PARAM lines of n 16-byte channels: n << (4 - lb)
            param_beyond = (P["bias"] | ~mode_acc) & exceeds(
                "param_beyond", is_post, None,
                [P["param"], Cat(Const(0, 4 - lb), P["n"]) if lb < 4 else P["n"]],
                lines[Buffer.PARAM])
        else:
            param_end = registered(P["param"] + (P["n"] << (4 - lb)), 20, "param_end")
            param_beyond = (param_end > lines[Buffer.PARAM]) & (P["bias"] | ~mode_acc)
        if cfg.compact:
            post_range = (
                ((~P["no_acc"] | mode_acc)
                 & exceeds("post_acc_beyond", is_post, (P["m"], P["n"]), [P["acc"]],
                           acc_entries))
                | param_beyond
                | (~mode_acc & exceeds("out_beyond", is_post, (P["m"], o_row), [P["out"]],
                                       lines[Buffer.OUT]))
                | (P["residual"] & exceeds("res_beyond", is_post, (P["m"], o_row),
                                           [P["res"]], lines[Buffer.INP])))
        else:
            post_ends = [
                (registered(P["acc"] + tile, 21, "post_acc_end"), acc_entries,
                 ~P["no_acc"] | mode_acc),
                (registered(P["out"] + P["m"] * o_row, 20, "out_end"), lines[Buffer.OUT],
                 ~mode_acc),
                (registered(P["res"] + P["m"] * o_row, 20, "res_end"), lines[Buffer.INP],
                 P["residual"]),
            ]
            post_range = registered(
                Cat(*((end > limit) & when for end, limit, when in post_ends)).any()
                | param_beyond, name="post_range")

        flags_bad = Signal()
        with m.Switch(opcode):
            with m.Case(Opcode.LOAD):
                m.d.comb += [
                    flags_bad.eq(hdr["pop_prev"] | hdr["push_prev"]),
                    bad_field.eq(xfer_bad | (T["buf"] > Buffer.PARAM)
                                 | (T["flip"] & (T["buf"] != Buffer.INP))),
                    bad_range.eq(xfer_range),
                    bad_window.eq(~xfer_window_ok),
                ]
                m.d.comb += bad_token.eq(pop("c2l", hdr["pop_next"])
                                         | push("l2c", hdr["push_next"]))
            with m.Case(Opcode.STORE):
                m.d.comb += [
                    flags_bad.eq(hdr["pop_next"] | hdr["push_next"]),
                    bad_field.eq(xfer_bad | T["flip"]
                                 | ((T["buf"] != Buffer.ACC) & (T["buf"] != Buffer.OUT))),
                    bad_range.eq(xfer_range),
                    bad_window.eq(~xfer_window_ok),
                ]
                m.d.comb += bad_token.eq(pop("c2s", hdr["pop_prev"])
                                         | push("s2c", hdr["push_prev"]))
            with m.Case(Opcode.GEMM, Opcode.POST):
                with m.If(opcode == Opcode.GEMM):
                    m.d.comb += [bad_field.eq(gemm_bad), bad_range.eq(gemm_range)]
                with m.Else():
                    m.d.comb += [bad_field.eq(post_bad), bad_range.eq(post_range)]
                m.d.comb += bad_token.eq(
                    pop("l2c", hdr["pop_prev"]) | pop("s2c", hdr["pop_next"])
                    | push("c2l", hdr["push_prev"]) | push("c2s", hdr["push_next"]))
            with m.Default():
                m.d.comb += flags_bad.eq(insn[4:8] != 0)

        with m.If(~legal):
            m.d.comb += decode_error.eq(ErrorCode.ILLEGAL_INSTRUCTION)
        with m.Elif(flags_bad | bad_field):
            m.d.comb += decode_error.eq(ErrorCode.BAD_FIELD)
        with m.Elif(bad_range):
            m.d.comb += decode_error.eq(ErrorCode.BUFFER_RANGE)
        with m.Elif(bad_window):
            m.d.comb += decode_error.eq(ErrorCode.WINDOW)
        with m.Elif(bad_token):
            m.d.comb += decode_error.eq(ErrorCode.TOKEN)

        # -- execution registers ----------------------------------------------------------
        beat = Signal(12)  # instruction fetch beat
        # PROG_BASE + 16 * pc: a register kept alongside pc (no adder on the bus), or in a
        # compact core the sum itself.
        fetch_addr = Signal(abits if cfg.compact else 36)
        if cfg.compact:  # (in the window, so below 2**addr_bits: no carry is lost)
            m.d.comb += fetch_addr.eq(prog_base + pc_low)
        # The last byte address an instruction may start at and still lie in the window.
        if not cfg.compact:
            fetch_last = registered(win_limit - INSN_BYTES, signed(34), "fetch_last")
        fetch_state = "FETCH_CHECK" if cfg.compact else "FETCH"
        beats_per_insn = INSN_BYTES // line

        # Row, channel and ACC entry of POST (GEMM runs in the engine units, accel_compute.py)
        gi, gj = Signal(8), Signal(12)
        acc_ptr = Signal(17)
        g_m, g_n = Signal(8), Signal(12)
        # stage-1 registers

        # POST iteration state
        p_mode = Signal(2)
        p_unsigned, p_bias, p_res, p_noacc = Signal(), Signal(), Signal(), Signal()
        p_res_zp = Signal(signed(8))
        p_res_mult = Signal(signed(16))
        p_param_entry = Signal(16)
        p_out_base, p_res_base = Signal(17), Signal(17)
        p_orow = Signal(10)

        m.d.comb += self.mem_sel.eq((1 << (width // 8)) - 1)  # whole lines only

        running = Signal()
        m.d.comb += running.eq(state == STATE_BUSY)
        # A compact core's watchdog compares the cycle counter's own increment (below).
        if cfg.compact:
            cycles_next = Signal(33)
            m.d.comb += cycles_next.eq(counters["cycles"] + 1)
            with m.If(running):
                m.d.sync += counters["cycles"].eq(cycles_next)
        else:
            with m.If(running):
                count("cycles")

        def finish(code):
            # ERROR_PC is the pc the dispatcher stopped at (it moves no further).
            m.d.sync += [
                state.eq(Mux(code == 0, STATE_DONE, STATE_ERROR)),
                error_code.eq(code),
                irq_pending.eq(1),
            ]

        # Read-port defaults: keep reading the current pointers. (A compact core's PARAM port
        # reads only when POST issues operands: the compact POST unit reads the channel's
        # parameters from the port while its result forms.)
        m.d.comb += [inp_r.en.eq(1), wgt_r.en.eq(1), wgt_m.en.eq(1), acc_r.en.eq(1),
                     *([] if cfg.compact else [param_r.en.eq(1)]), out_r.en.eq(1)]


        flush = Signal()  # START and the watchdog empty the queues and the pipelines
        # POST: the pipelined unit (hw/accel_post.py); operands come from the buffers' read
        # ports one cycle after the addresses, results go to ACC or OUT at the tag's place.
        # Where a result goes, carried through the pipeline with it.
        # (Line addresses as wide as the buffers' ports: the range checks keep them inside.)
        tag_layout = StructLayout({
            "acc_line": max(exact_log2(lines[Buffer.ACC]), 1), "acc_sel": max(eb, 1),
            "out_line": max(exact_log2(lines[Buffer.OUT]), 1), "byte": max(lb, 1)})
        s1 = Signal(tag_layout)  # the tag of the operands arriving this cycle
        p1_valid = Signal()  # operand addresses were issued last cycle
        m.submodules.post = post = ResetInserter(flush)(PostUnit(cfg, tag_bits=tag_layout.size))
        m.d.comb += [
            post.mode.eq(p_mode), post.out_unsigned.eq(p_unsigned), post.bias.eq(p_bias),
            post.residual.eq(p_res), post.no_acc.eq(p_noacc), post.res_zp.eq(p_res_zp),
            post.res_mult.eq(p_res_mult),
            post.operands.payload.acc.eq(
                acc_r.data.word_select(s1.acc_sel, 32) if eb else acc_r.data[:32]),
            post.operands.payload.param.eq(param_r.data[:PARAM_BITS]),
            post.operands.payload.residual.eq(
                inp_r.data.word_select(s1.byte, 8) if lb else inp_r.data[:8]),
            post.operands.payload.tag.eq(s1),
        ]
        r_tag = tag_layout(post.result.payload.tag)
        r_value = post.result.payload.value

        # -- unit instruction queues, run-time tokens, bus arbiter ---------------------------
        # A full core queues whole instructions in flip-flops, and a unit reads its queue's
        # head in the cycle it takes the instruction. A compact core queues only each
        # instruction's head (opcode, token flags, buffer: what a unit checks before taking
        # it) and the slot where the whole instruction waits in one block RAM shared by the
        # three queues; the RAM's one read port serves one taking unit per cycle (compute,
        # then store, then load), which latches the fields the cycle after (state TAKE).
        head_bits = 12  # opcode, pop/push flags, buf (LOAD/STORE)
        queue_slots = 1 << (cfg.queue_depth - 1).bit_length()  # per queue, a power of two
        slot_bits = (3 * queue_slots - 1).bit_length()
        queues = {}
        for name in ("load", "compute", "store"):
            fifo = ResetInserter(flush)(SyncFIFO(
                width=head_bits + slot_bits if cfg.compact else INSN_BITS,
                depth=cfg.queue_depth))
            m.submodules[f"{name}_queue"] = fifo
            queues[name] = fifo
        lq, cq, sq = queues["load"], queues["compute"], queues["store"]
        # The instruction a unit checks before taking it (head) and the one it latches (body).
        heads = {q: q.r_data for q in (lq, cq, sq)}
        bodies = dict(heads)
        taking = {q: Signal(name=f"{name}_takes") for name, q in queues.items()}
        # A compact core's queue RAM also keeps a GEMM's row strides in lines beside the
        # instruction, as the dispatcher worked them out for its checks (block RAM to
        # spare; the compute unit would need the same adders again).
        strides = [a_row, w_row] + ([meta_row] if cfg.bitserial else [])
        if cfg.compact:
            m.submodules.queued = queued = Memory(
                shape=unsigned(INSN_BITS + sum(len(v) for v in strides)),
                depth=3 * queue_slots, init=[])
            queued_w, queued_r = queued.write_port(), queued.read_port()
            m.d.comb += queued_w.data.eq(Cat(insn, *strides))
            for index, (name, q) in enumerate(queues.items()):
                # Slots are used in order, so the next one is free whenever the queue is not
                # full (the dispatcher writes only then).
                tail = Signal(range(cfg.queue_depth), name=f"{name}_tail")
                slot = Const(index * queue_slots, slot_bits) | tail
                m.d.comb += q.w_data.eq(Cat(insn[:head_bits], slot))
                with m.If(q.w_en):
                    m.d.comb += [queued_w.addr.eq(slot), queued_w.en.eq(1)]
                    m.d.sync += tail.eq(Mux(tail == cfg.queue_depth - 1, 0, tail + 1))
                heads[q] = Cat(q.r_data[:head_bits], Const(0, INSN_BITS - head_bits))
                bodies[q] = queued_r.data[:INSN_BITS]
                with m.If(taking[q]):
                    m.d.comb += queued_r.addr.eq(q.r_data[head_bits:])
        else:
            for q in (lq, cq, sq):
                m.d.comb += q.w_data.eq(insn)

        # Tokens in flight between the running units (the dispatcher's counters above are the
        # program-order bound; these are the actual handshakes).
        live = {ch: Signal(len(tokens[ch]) + 1, name=f"live_{ch}") for ch in tokens}
        pushed = {ch: Signal(name=f"pushed_{ch}") for ch in tokens}
        popped = {ch: Signal(name=f"popped_{ch}") for ch in tokens}
        for ch in tokens:
            m.d.sync += live[ch].eq(live[ch] + pushed[ch] - popped[ch])

        # One master at a time on the data bus; a master keeps the bus until its beat is
        # acknowledged, then the next beat is arbitrated (fetch > store > load), so an
        # instruction fetch never waits for a whole transfer.
        req_fetch, req_load, req_store = Signal(), Signal(), Signal()
        adr_fetch, adr_load, adr_store = Signal(32 - lb), Signal(32 - lb), Signal(32 - lb)
        dat_store = Signal(width)
        owner = Signal(2)  # 0 none, 1 fetch, 2 load, 3 store
        grant = Signal(2)
        requests = Cat(Const(0, 1), req_fetch, req_load, req_store)
        with m.If((owner != 0) & requests.bit_select(owner, 1)):
            m.d.comb += grant.eq(owner)
        with m.Elif(req_fetch):
            m.d.comb += grant.eq(1)
        with m.Elif(req_store):
            m.d.comb += grant.eq(3)
        with m.Elif(req_load):
            m.d.comb += grant.eq(2)
        m.d.sync += owner.eq(Mux(self.mem_ack, 0, grant))
        ack_fetch = self.mem_ack & (grant == 1)
        ack_load = self.mem_ack & (grant == 2)
        ack_store = self.mem_ack & (grant == 3)
        m.d.comb += [
            self.mem_cyc.eq(grant != 0),
            self.mem_stb.eq(grant != 0),
            self.mem_we.eq(grant == 3),
            self.mem_adr.eq(Mux(grant == 1, adr_fetch, Mux(grant == 2, adr_load, adr_store))),
            self.mem_dat_w.eq(dat_store),
        ]

        # The watchdog compares one cycle ahead and registers the result, so the reset it
        # drives (queues, units, pipelines) starts from a flip-flop.
        watchdog_due = Signal()
        # (A compact core compares the cycle counter's own increment: it stops a cycle later.)
        m.d.sync += watchdog_due.eq(
            running & (watchdog != 0)
            & ((cycles_next if cfg.compact else counters["cycles"] + 2) >= watchdog))
        watchdog_fire = Signal()
        m.d.comb += watchdog_fire.eq(running & watchdog_due)
        m.d.comb += flush.eq(start | watchdog_fire)
        with m.If(flush):
            m.d.sync += [live[ch].eq(0) for ch in live]

        def abort_on_watchdog():
            # Placed last in a state, so it overrides that state's own transition.
            with m.If(watchdog_fire):
                m.next = "IDLE"

        load_idle, compute_idle, store_idle = Signal(), Signal(), Signal()
        all_idle = Signal()
        m.d.comb += all_idle.eq(~lq.r_rdy & ~cq.r_rdy & ~sq.r_rdy
                                & load_idle & compute_idle & store_idle)
        pend_code = Signal(8)

        # -- compact: the adder of the products and checks (see "exceeds" above) -------------
        sequence_done = Signal()  # the last entry of the sequence is done (or skipped)
        if cfg.compact:
            sequence = [entry.narrower_last() for entry in sequence]
            in_sequence = Signal()  # step through the sequence
            seq_hold = Signal()  # keep the place (between FETCH_CHECK and PRODUCTS)
            seq_index = Signal(range(len(sequence) + 1))
            seq_bit = Signal(range(max(len(e.factors[1]) for e in sequence if e.factors)))
            seq_adding = Signal()  # past the product: adding the terms
            seq_term = Signal(range(max(len(e.terms) for e in sequence)))
            partial = Signal(max(e.kept_width for e in sequence))
            seq_over = Signal()  # a > check's sum carried out of the kept bits: it exceeds

            # Operands through one multiplexer each, over the distinct sources (many entries
            # share a field); the entry and its step choose a source number.
            def chooser(name, values):
                sources = list({repr(v): v for v in values}.values())
                chosen = Signal(max(len(Value.cast(v)) for v in sources), name=name)
                code = Signal(range(max(len(sources), 2)), name=f"{name}_source")
                with m.Switch(code):
                    for k, v in enumerate(sources):
                        with m.Case(k):
                            m.d.comb += chosen.eq(v)
                keys = [repr(v) for v in sources]
                return chosen, code, lambda v: keys.index(repr(v))

            factor, factor_code, factor_of = chooser(
                "factor", [e.factors[0] for e in sequence if e.factors])
            multiplier, multiplier_code, multiplier_of = chooser(
                "multiplier", [e.factors[1] for e in sequence if e.factors])
            term, term_code, term_of = chooser("term", [t for e in sequence for t in e.terms])
            limit, limit_code, limit_of = chooser(
                "limit", [Value.cast(e.limit) for e in sequence if e.terms])
            step = Signal(len(partial))
            step_carry = Signal(max(len(partial) + 1, len(term), len(factor)) + 1 - len(partial))
            m.d.comb += Cat(step, step_carry).eq(
                Mux(seq_adding, partial, partial << 1)
                + Mux(seq_adding, term, Mux(multiplier.bit_select(seq_bit, 1), factor, 0)))
            # (only > checks can carry out of the kept bits: see kept_width)
            above, under = seq_over | step_carry.any() | (step > limit), step < limit

            # What this cycle does, from the entry (the Switch below), applied once.
            seq_finish = Signal()  # the entry is done or skipped: start the next one
            seq_to_adding = Signal()  # the product is complete: add the terms
            next_bit, next_adding = Signal.like(seq_bit), Signal()  # the next entry's start

            def start_of(e):
                return [next_bit.eq(len(e.factors[1]) - 1 if e.factors else 0),
                        next_adding.eq(e.factors is None)]

            with m.Switch(seq_index):
                for i, e in enumerate(sequence):
                    with m.Case(i):
                        if i + 1 < len(sequence):
                            m.d.comb += start_of(sequence[i + 1])
                        if e.factors:
                            m.d.comb += [factor_code.eq(factor_of(e.factors[0])),
                                         multiplier_code.eq(multiplier_of(e.factors[1]))]
                        with m.Switch(seq_term):
                            for j, t in enumerate(e.terms):
                                with m.Case(j):
                                    m.d.comb += term_code.eq(term_of(t))
                        product_done = ~seq_adding & (seq_bit == 0)
                        if e.terms:
                            m.d.comb += limit_code.eq(limit_of(Value.cast(e.limit)))
                            last = seq_adding & (seq_term == len(e.terms) - 1)
                            value = under if e.below else above
                            m.d.comb += seq_to_adding.eq(e.when & product_done
                                                     if e.factors else 0)
                        else:
                            last, value = product_done, step
                        m.d.comb += seq_finish.eq(~e.when | last)
                        with m.If(in_sequence & e.when & last):
                            m.d.sync += e.result.eq(value)
                with m.Default():
                    m.d.comb += sequence_done.eq(1)
            with m.If(in_sequence):
                with m.If(seq_finish):
                    m.d.sync += [seq_index.eq(seq_index + 1), partial.eq(0), seq_term.eq(0),
                                 seq_bit.eq(next_bit), seq_adding.eq(next_adding),
                                 seq_over.eq(0)]
                with m.Else():
                    m.d.sync += [partial.eq(step), seq_over.eq(seq_over | step_carry.any())]
                    with m.If(seq_to_adding):
                        m.d.sync += seq_adding.eq(1)
                    with m.Elif(seq_adding):
                        m.d.sync += seq_term.eq(seq_term + 1)
                    with m.Else():
                        m.d.sync += seq_bit.eq(seq_bit - 1)
            with m.Elif(~seq_hold):
                # Ready for the next instruction (also after an abort).
                first = sequence[0]
                m.d.sync += [seq_index.eq(0), partial.eq(0), seq_term.eq(0), seq_over.eq(0),
                             seq_bit.eq(len(first.factors[1]) - 1 if first.factors else 0),
                             seq_adding.eq(first.factors is None)]

        # -- dispatcher: fetch, check in program order, hand out to the unit queues ---------
        unit_queue_ready = Signal()
        with m.Switch(opcode):
            with m.Case(Opcode.LOAD):
                m.d.comb += unit_queue_ready.eq(lq.w_rdy)
            with m.Case(Opcode.GEMM, Opcode.POST):
                m.d.comb += unit_queue_ready.eq(cq.w_rdy)
            with m.Case(Opcode.STORE):
                m.d.comb += unit_queue_ready.eq(sq.w_rdy)
            with m.Default():
                m.d.comb += unit_queue_ready.eq(1)
        with m.FSM(name="dispatch") as fsm:
            with m.State("IDLE"):
                with m.If(start):
                    m.d.sync += [
                        state.eq(STATE_BUSY),
                        error_code.eq(0),
                        pc.eq(0),
                        *([] if cfg.compact else [fetch_addr.eq(prog_base)]),
                        beat.eq(0),
                        irq_pending.eq(0),
                    ]
                    m.d.sync += [counters[name].eq(0) for name in built_counters]
                    m.d.sync += [t.eq(0) for t in tokens.values()]
                    m.next = fetch_state

            if cfg.compact:
                with m.State("FETCH_CHECK"):
                    m.d.comb += [seq_hold.eq(1), in_sequence.eq(seq_index < fetch_entries)]
                    with m.If(seq_index == fetch_entries):
                        with m.If(fetch_outside):
                            m.d.sync += pend_code.eq(ErrorCode.WINDOW)
                            m.next = "DRAIN"
                        with m.Else():
                            m.next = "FETCH"
                    abort_on_watchdog()

            with m.State("FETCH"):
                # The whole instruction must lie inside the window before any beat is read.
                if cfg.compact:
                    fetch_outside_now = Const(0)  # checked in FETCH_CHECK
                    m.d.comb += seq_hold.eq(1)
                else:
                    fetch_outside_now = (fetch_addr < win_base) | (fetch_addr > fetch_last)
                with m.If(fetch_outside_now):
                    m.d.sync += pend_code.eq(ErrorCode.WINDOW)
                    m.next = "DRAIN"
                with m.Else():
                    # fetch_addr is 16-byte aligned: the beat fills the low line-address bits.
                    m.d.comb += [req_fetch.eq(1), adr_fetch.eq((fetch_addr >> lb) | beat)]
                    with m.If(ack_fetch):
                        m.d.sync += insn.word_select(beat, width).eq(self.mem_dat_r)
                        with m.If(beat == beats_per_insn - 1):
                            m.d.sync += beat.eq(0)
                            m.next = "PRODUCTS" if cfg.compact else "DECODE"
                        with m.Else():
                            m.d.sync += beat.eq(beat + 1)
                abort_on_watchdog()

            if cfg.compact:
                with m.State("PRODUCTS"):
                    # One step per cycle: skip a product the opcode does not use, else take
                    # one more bit of its narrower operand (most significant first).
                    m.d.comb += in_sequence.eq(1)
                    with m.If(sequence_done):
                        m.next = "ISSUE"
                    abort_on_watchdog()
            else:
                # The checks' registers fill (see "registered" above): products, span ends,
                # comparisons; ISSUE acts on them.
                for now, then in (("DECODE", "CHECK"), ("CHECK", "RANGE"), ("RANGE", "ISSUE")):
                    with m.State(now):
                        m.next = then
                        abort_on_watchdog()

            with m.State("ISSUE"):
                with m.If(decode_error != 0):
                    m.d.sync += pend_code.eq(decode_error)
                    m.next = "DRAIN"
                with m.Elif(unit_queue_ready):
                    m.d.sync += [tokens[ch].eq(token_next[ch]) for ch in tokens]
                    count("insns")
                    with m.If((opcode != Opcode.END) & (opcode != Opcode.JUMP)):
                        # (compact: the instruction was inside the window, so pc is below
                        # 2**(addr_bits - 4) and so is its increment's carry)
                        m.d.sync += pc.eq((pc[:abits - 4] if cfg.compact else pc) + 1)
                        if not cfg.compact:
                            m.d.sync += fetch_addr.eq(fetch_addr + INSN_BYTES)
                    with m.Switch(opcode):
                        with m.Case(Opcode.END):
                            m.d.sync += pend_code.eq(0)
                            m.next = "DRAIN"
                        with m.Case(Opcode.SYNC):
                            m.next = "SYNC"
                        with m.Case(Opcode.JUMP):
                            target = F[Opcode.JUMP]["target"]
                            m.d.sync += pc.eq(target)
                            if not cfg.compact:
                                m.d.sync += fetch_addr.eq(prog_base + (target << 4))
                            m.next = fetch_state
                        with m.Case(Opcode.LOAD):
                            m.d.comb += lq.w_en.eq(1)
                            count("load_insns")
                            m.next = fetch_state
                        with m.Case(Opcode.STORE):
                            m.d.comb += sq.w_en.eq(1)
                            count("store_insns")
                            m.next = fetch_state
                        with m.Case(Opcode.GEMM, Opcode.POST):
                            m.d.comb += cq.w_en.eq(1)
                            macs = Signal(64)
                            m.d.comb += macs.eq(Cat(counters["macs"], counters["macs_hi"])
                                                + tile_macs)
                            count("compute_insns")
                            if cfg.perf_counters:
                                with m.If(opcode == Opcode.GEMM):
                                    m.d.sync += [counters["macs"].eq(macs[:32]),
                                                 counters["macs_hi"].eq(macs[32:])]
                            m.next = fetch_state
                abort_on_watchdog()

            with m.State("SYNC"):
                with m.If(all_idle):
                    m.next = fetch_state
                abort_on_watchdog()

            with m.State("DRAIN"):
                # END or an error: every instruction dispatched before it completes first.
                with m.If(all_idle):
                    finish(pend_code)
                    m.next = "IDLE"
                abort_on_watchdog()

        with m.If(watchdog_fire):
            # After the dispatcher, so the watchdog's status wins over a same-cycle finish.
            finish(ErrorCode.WATCHDOG)

        # -- ACC ownership: its read port is shared by compute and store, its write port by
        # compute and load; a transfer to or from ACC and a compute instruction exclude each
        # other (the tokens already order them; this only keeps the ports apart).
        compute_start = Signal()
        load_acc, store_acc = Signal(), Signal()  # an ACC transfer is running

        # -- load unit ----------------------------------------------------------------------
        lf = field_values(heads[lq], Opcode.LOAD)
        l_buf = Signal(3)
        l_flip, l_push = Signal(), Signal()
        l_rows, l_row_lines = Signal(12), Signal(12)
        # A transfer's addresses: checked inside the window at dispatch, so addr_bits wide
        # (a full core with 32-bit addresses keeps its two spare bits).
        row_addr_bits = 34 if abits == 32 and not cfg.compact else abits
        l_stride = Signal(min(24, abits))
        l_row_addr = Signal(row_addr_bits)
        l_ptr = Signal(17)
        l_beat, l_row = Signal(12), Signal(12)
        l_ready = lq.r_rdy & (~lf["pop_next"] | (live["c2l"] != 0)) & (
            (lf["buf"] != Buffer.ACC) | (compute_idle & ~compute_start))

        # A transfer's registers: latched when a unit takes its instruction, stepped at each
        # acknowledged beat. A compact core's load and store units share one set (below), so
        # the latch and the step are written once for both.
        xfer_latch = Signal()  # compact: a transfer unit latches its instruction (TAKE)
        xfer_step = Signal()  # compact: a transfer unit's beat was acknowledged
        # (compact: the counters' own increments, compared for equality)
        def row_done(r):
            """The beat ends its row."""
            if cfg.compact:
                return r["beat"] + 1 == r["row_lines"]
            return r["beat"] == r["row_lines"] - 1

        def transfer_done(r):
            """The beat ends the transfer."""
            if cfg.compact:
                return row_done(r) & (r["row"] + 1 == r["rows"])
            return row_done(r) & (r["row"] == r["rows"] - 1)

        def transfer_latch(r, f, push):
            m.d.sync += [
                r["buf"].eq(f["buf"]), r["push"].eq(push),
                r["rows"].eq(f["rows"]), r["row_lines"].eq(f["row_lines"]),
                r["stride"].eq(f["stride"]), r["row_addr"].eq(data_base + f["dram"]),
                r["ptr"].eq(f["sram"]), r["beat"].eq(0), r["row"].eq(0),
            ]

        def transfer_step(r):
            m.d.sync += r["ptr"].eq(r["ptr"] + 1)
            with m.If(row_done(r)):
                m.d.sync += [r["beat"].eq(0), r["row"].eq(r["row"] + 1),
                             r["row_addr"].eq(r["row_addr"] + r["stride"])]
            with m.Else():
                m.d.sync += r["beat"].eq(r["beat"] + 1)

        def take(queue, f, channel, pop_flag, acc_flag, latch, first_state):
            """A transfer unit takes the instruction at the head of ``queue``: pops its
            token, notes whether it moves ACC, and (full core) latches its fields at once;
            the compact core latches them in its TAKE state from the shared queue RAM."""
            m.d.comb += [queue.r_en.eq(1), popped[channel].eq(f[pop_flag])]
            m.d.sync += acc_flag.eq(f["buf"] == Buffer.ACC)
            if cfg.compact:
                m.next = "TAKE"
            else:
                latch(f)
                m.next = first_state

        load_regs = dict(buf=l_buf, push=l_push, rows=l_rows, row_lines=l_row_lines,
                         stride=l_stride, row_addr=l_row_addr, ptr=l_ptr, beat=l_beat,
                         row=l_row)

        def load_latch(f):
            transfer_latch(load_regs, f, f["push_next"])
            m.d.sync += l_flip.eq(f["flip"])

        flip_mask = Const(int("80" * line, 16), width)
        load_data = Signal(width)
        m.d.comb += [
            load_data.eq(self.mem_dat_r ^ Mux(l_flip, flip_mask, 0)),
            inp_w.addr.eq(l_ptr), inp_w.data.eq(load_data),
            wgt_w.addr.eq(l_ptr), wgt_w.data.eq(load_data),
            param_w.addr.eq(l_ptr >> exact_log2(param_parts)),
            param_w.data.eq(load_data.replicate(param_parts)),
        ]
        with m.FSM(name="load_unit"):
            with m.State("IDLE"):
                m.d.comb += load_idle.eq(1)
                with m.If(taking[lq]):
                    take(lq, lf, "c2l", "pop_next", load_acc, load_latch, "RUN")
                with m.Elif(lq.r_rdy):
                    count("load_stall")
            if cfg.compact:
                with m.State("TAKE"):
                    count("load_busy")
                    m.d.comb += xfer_latch.eq(1)  # (a LOAD: flip and push_next, below)
                    m.next = "RUN"
                    with m.If(watchdog_fire):
                        m.d.sync += load_acc.eq(0)
                    abort_on_watchdog()
            with m.State("RUN"):
                count("load_busy")
                m.d.comb += [req_load.eq(1), adr_load.eq((l_row_addr >> lb) + l_beat)]
                with m.If(~ack_load):
                    count("load_stall")
                with m.Else():
                    # (INP, WGT and PARAM take their address and data from here always:
                    # only the load unit writes them.)
                    with m.Switch(l_buf):
                        for b, port in ((Buffer.INP, inp_w), (Buffer.WGT, wgt_w)):
                            with m.Case(int(b)):
                                m.d.comb += port.en.eq(-1)
                        with m.Case(Buffer.ACC):
                            m.d.comb += [acc_w.addr.eq(l_ptr), acc_w.data.eq(load_data),
                                         acc_w.en.eq(-1)]
                        with m.Case(Buffer.PARAM):
                            part = l_ptr[: exact_log2(param_parts)] if param_parts > 1 else 0
                            m.d.comb += param_w.en.eq(Const(1, param_parts) << part)
                    if cfg.compact:
                        m.d.comb += xfer_step.eq(1)
                    else:
                        transfer_step(load_regs)
                    count("bytes_read", line)
                    with m.If(transfer_done(load_regs)):
                        m.d.comb += pushed["l2c"].eq(l_push)
                        m.d.sync += load_acc.eq(0)
                        m.next = "IDLE"
                with m.If(watchdog_fire):
                    m.d.sync += load_acc.eq(0)
                abort_on_watchdog()

        # -- store unit ---------------------------------------------------------------------
        sf = field_values(heads[sq], Opcode.STORE)
        if cfg.compact:
            # One set of transfer registers (and so one set of address adders) for both
            # units: a compact core runs a LOAD and a STORE one after the other, never at
            # once (the tokens order them where it matters; see "taking" below).
            s_buf, s_push, s_rows, s_row_lines, s_stride = (
                l_buf, l_push, l_rows, l_row_lines, l_stride)
            s_row_addr, s_ptr, s_beat, s_row = l_row_addr, l_ptr, l_beat, l_row
        else:
            s_buf = Signal(3)
            s_push = Signal()
            s_rows, s_row_lines = Signal(12), Signal(12)
            s_stride = Signal(min(24, abits))
            s_row_addr = Signal(row_addr_bits)
            s_ptr = Signal(17)
            s_beat, s_row = Signal(12), Signal(12)
        s_ready = sq.r_rdy & (~sf["pop_prev"] | (live["c2s"] != 0)) & (
            (sf["buf"] != Buffer.ACC) | (compute_idle & ~compute_start))

        store_regs = dict(buf=s_buf, push=s_push, rows=s_rows, row_lines=s_row_lines,
                          stride=s_stride, row_addr=s_row_addr, ptr=s_ptr, beat=s_beat,
                          row=s_row)

        def store_latch(f):
            transfer_latch(store_regs, f, f["push_prev"])

        with m.FSM(name="store_unit"):
            with m.State("IDLE"):
                m.d.comb += store_idle.eq(1)
                with m.If(taking[sq]):
                    take(sq, sf, "c2s", "pop_prev", store_acc, store_latch, "READ")
                with m.Elif(sq.r_rdy):
                    count("store_stall")
            if cfg.compact:
                with m.State("TAKE"):
                    count("store_busy")
                    m.d.comb += xfer_latch.eq(1)
                    m.next = "READ"
                    with m.If(watchdog_fire):
                        m.d.sync += store_acc.eq(0)
                    abort_on_watchdog()
            # Read a buffer line (one cycle), then write it to the bus.
            with m.State("READ"):
                count("store_busy")
                m.d.comb += [acc_r.addr.eq(s_ptr), out_r.addr.eq(s_ptr)]
                m.next = "WRITE"
                with m.If(watchdog_fire):
                    m.d.sync += store_acc.eq(0)
                abort_on_watchdog()
            with m.State("WRITE"):
                count("store_busy")
                m.d.comb += [
                    acc_r.addr.eq(s_ptr), out_r.addr.eq(s_ptr),
                    req_store.eq(1), adr_store.eq((s_row_addr >> lb) + s_beat),
                    dat_store.eq(Mux(s_buf == Buffer.ACC, acc_r.data, out_r.data)),
                ]
                with m.If(~ack_store):
                    count("store_stall")
                with m.Else():
                    if cfg.compact:
                        m.d.comb += xfer_step.eq(1)
                    else:
                        transfer_step(store_regs)
                    count("bytes_written", line)
                    m.next = "READ"
                    with m.If(transfer_done(store_regs)):
                        m.d.comb += pushed["s2c"].eq(s_push)
                        m.d.sync += store_acc.eq(0)
                        m.next = "IDLE"
                with m.If(watchdog_fire):
                    m.d.sync += store_acc.eq(0)
                abort_on_watchdog()

        if cfg.compact:
            # The shared transfer registers: latched from the queue RAM (LOAD and STORE have
            # the same fields; push and flip by the unit taking it), stepped at each beat.
            with m.If(xfer_latch):
                body = field_values(bodies[lq], Opcode.LOAD)
                transfer_latch(load_regs, body, Mux(load_idle, body["push_prev"],
                                                    body["push_next"]))
                m.d.sync += l_flip.eq(body["flip"] & ~load_idle)
            with m.Elif(xfer_step):
                transfer_step(load_regs)

        # -- compute unit -------------------------------------------------------------------
        # GEMM runs on the engine its instruction names (hw/accel_compute.py); START and the
        # watchdog reset the units with the queues.
        gemm_units = {}
        if cfg.tlmm is not None:
            gemm_units[Engine.TLMM] = TlmmGemmUnit(cfg)
        if cfg.bitserial is not None:
            gemm_units[Engine.BITSERIAL] = BitSerialGemmUnit(cfg)
        for engine, unit in gemm_units.items():
            m.submodules[f"gemm_{engine.name.lower()}"] = ResetInserter(flush)(unit)
        CH = field_values(heads[cq], Opcode.GEMM)  # the token flags (same in POST)
        CG = field_values(bodies[cq], Opcode.GEMM)
        CP = field_values(bodies[cq], Opcode.POST)
        c_opcode = bodies[cq][0:4]
        if cfg.compact:
            queued_strides = queued_r.data[INSN_BITS:]
            c_a_row, c_w_row = queued_strides[:len(a_row)], queued_strides[len(a_row):][
                :len(w_row)]
            c_meta_row = queued_strides[len(a_row) + len(w_row):] if cfg.bitserial else 0
        else:
            c_a_row, c_w_row, c_meta_row = gemm_rows(m, CG, lb, lgs)
        c_push_prev, c_push_next = Signal(), Signal()
        c_ready = cq.r_rdy & (~CH["pop_prev"] | (live["l2c"] != 0)) & (
            ~CH["pop_next"] | (live["s2c"] != 0)) & ~load_acc & ~store_acc
        post_issue = Signal()
        post_gap = Signal(range(post.interval), name="post_gap") if post.interval > 1 else None
        if post_gap is not None:
            with m.If(post_gap != 0):
                m.d.sync += post_gap.eq(post_gap - 1)
        units_busy = Signal()
        m.d.comb += units_busy.eq(Cat(*(u.busy for u in gemm_units.values())).any())

        # The tile goes with valid only; its fields need no condition.
        for unit in gemm_units.values():
            m.d.comb += [
                unit.tile.payload.m.eq(CG["m"]),
                unit.tile.payload.n.eq(CG["n"]),
                unit.tile.payload.k.eq(CG["k"]),
                unit.tile.payload.wfmt.eq(CG["wfmt"]),
                unit.tile.payload.accumulate.eq(CG["accumulate"]),
                unit.tile.payload.meta.eq(CG["meta"]),
                unit.tile.payload.inp.eq(CG["inp"]),
                unit.tile.payload.wgt.eq(CG["wgt"]),
                unit.tile.payload.meta_line.eq(CG["meta_line"]),
                unit.tile.payload.acc.eq(CG["acc"]),
                unit.tile.payload.a_row.eq(c_a_row),
                unit.tile.payload.w_row.eq(c_w_row),
                unit.tile.payload.m_row.eq(c_meta_row),
            ]

        def start_compute():
            """Hand a GEMM to its engine unit, or set up POST, from the instruction body."""
            with m.If(c_opcode == Opcode.GEMM):
                for engine, unit in gemm_units.items():
                    m.d.comb += unit.tile.valid.eq(CG["engine"] == engine)
                m.next = "ENGINE"
            with m.Else():
                m.d.sync += [
                    p_mode.eq(CP["mode"]), p_unsigned.eq(CP["out_unsigned"]),
                    p_bias.eq(CP["bias"]), p_res.eq(CP["residual"]),
                    p_noacc.eq(CP["no_acc"]), p_res_zp.eq(CP["res_zp"]),
                    p_res_mult.eq(CP["res_mult"]),
                    p_param_entry.eq(CP["param"] >> (4 - lb)),
                    p_out_base.eq(CP["out"]), p_res_base.eq(CP["res"]),
                    p_orow.eq(_ceil_shift(CP["n"], lb)),
                    g_m.eq(CP["m"]), g_n.eq(CP["n"]),
                    gi.eq(0), gj.eq(0),
                    acc_ptr.eq(CP["acc"]),
                ]
                m.next = "POST"

        with m.FSM(name="compute_unit"):
            with m.State("IDLE"):
                m.d.comb += compute_idle.eq(1)
                with m.If(taking[cq]):
                    m.d.comb += [
                        compute_start.eq(1),
                        cq.r_en.eq(1),
                        popped["l2c"].eq(CH["pop_prev"]),
                        popped["s2c"].eq(CH["pop_next"]),
                    ]
                    m.d.sync += [c_push_prev.eq(CH["push_prev"]),
                                 c_push_next.eq(CH["push_next"])]
                    if cfg.compact:
                        m.next = "TAKE"
                    else:
                        start_compute()
                with m.Elif(cq.r_rdy):
                    count("compute_stall")

            if cfg.compact:
                with m.State("TAKE"):
                    # The engine units are idle (the compute unit was): they take the tile now.
                    count("compute_busy")
                    start_compute()
                    abort_on_watchdog()

            # GEMM on an engine unit (idle in IDLE, so it took the tile at once): wait until
            # its last ACC write is done, then send the tokens.
            with m.State("ENGINE"):
                count("compute_busy")
                with m.If(~units_busy):
                    m.d.comb += [pushed["c2l"].eq(c_push_prev), pushed["c2s"].eq(c_push_next)]
                    m.next = "IDLE"
                abort_on_watchdog()

            with m.State("POST"):
                count("compute_busy")
                # The pipelined unit takes operands every cycle; the compact one one set per
                # post.interval cycles (post_gap counts the cycles until the next).
                with m.If(post_gap == 0) if post_gap is not None else nullcontext():
                    m.d.comb += post_issue.eq(1)
                    if post_gap is not None:
                        m.d.sync += post_gap.eq(post.interval - 1)
                    with m.If((gj + 1 == g_n) if cfg.compact else (gj == g_n - 1)):
                        m.d.sync += [gj.eq(0), gi.eq(gi + 1),
                                     p_out_base.eq(p_out_base + p_orow),
                                     p_res_base.eq(p_res_base + p_orow)]
                        with m.If((gi + 1 == g_m) if cfg.compact else (gi == g_m - 1)):
                            m.next = "POST_DRAIN"
                    with m.Else():
                        m.d.sync += gj.eq(gj + 1)
                    m.d.sync += acc_ptr.eq(acc_ptr + 1)
                abort_on_watchdog()

            with m.State("POST_DRAIN"):
                # The last results are still in the unit's pipeline: the tokens go out once
                # it is empty (every result written).
                count("compute_busy")
                with m.If(~p1_valid & ~post.busy):
                    m.d.comb += [pushed["c2l"].eq(c_push_prev), pushed["c2s"].eq(c_push_next)]
                    m.next = "IDLE"
                abort_on_watchdog()

        # Which unit takes its queue's head this cycle: any ready one in a full core; one at a
        # time in a compact core (the shared queue RAM has one read port), compute first. None
        # while the watchdog fires: a unit that took an instruction then would run it after
        # the run ended (the watchdog returns the units to IDLE, it does not reset them).
        if cfg.compact:
            # (A busy unit does not claim the port: it could not take its head anyway. The
            # load and store units share their registers: each waits for the other.)
            c_wants = c_ready & compute_idle
            s_wants = s_ready & store_idle & load_idle
            m.d.comb += [
                taking[cq].eq(c_wants & ~watchdog_fire),
                taking[sq].eq(s_wants & ~c_wants & ~watchdog_fire),
                taking[lq].eq(l_ready & load_idle & store_idle & ~c_wants & ~s_wants
                              & ~watchdog_fire),
            ]
        else:
            m.d.comb += [taking[q].eq(ready & ~watchdog_fire)
                         for q, ready in ((lq, l_ready), (cq, c_ready), (sq, s_ready))]

        # POST operands: addresses now, buffer data (and the tag) next cycle.
        m.d.sync += p1_valid.eq(post_issue)
        if cfg.compact:
            m.d.comb += param_r.en.eq(post_issue)
        m.d.comb += post.operands.valid.eq(p1_valid)
        with m.If(post_issue):
            m.d.comb += [
                acc_r.addr.eq(acc_ptr >> eb),
                param_r.addr.eq(p_param_entry + gj),
                inp_r.addr.eq(p_res_base + (gj >> lb)),
            ]
            m.d.sync += [
                s1.acc_sel.eq(acc_ptr[:eb] if eb else 0),
                s1.acc_line.eq(acc_ptr >> eb),
                s1.out_line.eq(p_out_base + (gj >> lb)),
                s1.byte.eq(gj[:lb]),
            ]
        with m.If(post.result.valid):
            with m.If(p_mode == PostMode.ACC):
                m.d.comb += [
                    acc_w.addr.eq(r_tag.acc_line),
                    acc_w.data.eq(r_value.as_unsigned().replicate(line // 4)),
                    acc_w.en.eq(Const(1, line // 4) << r_tag.acc_sel),
                ]
            with m.Else():
                m.d.comb += out_w.en.eq(Const(1, line) << r_tag.byte)
        # Only POST writes OUT: address and data need no condition.
        m.d.comb += [out_w.addr.eq(r_tag.out_line),
                     out_w.data.eq(r_value.as_unsigned()[:8].replicate(line))]
        # Engine units own the buffer read ports (and ACC's write port) while they run.
        for unit in gemm_units.values():
            m.d.comb += [unit.inp_data.eq(inp_r.data), unit.wgt_data.eq(wgt_r.data),
                         unit.meta_data.eq(wgt_m.data), unit.acc_rdata.eq(acc_r.data)]
            with m.If(unit.busy):
                m.d.comb += [inp_r.addr.eq(unit.inp_addr), wgt_r.addr.eq(unit.wgt_addr),
                             wgt_m.addr.eq(unit.meta_addr), acc_r.addr.eq(unit.acc_raddr)]
                with m.If(unit.acc_wen.any()):
                    m.d.comb += [acc_w.addr.eq(unit.acc_waddr), acc_w.data.eq(unit.acc_wdata),
                                 acc_w.en.eq(unit.acc_wen)]
        del fsm
        return m
