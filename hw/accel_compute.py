"""GEMM execution units: the table-lookup and bit-serial engines fed from the on-chip buffers.

Each unit executes one GEMM instruction (``docs/isa.md``) on its engine: it reads
activations from INP and packed weights (and, for the bit-serial engine, group metadata) from
WGT, turns them into the engine's streams on the fly and adds the engine's results into ACC
with the ISA's ``accumulate`` rule, modulo 2**32. The engines are instantiated unchanged:
:class:`trilobit.hw.tlmm.TlmmEngine` and :class:`trilobit.hw.bitserial.BitSerialEngine`.

Interface (both units)
----------------------
``tile`` (stream, :data:`GEMM_TILE` payload): one beat per GEMM instruction - its fields
    plus the row strides in lines that the dispatcher already computed (``a_row``: INP lines
    per activation row, ``w_row``: WGT lines per output channel, ``m_row``: WGT lines per
    channel's metadata).
``busy``: high from the cycle after ``tile`` is accepted until the cycle after the last ACC
    write of that instruction; ``tile.ready`` is ``~busy``.
Buffer ports, each a synchronous read port of the core's buffer with one cycle of latency
(``*_data`` is the line at the address driven in the previous cycle; a unit may drive its
addresses at any time, the core only routes them while the unit is busy):
    ``inp_addr``/``inp_data`` (INP), ``wgt_addr``/``wgt_data`` (WGT),
    ``meta_addr``/``meta_data`` (WGT, bit-serial metadata), ``acc_raddr``/``acc_rdata`` (ACC)
    and the ACC write port ``acc_waddr``/``acc_wdata``/``acc_wen`` (one enable per int32 entry
    of the line; every entry of ``acc_wdata`` carries the same value).

How the table-lookup unit feeds :class:`TlmmEngine` (rows ``R``, units ``P``, group ``G``)
------------------------------------------------------------------------------------------
Output channels go in blocks of ``R``, one engine command per (activation row, block). The
reduction runs in *segments* of one INP line (``line`` activations). A segment is split into
``ceil(line / (G*P))`` activation beats; positions past the line and past ``k`` carry a zero
activation (and a zero weight), so any ``k`` works and no group straddles a buffer line.
For each WGT line of the ``R`` channels (one read per channel into a staging register) the
unit then emits every segment that line holds (4 for 2-bit slots, 2 for 4-bit slots).
Weight beats are built combinationally from the staged lines: each group of ``G`` slots
becomes one ternary code per weight and bit plane (TERNARY: the slot itself; INT2/INT4:
bit ``j`` of the code as +1, the sign bit as -1, ``trilobit.sim.golden_tlmm.weight_planes``),
and a lookup table generated at elaboration time from
:func:`trilobit.packing.ternary_group_index` turns the ``G`` codes into the engine's
``(magnitude, sign)`` group index.

How the bit-serial unit feeds :class:`BitSerialEngine` (``lanes`` W, ``rows`` C)
----------------------------------------------------------------------------------
Output channels go in blocks of ``C`` engine columns (one activation vector per job). Per
group of ``group_size`` input channels the unit reads the ``C`` channels' metadata bytes
(``type_id``, ``scale``; without ``meta``: 0 and 1) and sends one ``meta`` beat, then the
group's ``group_size / W`` chunks: ``W`` activations of one INP line and, per column, ``W``
codes of the staged WGT line (re-staged when a chunk enters a new line), masked to the
format's code bits. A partial last group is completed with zero activations.

Timing (cycles; ``line`` bytes per buffer line)
-----------------------------------------------
Inside a unit independent processes, each counting (activation row, channel block) on its
own, run ahead of the engine as far as their buffers allow: a *filler* stages the next WGT
line of the block's channels into the second of two staging buffers (one read per channel
and cycle) while the engine works from the first; an *INP reader* keeps a 2-line queue of
activation lines; the TLMM unit issues the next engine command while the current one runs;
the bit-serial unit reads the next group's metadata (on its own read port) while the current
group's chunks run. So the engine is fed every cycle unless staging is slower:

* TLMM: per staged line ``max(R, (8 / slot_bits) * ceil(line / (G*P)) * planes)`` cycles.
* bit-serial: per staged line ``max(C, chunks_in_line * cycles_per_weight)`` cycles.

The ACC writer adds a block's results (one entry per cycle, read then write) while the next
block runs; ``busy`` falls two cycles after the last result entry is read. Measured figures
are in ``docs/accelerator.md``.
"""

from __future__ import annotations

import numpy as np
from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.wiring import In, Out

from trilobit.config import AcceleratorConfig
from trilobit.errors import ConfigError
from trilobit.hw.bitserial import BitSerialEngine
from trilobit.hw.bitserial import BitSerialParams as EngineBitSerialParams
from trilobit.hw.bitserial_format import WeightFormat
from trilobit.hw.tlmm import TlmmEngine
from trilobit.hw.tlmm import TlmmParams as EngineTlmmParams
from trilobit.isa import WeightEncoding
from trilobit.packing import ternary_group_index

__all__ = [
    "GEMM_TILE",
    "TlmmGemmUnit",
    "BitSerialGemmUnit",
    "tlmm_engine_params",
    "bitserial_engine_params",
    "ternary_code_value",
    "group_index_lut",
]

#: Largest ISA ``k`` (16-bit field).
MAX_K = (1 << 16) - 1
#: Activation width of both engines, bits (INP holds int8).
ACT_BITS = 8
#: Width of the integer group scale in the metadata, bits.
SCALE_BITS = 8

#: One GEMM instruction as the compute units take it (field widths as in ``trilobit.isa``).
GEMM_TILE = data.StructLayout({
    "m": unsigned(8),
    "n": unsigned(12),
    "k": unsigned(16),
    "wfmt": unsigned(4),
    "accumulate": unsigned(1),
    "meta": unsigned(1),
    "inp": unsigned(16),
    "wgt": unsigned(16),
    "meta_line": unsigned(16),
    "acc": unsigned(17),
    "a_row": unsigned(14),
    "w_row": unsigned(17),
    "m_row": unsigned(17),
})

#: ISA weight encodings -> bit-serial engine formats (same names).
BITSERIAL_FORMAT = {enc: WeightFormat[enc.name] for enc in WeightEncoding
                    if enc.name in WeightFormat.__members__}


def _log2(x: int) -> int:
    if x < 1 or x & (x - 1):
        raise ConfigError(f"expected a power of two, got {x}")
    return x.bit_length() - 1


def ternary_code_value(code: int) -> int:
    """Weight value of a 2-bit TERNARY slot (docs/isa.md): 0 -> 0, 1 -> +1, 3 -> -1, 2 -> 0."""
    value = code - 4 if code & 2 else code  # INT2 two's complement
    return 0 if value == -2 else value  # the reserved code counts as 0


def group_index_lut(group_size: int) -> list[tuple[int, int]]:
    """``(magnitude, sign)`` for every concatenation of ``group_size`` 2-bit ternary codes.

    Entry ``sum_g code_g << 2g`` (code of weight ``g`` in bits ``2g+1..2g``, weight 0 the
    most significant trit) is :func:`trilobit.packing.ternary_group_index` of the weights
    the codes stand for.
    """
    entries = []
    for word in range(1 << (2 * group_size)):
        w = np.array([[ternary_code_value((word >> (2 * g)) & 3) for g in range(group_size)]])
        magnitude, sign = ternary_group_index(w, group_size)
        entries.append((int(magnitude[0, 0]), int(sign[0, 0])))
    return entries


def tlmm_engine_params(config: AcceleratorConfig) -> EngineTlmmParams:
    """Engine parameters of the accelerator's table-lookup unit.

    ``max_k`` covers the longest padded reduction of a 16-bit ``k`` (whole segments of
    ``ceil(line / (G*P))`` beats), so the engine's accumulator is exact for every instruction.
    """
    t = config.tlmm
    line = config.line_bytes
    per_beat = t.group_size * t.units
    beats_per_segment = -(-line // per_beat)
    segments = -(-MAX_K // line)
    return EngineTlmmParams(group_size=t.group_size, rows=t.rows, units=t.units,
                            act_bits=ACT_BITS, max_k=segments * beats_per_segment * per_beat,
                            max_planes=4)


def bitserial_engine_params(config: AcceleratorConfig) -> EngineBitSerialParams:
    """Engine parameters of the accelerator's bit-serial unit: one activation vector,
    ``config.bitserial.rows`` output columns, ``lanes`` input channels per chunk."""
    b = config.bitserial
    if config.line_bytes % b.lanes:
        raise ConfigError(
            f"bitserial.lanes must divide the line ({config.line_bytes} bytes), got {b.lanes}"
        )
    return EngineBitSerialParams(width=b.lanes, rows=1, columns=b.rows,
                                 bits_per_cycle=b.bits_per_cycle, group_size=b.group_size,
                                 act_bits=ACT_BITS, scale_bits=SCALE_BITS,
                                 max_groups=-(-MAX_K // b.group_size))


def unit_signature(width: int) -> dict:
    """Ports shared by both GEMM units for ``width``-bit buffer lines."""
    return {
        "tile": In(stream.Signature(GEMM_TILE)),
        "busy": Out(1),
        "inp_addr": Out(17),
        "inp_data": In(width),
        "wgt_addr": Out(17),
        "wgt_data": In(width),
        "meta_addr": Out(17),
        "meta_data": In(width),
        "acc_raddr": Out(17),
        "acc_rdata": In(width),
        "acc_waddr": Out(17),
        "acc_wdata": Out(width),
        "acc_wen": Out(width // 32),
    }


def _next_block(m: Module, tile, block: int, j0, i, on_row_end=()):
    """Advance a (activation row ``i``, first channel ``j0``) counter pair by one block of
    ``block`` channels; returns the condition "that was the instruction's last block"."""
    done = (j0 + block >= tile.n) & (i + 1 == tile.m)
    m.d.sync += j0.eq(j0 + block)
    with m.If(j0 + block >= tile.n):
        m.d.sync += [j0.eq(0), i.eq(i + 1), *on_row_end]
    return done


class _AccWriter:
    """Adds an engine's result blocks into ACC, one int32 entry per cycle (read, then write).

    Blocks arrive in instruction order (activation row major, channel blocks of ``block``);
    entries past ``n`` are dropped. ``ACC[acc + i*n + j] = (accumulate ? ACC : 0) + value``
    modulo 2**32 (the low 32 bits of the exact engine result).
    """

    def __init__(self, m: Module, unit, out: stream.Interface, block: int, value_of, line: int):
        self.m, self.unit, self.out, self.block = m, unit, out, block
        self.value_of = value_of  # (latched payload, index) -> signed value
        self.eb = _log2(line // 4)

    def elaborate(self, tile, start, first_entry) -> tuple[Signal, Signal]:
        """Add the writer; ``start`` pulses in the cycle ``tile`` is latched, with the
        instruction's first ACC entry on ``first_entry``. Returns ``pending`` (high until the
        last entry has been read) and the write strobe."""
        m, u, block, eb = self.m, self.unit, self.block, self.eb
        pending = Signal()
        held = Signal.like(self.out.payload)
        j0 = Signal(13)
        i = Signal(8)
        ptr = Signal(17)
        index = Signal(range(block + 1))
        count = Signal(range(block + 1))
        busy = Signal()
        # write stage: one cycle after the read of the same entry
        w_valid = Signal()
        w_sel = Signal(max(eb, 1))
        w_line = Signal(17)
        w_value = Signal(32)

        with m.If(start):
            m.d.sync += [pending.eq(1), ptr.eq(first_entry), j0.eq(0), i.eq(0)]

        m.d.comb += self.out.ready.eq(pending & ~busy)
        with m.If(self.out.valid & self.out.ready):
            remaining = tile.n - j0
            m.d.sync += [held.eq(self.out.payload), busy.eq(1), index.eq(0),
                         count.eq(Mux(remaining < block, remaining, block))]
        values = [self.value_of(held, r) for r in range(block)]
        current = Signal(signed(32))
        with m.Switch(index):
            for r in range(block):
                with m.Case(r):
                    m.d.comb += current.eq(values[r])  # sign-extends or wraps to 32 bits
        m.d.comb += u.acc_raddr.eq(ptr >> eb)
        m.d.sync += w_valid.eq(0)
        with m.If(busy):
            m.d.sync += [w_valid.eq(1), w_sel.eq(ptr[:eb] if eb else 0), w_line.eq(ptr >> eb),
                         w_value.eq(current), ptr.eq(ptr + 1), index.eq(index + 1)]
            with m.If(index + 1 == count):
                m.d.sync += [busy.eq(0), j0.eq(j0 + block)]
                with m.If(j0 + block >= tile.n):
                    m.d.sync += [j0.eq(0), i.eq(i + 1)]
                    with m.If(i + 1 == tile.m):
                        m.d.sync += pending.eq(0)
        old = u.acc_rdata.word_select(w_sel, 32) if eb else u.acc_rdata[:32]
        with m.If(w_valid):
            m.d.comb += [
                u.acc_waddr.eq(w_line),
                u.acc_wdata.eq((Mux(tile.accumulate, old, 0) + w_value)[:32]
                               .replicate(len(u.acc_wdata) // 32)),
                u.acc_wen.eq(Const(1, len(u.acc_wen)) << w_sel),
            ]
        return pending, w_valid


class TlmmGemmUnit(wiring.Component):
    """GEMM with TERNARY, INT2 or INT4 weights on the table-lookup engine (module docstring)."""

    def __init__(self, config: AcceleratorConfig):
        if config.tlmm is None:
            raise ConfigError("config.tlmm is None: the table-lookup unit needs the engine")
        self.config = config
        self.line = config.line_bytes
        self.engine_params = tlmm_engine_params(config)
        super().__init__(unit_signature(config.mem_width))

    def elaborate(self, platform) -> Module:  # noqa: C901 - the processes, one by one
        m = Module()
        p, line, width = self.engine_params, self.line, self.config.mem_width
        lb = _log2(line)
        G, R, P = p.group_size, p.rows, p.units
        per_beat = G * P
        bps = -(-line // per_beat)  # activation beats per segment (INP line)
        m.submodules.engine = engine = TlmmEngine(p)

        tile = Signal(GEMM_TILE)
        start = Signal()
        m.d.comb += [self.tile.ready.eq(~self.busy), start.eq(self.tile.valid & self.tile.ready)]
        with m.If(start):
            m.d.sync += tile.eq(self.tile.payload)

        # Per-instruction constants.
        n_seg = Signal(16)  # segments (INP lines) per activation row
        planes = Signal(3)
        slot4 = Signal()  # 4-bit slots (INT4) instead of 2-bit ones
        m.d.comb += [
            n_seg.eq((tile.k + line - 1) >> lb),
            slot4.eq(tile.wfmt == WeightEncoding.INT4),
            planes.eq(Mux(tile.wfmt == WeightEncoding.INT4, 4,
                          Mux(tile.wfmt == WeightEncoding.INT2, 2, 1))),
        ]

        spl_last = Mux(slot4, 1, 3)  # last segment index within a WGT line

        def next_block(j0, i, on_row_end=()):
            return _next_block(m, tile, R, j0, i, on_row_end)

        # -- filler: stages WGT line ``wl`` of the R channels of a block into one of two
        # staging buffers (double buffered: the next line is read while the other is emitted)
        stage = [[Signal(width, name=f"stage{b}_{r}") for r in range(R)] for b in range(2)]
        full = Signal(2)
        f_active = Signal()
        f_buf = Signal()
        f_row = Signal(range(R + 1))
        f_ptr = Signal(17)  # WGT line being read
        f_line0 = Signal(17)  # WGT line wl of the block's first channel
        f_wl = Signal(17)
        f_j0 = Signal(13)
        f_i = Signal(8)
        f_wblk = Signal(17)
        f_write = Signal()  # data of the previous cycle's read is to be stored
        f_write_buf = Signal()
        f_write_row = Signal(range(R))
        m.d.comb += self.wgt_addr.eq(f_ptr)
        m.d.sync += f_write.eq(0)
        with m.If(f_write):
            for b in range(2):
                for r in range(R):
                    with m.If((f_write_buf == b) & (f_write_row == r)):
                        m.d.sync += stage[b][r].eq(self.wgt_data)
        f_issue = f_active & (f_row < R) & ~full.bit_select(f_buf, 1)
        with m.If(f_issue):
            m.d.sync += [f_write.eq(1), f_write_buf.eq(f_buf), f_write_row.eq(f_row),
                         f_row.eq(f_row + 1), f_ptr.eq(f_ptr + tile.w_row)]
        # the buffer is full once its last row is stored; then move on to the next line
        with m.If(f_write & (f_write_row == R - 1)):
            m.d.sync += [full.bit_select(f_write_buf, 1).eq(1), f_buf.eq(~f_buf), f_row.eq(0)]
            last_wl = f_wl + 1 == tile.w_row
            m.d.sync += [f_wl.eq(f_wl + 1), f_ptr.eq(f_line0 + 1), f_line0.eq(f_line0 + 1)]
            with m.If(last_wl):
                m.d.sync += [f_wl.eq(0), f_wblk.eq(f_wblk + R * tile.w_row),
                             f_ptr.eq(f_wblk + R * tile.w_row),
                             f_line0.eq(f_wblk + R * tile.w_row)]
                done = next_block(f_j0, f_i, on_row_end=[f_wblk.eq(tile.wgt),
                                                         f_ptr.eq(tile.wgt),
                                                         f_line0.eq(tile.wgt)])
                with m.If(done):
                    m.d.sync += f_active.eq(0)

        # -- INP reader: the activation row's lines, once per block, into a 2-line queue ----
        m.submodules.act_lines = act_lines = SyncFIFO(width=8 * line + 18, depth=2)
        r_active = Signal()
        r_seg = Signal(16)
        r_rem = Signal(signed(18))  # k - r_seg * line
        r_j0 = Signal(13)
        r_i = Signal(8)
        r_abase = Signal(17)
        r_inflight = Signal()
        r_inflight_rem = Signal(signed(18))
        m.d.comb += self.inp_addr.eq(r_abase + r_seg)
        # a read is issued only if its line will find room in the queue a cycle later
        r_issue = r_active & (act_lines.level + r_inflight < 2)
        m.d.sync += r_inflight.eq(r_issue)
        with m.If(r_issue):
            m.d.sync += [r_inflight_rem.eq(r_rem), r_seg.eq(r_seg + 1), r_rem.eq(r_rem - line)]
            with m.If(r_seg + 1 == n_seg):
                m.d.sync += [r_seg.eq(0), r_rem.eq(tile.k)]
                done = next_block(r_j0, r_i, on_row_end=[r_abase.eq(r_abase + tile.a_row)])
                with m.If(done):
                    m.d.sync += r_active.eq(0)
        m.d.comb += [act_lines.w_en.eq(r_inflight),
                     act_lines.w_data.eq(Cat(self.inp_data, r_inflight_rem))]

        # -- activation beats from the queued line; zero past the line and past k ------------
        a_have = Signal()
        a_line = Signal(8 * line)
        a_rem = Signal(signed(18))
        act_beat = Signal(range(bps))
        a_last_fire = engine.act.valid & engine.act.ready & (act_beat == bps - 1)
        m.d.comb += act_lines.r_en.eq((~a_have | a_last_fire) & act_lines.r_rdy)
        with m.If(act_lines.r_en):
            m.d.sync += [a_have.eq(1), a_line.eq(act_lines.r_data[:8 * line]),
                         a_rem.eq(act_lines.r_data[8 * line:].as_signed()), act_beat.eq(0)]
        with m.Elif(a_last_fire):
            m.d.sync += a_have.eq(0)
        with m.If(engine.act.valid & engine.act.ready & (act_beat != bps - 1)):
            m.d.sync += act_beat.eq(act_beat + 1)
        m.d.comb += engine.act.valid.eq(a_have)
        act_payload = Signal.like(engine.act.payload)
        with m.Switch(act_beat):
            for b in range(bps):
                with m.Case(b):
                    for e in range(per_beat):
                        pos = b * per_beat + e
                        if pos < line:
                            byte = a_line[8 * pos: 8 * pos + 8].as_signed()
                            m.d.comb += act_payload[e].eq(Mux(a_rem > pos, byte, 0))
        m.d.comb += engine.act.payload.eq(act_payload)

        # -- engine commands: one per block ----------------------------------------------------
        c_active = Signal()
        c_j0 = Signal(13)
        c_i = Signal(8)
        m.d.comb += [
            engine.cmd.valid.eq(c_active),
            engine.cmd.payload.beats.eq(n_seg * bps),
            engine.cmd.payload.planes.eq(planes),
        ]
        with m.If(engine.cmd.valid & engine.cmd.ready):
            with m.If(next_block(c_j0, c_i)):
                m.d.sync += c_active.eq(0)

        # -- weight beats: G slots per (row, unit) -> plane codes -> group index -----------
        e_active = Signal()
        e_buf = Signal()
        e_seg = Signal(16)  # segment within the block
        s = Signal(2)  # segment within the staged WGT line
        w_beat = Signal(range(bps))
        plane = Signal(3)
        e_j0 = Signal(13)
        e_i = Signal(8)
        lut = group_index_lut(G)
        last_plane = plane + 1 == planes
        w_payload = Signal.like(engine.weights.payload)
        for r in range(R):
            staged = Mux(e_buf, stage[1][r], stage[0][r])
            # this segment's slots of channel j0 + r
            seg_bits = Signal(4 * line, name=f"seg_bits_{r}")
            with m.If(slot4):
                m.d.comb += seg_bits.eq(staged.word_select(s[0], 4 * line))
            with m.Else():
                m.d.comb += seg_bits.eq(staged.word_select(s, 2 * line))
            for u in range(P):
                codes = []
                for g in range(G):
                    raw = Signal(4, name=f"slot_{r}_{u}_{g}")
                    with m.Switch(w_beat):
                        for b in range(bps):
                            with m.Case(b):
                                pos = b * per_beat + u * G + g
                                if pos < line:
                                    m.d.comb += raw.eq(Mux(slot4, seg_bits[4 * pos: 4 * pos + 4],
                                                           seg_bits[2 * pos: 2 * pos + 2]))
                    # one ternary code per weight and plane (TERNARY: the slot itself)
                    bit = raw.bit_select(plane, 1)
                    code = Signal(2, name=f"code_{r}_{u}_{g}")
                    m.d.comb += code.eq(Mux(tile.wfmt == WeightEncoding.TERNARY, raw[:2],
                                            Mux(bit, Mux(last_plane, 3, 1), 0)))
                    codes.append(code)
                index = w_payload[r * P + u]
                with m.Switch(Cat(*codes)):
                    for word, (magnitude, sign) in enumerate(lut):
                        if magnitude or sign:
                            with m.Case(word):
                                m.d.comb += [index.magnitude.eq(magnitude), index.sign.eq(sign)]
        m.d.comb += [engine.weights.payload.eq(w_payload),
                     engine.weights.valid.eq(e_active & full.bit_select(e_buf, 1))]
        w_fire = engine.weights.valid & engine.weights.ready
        with m.If(w_fire):
            m.d.sync += plane.eq(plane + 1)
            with m.If(last_plane):
                m.d.sync += [plane.eq(0), w_beat.eq(w_beat + 1)]
                with m.If(w_beat == bps - 1):
                    # segment done
                    m.d.sync += [w_beat.eq(0), e_seg.eq(e_seg + 1), s.eq(s + 1)]
                    block_end = e_seg + 1 == n_seg
                    with m.If(block_end | (s == spl_last)):
                        # the staged line is used up
                        m.d.sync += [full.bit_select(e_buf, 1).eq(0), e_buf.eq(~e_buf), s.eq(0)]
                    with m.If(block_end):
                        m.d.sync += e_seg.eq(0)
                        with m.If(next_block(e_j0, e_i)):
                            m.d.sync += e_active.eq(0)

        # -- start ------------------------------------------------------------------------------
        with m.If(start):
            payload = self.tile.payload
            m.d.sync += [
                f_active.eq(1), f_buf.eq(0), f_row.eq(0), f_ptr.eq(payload.wgt),
                f_line0.eq(payload.wgt), f_wl.eq(0), f_j0.eq(0), f_i.eq(0),
                f_wblk.eq(payload.wgt), full.eq(0),
                r_active.eq(1), r_seg.eq(0), r_rem.eq(payload.k), r_j0.eq(0), r_i.eq(0),
                r_abase.eq(payload.inp),
                c_active.eq(1), c_j0.eq(0), c_i.eq(0),
                e_active.eq(1), e_buf.eq(0), e_seg.eq(0), s.eq(0), w_beat.eq(0), plane.eq(0),
                e_j0.eq(0), e_i.eq(0),
            ]
        seq_active = e_active

        writer = _AccWriter(m, self, engine.out, R, lambda held, r: held[r], line)
        pending, _ = writer.elaborate(tile, start, self.tile.payload.acc)
        w_tail = Signal()
        m.d.sync += w_tail.eq(pending)
        m.d.comb += self.busy.eq(seq_active | pending | w_tail)
        return m


class BitSerialGemmUnit(wiring.Component):
    """GEMM with INT8/6/4/3 or BitMoD FP4/FP3 weights on the bit-serial engine (module
    docstring)."""

    def __init__(self, config: AcceleratorConfig):
        if config.bitserial is None:
            raise ConfigError("config.bitserial is None: the bit-serial unit needs the engine")
        self.config = config
        self.line = config.line_bytes
        self.engine_params = bitserial_engine_params(config)
        super().__init__(unit_signature(config.mem_width))

    def elaborate(self, platform) -> Module:  # noqa: C901 - the processes, one by one
        m = Module()
        p, line, width = self.engine_params, self.line, self.config.mem_width
        lb = _log2(line)
        W, C, gs = p.width, p.columns, p.group_size
        lw, lgs = _log2(W), _log2(gs)
        m.submodules.engine = engine = BitSerialEngine(p)

        tile = Signal(GEMM_TILE)
        start = Signal()
        m.d.comb += [self.tile.ready.eq(~self.busy), start.eq(self.tile.valid & self.tile.ready)]
        with m.If(start):
            m.d.sync += tile.eq(self.tile.payload)

        n_groups = Signal(17)
        slot8 = Signal()  # 8-bit slots (INT8, INT6) instead of 4-bit ones
        m.d.comb += [
            n_groups.eq((tile.k + gs - 1) >> lgs),
            slot8.eq((tile.wfmt == WeightEncoding.INT8) | (tile.wfmt == WeightEncoding.INT6)),
        ]
        fmt = Signal(3)
        code_mask = Signal(8)
        with m.Switch(tile.wfmt):
            for enc, wf in BITSERIAL_FORMAT.items():
                with m.Case(int(enc)):
                    m.d.comb += [fmt.eq(int(wf)), code_mask.eq((1 << enc.code_bits) - 1)]

        def next_block(j0, i, on_row_end=()):
            return _next_block(m, tile, C, j0, i, on_row_end)

        # Per block: chunks of W channels over whole groups (a partial last group is padded).
        padded_k = Signal(18)
        n_lines = Signal(17)  # INP lines per block
        n_wlines = Signal(17)  # staged WGT lines per block
        m.d.comb += [
            padded_k.eq(n_groups << lgs),
            n_lines.eq((padded_k + line - 1) >> lb),
            n_wlines.eq(Mux(slot8, n_lines, (padded_k + 2 * line - 1) >> (lb + 1))),
        ]

        # -- metadata: per group read the C channels' bytes (or use 0 / 1), send a beat ------
        q_active = Signal()
        q_group = Signal(17)
        q_col = Signal(range(C + 1))
        q_ptr = Signal(17)  # metadata line of (channel j0 + q_col, group q_group)
        q_mblk = Signal(17)  # metadata line of channel j0, group 0
        q_j0 = Signal(13)
        q_i = Signal(8)
        q_have = Signal()
        q_write = Signal()
        q_write_col = Signal(range(C))
        q_write_sel = Signal(max(lb - 1, 1))
        type_ids = [Signal(2, name=f"type_id_{c}") for c in range(C)]
        scales = [Signal(SCALE_BITS, name=f"scale_{c}") for c in range(C)]
        m.d.comb += self.meta_addr.eq(q_ptr)
        meta_word = self.meta_data.word_select(q_write_sel, 16) if lb > 1 \
            else self.meta_data[:16]
        m.d.sync += q_write.eq(0)
        with m.If(q_write):
            for c in range(C):
                with m.If(q_write_col == c):
                    m.d.sync += [type_ids[c].eq(meta_word[0:2]), scales[c].eq(meta_word[8:16])]
        with m.If(q_active & ~q_have):
            with m.If(~tile.meta):
                m.d.sync += [t.eq(0) for t in type_ids]
                m.d.sync += [sc.eq(1) for sc in scales]
                m.d.sync += q_have.eq(1)
            with m.Elif(q_col < C):
                m.d.sync += [q_write.eq(1), q_write_col.eq(q_col),
                             q_write_sel.eq(q_group[: max(lb - 1, 1)]),
                             q_col.eq(q_col + 1), q_ptr.eq(q_ptr + tile.m_row)]
            with m.Elif(~q_write):
                m.d.sync += q_have.eq(1)
        m.d.comb += [engine.meta.valid.eq(q_have),
                     engine.meta.payload.fmt.eq(fmt),
                     engine.meta.payload.last.eq(q_group + 1 == n_groups)]
        for c in range(C):
            m.d.comb += [engine.meta.payload.cols[c].type_id.eq(type_ids[c]),
                         engine.meta.payload.cols[c].scale.eq(scales[c])]
        with m.If(engine.meta.valid & engine.meta.ready):
            next_line = q_mblk + (((q_group + 1) << 1) >> lb)
            m.d.sync += [q_have.eq(0), q_col.eq(0), q_group.eq(q_group + 1),
                         q_ptr.eq(next_line)]
            with m.If(q_group + 1 == n_groups):
                next_mblk = q_mblk + C * tile.m_row
                m.d.sync += [q_group.eq(0), q_mblk.eq(next_mblk), q_ptr.eq(next_mblk)]
                with m.If(next_block(q_j0, q_i, on_row_end=[q_mblk.eq(tile.meta_line),
                                                           q_ptr.eq(tile.meta_line)])):
                    m.d.sync += q_active.eq(0)

        # -- filler: WGT lines of the C channels, double buffered ---------------------------
        stage = [[Signal(width, name=f"stage{b}_{c}") for c in range(C)] for b in range(2)]
        full = Signal(2)
        f_active = Signal()
        f_buf = Signal()
        f_row = Signal(range(C + 1))
        f_ptr = Signal(17)
        f_line0 = Signal(17)
        f_wl = Signal(17)
        f_j0 = Signal(13)
        f_i = Signal(8)
        f_wblk = Signal(17)
        f_write = Signal()
        f_write_buf = Signal()
        f_write_row = Signal(range(C))
        m.d.comb += self.wgt_addr.eq(f_ptr)
        m.d.sync += f_write.eq(0)
        with m.If(f_write):
            for b in range(2):
                for c in range(C):
                    with m.If((f_write_buf == b) & (f_write_row == c)):
                        m.d.sync += stage[b][c].eq(self.wgt_data)
        with m.If(f_active & (f_row < C) & ~full.bit_select(f_buf, 1)):
            m.d.sync += [f_write.eq(1), f_write_buf.eq(f_buf), f_write_row.eq(f_row),
                         f_row.eq(f_row + 1), f_ptr.eq(f_ptr + tile.w_row)]
        with m.If(f_write & (f_write_row == C - 1)):
            m.d.sync += [full.bit_select(f_write_buf, 1).eq(1), f_buf.eq(~f_buf), f_row.eq(0),
                         f_wl.eq(f_wl + 1), f_ptr.eq(f_line0 + 1), f_line0.eq(f_line0 + 1)]
            with m.If(f_wl + 1 == n_wlines):
                next_wblk = f_wblk + C * tile.w_row
                m.d.sync += [f_wl.eq(0), f_wblk.eq(next_wblk), f_ptr.eq(next_wblk),
                             f_line0.eq(next_wblk)]
                with m.If(next_block(f_j0, f_i, on_row_end=[f_wblk.eq(tile.wgt),
                                                           f_ptr.eq(tile.wgt),
                                                           f_line0.eq(tile.wgt)])):
                    m.d.sync += f_active.eq(0)

        # -- INP reader: the activation row's lines, once per block, into a 2-line queue ----
        m.submodules.act_lines = act_lines = SyncFIFO(width=8 * line, depth=2)
        r_active = Signal()
        r_line = Signal(17)
        r_j0 = Signal(13)
        r_i = Signal(8)
        r_abase = Signal(17)
        r_inflight = Signal()
        m.d.comb += self.inp_addr.eq(r_abase + r_line)
        # a read is issued only if its line will find room in the queue a cycle later
        r_issue = r_active & (act_lines.level + r_inflight < 2)
        m.d.sync += r_inflight.eq(r_issue)
        with m.If(r_issue):
            m.d.sync += r_line.eq(r_line + 1)
            with m.If(r_line + 1 == n_lines):
                m.d.sync += r_line.eq(0)
                with m.If(next_block(r_j0, r_i, on_row_end=[r_abase.eq(r_abase + tile.a_row)])):
                    m.d.sync += r_active.eq(0)
        m.d.comb += [act_lines.w_en.eq(r_inflight), act_lines.w_data.eq(self.inp_data)]

        # -- chunks: W activations of the queued line and W codes per staged column ----------
        e_active = Signal()
        e_t = Signal(18)  # first input channel of the chunk, within the block
        e_rem = Signal(signed(19))  # k - e_t
        e_buf = Signal()
        e_j0 = Signal(13)
        e_i = Signal(8)
        a_have = Signal()
        a_line = Signal(8 * line)
        chunks_per_line = line // W
        act_word = a_line.word_select(e_t[lw:lb], 8 * W) if chunks_per_line > 1 else a_line
        for d in range(W):
            byte = act_word[8 * d: 8 * d + 8].as_signed()
            m.d.comb += engine.act.payload[0][d].eq(Mux(e_rem > d, byte, 0))
        for c in range(C):
            staged = Mux(e_buf, stage[1][c], stage[0][c])
            word8 = staged.word_select(e_t[lw:lb], 8 * W) if chunks_per_line > 1 else staged
            word4 = staged.word_select(e_t[lw:lb + 1], 4 * W)
            for d in range(W):
                code = Mux(slot8, word8[8 * d: 8 * d + 8], word4[4 * d: 4 * d + 4])
                m.d.comb += engine.weights.payload[c][d].eq(code & code_mask)
        ready_to_send = e_active & a_have & full.bit_select(e_buf, 1)
        m.d.comb += [engine.act.valid.eq(ready_to_send), engine.weights.valid.eq(ready_to_send)]
        fire = engine.act.valid & engine.act.ready
        last_in_line = e_t[lw:lb] == chunks_per_line - 1 if chunks_per_line > 1 else 1
        last_in_wline = Mux(slot8, last_in_line, e_t[lw:lb + 1] == 2 * chunks_per_line - 1)
        block_end = e_t + W == padded_k
        m.d.comb += act_lines.r_en.eq((~a_have | (fire & (last_in_line | block_end)))
                                      & act_lines.r_rdy)
        with m.If(act_lines.r_en):
            m.d.sync += [a_have.eq(1), a_line.eq(act_lines.r_data)]
        with m.Elif(fire & (last_in_line | block_end)):
            m.d.sync += a_have.eq(0)
        with m.If(fire):
            m.d.sync += [e_t.eq(e_t + W), e_rem.eq(e_rem - W)]
            with m.If(last_in_wline | block_end):
                m.d.sync += [full.bit_select(e_buf, 1).eq(0), e_buf.eq(~e_buf)]
            with m.If(block_end):
                m.d.sync += [e_t.eq(0), e_rem.eq(tile.k)]
                with m.If(next_block(e_j0, e_i)):
                    m.d.sync += e_active.eq(0)

        # -- start ------------------------------------------------------------------------------
        with m.If(start):
            payload = self.tile.payload
            m.d.sync += [
                q_active.eq(1), q_group.eq(0), q_col.eq(0), q_ptr.eq(payload.meta_line),
                q_mblk.eq(payload.meta_line), q_j0.eq(0), q_i.eq(0), q_have.eq(0),
                f_active.eq(1), f_buf.eq(0), f_row.eq(0), f_ptr.eq(payload.wgt),
                f_line0.eq(payload.wgt), f_wl.eq(0), f_j0.eq(0), f_i.eq(0),
                f_wblk.eq(payload.wgt), full.eq(0),
                r_active.eq(1), r_line.eq(0), r_j0.eq(0), r_i.eq(0), r_abase.eq(payload.inp),
                e_active.eq(1), e_t.eq(0), e_rem.eq(payload.k), e_buf.eq(0), e_j0.eq(0),
                e_i.eq(0), a_have.eq(0),
            ]
        seq_active = e_active

        writer = _AccWriter(m, self, engine.out, C, lambda held, c: held[0][c], line)
        pending, _ = writer.elaborate(tile, start, self.tile.payload.acc)
        w_tail = Signal()
        m.d.sync += w_tail.eq(pending)
        m.d.comb += self.busy.eq(seq_active | pending | w_tail)
        return m
