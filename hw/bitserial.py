"""Bit-serial mixed-datatype PE array (BitMoD style).

The engine computes, for ``rows`` activation vectors and ``columns`` output channels, ::

    out[r, c] = sum_g scale[c, g] * sum_{k in group g} w[c, k] * a[r, k]

exactly in integers. ``w[c, k]`` is the integer value of a weight code in its group's
format (:mod:`trilobit.hw.bitserial_format`: INT3/4/6/8 or a BitMoD FP3/FP4 candidate chosen by
a 2-bit type id), ``a`` are signed ``act_bits`` activations and ``scale[c, g]`` is an unsigned
``scale_bits`` integer scale mantissa. The real group scale is ``scale * 2**-scale_shift``
with one ``scale_shift`` per tensor, applied by whoever reads ``out`` (it does not change the
integers here); see ``docs/bitserial.md``.

Dataflow
--------
A *chunk* is ``width`` consecutive input channels. Per chunk the engine takes one
activation beat (``rows x width`` activations) and one weight beat (``columns x width`` codes)
and spends ``cycles_per_weight`` cycles on it, consuming ``bits_per_cycle`` bits of every
weight per cycle: each column decodes its codes into one signed power-of-two term per
weight per cycle (radix-4 Booth digit for INT, non-adjacent-form digit for FP, selected per
group by format and type id at run time) and broadcasts the terms down the column; every PE
adds ``sum_d ±(a[r, d] << lane_shift[c, d]) << step_shift`` to its group partial sum. When a
group ends the partial sum moves to a bit-serial dequantizer that multiplies it by the group
scale two scale bits per cycle (``ceil(scale_bits / 2)`` cycles, overlapped with the next
group) and adds it into the exact accumulator.

Streams (all ``amaranth.lib.stream``; payload fields are packed least significant first)
----------------------------------------------------------------------------------------
``meta`` (one beat per group, before its chunks):
    ``fmt`` (3 bits, :class:`~trilobit.hw.bitserial_format.WeightFormat`), ``last``
    (1 bit: this group ends the job), then per column ``type_id`` (2 bits) and ``scale``
    (``scale_bits``, unsigned).
``act`` (one beat per chunk): ``rows x width`` signed ``act_bits`` values, row-major.
``weights`` (one beat per chunk): ``columns x width`` codes in 8-bit slots (code in the
    low bits, zero-extended), column-major; the order :func:`trilobit.sw.bitmod.pack_engine_job`
    writes.
``out`` (one beat per job): ``rows x columns`` signed ``acc_bits`` accumulators, row-major.

A chunk is accepted only when both its ``act`` and ``weights`` beats are valid; ``ready`` of
both streams rises together. All streams tolerate arbitrary stalls on either side.
Throughput: one chunk every ``cycles_per_weight`` cycles (INT3/INT4/FP3/FP4: 2, INT6: 3,
INT8: 4 at 2 bits per cycle) as long as ``group_size / width * 2 >= ceil(scale_bits / 2)``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import NamedTuple

from amaranth.hdl import Cat, Const, Module, Mux, Signal, Value, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from trilobit.errors import ConfigError
from trilobit.hw.bitserial_format import (
    SUPPORTED_BITS_PER_CYCLE,
    WeightFormat,
    cycles_per_weight,
    fp_decode_tables,
    max_lane_shift,
)

__all__ = [
    "BitSerialParams", "BitSerialEngine", "BitSerialTermDecoder", "ChunkFront", "accept_chunks",
    "engine_signature", "adder_tree",
]

#: Storage slot of one weight code in a weight beat, bits.
CODE_SLOT_BITS = 8
#: Largest weight magnitude of any format (INT8 -128), sizes the partial sums.
MAX_WEIGHT_MAGNITUDE = 128
#: Scale bits the dequantizer consumes per cycle.
DEQUANT_BITS_PER_CYCLE = 2


@dataclass(frozen=True)
class BitSerialParams:
    """Shape of a PE array; shared by the bit-serial engine and its bit-parallel baseline.

    Attributes:
        width: dot-product width: input channels per chunk (lanes per PE).
        rows: activation vectors processed at once (PE rows).
        columns: output channels processed at once (PE columns).
        bits_per_cycle: weight bits consumed per cycle (2: radix-4 Booth; 1: radix-2).
        group_size: input channels per scale / type id group (multiple of ``width``).
        act_bits: activation width, bits (signed).
        scale_bits: width of the unsigned integer scale mantissa, bits.
        max_groups: most groups in one job (bounds K = max_groups * group_size).
    """

    width: int = 8
    rows: int = 2
    columns: int = 2
    bits_per_cycle: int = 2
    group_size: int = 128
    act_bits: int = 8
    scale_bits: int = 8
    max_groups: int = 64

    def __post_init__(self) -> None:
        def check(name: str, ok: bool, allowed: str) -> None:
            if not ok:
                raise ConfigError(f"{name} must be {allowed}, got {getattr(self, name)!r}")

        for name in ("width", "rows", "columns", "group_size", "max_groups"):
            check(name, isinstance(getattr(self, name), int) and getattr(self, name) >= 1,
                  "an integer >= 1")
        check("width", self.width <= 256, "in 1..256")
        check("rows", self.rows <= 64, "in 1..64")
        check("columns", self.columns <= 64, "in 1..64")
        check("bits_per_cycle", self.bits_per_cycle in SUPPORTED_BITS_PER_CYCLE,
              f"one of {SUPPORTED_BITS_PER_CYCLE}")
        check("act_bits", isinstance(self.act_bits, int) and 2 <= self.act_bits <= 8, "in 2..8")
        check("scale_bits", isinstance(self.scale_bits, int) and 1 <= self.scale_bits <= 16,
              "in 1..16")
        check("group_size", self.group_size % self.width == 0,
              f"a multiple of width={self.width}")
        check("max_groups", self.max_groups <= 1 << 16, "in 1..65536")

    # -- derived sizes --------------------------------------------------------------------
    @property
    def chunks_per_group(self) -> int:
        return self.group_size // self.width

    @property
    def dequant_cycles(self) -> int:
        """Cycles the bit-serial dequantizer needs per group."""
        return -(-self.scale_bits // DEQUANT_BITS_PER_CYCLE)

    @property
    def psum_bits(self) -> int:
        """Signed width of a group partial sum (exact for any format and Booth partials)."""
        bound = self.group_size * 2 * MAX_WEIGHT_MAGNITUDE * (1 << (self.act_bits - 1))
        return bound.bit_length() + 1

    @property
    def acc_bits(self) -> int:
        """Signed width of an output accumulator: exact for ``max_groups`` groups."""
        return self.psum_bits + self.scale_bits + max(1, math.ceil(math.log2(self.max_groups)))

    @property
    def max_k(self) -> int:
        """Longest reduction (input channels) one job may have."""
        return self.max_groups * self.group_size

    def cycles_per_chunk(self, fmt: WeightFormat | str) -> int:
        return cycles_per_weight(fmt, self.bits_per_cycle)

    def as_dict(self) -> dict:
        return asdict(self) | {"psum_bits": self.psum_bits, "acc_bits": self.acc_bits}

    # -- stream payload layouts -----------------------------------------------------------
    def meta_layout(self) -> data.StructLayout:
        column = data.StructLayout({"type_id": unsigned(2), "scale": unsigned(self.scale_bits)})
        return data.StructLayout({
            "fmt": unsigned(3),
            "last": unsigned(1),
            "cols": data.ArrayLayout(column, self.columns),
        })

    def act_layout(self) -> data.ArrayLayout:
        return data.ArrayLayout(data.ArrayLayout(signed(self.act_bits), self.width), self.rows)

    def weight_layout(self) -> data.ArrayLayout:
        return data.ArrayLayout(
            data.ArrayLayout(unsigned(CODE_SLOT_BITS), self.width), self.columns
        )

    def out_layout(self) -> data.ArrayLayout:
        return data.ArrayLayout(data.ArrayLayout(signed(self.acc_bits), self.columns), self.rows)

    # -- payload integers (for testbenches and drivers) ------------------------------------
    def pack_meta(self, fmt: int, last: bool, type_ids, scales) -> int:
        """One ``meta`` payload as an integer."""
        word = int(fmt) | (int(bool(last)) << 3)
        pos, col_bits = 4, 2 + self.scale_bits
        for c in range(self.columns):
            word |= (int(type_ids[c]) | (int(scales[c]) << 2)) << (pos + c * col_bits)
        return word

    def pack_act(self, beat) -> int:
        """One ``act`` payload (``rows x width`` signed ints) as an integer."""
        return _pack_lanes([int(v) for row in beat for v in row], self.act_bits)

    def pack_weights(self, beat) -> int:
        """One ``weights`` payload (``columns x width`` codes) as an integer."""
        return _pack_lanes([int(v) for col in beat for v in col], CODE_SLOT_BITS)

    def pack_out(self, out) -> int:
        """``rows x columns`` accumulators as one ``out`` payload integer."""
        return _pack_lanes([int(v) for row in out for v in row], self.acc_bits)

    def unpack_out(self, word: int) -> list[list[int]]:
        """An ``out`` payload integer -> ``rows x columns`` signed accumulators."""
        n, mask = self.acc_bits, (1 << self.acc_bits) - 1
        flat = [(word >> (i * n)) & mask for i in range(self.rows * self.columns)]
        flat = [v - (1 << n) if v >> (n - 1) else v for v in flat]
        return [flat[r * self.columns:(r + 1) * self.columns] for r in range(self.rows)]


def _pack_lanes(values: list[int], bits: int) -> int:
    mask = (1 << bits) - 1
    word = 0
    for i, v in enumerate(values):
        word |= (v & mask) << (i * bits)
    return word


def engine_signature(params: BitSerialParams) -> wiring.Signature:
    """Ports shared by :class:`BitSerialEngine` and the bit-parallel baseline."""
    return wiring.Signature({
        "meta": In(stream.Signature(params.meta_layout())),
        "act": In(stream.Signature(params.act_layout())),
        "weights": In(stream.Signature(params.weight_layout())),
        "out": Out(stream.Signature(params.out_layout())),
    })


class ChunkFront(NamedTuple):
    """What :func:`accept_chunks` hands the execute stage of an engine.

    Attributes:
        take: a chunk (one ``act`` and one ``weights`` beat) is accepted this cycle.
        group_end: the accepted chunk is the last of its group.
        meta: metadata of the group the accepted chunk belongs to (a ``meta_layout`` view).
    """

    take: Value
    group_end: Value
    meta: data.View


def accept_chunks(m: Module, params: BitSerialParams, engine: wiring.Component,
                  x_free: Value) -> ChunkFront:
    """Stream control shared by the engines: group metadata, then its chunks.

    Holds the metadata of the current group and counts its chunks. A chunk is taken when
    the group's metadata is held, the execute stage is free (``x_free``) and both the
    ``act`` and ``weights`` beats are valid; both ``ready`` rise together. The next group's
    metadata is accepted in the cycle the current group's last chunk is taken, so groups
    follow each other without a bubble. ``engine`` has the ports of :func:`engine_signature`.
    """
    m_valid = Signal()
    m_meta = Signal(params.meta_layout())
    m_chunk = Signal(range(params.chunks_per_group))
    take_chunk = Signal()
    group_end = Signal()
    m.d.comb += [
        take_chunk.eq(m_valid & x_free & engine.act.valid & engine.weights.valid),
        engine.act.ready.eq(take_chunk),
        engine.weights.ready.eq(take_chunk),
        group_end.eq(m_chunk == params.chunks_per_group - 1),
    ]
    with m.If(take_chunk):
        m.d.sync += m_chunk.eq(m_chunk + 1)
        with m.If(group_end):
            m.d.sync += m_valid.eq(0)
    # coming after the chunk logic, a new group's metadata wins over the group-end clear
    m.d.comb += engine.meta.ready.eq(~m_valid | (take_chunk & group_end))
    with m.If(engine.meta.valid & engine.meta.ready):
        m.d.sync += [m_valid.eq(1), m_meta.eq(engine.meta.payload), m_chunk.eq(0)]
    return ChunkFront(take_chunk, group_end, m_meta)


def adder_tree(m: Module, values: list, name: str) -> Value:
    """Balanced sum of Amaranth values (depth ``ceil(log2 n)``).

    Every partial sum is a kept signal: otherwise yosys merges the whole tree into one
    multi-operand adder and maps it to LUT full adders instead of the ECP5 carry chains
    (measured: about twice the LUTs for an 8-lane tree).
    """
    values = list(values)
    if not values:
        return Const(0)
    level = 0
    while len(values) > 1:
        paired = []
        for i in range(0, len(values), 2):
            if i + 1 == len(values):
                paired.append(values[i])
                continue
            a, b = values[i], values[i + 1]
            width = max(len(a), len(b)) + 1
            is_signed = a.shape().signed or b.shape().signed
            total = Signal(signed(width + 1) if is_signed else width,
                           name=f"{name}_l{level}_{i // 2}", attrs={"keep": 1})
            m.d.comb += total.eq(a + b)
            paired.append(total)
        values = paired
        level += 1
    return values[0]


def rom_bit(entries: list[int], index: Value) -> Value:
    """``entries[index]`` of a table of 0/1 entries (at most 64), as a constant shifted by
    ``index``.

    Synthesis sees the same truth table as any other description of it; Verilator evaluates
    it with one 64-bit shift, where a ``Switch`` on the index becomes a chain of compares
    and branches (a wider constant becomes a multi-word shift: keep tables to 64 entries).
    """
    if len(entries) > 64 or any(e not in (0, 1) for e in entries):
        raise ValueError("rom_bit takes at most 64 entries of 0 or 1")
    word = sum(e << i for i, e in enumerate(entries))
    return Const(word, len(entries)).bit_select(index, 1)


class BitSerialTermDecoder(wiring.Component):
    """Decodes one weight code into this cycle's term: ``sign * (1 << lane_shift)``.

    Combinational. ``step`` is the cycle within the chunk; ``fmt`` and ``type_id`` come from
    the group's metadata. INT codes become radix-2/radix-4 Booth digits of the code
    sign-extended to its slot; FP codes look up the table derived from ``trilobit.dtypes``.
    ``negative`` and ``lane_shift`` are only meaningful when ``nonzero`` is set.

    Every output is a lookup in a constant of at most 64 entries (:func:`rom_bit`): the
    decoder is instantiated once per weight lane and evaluated every simulated cycle, and
    lookups keep it a handful of word operations in Verilator.
    """

    def __init__(self, bits_per_cycle: int, step_bits: int, lane_shift_bits: int):
        self._bpc = bits_per_cycle
        super().__init__({
            "code": In(CODE_SLOT_BITS),
            "step": In(step_bits),
            "fmt": In(3),
            "type_id": In(2),
            "nonzero": Out(1),
            "negative": Out(1),
            "lane_shift": Out(lane_shift_bits),
        })

    @staticmethod
    def booth_tables(bits_per_cycle: int) -> tuple[list[int], list[int], list[int]]:
        """(nonzero, negative, lane_shift) of each Booth window ``b[hi] .. b[-1]`` (bit 0 is
        the lowest, ``b[-1]``)."""
        nonzero, negative, shift = [], [], []
        for window in range(1 << (bits_per_cycle + 1)):
            bit = [(window >> i) & 1 for i in range(bits_per_cycle + 1)]
            # radix 4: d = -2 b1 + b0 + b_-1; radix 2: d = b_-1 - b0
            digit = (-2 * bit[2] + bit[1] + bit[0]) if bits_per_cycle == 2 else bit[0] - bit[1]
            nonzero.append(int(digit != 0))
            negative.append(int(digit < 0))
            shift.append(int(abs(digit) == 2))
        return nonzero, negative, shift

    @staticmethod
    def fp_tables(lane_shift_bits: int) -> tuple[list[int], list[int], list[list[int]]]:
        """FP term tables indexed by ``step[0] | select << 1 | extra << 4 | fp4 << 5``:
        ``select`` is the magnitude code, or the type id for the code that would be -0
        (``extra``). Returns (nonzero, negative of the positive value, lane_shift bits)."""
        nonzero, negative = [0] * 64, [0] * 64
        shift = [[0] * 64 for _ in range(lane_shift_bits)]
        for fp4, fmt in enumerate((WeightFormat.FP3, WeightFormat.FP4)):
            tables = fp_decode_tables(fmt)
            for extra, rows in enumerate((tables.magnitude, tables.extra)):
                for select, terms in enumerate(rows):
                    for step, term in enumerate(terms):
                        index = step | select << 1 | extra << 4 | fp4 << 5
                        nonzero[index] = int(term.sign != 0)
                        negative[index] = int(term.sign < 0)
                        for b in range(lane_shift_bits):
                            shift[b][index] = (term.lane_shift >> b) & 1
        return nonzero, negative, shift

    def elaborate(self, platform) -> Module:
        m = Module()
        bpc = self._bpc
        shift_bits = len(self.lane_shift)

        # INT: Booth window (b[bpc*s + bpc - 1] .. b[bpc*s - 1]); b[-1] = 0. INT3 occupies a
        # 4-bit slot: its Booth digits need bit 3 = sign bit 2.
        is_int3 = self.fmt == WeightFormat.INT3
        ext = Mux(is_int3, Cat(Const(0, 1), self.code[:3], self.code[2]),
                  Cat(Const(0, 1), self.code))
        window = ext.bit_select(self.step * bpc, bpc + 1)
        int_nonzero, int_negative, int_shift = (rom_bit(table, window)
                                                for table in self.booth_tables(bpc))

        # FP: sign-magnitude codes, the code that would be -0 holds the type's extra value
        is_fp4 = self.fmt == WeightFormat.FP4
        is_fp = (self.fmt == WeightFormat.FP3) | is_fp4
        sign = Mux(is_fp4, self.code[3], self.code[2])
        magnitude = Mux(is_fp4, self.code[:3], self.code[:2])
        extra = sign & (magnitude == 0)
        index = Cat(self.step[0], Mux(extra, self.type_id, magnitude), extra, is_fp4)
        nonzero_table, negative_table, shift_tables = self.fp_tables(shift_bits)
        fp_nonzero = rom_bit(nonzero_table, index)
        fp_negative = rom_bit(negative_table, index) ^ (sign & ~extra)
        fp_shift = Cat(rom_bit(table, index) for table in shift_tables)
        # FP weights have two terms: steps >= 2 (only with 1 bit per cycle) contribute nothing.
        fp_step_ok = self.step < 2
        m.d.comb += [
            self.nonzero.eq(Mux(is_fp, fp_nonzero & fp_step_ok, int_nonzero)),
            self.negative.eq(Mux(is_fp, fp_negative, int_negative)),
            self.lane_shift.eq(Mux(is_fp, fp_shift, int_shift)),
        ]
        return m


class BitSerialEngine(wiring.Component):
    """Bit-serial mixed-datatype PE array; ports and timing in the module docstring."""

    def __init__(self, params: BitSerialParams | None = None):
        self.params = params or BitSerialParams()
        super().__init__(engine_signature(self.params))

    def elaborate(self, platform) -> Module:
        m = Module()
        p = self.params
        R, C, D = p.rows, p.columns, p.width
        max_steps = max(p.cycles_per_chunk(f) for f in WeightFormat)
        step_bits = max(1, (max_steps - 1).bit_length())
        lane_shift_bits = max_lane_shift().bit_length()

        # -- execute: one chunk, cycles_per_chunk steps --------------------------------------
        x_busy = Signal()
        x_step = Signal(step_bits)
        x_last_step = Signal(step_bits)
        x_meta = Signal(p.meta_layout())
        x_group_end = Signal()
        x_act = Signal(p.act_layout())
        x_code = Signal(p.weight_layout())
        psum = [[Signal(signed(p.psum_bits), name=f"psum_{r}_{c}") for c in range(C)]
                for r in range(R)]

        # -- dequantize: group partial sum x scale, DEQUANT_BITS_PER_CYCLE scale bits a cycle
        q_busy = Signal()
        q_count = Signal(range(p.dequant_cycles))
        q_last = Signal()
        q_scale = [Signal(p.scale_bits, name=f"q_scale_{c}") for c in range(C)]
        q_psum = [[Signal(signed(p.psum_bits + 2 * p.dequant_cycles), name=f"q_psum_{r}_{c}")
                   for c in range(C)] for r in range(R)]
        acc = [[Signal(signed(p.acc_bits), name=f"acc_{r}_{c}") for c in range(C)]
               for r in range(R)]
        o_valid = Signal()
        o_data = Signal(p.out_layout())

        q_final = Signal()
        q_stall = Signal()
        q_advance = Signal()
        q_can_load = Signal()
        m.d.comb += [
            q_final.eq(q_busy & (q_count == p.dequant_cycles - 1)),
            # the job's result waits for the output register to drain
            q_stall.eq(q_final & q_last & o_valid & ~self.out.ready),
            q_advance.eq(q_busy & ~q_stall),
            q_can_load.eq(~q_busy | (q_final & ~q_stall)),
        ]

        # -- accumulate: one registered dot-product term per PE and cycle (pipeline stage) --
        y_valid = Signal()
        y_handoff = Signal()  # this term ends a group: the partial sum moves on
        y_last = Signal()
        y_step_shift = Signal(range(CODE_SLOT_BITS))
        y_scale = [Signal(p.scale_bits, name=f"y_scale_{c}") for c in range(C)]
        y_stall = Signal()
        y_advance = Signal()
        m.d.comb += [
            # a group's partial sum can only leave when the dequantizer takes it; the whole
            # pipeline behind it holds
            y_stall.eq(y_valid & y_handoff & ~q_can_load),
            y_advance.eq(y_valid & ~y_stall),
        ]

        x_final = Signal()
        x_advance = Signal()
        x_free = Signal()
        m.d.comb += [
            x_final.eq(x_busy & (x_step == x_last_step)),
            x_advance.eq(x_busy & ~y_stall),
            x_free.eq(~x_busy | (x_final & ~y_stall)),
        ]
        with m.If(~y_stall):
            m.d.sync += [
                y_valid.eq(x_advance),
                y_handoff.eq(x_final & x_group_end),
                y_last.eq(x_meta.last),
            ]
            m.d.sync += [y_scale[c].eq(x_meta.cols[c].scale) for c in range(C)]

        # -- chunk acceptance: act and weights together, under the current group's meta -----
        front = accept_chunks(m, p, self, x_free)
        with m.If(front.take):
            m.d.sync += [
                x_busy.eq(1),
                x_step.eq(0),
                x_meta.eq(front.meta),
                x_group_end.eq(front.group_end),
                x_act.eq(self.act.payload),
                x_code.eq(self.weights.payload),
            ]
            with m.Switch(front.meta.fmt):
                for fmt in WeightFormat:
                    with m.Case(fmt):
                        m.d.sync += x_last_step.eq(p.cycles_per_chunk(fmt) - 1)
        with m.Elif(x_final & x_advance):
            m.d.sync += x_busy.eq(0)
        with m.If(x_advance & ~x_final):
            m.d.sync += x_step.eq(x_step + 1)

        # common shift of this step: Booth digit weight for INT, none for FP
        is_fp = (x_meta.fmt == WeightFormat.FP3) | (x_meta.fmt == WeightFormat.FP4)
        with m.If(~y_stall):
            m.d.sync += y_step_shift.eq(Mux(is_fp, 0, x_step * p.bits_per_cycle))

        # column term decoders, shared by every row of the column
        terms = []
        for c in range(C):
            col = []
            for d in range(D):
                dec = BitSerialTermDecoder(p.bits_per_cycle, step_bits, lane_shift_bits)
                m.submodules[f"decode_{c}_{d}"] = dec
                m.d.comb += [
                    dec.code.eq(x_code[c][d]),
                    dec.step.eq(x_step),
                    dec.fmt.eq(x_meta.fmt),
                    dec.type_id.eq(x_meta.cols[c].type_id),
                ]
                col.append(dec)
            terms.append(col)

        max_lsh = max_lane_shift()
        lane_bits = p.act_bits + max_lsh + 1
        # each activation sign-extended once to the lane width, shared by the C columns: the
        # lane shifter is then one word-wide shift (Verilator), not a per-bit concatenation
        act_wide = [[Signal(signed(lane_bits), name=f"act_wide_{r}_{d}") for d in range(D)]
                    for r in range(R)]
        m.d.comb += [act_wide[r][d].eq(x_act[r][d]) for r in range(R) for d in range(D)]
        psum_done = [[None] * C for _ in range(R)]
        for r in range(R):
            for c in range(C):
                lanes = []
                for d in range(D):
                    dec = terms[c][d]
                    shifted = Signal(signed(lane_bits), name=f"lane_{r}_{c}_{d}")
                    m.d.comb += shifted.eq(Mux(dec.nonzero, act_wide[r][d] << dec.lane_shift, 0))
                    lanes.append(Mux(dec.negative, -shifted, shifted))
                tree_bits = lane_bits + max(1, (D - 1).bit_length())
                y_tree = Signal(signed(tree_bits), name=f"y_tree_{r}_{c}")
                with m.If(~y_stall):
                    m.d.sync += y_tree.eq(adder_tree(m, lanes, f"tree_{r}_{c}"))
                stepped = Signal(signed(tree_bits + CODE_SLOT_BITS), name=f"step_{r}_{c}")
                with m.Switch(y_step_shift):
                    for k in range(0, max_steps * p.bits_per_cycle, p.bits_per_cycle):
                        with m.Case(k):
                            m.d.comb += stepped.eq(y_tree << k)
                psum_next = Signal(signed(p.psum_bits), name=f"psum_next_{r}_{c}")
                m.d.comb += psum_next.eq(psum[r][c] + stepped)
                psum_done[r][c] = psum_next
                with m.If(y_advance):
                    with m.If(y_handoff):
                        m.d.sync += psum[r][c].eq(0)
                    with m.Else():
                        m.d.sync += psum[r][c].eq(psum_next)

        # -- dequantizer and accumulators ---------------------------------------------------
        q_load = y_advance & y_handoff
        with m.If(q_load):
            m.d.sync += [q_busy.eq(1), q_count.eq(0), q_last.eq(y_last)]
        with m.Elif(q_final & q_advance):
            m.d.sync += q_busy.eq(0)
        with m.If(q_advance & ~q_final):
            m.d.sync += q_count.eq(q_count + 1)

        with m.If(self.out.valid & self.out.ready):
            m.d.sync += o_valid.eq(0)
        for c in range(C):
            digit = q_scale[c][:DEQUANT_BITS_PER_CYCLE]
            with m.If(q_advance):
                m.d.sync += q_scale[c].eq(q_scale[c] >> DEQUANT_BITS_PER_CYCLE)
            for r in range(R):
                # kept: else yosys folds it and the accumulator into one LUT-mapped adder
                part = Signal(signed(p.psum_bits + 2 * p.dequant_cycles + 2), name=f"dq_{r}_{c}",
                              attrs={"keep": 1})
                m.d.comb += part.eq(Mux(digit[0], q_psum[r][c], 0)
                                    + Mux(digit[1], q_psum[r][c] << 1, 0))
                acc_next = Signal(signed(p.acc_bits), name=f"acc_next_{r}_{c}")
                m.d.comb += acc_next.eq(acc[r][c] + part)
                with m.If(q_advance):
                    m.d.sync += q_psum[r][c].eq(q_psum[r][c] << DEQUANT_BITS_PER_CYCLE)
                    with m.If(q_final & q_last):
                        m.d.sync += [o_data[r][c].eq(acc_next), acc[r][c].eq(0)]
                    with m.Else():
                        m.d.sync += acc[r][c].eq(acc_next)
        with m.If(q_advance & q_final & q_last):
            m.d.sync += o_valid.eq(1)
        # a new group's partial sum and scale replace the finished ones in the same cycle:
        # these statements come after the shifts above, so the load wins
        with m.If(q_load):
            m.d.sync += [q_scale[c].eq(y_scale[c]) for c in range(C)]
            m.d.sync += [q_psum[r][c].eq(psum_done[r][c]) for r in range(R) for c in range(C)]

        m.d.comb += [self.out.valid.eq(o_valid), self.out.payload.eq(o_data)]
        return m
