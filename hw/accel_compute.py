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
    ``meta_addr``/``meta_data`` (WGT, a second read port: metadata and weight lines),
    ``acc_raddr``/``acc_rdata`` (ACC) and the ACC write port ``acc_waddr``/``acc_wdata``/
    ``acc_wen`` (one enable per int32 entry of the line; every entry of ``acc_wdata`` carries
    the same value). Addresses come from registers (the bit-serial metadata port selects one
    of two).

Both units stage the WGT lines of a block's channels over the two WGT read ports, two lines a
cycle, so a block of ``rows`` channels gets a WGT line per channel every ``ceil(rows / 2)``
cycles. A register stage sits between a unit's beat formation and its engine's streams.

Compact form (``config.compact``): no register stage before the engines, port b's WGT address
formed as ``a + w_row``, address registers only as wide as their buffer's addresses, a 2-line
INP queue, WGT lines straight into the TLMM weight window when a block has at most 2 rows, and
the ACC writer reading the engine's result block in place (one cycle more per block). Same
results; fewer cells, a lower clock rate.

How the table-lookup unit feeds :class:`TlmmEngine` (rows ``R``, units ``P``, group ``G``)
------------------------------------------------------------------------------------------
Output channels go in blocks of ``R``, one engine command per (activation row, block) of
``ceil(k / (G*P))`` beats. A beat is the next ``N = G*P`` activations of the row and the
same ``N`` weight slots of each of the ``R`` channels, wherever they sit: beats step
continuously through the INP lines and the WGT lines (a beat may straddle two lines), so no
slot is padding except past ``k`` in the last beat, where activations are zero (any weight
code there contributes nothing). Two *line windows* hold the consecutive lines a beat can
touch (:class:`_LineWindow`): INP lines of the activation row (from a queue of
``ACT_QUEUE`` lines read ahead), and sets of ``R`` WGT lines (one per channel, staged in a
register set over ``ceil(R/2)`` cycles and moved into the window as a whole). ``N`` must not
exceed the INT4 slots of a line (``2 * line``). Each group of ``G`` slots becomes one
ternary code per weight and bit plane (TERNARY: the slot itself; INT2/INT4: bit ``j`` of the
code as +1, the sign bit as -1, ``trilobit.sim.golden_tlmm.weight_planes``), and a lookup
table generated at elaboration time from :func:`trilobit.packing.ternary_group_index` turns
the ``G`` codes into the engine's ``(magnitude, sign)`` group index.

How the bit-serial unit feeds :class:`BitSerialEngine` (``lanes`` W, ``rows`` C)
----------------------------------------------------------------------------------
Output channels go in blocks of ``C`` engine columns (one activation vector per job). Per
group of ``group_size`` input channels the unit sends one ``meta`` beat with the ``C``
channels' ``type_id`` and ``scale`` (without ``meta``: 0 and 1), then the group's
``group_size / W`` chunks: ``W`` activations of one INP line and, per column, ``W`` codes of
the staged WGT line, masked to the format's code bits. A partial last group is completed with
zero activations. A metadata line holds ``line / 2`` groups of a channel: the ``C`` lines are
read on the metadata port (taking it from the weight staging for those cycles) when a group
starts a line, and kept in registers.

Timing (cycles; ``line`` bytes per buffer line)
-----------------------------------------------
Inside a unit independent processes, each counting (activation row, channel block) on its
own, run ahead of the engine as far as their buffers allow: the *filler* stages the next
WGT lines of the block's channels, the *INP reader* keeps its queue of activation lines,
the TLMM unit issues the next engine command while the current one runs, the bit-serial unit
reads the next group's metadata while the current group's chunks run. Per block:

* TLMM: ``max(ceil(k / (G*P)) * planes, wlines * (ceil(R/2) + 1), ceil(k / line))``: the
  weight beats, the staging of ``wlines`` WGT lines per channel (one register set: a set is
  read while the window holds the previous two), one INP line per cycle.
* bit-serial: ``max(ceil(padded_k / W) * cycles_per_weight, wlines * ceil(C/2) +
  metadata_lines / 2)``: the engine's chunks vs the staging (double buffered).

The ACC writer adds a block's results (one entry per cycle, read then write) while the next
block runs; ``busy`` falls two cycles after the last result entry is read. Measured figures
are in ``docs/accelerator.md``; ``trilobit.sim.golden.CycleModel.gemm`` is this model.
"""

from __future__ import annotations

import math

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
    "exact_log2",
    "pointer_bits",
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
#: INP lines queued ahead of the table-lookup unit's activation window (the compact form
#: has no queue: its window is a line deeper).
ACT_QUEUE = 4
#: Width of the units' buffer address ports, bits.
ADDR_BITS = 17

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
    # k (16 bits) over lines of at least 4 bytes: up to 16384 lines, 15 bits.
    "a_row": unsigned(15),
    "w_row": unsigned(17),
    "m_row": unsigned(17),
})

#: ISA weight encodings -> bit-serial engine formats (same names).
BITSERIAL_FORMAT = {enc: WeightFormat[enc.name] for enc in WeightEncoding
                    if enc.name in WeightFormat.__members__}


def exact_log2(x: int) -> int:
    if x < 1 or x & (x - 1):
        raise ConfigError(f"expected a power of two, got {x}")
    return x.bit_length() - 1


def pointer_bits(config: AcceleratorConfig, buffer: str, unit_bytes: int = 0) -> int:
    """Width of a unit's registers holding addresses into ``buffer`` in units of
    ``unit_bytes`` (default: lines), bits: :data:`ADDR_BITS`, or in the compact form the
    buffer's own address width. Pointers only ever add, so their low bits are the same either
    way, and the buffers take only those."""
    if not config.compact:
        return ADDR_BITS
    return max(1, exact_log2(config.buffer_bytes(buffer) // (unit_bytes or config.line_bytes)))


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

    ``max_k`` covers the longest reduction of a 16-bit ``k`` in whole beats of ``G*P``
    activations, so the engine's accumulator is exact for every instruction.
    """
    t = config.tlmm
    per_beat = t.group_size * t.units
    return EngineTlmmParams(group_size=t.group_size, rows=t.rows, units=t.units,
                            act_bits=ACT_BITS, max_k=-(-MAX_K // per_beat) * per_beat,
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
        "inp_addr": Out(ADDR_BITS),
        "inp_data": In(width),
        "wgt_addr": Out(ADDR_BITS),
        "wgt_data": In(width),
        "meta_addr": Out(ADDR_BITS),
        "meta_data": In(width),
        "acc_raddr": Out(ADDR_BITS),
        "acc_rdata": In(width),
        "acc_waddr": Out(ADDR_BITS),
        "acc_wdata": Out(width),
        "acc_wen": Out(width // 32),
    }


def _at_most(value, limit: int, compact: bool):
    """``value <= limit`` for a non-negative ``value``; compact units compare only the bits
    ``limit`` has and check the others are zero (no carry chain)."""
    if not compact:
        return value <= limit
    bits = limit.bit_length()
    return (value[bits:] == 0) & (value[:bits] <= limit)


def _last_block_start(m: Module, tile, block: int) -> Signal | None:
    """Compact units: the first channel of a row's last block, ``(n - 1) // block * block``,
    when ``block`` is a power of two (j0 steps from 0 by ``block``, so a row ends when j0
    equals it: an equality instead of a comparator per counter); else None."""
    if block & (block - 1):
        return None
    last = Signal(13, name="last_block_start")
    m.d.comb += last.eq((tile.n - 1) & ~(block - 1))
    return last


def _next_block(m: Module, tile, block: int, j0, i, on_row_end=(), last_start=None):
    """Advance a (activation row ``i``, first channel ``j0``) counter pair by one block of
    ``block`` channels; returns the condition "that was the instruction's last block".
    ``last_start``: :func:`_last_block_start`, if the unit has it."""
    # (j0 steps from 0 by block and n > 0, so with blocks of one channel the end is j0 + 1 == n)
    if last_start is not None:
        row_end = j0 == last_start
    else:
        row_end = (j0 + block == tile.n) if block == 1 else (j0 + block >= tile.n)
    done = row_end & (i + 1 == tile.m)
    m.d.sync += j0.eq(j0 + block)
    with m.If(row_end):
        m.d.sync += [j0.eq(0), i.eq(i + 1), *on_row_end]
    return done


def _reciprocal(divisor: int, max_dividend: int) -> tuple[int, int]:
    """``(multiplier, shift)`` with ``(x * multiplier) >> shift == x // divisor`` for every
    ``0 <= x <= max_dividend`` (checked exhaustively), so hardware divides by a constant with
    one multiplication."""
    x = np.arange(max_dividend + 1, dtype=np.int64)
    for shift in range(48):
        multiplier = -(-(1 << shift) // divisor)
        if np.array_equal((x * multiplier) >> shift, x // divisor):
            return multiplier, shift
    raise ConfigError(f"no reciprocal of {divisor} for dividends up to {max_dividend}")


def _window_depth(beat: int, line: int, step: int) -> int:
    """Lines a beat of ``beat`` units can touch when it starts at a multiple of ``step`` units
    inside a line of ``line`` units."""
    return -(-(line - step + beat) // line)


class _LineWindow:
    """Consecutive buffer lines, oldest first, ``lanes`` lines of ``width`` bits per entry (one
    per output channel of a block, or one for activations): a beat may start anywhere in the
    oldest line and run into the next ones.

    Each cycle ``consume`` entries leave from the front and, with ``push``, the entry on
    ``data`` enters behind the remaining ones (``room``: the push fits).
    """

    def __init__(self, name: str, lanes: int, width: int, depth: int):
        self.depth = depth
        self.lines = [[Signal(width, name=f"{name}{j}_{lane}") for lane in range(lanes)]
                      for j in range(depth)]
        self.data = [Signal(width, name=f"{name}_in_{lane}") for lane in range(lanes)]
        self.have = Signal(range(depth + 1), name=f"{name}_have")
        self.consume = Signal(range(depth + 1), name=f"{name}_consume")
        self.push = Signal(name=f"{name}_push")
        self.room = Signal(name=f"{name}_room")
        self._after = Signal(range(depth + 1), name=f"{name}_after")

    def bits(self, lane: int):
        """The window of one lane, oldest line in the least significant bits."""
        return Cat(*(entry[lane] for entry in self.lines))

    def elaborate(self, m: Module) -> None:
        after = self._after
        m.d.comb += [after.eq(self.have - self.consume), self.room.eq(after < self.depth)]
        with m.Switch(self.consume):
            for c in range(1, self.depth + 1):
                with m.Case(c):
                    for j in range(self.depth - c):
                        m.d.sync += [dst.eq(src) for dst, src
                                     in zip(self.lines[j], self.lines[j + c], strict=True)]
        with m.If(self.push):
            for j in range(self.depth):
                with m.If(after == j):
                    m.d.sync += [dst.eq(src) for dst, src
                                 in zip(self.lines[j], self.data, strict=True)]
        m.d.sync += self.have.eq(after + self.push)


class _RegisteredStream:
    """A register stage in front of ``sinks`` (streams that take their beats together): the
    unit drives ``valid``/``payloads`` and sees ``ready``; the sinks see the registered beat a
    cycle later. Full throughput (``ready`` while the register is empty or being taken); it
    keeps the unit's beat formation (line windows, slot muxes, group-index tables) and the
    engine's first stage in separate cycles. ``registered=False`` (compact units) connects
    the beat straight through instead."""

    def __init__(self, m: Module, name: str, *sinks: stream.Interface, registered: bool = True):
        self.valid = Signal(name=f"{name}_valid")
        self.ready = Signal(name=f"{name}_ready")
        self.payloads = [Signal.like(s.payload, name=f"{name}_payload{i}")
                         for i, s in enumerate(sinks)]
        if not registered:  # compact: the beat goes straight to the sinks
            m.d.comb += self.ready.eq(sinks[0].ready)
            for sink, payload in zip(sinks, self.payloads, strict=True):
                m.d.comb += [sink.valid.eq(self.valid), sink.payload.eq(payload)]
            return
        held = Signal(name=f"{name}_held")
        m.d.comb += self.ready.eq(~held | sinks[0].ready)
        for i, (sink, payload) in enumerate(zip(sinks, self.payloads, strict=True)):
            registered = Signal.like(sink.payload, name=f"{name}_reg{i}")
            m.d.comb += [sink.valid.eq(held), sink.payload.eq(registered)]
            with m.If(self.ready):
                m.d.sync += registered.eq(payload)
        with m.If(self.ready):
            m.d.sync += held.eq(self.valid)

    @property
    def fire(self):
        return self.valid & self.ready


class _WgtLinePointers:
    """WGT read addresses of a unit's filler, which stages line ``wl`` of each channel of a
    block, two channels a cycle: port ``a`` (WGT) reads channel ``row``, port ``b`` (metadata)
    channel ``row + 1``, ``w_row`` lines further. Counts (line ``wl``, channel block ``j0``,
    activation row ``i``) like the unit's other processes.

    Every address is a register (``b`` and channel 1's line and block bases too), so no adder
    sits in front of a read port; ``compact`` keeps channel 0's only and forms ``b`` with an
    adder (``a + w_row``), for a lower clock rate.

    Args:
        m: the unit's module.
        tile: the unit's latched :data:`GEMM_TILE`.
        block: channels per block.
        config: the accelerator (``compact``; the pointers' width, :func:`pointer_bits`).
    """

    def __init__(self, m: Module, tile, block: int, config: AcceleratorConfig):
        compact = config.compact
        self.m, self.tile, self.block, self.compact = m, tile, block, compact
        bits = pointer_bits(config, "wgt")
        self.ptr_a = Signal(bits, name="f_ptr_a")
        self.ptr_b = Signal(bits, name="f_ptr_b")
        self.line0 = Signal(bits, name="f_line0")  # WGT line wl of the block's channel 0
        self.wblk = Signal(bits, name="f_wblk")  # WGT line 0 of the block's channel 0
        # WGT lines between consecutive channel blocks: block * w_row
        self.blk_stride = Signal(bits, name="blk_stride")
        self.wl = Signal(17, name="f_wl")
        self.j0 = Signal(13, name="f_j0")
        self.i = Signal(8, name="f_i")
        self.last_start = None  # the unit's _last_block_start, if it has one
        if compact:
            m.d.comb += self.ptr_b.eq(self.ptr_a + tile.w_row)
        else:
            self.line0_b = Signal(17, name="f_line0_b")  # ... of its channel 1
            self.wblk_b = Signal(17, name="f_wblk_b")
            self.wgt_b = Signal(17, name="wgt_b")  # WGT line of channel 1 of the first block

    def constants(self) -> list:
        """Per-instruction values, registered in the unit's ``go`` cycle."""
        tile = self.tile
        stride = [self.blk_stride.eq(tile.w_row * self.block)]
        return stride if self.compact else [*stride, self.wgt_b.eq(tile.wgt + tile.w_row)]

    def _point(self, a, b) -> list:
        """Both ports at channel-0 line ``a`` (``b``: the same line of channel 1)."""
        return [self.ptr_a.eq(a)] if self.compact else [self.ptr_a.eq(a), self.ptr_b.eq(b)]

    def start(self) -> list:
        """The first line of the first block (from the cycle after ``go``)."""
        tile = self.tile
        first = [self.wl.eq(0), self.j0.eq(0), self.i.eq(0)]
        if self.compact:
            return [*first, self.ptr_a.eq(tile.wgt), self.line0.eq(tile.wgt),
                    self.wblk.eq(tile.wgt)]
        return [*first, self.ptr_a.eq(tile.wgt), self.ptr_b.eq(tile.wgt + tile.w_row),
                self.line0.eq(tile.wgt), self.line0_b.eq(tile.wgt + tile.w_row),
                self.wblk.eq(tile.wgt), self.wblk_b.eq(tile.wgt + tile.w_row)]

    def pair(self) -> list:
        """Two channels read this cycle: on to the next two."""
        two_rows = self.tile.w_row << 1
        return self._point(self.ptr_a + two_rows, self.ptr_b + two_rows)

    def single(self) -> list:
        """One channel read this cycle (port ``a``): on to the next one."""
        return self._point(self.ptr_b, self.ptr_b + self.tile.w_row)

    def next_set(self, lines_per_channel, on_done: list) -> None:
        """The block's last channels of line ``wl`` are read this cycle (called inside that
        condition): point at the next set - the next line, the next block of channels, or the
        first block again for the next activation row; ``on_done`` (statements) if that was
        the instruction's last set."""
        m, tile, wl = self.m, self.tile, self.wl
        if self.compact:
            m.d.sync += [wl.eq(wl + 1), self.line0.eq(self.line0 + 1),
                         *self._point(self.line0 + 1, None)]
        else:
            m.d.sync += [wl.eq(wl + 1), self.line0.eq(self.line0 + 1),
                         self.line0_b.eq(self.line0_b + 1),
                         *self._point(self.line0 + 1, self.line0_b + 1)]
        with m.If(wl + 1 == lines_per_channel):
            next_a = self.wblk + self.blk_stride
            if self.compact:
                m.d.sync += [wl.eq(0), self.wblk.eq(next_a), self.line0.eq(next_a),
                             self.ptr_a.eq(next_a)]
                on_row_end = [self.wblk.eq(tile.wgt), self.line0.eq(tile.wgt),
                              self.ptr_a.eq(tile.wgt)]
            else:
                next_b = self.wblk_b + self.blk_stride
                m.d.sync += [wl.eq(0), self.wblk.eq(next_a), self.wblk_b.eq(next_b),
                             self.line0.eq(next_a), self.line0_b.eq(next_b),
                             self.ptr_a.eq(next_a), self.ptr_b.eq(next_b)]
                on_row_end = [self.wblk.eq(tile.wgt), self.wblk_b.eq(self.wgt_b),
                              self.line0.eq(tile.wgt), self.line0_b.eq(self.wgt_b),
                              self.ptr_a.eq(tile.wgt), self.ptr_b.eq(self.wgt_b)]
            with m.If(_next_block(m, tile, self.block, self.j0, self.i, on_row_end,
                                  self.last_start)):
                m.d.sync += on_done


class _AccWriter:
    """Adds an engine's result blocks into ACC, one int32 entry per cycle (read, then write).

    Blocks arrive in instruction order (activation row major, channel blocks of ``block``);
    entries past ``n`` are dropped. ``ACC[acc + i*n + j] = (accumulate ? ACC : 0) + value``
    modulo 2**32 (the low 32 bits of the exact engine result).
    """

    def __init__(self, m: Module, unit, out: stream.Interface, block: int, value_of, line: int):
        self.m, self.unit, self.out, self.block = m, unit, out, block
        self.value_of = value_of  # (latched payload, index) -> signed value
        self.eb = exact_log2(line // 4)
        self.entry_bits = pointer_bits(unit.config, "acc", 4)
        self.line_bits = pointer_bits(unit.config, "acc")

    def elaborate(self, tile, start, first_entry, last_start=None) -> tuple[Signal, Signal]:
        """Add the writer; ``start`` pulses in the cycle ``tile`` is latched, with the
        instruction's first ACC entry on ``first_entry``. Returns ``pending`` (high until the
        last entry has been read) and the write strobe. ``last_start``: as for
        :func:`_next_block`."""
        m, u, block, eb = self.m, self.unit, self.block, self.eb
        pending = Signal()
        held = Signal.like(self.out.payload)
        j0 = Signal(13)
        i = Signal(8)
        ptr = Signal(self.entry_bits)
        index = Signal(range(block + 1))
        count = Signal(range(block + 1))
        busy = Signal()
        # write stage: one cycle after the read of the same entry
        w_valid = Signal()
        w_sel = Signal(max(eb, 1))
        w_line = Signal(self.line_bits)
        w_value = Signal(32)

        with m.If(start):
            m.d.sync += [pending.eq(1), ptr.eq(first_entry), j0.eq(0), i.eq(0)]

        if u.config.compact:
            # No copy of the block: the engine's result stays offered until its last entry
            # is read (one cycle more per block than with the copy).
            m.d.comb += self.out.ready.eq(busy & (index + 1 == count))
            with m.If(self.out.valid & pending & ~busy):
                if last_start is not None:  # the last block has the rest: (n - 1) % block + 1
                    count_now = Mux(j0 == last_start, (tile.n - 1)[:exact_log2(block)] + 1,
                                    block) if block > 1 else 1
                else:
                    remaining = tile.n - j0
                    count_now = Mux(remaining < block, remaining, block)
                m.d.sync += [busy.eq(1), index.eq(0), count.eq(count_now)]
            values = [self.value_of(self.out.payload, r) for r in range(block)]
        else:
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
                with m.If((j0 == last_start) if last_start is not None
                          else (j0 + block >= tile.n)):
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
        t = config.tlmm
        if t.group_size * t.units > 2 * config.line_bytes:
            raise ConfigError(
                f"tlmm.group_size * tlmm.units must be at most {2 * config.line_bytes} (the "
                f"INT4 weights of one {config.line_bytes}-byte line), got "
                f"{t.group_size * t.units}"
            )
        self.config = config
        self.line = config.line_bytes
        self.engine_params = tlmm_engine_params(config)
        super().__init__(unit_signature(config.mem_width))

    def elaborate(self, platform) -> Module:  # noqa: C901 - the processes, one by one
        m = Module()
        p, line, width = self.engine_params, self.line, self.config.mem_width
        lb = exact_log2(line)
        G, R, P = p.group_size, p.rows, p.units
        N = G * P  # activations (and weights) per beat
        compact = self.config.compact
        units = 4 * line  # 2-bit units per line (weight offsets count in these)
        m.submodules.engine = engine = TlmmEngine(p)

        tile = Signal(GEMM_TILE)
        start = Signal()
        go = Signal()  # the cycle after start: per-instruction constants are registered
        m.d.comb += [self.tile.ready.eq(~self.busy), start.eq(self.tile.valid & self.tile.ready)]
        m.d.sync += go.eq(start)
        with m.If(start):
            m.d.sync += tile.eq(self.tile.payload)

        # -- per-instruction constants (registered in the ``go`` cycle) ------------------------
        n_beats = Signal(p.beats_bits)  # ceil(k / N) activation beats per block
        planes = Signal(3)
        slot4 = Signal()  # 4-bit slots (INT4) instead of 2-bit ones
        ternary = Signal()
        k_short = Signal()  # the block takes one beat: k <= N
        wptr = _WgtLinePointers(m, tile, R, self.config)
        multiplier, shift = _reciprocal(N, MAX_K + N - 1)
        with m.If(go):
            m.d.sync += [
                n_beats.eq(((tile.k + (N - 1)) * multiplier) >> shift),
                slot4.eq(tile.wfmt == WeightEncoding.INT4),
                ternary.eq(tile.wfmt == WeightEncoding.TERNARY),
                planes.eq(Mux(tile.wfmt == WeightEncoding.INT4, 4,
                              Mux(tile.wfmt == WeightEncoding.INT2, 2, 1))),
                *wptr.constants(),
                k_short.eq(_at_most(tile.k, N, compact)),
            ]

        last_start = _last_block_start(m, tile, R) if self.config.compact else None
        wptr.last_start = last_start

        def next_block(j0, i, on_row_end=()):
            return _next_block(m, tile, R, j0, i, on_row_end, last_start)

        # -- filler: WGT line ``wl`` of the block's R channels, two reads per cycle (the WGT
        # and metadata ports) into ``pending``; the complete set enters the weight window ---
        wwin = _LineWindow("wwin", R, width, _window_depth(2 * N, units, math.gcd(N, units)))
        pending = [Signal(width, name=f"pending_{r}") for r in range(R)]
        p_full = Signal()  # every row of ``pending`` holds its line
        f_active = Signal()
        f_wait = Signal()  # the set is issued; the next one starts when it enters the window
        f_row = Signal(range(R + 2))  # row of the read on the WGT port (the other: f_row + 1)
        f_wr = Signal()  # the reads issued in the previous cycle are to be stored
        f_wr_b = Signal()  # ... including the one on the metadata port
        f_wr_row = Signal(range(R + 1))
        f_wr_last = Signal()
        # Compact, with a set read in one cycle (R <= 2): the lines go straight into the
        # window, and a set is read only when the window will have room for it (not counting
        # a line it gives up in the same cycle: fewer cells, a cycle later at worst).
        direct = self.config.compact and R <= 2
        m.d.comb += [self.wgt_addr.eq(wptr.ptr_a), self.meta_addr.eq(wptr.ptr_b)]
        m.d.sync += f_wr.eq(0)
        if direct:
            m.d.comb += [wwin.push.eq(f_wr), wwin.data[0].eq(self.wgt_data)]
            if R > 1:
                m.d.comb += wwin.data[1].eq(self.meta_data)
            f_issue = f_active & (wwin.have + f_wr < wwin.depth)
        else:
            m.d.comb += wwin.push.eq(p_full & wwin.room)
            for r in range(R):
                m.d.comb += wwin.data[r].eq(pending[r])
            with m.If(f_wr):
                for r in range(0, R, 2):
                    with m.If(f_wr_row == r):
                        m.d.sync += pending[r].eq(self.wgt_data)
                        if r + 1 < R:
                            m.d.sync += pending[r + 1].eq(self.meta_data)
                with m.If(f_wr_last):
                    m.d.sync += p_full.eq(1)
            with m.If(wwin.push):
                m.d.sync += [p_full.eq(0), f_wait.eq(0)]
            f_issue = f_active & (~f_wait | wwin.push)
        set_last = f_row + 2 >= R
        with m.If(f_issue):
            m.d.sync += [f_wr.eq(1), f_wr_b.eq(f_row + 1 < R), f_wr_row.eq(f_row),
                         f_wr_last.eq(set_last), f_row.eq(f_row + 2), *wptr.pair()]
            with m.If(set_last):
                # the set is issued: the next one starts once this one enters the window
                m.d.sync += [f_wait.eq(1), f_row.eq(0)]
                wptr.next_set(tile.w_row, on_done=[f_active.eq(0)])

        # -- INP reader: the activation row's lines, once per block, into a queue of
        # ACT_QUEUE lines (a read returns a cycle later; the window takes up to a line a cycle).
        # Compact: no queue; the lines go straight into an activation window one line deeper
        # than a beat needs, read when it will have room (as the WGT lines above).
        a_step = math.gcd(N, line)  # every beat starts at a multiple of this byte offset
        a_depth = _window_depth(N, line, a_step)
        awin = _LineWindow("awin", 1, 8 * line, a_depth + self.config.compact)
        if not self.config.compact:
            m.submodules.act_lines = act_lines = SyncFIFO(width=8 * line, depth=ACT_QUEUE)
        r_active = Signal()
        r_line = Signal(16)
        r_j0 = Signal(13)
        r_i = Signal(8)
        r_addr = Signal(pointer_bits(self.config, "inp"))  # INP line r_line of the row
        r_abase = Signal(pointer_bits(self.config, "inp"))  # INP line 0 of the activation row
        r_inflight = Signal()
        m.d.comb += self.inp_addr.eq(r_addr)
        # a read is issued only if its line will find room a cycle later
        r_issue = r_active & ((awin.have + r_inflight < awin.depth) if self.config.compact
                              else (act_lines.level + r_inflight < ACT_QUEUE))
        m.d.sync += r_inflight.eq(r_issue)
        with m.If(r_issue):
            m.d.sync += [r_line.eq(r_line + 1), r_addr.eq(r_addr + 1)]
            with m.If(r_line + 1 == tile.a_row):
                m.d.sync += [r_line.eq(0), r_addr.eq(r_abase)]
                done = next_block(r_j0, r_i, on_row_end=[r_abase.eq(r_abase + tile.a_row),
                                                         r_addr.eq(r_abase + tile.a_row)])
                with m.If(done):
                    m.d.sync += r_active.eq(0)
        if not self.config.compact:
            m.d.comb += [act_lines.w_en.eq(r_inflight), act_lines.w_data.eq(self.inp_data)]

        # -- activation beats: N consecutive activations of the row, across INP lines; zero
        # past k. ``a_left`` counts the activations of the block from this beat on. ------------
        act_in = _RegisteredStream(m, "act_in", engine.act, registered=not self.config.compact)
        a_off = Signal(range(line))
        a_left = Signal(signed(18))  # activations of the block from this beat on
        a_last = Signal()  # this beat ends the block's activations: a_left <= N
        a_lines = Signal(16)  # INP lines of the block not yet consumed
        a_need = Signal(range(awin.depth + 1))  # INP lines this beat reads
        a_after = Signal(range(line + N))
        # the last beat reads every line left; any other one as far as its N activations reach
        m.d.comb += [
            a_after.eq(a_off + N),
            a_need.eq(Mux(a_last, a_lines, (a_after + (line - 1)) >> lb)),
            *([awin.push.eq(r_inflight), awin.data[0].eq(self.inp_data)]
              if self.config.compact else
              [awin.push.eq(act_lines.r_rdy & awin.room), act_lines.r_en.eq(awin.push),
               awin.data[0].eq(act_lines.r_data)]),
            act_in.valid.eq((awin.have != 0) & (awin.have >= a_need)),
        ]
        a_bytes = awin.bits(0)
        act_beat = Signal(8 * N)
        with m.Switch(a_off):
            for off in range(0, line, a_step):
                with m.Case(off):
                    m.d.comb += act_beat.eq(a_bytes[8 * off: 8 * (off + N)])
        for e in range(N):
            # (compact: only the last beat has activations past k, and its a_left is 1..N)
            present = ((~a_last | (a_left[:N.bit_length()] > e)) if self.config.compact
                       else a_left > e)
            m.d.comb += act_in.payloads[0][e].eq(
                Mux(present, act_beat[8 * e: 8 * e + 8].as_signed(), 0))
        with m.If(act_in.fire):
            m.d.comb += awin.consume.eq(Mux(a_last, a_need, a_after >> lb))
            with m.If(a_last):
                m.d.sync += [a_off.eq(0), a_left.eq(tile.k), a_last.eq(k_short),
                             a_lines.eq(tile.a_row)]
            with m.Else():
                m.d.sync += [a_off.eq(a_after[:lb]), a_left.eq(a_left - N),
                             a_last.eq(_at_most(a_left, 2 * N, compact)),
                             a_lines.eq(a_lines - (a_after >> lb))]

        # -- engine commands: one per block ----------------------------------------------------
        c_active = Signal()
        c_j0 = Signal(13)
        c_i = Signal(8)
        m.d.comb += [
            engine.cmd.valid.eq(c_active),
            engine.cmd.payload.beats.eq(n_beats),
            engine.cmd.payload.planes.eq(planes),
        ]
        with m.If(engine.cmd.valid & engine.cmd.ready):
            with m.If(next_block(c_j0, c_i)):
                m.d.sync += c_active.eq(0)

        # -- weight beats: the N slots of each row at the beat's position, per plane ----------
        # ``w_off`` is in 2-bit units into the oldest staged line (INT4 slots take two).
        w_step = math.gcd(N, units)
        w_in = _RegisteredStream(m, "w_in", engine.weights, registered=not self.config.compact)
        w_off = Signal(range(units))
        w_left = Signal(signed(18))  # weights of the block from this beat on
        w_last = Signal()  # this beat ends the block's weights: w_left <= N
        w_lines = Signal(17)  # WGT line sets of the block not yet consumed
        w_need = Signal(range(wwin.depth + 1))
        w_after = Signal(range(units + 2 * N))
        plane = Signal(3)
        last_plane = plane + 1 == planes
        m.d.comb += [
            w_after.eq(w_off + Mux(slot4, 2 * N, N)),
            w_need.eq(Mux(w_last, w_lines, (w_after + (units - 1)) >> (lb + 2))),
            w_in.valid.eq((wwin.have != 0) & (wwin.have >= w_need)),
        ]
        lut = group_index_lut(G)
        w_payload = Signal.like(engine.weights.payload)
        for r in range(R):
            bits = wwin.bits(r)
            beat = Signal(4 * N, name=f"beat_{r}")
            with m.Switch(w_off):
                for off in range(0, units, w_step):
                    with m.Case(off):
                        m.d.comb += beat.eq(bits[2 * off: 2 * off + 4 * N])
            for u in range(P):
                codes = []
                for g in range(G):
                    e = u * G + g
                    raw = Mux(slot4, beat[4 * e: 4 * e + 4], beat[2 * e: 2 * e + 2])
                    # one ternary code per weight and plane (TERNARY: the slot itself)
                    bit = raw.bit_select(plane, 1)
                    code = Signal(2, name=f"code_{r}_{u}_{g}")
                    m.d.comb += code.eq(Mux(ternary, raw[:2], Mux(bit, Mux(last_plane, 3, 1), 0)))
                    codes.append(code)
                index = w_payload[r * P + u]
                with m.Switch(Cat(*codes)):
                    for word, (magnitude, sign) in enumerate(lut):
                        if magnitude or sign:
                            with m.Case(word):
                                m.d.comb += [index.magnitude.eq(magnitude), index.sign.eq(sign)]
        m.d.comb += w_in.payloads[0].eq(w_payload)
        with m.If(w_in.fire):
            m.d.sync += plane.eq(plane + 1)
            with m.If(last_plane):
                m.d.comb += wwin.consume.eq(Mux(w_last, w_need, w_after >> (lb + 2)))
                m.d.sync += plane.eq(0)
                with m.If(w_last):
                    m.d.sync += [w_off.eq(0), w_left.eq(tile.k), w_last.eq(k_short),
                                 w_lines.eq(tile.w_row)]
                with m.Else():
                    m.d.sync += [w_off.eq(w_after[:lb + 2]), w_left.eq(w_left - N),
                                 w_last.eq(_at_most(w_left, 2 * N, compact)),
                                 w_lines.eq(w_lines - (w_after >> (lb + 2)))]
        awin.elaborate(m)
        wwin.elaborate(m)

        # -- start: the processes begin in the cycle after ``go`` ------------------------------
        with m.If(go):
            m.d.sync += [
                f_active.eq(1), f_wait.eq(0), f_row.eq(0), p_full.eq(0), *wptr.start(),
                r_active.eq(1), r_line.eq(0), r_j0.eq(0), r_i.eq(0), r_abase.eq(tile.inp),
                r_addr.eq(tile.inp),
                c_active.eq(1), c_j0.eq(0), c_i.eq(0),
                a_off.eq(0), a_left.eq(tile.k), a_last.eq(_at_most(tile.k, N, compact)),
                a_lines.eq(tile.a_row),
                awin.have.eq(0),
                w_off.eq(0), w_left.eq(tile.k), w_last.eq(_at_most(tile.k, N, compact)),
                w_lines.eq(tile.w_row),
                plane.eq(0), wwin.have.eq(0),
            ]

        writer = _AccWriter(m, self, engine.out, R, lambda held, r: held[r], line)
        pending_acc, _ = writer.elaborate(tile, start, self.tile.payload.acc, last_start)
        w_tail = Signal()
        m.d.sync += w_tail.eq(pending_acc)
        m.d.comb += self.busy.eq(go | pending_acc | w_tail)
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
        lb = exact_log2(line)
        W, C, gs = p.width, p.columns, p.group_size
        lw, lgs = exact_log2(W), exact_log2(gs)
        m.submodules.engine = engine = BitSerialEngine(p)

        tile = Signal(GEMM_TILE)
        start = Signal()
        go = Signal()  # the cycle after start: per-instruction constants are registered
        m.d.comb += [self.tile.ready.eq(~self.busy), start.eq(self.tile.valid & self.tile.ready)]
        m.d.sync += go.eq(start)
        with m.If(start):
            m.d.sync += tile.eq(self.tile.payload)

        # -- per-instruction constants (registered in the ``go`` cycle) ------------------------
        # Per block: chunks of W channels over whole groups (a partial last group is padded),
        # so a block reads ceil(padded_k / line) INP lines and as many WGT lines per channel
        # for 8-bit slots, ceil(padded_k / (2 line)) for 4-bit ones.
        n_groups = Signal(17)
        padded_k = Signal(18)
        n_lines = Signal(17)  # INP lines per block
        n_wlines = Signal(17)  # staged WGT lines per block
        slot8 = Signal()  # 8-bit slots (INT8, INT6) instead of 4-bit ones
        fmt = Signal(3)
        code_mask = Signal(8)

        def lines_of_padded_k(slot_bytes_log2: int):
            # ceil(padded_k / (line << s)) with one adder: gs and line are powers of two
            span = max(lgs, lb + slot_bytes_log2)
            return ((tile.k + (1 << span) - 1) >> span) << (span - lb - slot_bytes_log2)

        single_chunk = Signal()  # a block is one chunk: padded_k == W
        first_single = ((tile.k + gs - 1) >> lgs) << lgs == W
        with m.If(go):
            m.d.sync += [
                single_chunk.eq(first_single),
                n_groups.eq((tile.k + gs - 1) >> lgs),
                padded_k.eq(((tile.k + gs - 1) >> lgs) << lgs),
                n_lines.eq(lines_of_padded_k(0)),
                n_wlines.eq(Mux((tile.wfmt == WeightEncoding.INT8)
                                | (tile.wfmt == WeightEncoding.INT6),
                                lines_of_padded_k(0), lines_of_padded_k(1))),
                slot8.eq((tile.wfmt == WeightEncoding.INT8) | (tile.wfmt == WeightEncoding.INT6)),
            ]
            with m.Switch(tile.wfmt):
                for enc, wf in BITSERIAL_FORMAT.items():
                    with m.Case(int(enc)):
                        m.d.sync += [fmt.eq(int(wf)), code_mask.eq((1 << enc.code_bits) - 1)]

        def next_block(j0, i, on_row_end=()):
            return _next_block(m, tile, C, j0, i, on_row_end)

        # -- metadata: per group the C channels' type id and scale (or 0 / 1), one beat. A
        # metadata line holds ``line / 2`` groups of a channel: the C lines are read (on the
        # metadata port, before the filler) when a group starts a line, and kept.
        gpl_bits = lb - 1  # log2 of groups per metadata line
        q_active = Signal()
        q_group = Signal(17)
        q_col = Signal(range(C + 1))
        wgt_bits = pointer_bits(self.config, "wgt")
        q_ptr = Signal(wgt_bits)  # metadata line of (channel j0 + q_col, group q_group)
        q_lbase = Signal(wgt_bits)  # metadata line of (channel j0, group q_group)
        q_mblk = Signal(wgt_bits)  # metadata line of channel j0, group 0
        q_j0 = Signal(13)
        q_i = Signal(8)
        q_have = Signal()
        q_write = Signal()
        q_write_col = Signal(range(C))
        meta_lines = [Signal(width, name=f"meta_line_{c}") for c in range(C)]
        q_need_read = Signal()
        q_read = Signal()  # the metadata port reads q_ptr this cycle
        m.d.comb += [
            q_need_read.eq(tile.meta & (q_group[:gpl_bits] == 0)),
            q_read.eq(q_active & ~q_have & q_need_read & (q_col < C)),
        ]
        m.d.sync += q_write.eq(0)
        with m.If(q_write):
            for c in range(C):
                with m.If(q_write_col == c):
                    m.d.sync += meta_lines[c].eq(self.meta_data)
        with m.If(q_read):
            m.d.sync += [q_write.eq(1), q_write_col.eq(q_col), q_col.eq(q_col + 1),
                         q_ptr.eq(q_ptr + tile.m_row)]
        with m.If(q_active & ~q_have & (~q_need_read | ((q_col == C) & ~q_write))):
            m.d.sync += q_have.eq(1)
        m.d.comb += [engine.meta.valid.eq(q_have),
                     engine.meta.payload.fmt.eq(fmt),
                     engine.meta.payload.last.eq(q_group + 1 == n_groups)]
        for c in range(C):
            word = meta_lines[c].word_select(q_group[:gpl_bits], 16) if gpl_bits \
                else meta_lines[c][:16]
            m.d.comb += [
                engine.meta.payload.cols[c].type_id.eq(Mux(tile.meta, word[0:2], 0)),
                engine.meta.payload.cols[c].scale.eq(Mux(tile.meta, word[8:16], 1)),
            ]
        with m.If(engine.meta.valid & engine.meta.ready):
            m.d.sync += [q_have.eq(0), q_col.eq(0), q_group.eq(q_group + 1)]
            with m.If((q_group + 1)[:gpl_bits] == 0):
                # the next group starts a metadata line
                m.d.sync += [q_lbase.eq(q_lbase + 1), q_ptr.eq(q_lbase + 1)]
            with m.Else():
                m.d.sync += q_ptr.eq(q_lbase)
            with m.If(q_group + 1 == n_groups):
                next_mblk = q_mblk + C * tile.m_row
                m.d.sync += [q_group.eq(0), q_mblk.eq(next_mblk), q_lbase.eq(next_mblk),
                             q_ptr.eq(next_mblk)]
                with m.If(next_block(q_j0, q_i, on_row_end=[q_mblk.eq(tile.meta_line),
                                                           q_lbase.eq(tile.meta_line),
                                                           q_ptr.eq(tile.meta_line)])):
                    m.d.sync += q_active.eq(0)

        # -- filler: WGT line ``wl`` of the block's C channels into one of two staging buffers
        # (double buffered), two reads per cycle: the WGT port and the metadata port when the
        # metadata reads leave it free
        stage = [[Signal(width, name=f"stage{b}_{c}") for c in range(C)] for b in range(2)]
        full = Signal(2)
        f_active = Signal()
        f_buf = Signal()
        f_row = Signal(range(C + 2))  # channel read on the WGT port (the other: f_row + 1)
        wptr = _WgtLinePointers(m, tile, C, self.config)
        f_wr = Signal()  # the reads issued in the previous cycle are to be stored
        f_wr_b = Signal()  # ... including one on the metadata port
        f_wr_buf = Signal()
        f_wr_row = Signal(range(C + 1))
        f_wr_last = Signal()
        m.d.comb += [self.wgt_addr.eq(wptr.ptr_a),
                     self.meta_addr.eq(Mux(q_read, q_ptr, wptr.ptr_b))]
        m.d.sync += f_wr.eq(0)
        with m.If(f_wr):
            for b in range(2):
                for c in range(C):
                    with m.If(f_wr_buf == b):
                        with m.If(f_wr_row == c):
                            m.d.sync += stage[b][c].eq(self.wgt_data)
                        if c:
                            with m.If(f_wr_b & (f_wr_row == c - 1)):
                                m.d.sync += stage[b][c].eq(self.meta_data)
            with m.If(f_wr_last):
                m.d.sync += full.bit_select(f_wr_buf, 1).eq(1)
        f_issue = f_active & ~full.bit_select(f_buf, 1)
        f_pair = ~q_read & (f_row + 1 < C)  # the metadata port reads channel f_row + 1
        set_last = f_row + Mux(f_pair, 2, 1) >= C
        with m.If(f_issue):
            m.d.sync += [f_wr.eq(1), f_wr_b.eq(f_pair), f_wr_buf.eq(f_buf), f_wr_row.eq(f_row),
                         f_wr_last.eq(set_last)]
            with m.If(f_pair):
                m.d.sync += [f_row.eq(f_row + 2), *wptr.pair()]
            with m.Else():
                m.d.sync += [f_row.eq(f_row + 1), *wptr.single()]
            with m.If(set_last):
                # the set is issued: the next one goes to the other buffer
                m.d.sync += [f_buf.eq(~f_buf), f_row.eq(0)]
                wptr.next_set(n_wlines, on_done=[f_active.eq(0)])

        # -- INP reader: the activation row's lines, once per block, into a 2-line queue ----
        m.submodules.act_lines = act_lines = SyncFIFO(width=8 * line, depth=2)
        r_active = Signal()
        r_line = Signal(17)
        r_j0 = Signal(13)
        r_i = Signal(8)
        r_abase = Signal(pointer_bits(self.config, "inp"))  # INP line 0 of the activation row
        r_addr = Signal(pointer_bits(self.config, "inp"))  # INP line r_line of the row
        r_inflight = Signal()
        m.d.comb += self.inp_addr.eq(r_addr)
        # a read is issued only if its line will find room in the queue a cycle later
        r_issue = r_active & (act_lines.level + r_inflight < 2)
        m.d.sync += r_inflight.eq(r_issue)
        with m.If(r_issue):
            m.d.sync += [r_line.eq(r_line + 1), r_addr.eq(r_addr + 1)]
            with m.If(r_line + 1 == n_lines):
                m.d.sync += [r_line.eq(0), r_addr.eq(r_abase)]
                with m.If(next_block(r_j0, r_i, on_row_end=[r_abase.eq(r_abase + tile.a_row),
                                                           r_addr.eq(r_abase + tile.a_row)])):
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
        chunk_in = _RegisteredStream(m, "chunk_in", engine.act, engine.weights,
                                     registered=not self.config.compact)
        act_word = a_line.word_select(e_t[lw:lb], 8 * W) if chunks_per_line > 1 else a_line
        for d in range(W):
            byte = act_word[8 * d: 8 * d + 8].as_signed()
            m.d.comb += chunk_in.payloads[0][0][d].eq(Mux(e_rem > d, byte, 0))
        for c in range(C):
            staged = Mux(e_buf, stage[1][c], stage[0][c])
            word8 = staged.word_select(e_t[lw:lb], 8 * W) if chunks_per_line > 1 else staged
            word4 = staged.word_select(e_t[lw:lb + 1], 4 * W)
            for d in range(W):
                code = Mux(slot8, word8[8 * d: 8 * d + 8], word4[4 * d: 4 * d + 4])
                m.d.comb += chunk_in.payloads[1][c][d].eq(code & code_mask)
        ready_to_send = e_active & a_have & full.bit_select(e_buf, 1)
        m.d.comb += chunk_in.valid.eq(ready_to_send)
        fire = chunk_in.fire
        last_in_line = e_t[lw:lb] == chunks_per_line - 1 if chunks_per_line > 1 else 1
        last_in_wline = Mux(slot8, last_in_line, e_t[lw:lb + 1] == 2 * chunks_per_line - 1)
        block_end = Signal()  # the chunk is the block's last: e_t + W == padded_k
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
            m.d.sync += block_end.eq(e_t + 2 * W == padded_k)
            with m.If(block_end):
                m.d.sync += [e_t.eq(0), e_rem.eq(tile.k), block_end.eq(single_chunk)]
                with m.If(next_block(e_j0, e_i)):
                    m.d.sync += e_active.eq(0)

        # -- start: the processes begin in the cycle after ``go`` ------------------------------
        with m.If(go):
            m.d.sync += [
                *wptr.constants(),
                q_active.eq(1), q_group.eq(0), q_col.eq(0), q_ptr.eq(tile.meta_line),
                q_lbase.eq(tile.meta_line), q_mblk.eq(tile.meta_line), q_j0.eq(0), q_i.eq(0),
                q_have.eq(0),
                f_active.eq(1), f_buf.eq(0), f_row.eq(0), *wptr.start(), full.eq(0),
                r_active.eq(1), r_line.eq(0), r_j0.eq(0), r_i.eq(0), r_abase.eq(tile.inp),
                r_addr.eq(tile.inp),
                e_active.eq(1), e_t.eq(0), e_rem.eq(tile.k), e_buf.eq(0), e_j0.eq(0),
                e_i.eq(0), a_have.eq(0), block_end.eq(first_single),
            ]
        seq_active = e_active

        writer = _AccWriter(m, self, engine.out, C, lambda held, c: held[0][c], line)
        pending, _ = writer.elaborate(tile, start, self.tile.payload.acc)
        w_tail = Signal()
        m.d.sync += w_tail.eq(pending)
        m.d.comb += self.busy.eq(go | seq_active | pending | w_tail)
        return m
