"""SPI link of the host bridge: an SPI target, mode 0 (clock idles low, data sampled on the
rising edge, changed on the falling edge), most significant bit first.

The pins are sampled by the system clock through two-flip-flop synchronizers, so ``sck``
must be at most 1/8 of the system clock (1.5 MHz at 12 MHz, 3 MHz at 25 MHz): MISO changes
about 3 system cycles after a falling edge and must be stable half an SCK period later.

Every byte clocked in goes to ``rx`` (a byte not taken before the next one completes is
lost, and a new chip-select drops it: the host sends zeros while it waits, see
:mod:`trilobit.hw.bridge_protocol`). Every byte clocked out comes from ``tx`` if one is
waiting when the byte starts, else it is :data:`~trilobit.hw.bridge_protocol.IDLE` (0xFF).
``frame_start`` pulses when chip-select falls.
"""

from amaranth import Cat, Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.cdc import FFSynchronizer
from amaranth.lib.wiring import In, Out

from trilobit.hw.bridge_protocol import IDLE

__all__ = ["SpiTarget"]


class SpiTarget(wiring.Component):
    """SPI mode 0 target to byte streams (see the module docstring for the timing)."""

    sck: In(1)
    cs_n: In(1, init=1)
    mosi: In(1)
    miso: Out(1)
    rx: Out(stream.Signature(8))
    tx: In(stream.Signature(8))
    frame_start: Out(1)

    def elaborate(self, platform):
        m = Module()
        sck, cs_n, mosi = Signal(), Signal(init=1), Signal()
        m.submodules.sync_sck = FFSynchronizer(self.sck, sck)
        m.submodules.sync_cs = FFSynchronizer(self.cs_n, cs_n, init=1)
        m.submodules.sync_mosi = FFSynchronizer(self.mosi, mosi)
        sck_last, cs_last = Signal(), Signal(init=1)
        m.d.sync += [sck_last.eq(sck), cs_last.eq(cs_n)]
        rise = sck & ~sck_last & ~cs_n
        fall = ~sck & sck_last & ~cs_n
        m.d.comb += self.frame_start.eq(cs_last & ~cs_n)

        bits = Signal(3)  # bits of the current byte received so far
        shift_in = Signal(8)
        shift_out = Signal(8, init=IDLE)
        load = Signal()  # a new byte starts: take the next reply byte
        # A byte loaded at the end of the previous one whose first bit has not been clocked
        # yet; a new chip-select keeps it instead of loading another.
        pending = Signal()
        m.d.comb += self.miso.eq(shift_out[7])

        with m.If(self.rx.ready):
            m.d.sync += self.rx.valid.eq(0)
        with m.If(cs_n):
            m.d.sync += bits.eq(0)
        with m.If(self.frame_start):
            m.d.sync += self.rx.valid.eq(0)
            m.d.comb += load.eq(~pending)
        with m.If(rise):
            m.d.sync += [shift_in.eq(Cat(mosi, shift_in[:7])), bits.eq(bits + 1),
                         pending.eq(0)]
            with m.If(bits == 7):
                m.d.sync += [self.rx.payload.eq(Cat(mosi, shift_in[:7])),
                             self.rx.valid.eq(1)]
                m.d.comb += load.eq(1)
        with m.If(fall & (bits != 0)):
            # Mid-byte: present the next bit. After the last bit the new byte is loaded
            # instead, and its first bit must stay until the next rising edge.
            m.d.sync += shift_out.eq(Cat(0, shift_out[:7]))
        with m.If(load):
            m.d.comb += self.tx.ready.eq(1)
            m.d.sync += [shift_out.eq(IDLE), pending.eq(1)]
            with m.If(self.tx.valid):
                m.d.sync += shift_out.eq(self.tx.payload)
        return m
