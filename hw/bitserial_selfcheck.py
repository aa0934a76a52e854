"""Self-checking wrapper for long bit-exact runs of the bit-serial engine (or its baseline).

Stimulus and expected results live in on-chip ROMs inside the design; pseudo-random
valid/ready stalls come from LFSRs. The wrapper replays the ROM contents ``repeats`` times,
compares every output beat with the expected ROM and counts mismatches, so a testbench only
waits for ``done`` and reads ``errors`` and ``cycles``: no Python runs per cycle.

Ports: ``done`` (1 when every expected beat arrived), ``errors`` (mismatching output beats),
``cycles`` (cycles from reset to ``done``), ``outputs`` (beats received).
"""

from amaranth.hdl import Cat, Module, Mux, Signal
from amaranth.lib import memory, wiring
from amaranth.lib.wiring import Out

from trilobit.hw.bitserial import BitSerialEngine, BitSerialParams

__all__ = ["SelfCheckingEngine"]


class _Lfsr(wiring.Component):
    """16-bit Fibonacci LFSR (taps 16, 14, 13, 11); ``stall`` is 1 with probability
    ``stall_num / 8`` per cycle."""

    stall: Out(1)

    def __init__(self, seed: int, stall_num: int):
        self._seed = seed & 0xFFFF or 1
        self._num = stall_num
        super().__init__()

    def elaborate(self, platform) -> Module:
        m = Module()
        state = Signal(16, init=self._seed)
        feedback = state[15] ^ state[13] ^ state[12] ^ state[10]
        m.d.sync += state.eq(Cat(feedback, state[:15]))
        m.d.comb += self.stall.eq(state[4:7] < self._num)
        return m


class _RomSource(wiring.Component):
    """Plays ``words`` ``repeats`` times on a stream, pausing when ``stall`` is high."""

    def __init__(self, words: list[int], width: int, repeats: int, stream_port):
        self._words, self._width, self._repeats = words, width, repeats
        self._port = stream_port
        super().__init__({"stall": wiring.In(1)})

    def elaborate(self, platform) -> Module:
        m = Module()
        n = len(self._words)
        m.submodules.rom = rom = memory.Memory(shape=self._width, depth=n, init=self._words)
        read = rom.read_port(domain="comb")
        index = Signal(range(n))
        rep = Signal(range(self._repeats + 1))
        valid = Signal()
        port = self._port
        more = rep < self._repeats
        m.d.comb += [read.addr.eq(index), port.payload.eq(read.data), port.valid.eq(valid)]
        # valid, once raised, stays until the transfer (stream rule)
        with m.If(~valid | port.ready):
            m.d.sync += valid.eq(more & ~self.stall & ~(valid & port.ready & (index == n - 1)
                                                        & (rep == self._repeats - 1)))
        with m.If(valid & port.ready):
            with m.If(index == n - 1):
                m.d.sync += [index.eq(0), rep.eq(rep + 1)]
            with m.Else():
                m.d.sync += index.eq(index + 1)
        return m


class SelfCheckingEngine(wiring.Component):
    """Engine + ROM sources + checking sink; see module docstring.

    Arguments:
        params: array shape.
        meta_words, act_words, weight_words: payload integers of each stream, in order
            (``BitSerialParams.pack_*``).
        expected_words: ``out`` payload integers expected, in order.
        repeats: times the whole stimulus is replayed.
        stall_num: stall probability of every stream, in eighths (0..7).
        engine_class: the engine to test (its constructor takes ``params``).
    """

    done: Out(1)
    errors: Out(32)
    cycles: Out(40)
    outputs: Out(32)

    def __init__(self, params: BitSerialParams, meta_words, act_words, weight_words,
                 expected_words, *, repeats: int = 1, stall_num: int = 2,
                 engine_class=BitSerialEngine):
        self.params = params
        self._streams = (meta_words, act_words, weight_words)
        self._expected = expected_words
        self._repeats = repeats
        self._stall_num = stall_num
        self._engine_class = engine_class
        super().__init__()

    def elaborate(self, platform) -> Module:
        m = Module()
        p = self.params
        m.submodules.engine = engine = self._engine_class(p)
        widths = (len(engine.meta.payload.as_value()), len(engine.act.payload.as_value()),
                  len(engine.weights.payload.as_value()))
        for i, (name, words, width) in enumerate(zip(("meta", "act", "weights"), self._streams,
                                                     widths, strict=True)):
            lfsr = _Lfsr(0xACE1 + 0x1234 * i, self._stall_num)
            src = _RomSource(list(words), width, self._repeats, getattr(engine, name))
            m.submodules[f"{name}_lfsr"] = lfsr
            m.submodules[f"{name}_source"] = src
            m.d.comb += src.stall.eq(lfsr.stall)

        n = len(self._expected)
        out_width = len(engine.out.payload.as_value())
        m.submodules.expected = rom = memory.Memory(shape=out_width, depth=n,
                                                    init=list(self._expected))
        read = rom.read_port(domain="comb")
        m.submodules.out_lfsr = out_lfsr = _Lfsr(0xBEEF, self._stall_num)
        index = Signal(range(n))
        total = n * self._repeats
        m.d.comb += [read.addr.eq(index), engine.out.ready.eq(~out_lfsr.stall & ~self.done),
                     self.done.eq(self.outputs == total)]
        with m.If(engine.out.valid & engine.out.ready):
            m.d.sync += [self.outputs.eq(self.outputs + 1),
                         index.eq(Mux(index == n - 1, 0, index + 1))]
            with m.If(engine.out.payload.as_value() != read.data):
                m.d.sync += self.errors.eq(self.errors + 1)
        with m.If(~self.done):
            m.d.sync += self.cycles.eq(self.cycles + 1)
        return m
