"""Ternary table-lookup engine with its tables in distributed RAM (ECP5 ``TRELLIS_DPR16X4``).

Same arithmetic as :class:`trilobit.hw.tlmm.TlmmEngine` (sign-halved tables of signed sums of
``G`` activations, indexed by :func:`trilobit.packing.ternary_group_index`, weight planes
shift-added), but organised the way table lookup pays off on an FPGA (T-MAC / TeLLMe style):

* each table lives in LUT RAM with one asynchronous read port, so a lookup costs a few RAM
  LUTs instead of a ``table_size``:1 multiplexer of registers;
* a LUT RAM has one write port, so a table is written one entry per cycle (``table_size``
  cycles) into one bank while the other bank is read (double buffering). G = 2 (5 entries):
  both banks in one 16-deep RAM, the bank an address bit. G = 3 (14 entries): each bank has
  its own 16-deep RAMs for the low entry bits, and both banks' 2 high bits share one more
  (10-bit entries: 5 RAMs per table copy instead of 6);
* to hide the build, every read port serves ``row_slots`` (T) output rows in turn, one per
  cycle, for each group: a table is in use for ``T * planes`` cycles, and the next one is
  ready after ``table_size + 1``;
* the table of unit ``p`` is replicated once per read port (``rows`` copies, R), all copies
  written together; the entries are written along a ternary Gray path
  (:func:`gray_build_order`), each one the previous ± one activation, so a table costs one
  adder to build;
* a negative group index reads the ones' complement of the entry (one XOR per bit, in the
  LUT that also selects the bank) and adds the missing 1 as the carry-in of an adder that
  exists anyway (:func:`add_with_carry`): no negation adders;
* the per-row accumulators (``T`` slots x ``R`` rows) live in one LUT RAM as well
  (read-modify-write: read asynchronously, written back at the same address); with
  ``T < 16`` its spare word stays 0 and the first beat of a command reads it instead of
  the slot, which clears the accumulator without a multiplexer per bit.

Streams (``amaranth.lib.stream``; arrays packed element 0 in the least significant bits)
-------------------------------------------------------------------------------------------
The ``cmd``, ``act`` and ``out`` payloads and every element layout are those of
:class:`~trilobit.hw.tlmm.TlmmEngine` (:func:`trilobit.hw.tlmm.engine_streams`). What changes is
how many rows a command covers and the order of the weight beats:

``cmd``: ``beats`` activation beats and ``planes`` (0 behaves as 1) for a *row tile* of
    ``R * T`` output rows.
``act``: ``beats`` beats per command, exactly as for the engine.
``weights``: ``beats * planes * T`` beats per command, ordered beat-major, then plane, then
    slot ``t``; beat ``(beat, plane, t)`` holds the ``R * P`` group indices of rows
    ``t*R + r`` (element ``r*P + p``, as for the engine) of the tile.
``out``: ``T`` beats per command; beat ``t`` holds the accumulators of rows ``t*R .. t*R+R-1``.

With ``row_slots = 1`` the beat order is the engine's. ``trilobit.sim.golden_tlmm.gemv_streams(...,
row_slots=T)`` produces these beats.

Pipeline and throughput
-----------------------
``act`` beat -> hold register -> ``table_size`` cycles writing one entry per cycle into the
free bank of every copy -> bank full. A weight beat is accepted while the command's current
bank is full; per cycle: asynchronous table reads (bank select, ones' complement) -> lookup
register -> sum over units with the signs as carries (register) -> accumulator RAM read, add,
write back; on the last beat and plane the sum also goes to the output register. The
datapath never stalls: a weight beat that finishes rows is accepted only when no finished
beat is in flight or waiting for ``out`` (one credit), so ``out.ready`` only reaches that
register and a flag. With streams never stalling and ``T * planes >= table_size + 1`` (15
for G = 3, 6 for G = 2) the engine takes one weight beat per cycle, ``R * P * G`` ternary MACs,
except that the ``T`` finishing beats of a command are 4 cycles apart: a command takes
``beats * planes * T + 3 * (T - 1)`` cycles (0.8 % more than the full rate for K = 4096,
G = 3, P = 4). The first table is ready ``table_size + 1`` cycles after the first ``act``
beat; the last output appears 3 cycles after the last weight beat.

Accumulators are as wide as :attr:`~trilobit.hw.tlmm.TlmmParams.acc_bits` (no overflow for any
``K <= max_k``).
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal, Value, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory

from trilobit.errors import ConfigError
from trilobit.hw.tlmm import TlmmParams, engine_streams, group_index_layout
from trilobit.packing import balanced_ternary_digits, ternary_table_size

__all__ = ["TlmmLutramEngine", "LUTRAM_DEPTH", "lutram_ideal_cycles", "gray_build_order"]

#: Entries of one distributed-RAM primitive (ECP5 TRELLIS_DPR16X4: 16 x 4 bits); the most
#: accumulator slots a read port serves.
LUTRAM_DEPTH = 16


class TlmmLutramEngine(wiring.Component):
    """Table-lookup ternary engine with LUT-RAM tables; interface in the module docstring.

    Args:
        params: the engine parameters (``rows`` = read ports per table, R; ``units`` = P).
        row_slots: T, output rows served by each read port per group (1..16); choose
            ``T >= table_size + 1`` (15 for G = 3, 6 or more for G = 2) to hide the table
            build, and ``T < 16`` to clear accumulators through the spare RAM word.
    """

    def __init__(self, params: TlmmParams, row_slots: int = LUTRAM_DEPTH):
        if not isinstance(row_slots, int) or not 1 <= row_slots <= LUTRAM_DEPTH:
            raise ConfigError(
                f"row_slots must be an integer in 1..{LUTRAM_DEPTH}, got {row_slots!r}"
            )
        self.params = params
        self.row_slots = row_slots
        super().__init__(engine_streams(params, group_index_layout(params)))

    @property
    def rows_per_command(self) -> int:
        """Output rows of one command: rows * row_slots."""
        return self.params.rows * self.row_slots

    def elaborate(self, platform):
        p = self.params
        R, P, G, T = p.rows, p.units, p.group_size, self.row_slots
        m = Module()
        cmd, act, weights, out = self.cmd, self.act, self.weights, self.out

        # ---- table banks --------------------------------------------------------------
        # Two banks per RAM, the bank bit above the magnitude. Magnitudes beyond the table
        # hit entries that are never written and keep their initial 0 (read as ``~0 + 1 = 0``
        # when negated), as the engine's reader returns 0 there.
        bank_full = Signal(2)
        write_bank = Signal()
        read_bank = Signal()

        # ---- table build: one entry per cycle along a ternary Gray path ----------------
        # Consecutive entries of the path differ in one digit by ±1, so each is the previous
        # one ± one activation: one adder per table instead of G-1 adders and G negations.
        path = gray_build_order(G)
        held = Signal(data.ArrayLayout(signed(p.act_bits), P * G))
        building = Signal()
        step = Signal(range(p.table_size))
        running = Signal(data.ArrayLayout(signed(p.entry_bits), P))
        wr_addr = Signal(p.magnitude_bits)
        last_step = step == p.table_size - 1

        m.d.comb += act.ready.eq(~building & ~bank_full.bit_select(write_bank, 1))
        with m.If(act.valid & act.ready):
            m.d.sync += [held.eq(act.payload), building.eq(1), step.eq(0)]
            for u in range(P):
                m.d.sync += running[u].eq(0)  # the path starts at entry 0, value 0
        with m.Elif(building):
            m.d.sync += step.eq(step + 1)
            with m.If(last_step):
                m.d.sync += [building.eq(0), bank_full.bit_select(write_bank, 1).eq(1),
                             write_bank.eq(~write_bank)]
        digit_index = Signal(range(G))
        digit_down = Signal()
        with m.Switch(step):
            for k, (entry, index, down) in enumerate(path):
                with m.Case(k):
                    m.d.comb += [wr_addr.eq(entry), digit_index.eq(index), digit_down.eq(down)]
        for u in range(P):
            activation = Signal(signed(p.act_bits), name=f"step_activation_u{u}")
            with m.Switch(digit_index):
                for i in range(G):
                    with m.Case(i):
                        m.d.comb += activation.eq(held[u * G + i])
            ones = Mux(digit_down, ~activation, activation)  # -a = ~a + 1
            with m.If(building):
                m.d.sync += running[u].eq(add_with_carry(running[u], ones, digit_down))


        # ---- command and weight beat counters -----------------------------------------
        cmd_active = Signal()
        cmd_planes = Signal(p.plane_bits)
        # Beats left including the current one (a down-counter: "last" is a test of its upper
        # bits, so 0 and 1 both mean last), and whether the current beat is the first.
        beats_left = Signal(p.beats_bits)
        first_beat = Signal()
        plane = Signal(p.plane_bits)
        slot = Signal(range(T))

        last_slot = slot == T - 1
        last_plane = plane + 1 >= cmd_planes  # zero planes/beats behave as one
        last_beat = beats_left[1:] == 0
        finishes_rows = last_beat & last_plane

        # A finished output beat is in the pipeline or in the output register.
        pending = Signal()
        credit = ~pending

        w_fire = Signal()
        m.d.comb += [
            weights.ready.eq(cmd_active & bank_full.bit_select(read_bank, 1)
                             & (~finishes_rows | credit)),
            w_fire.eq(weights.valid & weights.ready),
        ]
        release = w_fire & last_slot & last_plane
        cmd_done = release & last_beat

        m.d.comb += cmd.ready.eq(~cmd_active | cmd_done)
        with m.If(cmd.valid & cmd.ready):
            m.d.sync += [cmd_active.eq(1), beats_left.eq(cmd.payload.beats),
                         first_beat.eq(1), cmd_planes.eq(cmd.payload.planes), plane.eq(0),
                         slot.eq(0)]
        with m.Elif(cmd_done):
            m.d.sync += cmd_active.eq(0)
        with m.Elif(w_fire):
            m.d.sync += slot.eq(Mux(last_slot, 0, slot + 1))
            with m.If(last_slot):
                with m.If(last_plane):
                    m.d.sync += [plane.eq(0), beats_left.eq(beats_left - 1), first_beat.eq(0)]
                with m.Else():
                    m.d.sync += plane.eq(plane + 1)
        with m.If(release):
            m.d.sync += [bank_full.bit_select(read_bank, 1).eq(0), read_bank.eq(~read_bank)]

        # ---- stage 1: table reads (asynchronous) into the lookup registers -------------
        # A negative group index stores the entry's ones' complement (``~e = -e - 1``, one
        # XOR per bit, which fits in the LUT after the RAM) and its sign; the ``+1`` is folded
        # into an adder below as a carry-in, so a signed lookup costs no adder of its own.
        lookup = Signal(data.ArrayLayout(signed(p.entry_bits), R * P))
        lookup_sign = Signal(R * P)
        s1_valid, s1_slot, s1_plane = Signal(), Signal(range(T)), Signal(p.plane_bits)
        s1_first, s1_last = Signal(), Signal()
        # Table storage. When a bank fits half a RAM (G = 2) the bank is an address bit.
        # Otherwise (G = 3: 14 entries, 16 deep) each bank has its own RAMs for the low
        # entry bits, and when the remaining high bits of both banks fit one 4-bit RAM word
        # (entry_bits mod 4 <= 2) they share it: 5 instead of 6 RAMs per copy. A write to one
        # bank's high bits must keep the other bank's, which a per-unit shadow RAM (same
        # contents, read at the write address) provides.
        bank_in_address = (2 << p.magnitude_bits) <= LUTRAM_DEPTH
        high_bits = p.entry_bits % 4
        shared_high = not bank_in_address and 0 < high_bits <= 2
        low_bits = p.entry_bits - high_bits if shared_high else p.entry_bits
        bank_depth = 1 << p.magnitude_bits
        for u in range(P):
            if shared_high:
                shadow = Memory(shape=unsigned(2 * high_bits), depth=bank_depth, init=[])
                m.submodules[f"high_shadow_u{u}"] = shadow
                shadow_read = shadow.read_port(domain="comb")
                shadow_write = shadow.write_port()
                new_high = Value.cast(running[u])[low_bits:]
                old_high = shadow_read.data
                high_word = Mux(write_bank, Cat(old_high[:high_bits], new_high),
                                Cat(new_high, old_high[high_bits:]))
                m.d.comb += [shadow_read.addr.eq(wr_addr), shadow_write.addr.eq(wr_addr),
                             shadow_write.en.eq(building), shadow_write.data.eq(high_word)]
            for r in range(R):
                index = weights.payload[r * P + u]
                entry = Signal(signed(p.entry_bits), name=f"entry_u{u}_r{r}")
                if bank_in_address:
                    table = Memory(shape=signed(p.entry_bits), depth=2 << p.magnitude_bits,
                                   init=[])
                    m.submodules[f"table_u{u}_r{r}"] = table
                    write = table.write_port()
                    m.d.comb += [write.en.eq(building), write.addr.eq(Cat(wr_addr, write_bank)),
                                 write.data.eq(running[u])]
                    read = table.read_port(domain="comb")
                    m.d.comb += [read.addr.eq(Cat(index.magnitude, read_bank)),
                                 entry.eq(read.data)]
                else:
                    low = []
                    for bank in range(2):
                        table = Memory(shape=unsigned(low_bits), depth=bank_depth, init=[])
                        m.submodules[f"table_u{u}_r{r}_bank{bank}"] = table
                        write = table.write_port()
                        m.d.comb += [write.en.eq(building & (write_bank == bank)),
                                     write.addr.eq(wr_addr),
                                     write.data.eq(Value.cast(running[u])[:low_bits])]
                        read = table.read_port(domain="comb")
                        m.d.comb += read.addr.eq(index.magnitude)
                        low.append(read.data)
                    if shared_high:
                        high = Memory(shape=unsigned(2 * high_bits), depth=bank_depth,
                                      init=[])
                        m.submodules[f"table_u{u}_r{r}_high"] = high
                        write = high.write_port()
                        m.d.comb += [write.en.eq(building), write.addr.eq(wr_addr),
                                     write.data.eq(high_word)]
                        read = high.read_port(domain="comb")
                        m.d.comb += [read.addr.eq(index.magnitude),
                                     entry.eq(Mux(read_bank,
                                                  Cat(low[1], read.data[high_bits:]),
                                                  Cat(low[0], read.data[:high_bits])))]
                    else:
                        m.d.comb += entry.eq(Mux(read_bank, low[1], low[0]))
                with m.If(w_fire):
                    ones = entry ^ index.sign.replicate(p.entry_bits)
                    m.d.sync += [lookup[r * P + u].eq(ones),
                                 lookup_sign[r * P + u].eq(index.sign)]
        m.d.sync += [s1_valid.eq(w_fire), s1_slot.eq(slot), s1_plane.eq(plane),
                     s1_first.eq(first_beat & (plane == 0)), s1_last.eq(finishes_rows)]

        # ---- stage 2: sum over units with the signs as carries, plane shift ------------
        partial = Signal(data.ArrayLayout(signed(p.partial_bits), R))
        partial_carry = Signal(R)  # a sign left over for the accumulate adder
        s2_valid, s2_slot, s2_first, s2_last = Signal(), Signal(range(T)), Signal(), Signal()
        for r in range(R):
            values = [lookup[r * P + u] for u in range(P)]
            carries = [lookup_sign[r * P + u] for u in range(P)]
            total, leftover = adder_tree_with_carries(values, carries)
            if p.max_planes > 1:
                # The shift must see the whole sum: add the last carry here.
                m.d.sync += partial[r].eq(add_with_carry(total, 0, leftover) << s1_plane)
            else:
                m.d.sync += [partial[r].eq(total), partial_carry[r].eq(leftover)]
        m.d.sync += [s2_valid.eq(s1_valid), s2_slot.eq(s1_slot), s2_first.eq(s1_first),
                     s2_last.eq(s1_last)]

        # ---- stage 3: accumulate in the slot's RAM word, finished rows to ``out`` ------
        # With T < 16 the RAM has a spare word that is never written and stays 0: the first
        # beat of a command reads it instead of the slot, which clears the accumulator for
        # the price of a 4-bit address multiplexer instead of an R * acc_bits-bit one.
        zero_slot = T if T < LUTRAM_DEPTH else None
        accumulators = Memory(shape=data.ArrayLayout(signed(p.acc_bits), R),
                              depth=T + (zero_slot is not None), init=[])
        m.submodules.accumulators = accumulators
        acc_read = accumulators.read_port(domain="comb")
        acc_write = accumulators.write_port()
        updated = Signal(data.ArrayLayout(signed(p.acc_bits), R))
        m.d.comb += [acc_write.addr.eq(s2_slot), acc_write.en.eq(s2_valid),
                     acc_write.data.eq(updated)]
        if zero_slot is not None:
            m.d.comb += acc_read.addr.eq(Mux(s2_first, zero_slot, s2_slot))
        else:
            m.d.comb += acc_read.addr.eq(s2_slot)
        for r in range(R):
            previous = acc_read.data[r] if zero_slot is not None else Mux(s2_first, 0,
                                                                          acc_read.data[r])
            m.d.comb += updated[r].eq(add_with_carry(previous, partial[r], partial_carry[r]))

        # One output register (flip-flops only). A weight beat that finishes rows is accepted
        # only when no finished beat is in flight or waiting (``pending``), so the datapath
        # never stalls; this costs 3 cycles per finished output beat, T of every
        # ``beats * planes * T`` beats of a command.
        out_valid = Signal()
        out_data = Signal(data.ArrayLayout(signed(p.acc_bits), R))
        out_fire = out.valid & out.ready
        with m.If(out_fire):
            m.d.sync += out_valid.eq(0)
        with m.If(s2_valid & s2_last):
            m.d.sync += [out_valid.eq(1), out_data.eq(updated)]
        m.d.comb += [out.valid.eq(out_valid), out.payload.eq(out_data)]
        taken = w_fire & finishes_rows
        with m.If(taken):
            m.d.sync += pending.eq(1)
        with m.Elif(out_fire):
            m.d.sync += pending.eq(0)
        return m


def gray_build_order(group_size: int) -> list[tuple[int, int, int]]:
    """Order in which a sign-halved table is written, one entry per cycle.

    Returns ``(entry, digit, down)`` per cycle: ``entry`` (0 .. table_size-1, the first is 0)
    is written in that cycle, and the next entry differs from it in balanced-ternary digit
    ``digit`` (0 = most significant) by ``-1`` if ``down`` else ``+1`` (the last step's move
    is unused). A depth-first search over the digit vectors of the non-negative half, most
    constrained neighbour first; such a path exists for G = 2, 3, 4.
    """
    size = ternary_table_size(group_size)
    vectors = {int(v): tuple(int(d) for d in balanced_ternary_digits(v, group_size))
               for v in range(size)}
    weights = [3 ** (group_size - 1 - i) for i in range(group_size)]

    def moves(value: int) -> list[tuple[int, int, int]]:
        found = []
        for i, w in enumerate(weights):
            for down in (0, 1):
                digit = vectors[value][i] + (-1 if down else 1)
                nxt = value + (-w if down else w)
                if -1 <= digit <= 1 and 0 <= nxt < size:
                    found.append((nxt, i, down))
        return found

    path, seen = [0], {0}

    def extend() -> bool:
        if len(path) == size:
            return True
        options = [mv for mv in moves(path[-1]) if mv[0] not in seen]
        options.sort(key=lambda mv: sum(n not in seen for n, _, _ in moves(mv[0])))
        for nxt, _, _ in options:
            path.append(nxt)
            seen.add(nxt)
            if extend():
                return True
            path.pop()
            seen.discard(nxt)
        return False

    if not extend():
        raise ConfigError(f"no ternary Gray build order for group_size={group_size}")
    order = []
    for k, entry in enumerate(path):
        nxt = path[k + 1] if k + 1 < size else entry
        move = next(((i, down) for n, i, down in moves(entry) if n == nxt), (0, 0))
        order.append((entry, *move))
    return order


def add_with_carry(a, b, carry):
    """``a + b + carry`` (signed ``a``, ``b``; ``carry`` 1 bit or 0) as one adder:
    ``((2a + c) + (2b + c)) >> 1``; written plainly, yosys builds a second adder for the carry."""
    carry = Const(carry, 1) if isinstance(carry, int) else carry
    doubled_a = Cat(carry, Value.cast(a)).as_signed()
    doubled_b = Cat(carry, Value.cast(b)).as_signed()
    return (doubled_a + doubled_b) >> 1


def adder_tree_with_carries(values: list, carries: list) -> tuple:
    """Balanced sum of ``values`` plus the 1-bit ``carries``, each adder absorbing one carry.

    Returns ``(sum, leftover)``: ``sum(values) + sum(carries) == sum + leftover``; ``len(values)
    - 1`` adders absorb as many carries, one is left over (or 0 when there are none).
    """
    values, carries = list(values), list(carries)
    while len(values) > 1:
        paired = []
        for i in range(0, len(values) - 1, 2):
            carry = carries.pop() if carries else 0
            paired.append(add_with_carry(values[i], values[i + 1], carry))
        if len(values) % 2:
            paired.append(values[-1])
        values = paired
    assert len(carries) <= 1
    return values[0], (carries[0] if carries else 0)


def lutram_ideal_cycles(params: TlmmParams, row_slots: int, k: int, n: int, planes: int = 1,
                        m: int = 1) -> int:
    """Weight beats (= cycles at full rate) of ``m`` GEMVs of an (n, k) matrix: rows are
    computed in tiles of ``rows * row_slots``, so N rounds up to whole tiles."""
    beats = -(-k // params.activations_per_beat)
    tiles = -(-n // (params.rows * row_slots))
    return m * tiles * beats * planes * row_slots

