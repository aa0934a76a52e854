"""UART link of the host bridge: 8 data bits, no parity, 1 stop bit, LSB first.

``divisor`` is clock cycles per bit (``clk_hz // baud``). The receiver holds one byte; the
bridge takes a byte within a few cycles (it only pauses for one bus transfer between words),
far less than the 10 bit times the next byte needs, so nothing is lost at any divisor >= 4.
"""

from amaranth import Cat, Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.cdc import FFSynchronizer
from amaranth.lib.wiring import In, Out

from trilobit.errors import ConfigError

__all__ = ["UartReceiver", "UartTransmitter", "uart_divisor"]


def uart_divisor(clk_hz: float, baud: int) -> int:
    """Clock cycles per bit; ConfigError when the rate error exceeds 2 % or the divisor < 4."""
    divisor = round(clk_hz / baud)
    if divisor < 4 or abs(clk_hz / divisor - baud) / baud > 0.02:
        raise ConfigError(f"baud must give at least 4 clock cycles per bit within 2 % at "
                          f"{clk_hz / 1e6:g} MHz, got {baud}")
    return divisor


class UartReceiver(wiring.Component):
    """``rx`` pin to a byte stream ``bytes`` (a new byte overwrites one not yet taken)."""

    rx: In(1, init=1)
    bytes: Out(stream.Signature(8))

    def __init__(self, divisor: int):
        self.divisor = divisor
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        rx = Signal(init=1)
        m.submodules.sync = FFSynchronizer(self.rx, rx, init=1)
        timer = Signal(range(self.divisor * 3 // 2 + 1))
        bit = Signal(range(9))
        shift = Signal(8)
        with m.If(self.bytes.ready):
            m.d.sync += self.bytes.valid.eq(0)
        with m.FSM():
            with m.State("IDLE"):
                with m.If(~rx):
                    # First sample in the middle of bit 0: 1.5 bit times after the edge.
                    m.d.sync += [timer.eq(self.divisor * 3 // 2 - 1), bit.eq(0)]
                    m.next = "DATA"
            with m.State("DATA"):
                with m.If(timer != 0):
                    m.d.sync += timer.eq(timer - 1)
                with m.Elif(bit == 8):
                    # Stop bit: a low line is a framing error, the byte is dropped.
                    with m.If(rx):
                        m.d.sync += [self.bytes.payload.eq(shift), self.bytes.valid.eq(1)]
                    m.next = "IDLE"
                with m.Else():
                    m.d.sync += [shift.eq(Cat(shift[1:], rx)), bit.eq(bit + 1),
                                 timer.eq(self.divisor - 1)]
        return m


class UartTransmitter(wiring.Component):
    """A byte stream ``bytes`` to the ``tx`` pin."""

    bytes: In(stream.Signature(8))
    tx: Out(1, init=1)

    def __init__(self, divisor: int):
        self.divisor = divisor
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        timer = Signal(range(self.divisor))
        frame = Signal(10, init=0x3FF)
        bits = Signal(range(11))
        m.d.comb += self.tx.eq(frame[0])
        with m.If(bits == 0):
            m.d.comb += self.bytes.ready.eq(1)
            with m.If(self.bytes.valid):
                m.d.sync += [frame.eq(Cat(0, self.bytes.payload, 1)), bits.eq(10),
                             timer.eq(self.divisor - 1)]
        with m.Elif(timer != 0):
            m.d.sync += timer.eq(timer - 1)
        with m.Else():
            m.d.sync += [frame.eq(Cat(frame[1:], 1)), bits.eq(bits - 1),
                         timer.eq(self.divisor - 1)]
        return m
