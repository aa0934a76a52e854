"""Ternary table-lookup matmul engine (TLMM): T-MAC / bitnet.cpp / TeLLMe style GEMV on FPGA.

For every group of ``G`` activations ``a[0..G-1]`` the engine builds the table of all signed
sums once::

    table[m] = sum_i d_i(m) * a[i]      d(m) = balanced_ternary_digits(m, G), m = 0 .. (3**G-1)/2

and ``rows`` output rows share it: each row reads ``table[magnitude]`` with the group index of
its weights (:func:`trilobit.packing.ternary_group_index`: ``magnitude = |b|``, ``sign = b < 0``,
``b`` the balanced-ternary value of the weight group, ``w[0]`` most significant) and adds it,
negated when ``sign`` is set (sign symmetry: ``entry(-b) = -entry(b)``, so only the
``ternary_table_size(G) = (3**G+1)//2`` non-negative entries are built). ``units`` tables are
built and read in parallel, one per group, so a beat covers ``units * G`` activations.

Multi-bit weights (bit planes)
------------------------------
A command selects ``planes`` (1..``max_planes``). Each weight beat then carries one *plane*
of group indices and the engine adds ``plane_value << plane`` (plane = 0, 1, ... in beat
order), reading the same table ``planes`` times::

    out[r] = sum_j 2**j * sum_k plane_j[r, k] * a[k]

Every plane is a ternary vector, so one engine covers both weight kinds:

* ternary weights: ``planes = 1``, ``plane_0 = w``;
* INT-b weights (two's complement, b = 2..4): ``planes = b``, ``plane_j = bit_j(w)`` in {0, 1}
  for ``j < b-1`` and ``plane_{b-1} = -bit_{b-1}(w)`` in {0, -1} (the MSB weighs ``-2**(b-1)``);
  ``trilobit.sim.golden_tlmm.weight_planes`` is the decomposition.

Streams (``amaranth.lib.stream``; arrays are packed element 0 in the least significant bits)
-------------------------------------------------------------------------------------------
``cmd`` (one beat per output row block): ``beats`` (activation beats, i.e. ``K / (G*units)``
    groups-steps of the block; 0 behaves as 1) and ``planes`` (weight planes per activation
    beat; 0 behaves as 1).
``act`` (``beats`` beats per command): ``units * G`` signed ``act_bits`` activations; element
    ``p*G + i`` is activation ``i`` of unit ``p``'s group, i.e. ``a[(beat*units + p)*G + i]``.
``weights`` (``beats * planes`` beats per command, plane-minor): ``rows * units`` group
    indices ``{magnitude: ceil(log2(table_size)) bits, sign: 1 bit}`` (magnitude in the low
    bits), element ``r*units + p`` for row ``r`` and unit ``p``. A magnitude beyond the table
    reads as 0.
``out`` (one beat per command): ``rows`` signed ``acc_bits`` accumulators.

The activation stream of a block is independent of the command and weight streams: tables are
built as soon as an activation beat arrives, and a beat is held until its last plane is read.
All streams tolerate arbitrary valid/ready stalls on either side.

Pipeline and throughput
-----------------------
``act`` beat -> table build (adder network) -> *next* table register -> *current* table
register. The two table registers are the double buffer: the table of the next group is built
and held while the current one is read, so with streams never stalling the engine takes one
weight beat per cycle, i.e. one group per unit per cycle (ternary), and ``rows * units * G``
ternary MACs per cycle. Weight beat -> lookups + adder over units + plane shift (register) ->
accumulate (register) -> output register. Latency from the last weight beat to ``out.valid``:
2 cycles. Back-to-back commands run without a bubble.

Accumulator width: ``|out| <= K * 2**(act_bits-1) * (2**max_planes - 1)`` for any ``K <= max_k``
(every weight contributes at most ``(2**planes - 1) * |a|`` across its planes, and that also
bounds every partial sum), and ``acc_bits`` is the signed width holding that bound, so the
accumulator cannot overflow by construction.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from amaranth.hdl import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from trilobit.errors import ConfigError
from trilobit.packing import TERNARY_GROUP_SIZES, ternary_table_size

__all__ = [
    "TlmmParams",
    "TernaryTableBuilder",
    "TernaryTableReader",
    "TlmmEngine",
    "signed_bits_for",
    "engine_streams",
    "GroupPipeline",
]

#: Allowed activation widths, bits.
ACT_BITS_RANGE = (4, 16)
#: Allowed number of weight planes per activation beat (INT-b weights need b planes).
MAX_PLANES_RANGE = (1, 4)
#: Cycles from accepting the last weight beat of a command to ``out.valid``.
OUTPUT_LATENCY = 2


def signed_bits_for(bound: int) -> int:
    """Smallest signed width (bits) holding every integer in ``-bound .. bound``."""
    return max(int(bound), 1).bit_length() + 1


@dataclass(frozen=True)
class TlmmParams:
    """Parameters of a table-lookup engine (and of its baseline, which has the same interface).

    Attributes:
        group_size: G, activations per table (2, 3 or 4).
        rows: R, output rows sharing each table (>= 1).
        units: P, tables built and read in parallel (>= 1).
        act_bits: signed activation width, bits (4..16).
        max_k: largest reduction length K (activations per output row) a command may cover.
        max_planes: most weight planes per command (1: ternary only; b: INT-b weights up to b=4).
    """

    group_size: int = 3
    rows: int = 16
    units: int = 4
    act_bits: int = 8
    max_k: int = 8192
    max_planes: int = 4

    def __post_init__(self):
        if self.group_size not in TERNARY_GROUP_SIZES:
            raise ConfigError(
                f"group_size (G) must be one of {TERNARY_GROUP_SIZES}, got {self.group_size}"
            )
        for name in ("rows", "units", "max_k"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be an integer >= 1, got {value!r}")
        lo, hi = ACT_BITS_RANGE
        if not lo <= self.act_bits <= hi:
            raise ConfigError(f"act_bits must be in {lo}..{hi}, got {self.act_bits}")
        lo, hi = MAX_PLANES_RANGE
        if not lo <= self.max_planes <= hi:
            raise ConfigError(f"max_planes must be in {lo}..{hi}, got {self.max_planes}")

    @property
    def table_size(self) -> int:
        """Entries per sign-halved table: (3**G + 1) // 2."""
        return ternary_table_size(self.group_size)

    @property
    def magnitude_bits(self) -> int:
        """Width of a group index magnitude, bits."""
        return (self.table_size - 1).bit_length()

    @property
    def activations_per_beat(self) -> int:
        """Activations per ``act`` beat: units * G."""
        return self.units * self.group_size

    @property
    def max_beats(self) -> int:
        """Activation beats of the longest command: ceil(max_k / (G * units))."""
        return -(-self.max_k // self.activations_per_beat)

    @property
    def beats_bits(self) -> int:
        return self.max_beats.bit_length()

    @property
    def plane_bits(self) -> int:
        return self.max_planes.bit_length()

    @property
    def entry_bits(self) -> int:
        """Signed table entry width: |entry| <= G * 2**(act_bits-1)."""
        return signed_bits_for(self.group_size << (self.act_bits - 1))

    @property
    def partial_bits(self) -> int:
        """Signed width of one weight beat's contribution to a row, after the plane shift."""
        bound = self.units * (self.group_size << (self.act_bits - 1)) << (self.max_planes - 1)
        return signed_bits_for(bound)

    @property
    def acc_bits(self) -> int:
        """Signed accumulator width: K * 2**(act_bits-1) * (2**max_planes - 1) for K <= max_k."""
        k = self.max_beats * self.activations_per_beat
        return signed_bits_for(k * (1 << (self.act_bits - 1)) * ((1 << self.max_planes) - 1))

    @property
    def macs_per_cycle(self) -> int:
        """Ternary multiply-accumulates per cycle at full throughput: rows * units * G."""
        return self.rows * self.units * self.group_size

    def as_dict(self) -> dict:
        return asdict(self)


def engine_streams(params: TlmmParams, weight_element: data.Layout | int) -> dict:
    """Stream members shared by the engine and its baseline (weight element shape differs).

    ``weight_element`` is the shape of one weight-beat element: a group index for the engine,
    ``G`` plain2 codes for the baseline.
    """
    cmd = data.StructLayout(
        {"beats": unsigned(params.beats_bits), "planes": unsigned(params.plane_bits)}
    )
    return {
        "cmd": In(stream.Signature(cmd)),
        "act": In(
            stream.Signature(data.ArrayLayout(signed(params.act_bits), params.activations_per_beat))
        ),
        "weights": In(
            stream.Signature(data.ArrayLayout(weight_element, params.rows * params.units))
        ),
        "out": Out(stream.Signature(data.ArrayLayout(signed(params.acc_bits), params.rows))),
    }


def group_index_layout(params: TlmmParams) -> data.StructLayout:
    """One weight group index: magnitude (low bits) and sign, as ternary_group_index gives."""
    return data.StructLayout({"magnitude": unsigned(params.magnitude_bits), "sign": unsigned(1)})


class TernaryTableBuilder(wiring.Component):
    """Combinational table of all non-negative balanced-ternary signed sums of G activations.

    ``table[m] = sum_i balanced_ternary_digits(m, G)[i] * activations[i]`` for
    ``m = 0 .. (3**G-1)/2``. Built recursively trit by trit
    (``T_{k+1}[3b + d] = T_k[b] + d * a[k]``) so entries share their prefixes: one adder per
    entry with a non-zero last digit, ``G - 1`` adders deep.
    """

    def __init__(self, group_size: int, act_bits: int):
        self.group_size = group_size
        self.act_bits = act_bits
        self.table_size = ternary_table_size(group_size)
        self.entry_bits = signed_bits_for(group_size << (act_bits - 1))
        super().__init__({
            "activations": In(data.ArrayLayout(signed(act_bits), group_size)),
            "table": Out(data.ArrayLayout(signed(self.entry_bits), self.table_size)),
        })

    def elaborate(self, platform):
        m = Module()
        a = self.activations
        # Level 1 holds b in {0, 1} (the first trit alone); negative prefixes are never needed
        # because 3b + d >= 0 with d >= -1 implies b >= 0.
        level = {0: None, 1: a[0]}
        for k in range(1, self.group_size):
            nxt = {}
            for b, value in level.items():
                for d in (-1, 0, 1):
                    index = 3 * b + d
                    if index < 0:
                        continue
                    if value is None:
                        nxt[index] = None if d == 0 else (a[k] if d > 0 else -a[k])
                    elif d == 0:
                        nxt[index] = value
                    else:
                        nxt[index] = value + a[k] if d > 0 else value - a[k]
            level = nxt
        for index in range(self.table_size):
            value = level[index]
            m.d.comb += self.table[index].eq(0 if value is None else value)
        return m


class TernaryTableReader(wiring.Component):
    """Combinational signed lookup: ``value = (-1)**sign * table[magnitude]``, 0 off the table."""

    def __init__(self, group_size: int, entry_bits: int):
        self.table_size = ternary_table_size(group_size)
        magnitude_bits = (self.table_size - 1).bit_length()
        super().__init__({
            "table": In(data.ArrayLayout(signed(entry_bits), self.table_size)),
            "index": In(
                data.StructLayout({"magnitude": unsigned(magnitude_bits), "sign": unsigned(1)})
            ),
            "value": Out(signed(entry_bits)),
        })

    def elaborate(self, platform):
        m = Module()
        entry = Signal(self.value.shape())
        with m.Switch(self.index.magnitude):
            for index in range(self.table_size):
                with m.Case(index):
                    m.d.comb += entry.eq(self.table[index])
            with m.Default():
                m.d.comb += entry.eq(0)
        # |entry| <= G * 2**(act_bits-1) < 2**(entry_bits-1), so the negation cannot overflow.
        m.d.comb += self.value.eq(Mux(self.index.sign, -entry, entry))
        return m


class GroupPipeline:
    """Stream control shared by the engine and the baseline: they differ only in what they hold
    per activation beat (``prepare``) and how a weight beat turns it into row sums
    (``row_sums``); see the module docstring for the timing."""

    def __init__(self, params: TlmmParams, held_shape):
        self.params = params
        self.held_shape = held_shape

    def elaborate_into(self, m: Module, ports, prepared, row_sums_of) -> None:
        """Add the pipeline to ``m``.

        Args:
            ports: the component (has ``cmd``, ``act``, ``weights``, ``out``).
            prepared: value of ``held_shape`` computed from ``ports.act.payload``.
            row_sums_of: function(held view) -> list of ``rows`` signed values, the sum over
                units for the current weight beat (before the plane shift).
        """
        p = self.params
        cmd, act, weights, out = ports.cmd, ports.act, ports.weights, ports.out

        # Command registers.
        cmd_active = Signal()
        cmd_beats = Signal(p.beats_bits)
        cmd_planes = Signal(p.plane_bits)
        beat = Signal(p.beats_bits)
        plane = Signal(p.plane_bits)

        # Double-buffered held data (tables): next <- act beat, current <- next.
        next_held = Signal(self.held_shape)
        next_valid = Signal()
        cur_held = Signal(self.held_shape)
        cur_valid = Signal()

        # Stage 2 (row sums, shifted by plane) and stage 3 (accumulators, output register).
        partial = Signal(data.ArrayLayout(signed(p.partial_bits), p.rows))
        partial_valid = Signal()
        partial_first = Signal()
        partial_last = Signal()
        acc = Signal(data.ArrayLayout(signed(p.acc_bits), p.rows))
        out_valid = Signal()
        out_data = Signal(data.ArrayLayout(signed(p.acc_bits), p.rows))

        # Zero beats/planes behave as one: "last" is reached at once.
        last_plane = plane + 1 >= cmd_planes
        last_beat = beat + 1 >= cmd_beats

        # Stage 3 blocks only when it would overwrite an output nobody has taken.
        s3_blocked = partial_valid & partial_last & out_valid & ~out.ready
        w_fire = Signal()
        m.d.comb += [
            weights.ready.eq(cmd_active & cur_valid & ~s3_blocked),
            w_fire.eq(weights.valid & weights.ready),
        ]
        release = w_fire & last_plane
        cmd_done = release & last_beat

        # Command acceptance: when idle or while the last weight beat of the current one fires.
        m.d.comb += cmd.ready.eq(~cmd_active | cmd_done)
        with m.If(cmd.valid & cmd.ready):
            m.d.sync += [
                cmd_active.eq(1),
                cmd_beats.eq(cmd.payload.beats),
                cmd_planes.eq(cmd.payload.planes),
                beat.eq(0),
                plane.eq(0),
            ]
        with m.Elif(cmd_done):
            m.d.sync += cmd_active.eq(0)
        with m.Elif(w_fire):
            with m.If(last_plane):
                m.d.sync += [plane.eq(0), beat.eq(beat + 1)]
            with m.Else():
                m.d.sync += plane.eq(plane + 1)

        # Double buffer.
        cur_free = ~cur_valid | release
        advance = next_valid & cur_free
        m.d.comb += act.ready.eq(~next_valid | cur_free)
        with m.If(act.valid & act.ready):
            m.d.sync += [next_held.eq(prepared), next_valid.eq(1)]
        with m.Elif(advance):
            m.d.sync += next_valid.eq(0)
        with m.If(advance):
            m.d.sync += [cur_held.eq(next_held), cur_valid.eq(1)]
        with m.Elif(release):
            m.d.sync += cur_valid.eq(0)

        # Stage 2: lookups, sum over units, plane shift.
        sums = row_sums_of(cur_held)
        with m.If(~s3_blocked):
            m.d.sync += partial_valid.eq(w_fire)
            with m.If(w_fire):
                for r in range(p.rows):
                    m.d.sync += partial[r].eq(sums[r] << plane)
                m.d.sync += [
                    partial_first.eq((beat == 0) & (plane == 0)),
                    partial_last.eq(last_beat & last_plane),
                ]

        # Stage 3: accumulate; the block's last sum goes to the output register.
        with m.If(out.ready):
            m.d.sync += out_valid.eq(0)
        with m.If(partial_valid & ~s3_blocked):
            for r in range(p.rows):
                total = Mux(partial_first, 0, acc[r]) + partial[r]
                m.d.sync += acc[r].eq(total)
                with m.If(partial_last):
                    m.d.sync += out_data[r].eq(total)
            with m.If(partial_last):
                m.d.sync += out_valid.eq(1)
        m.d.comb += [out.valid.eq(out_valid), out.payload.eq(out_data)]


class TlmmEngine(wiring.Component):
    """Ternary table-lookup matmul engine; interface and timing in the module docstring."""

    def __init__(self, params: TlmmParams):
        self.params = params
        super().__init__(engine_streams(params, group_index_layout(params)))

    def elaborate(self, platform):
        p = self.params
        m = Module()
        tables_layout = data.ArrayLayout(
            data.ArrayLayout(signed(p.entry_bits), p.table_size), p.units
        )
        built = Signal(tables_layout)
        for u in range(p.units):
            builder = TernaryTableBuilder(p.group_size, p.act_bits)
            m.submodules[f"build{u}"] = builder
            for i in range(p.group_size):
                m.d.comb += builder.activations[i].eq(self.act.payload[u * p.group_size + i])
            m.d.comb += built[u].eq(builder.table)

        def row_sums_of(tables):
            sums = []
            for r in range(p.rows):
                values = []
                for u in range(p.units):
                    reader = TernaryTableReader(p.group_size, p.entry_bits)
                    m.submodules[f"read{r}_{u}"] = reader
                    m.d.comb += [
                        reader.table.eq(tables[u]),
                        reader.index.eq(self.weights.payload[r * p.units + u]),
                    ]
                    values.append(reader.value)
                sums.append(adder_tree(values))
            return sums

        GroupPipeline(p, tables_layout).elaborate_into(m, self, built, row_sums_of)
        return m


def adder_tree(values: list) -> object:
    """Balanced binary sum of Amaranth values (depth ceil(log2(len))); widths grow as needed."""
    values = list(values)
    while len(values) > 1:
        paired = [values[i] + values[i + 1] for i in range(0, len(values) - 1, 2)]
        if len(values) % 2:
            paired.append(values[-1])
        values = paired
    return values[0]


def ideal_cycles(params: TlmmParams, k: int, n: int, planes: int = 1, m: int = 1) -> int:
    """Ideal cycles for ``m`` activation vectors x an (n, k) weight matrix: m*k*n*planes/(G*R*P)."""
    return math.ceil(m * k * n * planes / (params.group_size * params.rows * params.units))
