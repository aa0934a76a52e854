"""Host bridge: a byte stream from a Linux computer (UART or SPI) to the accelerator's CSR bus
and to the board's on-chip memory, speaking :mod:`trilobit.hw.bridge_protocol`.

The bridge is the CPU of a CPU-less board as far as the accelerator is concerned: it writes
the CSRs, fills the memory with the program image and the inputs, waits for the interrupt
and reads the outputs back. The physical link (:mod:`trilobit.hw.bridge_uart`,
:mod:`trilobit.hw.bridge_spi`) only moves bytes; everything here is link independent.
"""


from amaranth import Cat, Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from trilobit.hw.bridge_protocol import HEADER_BYTES, Command, Reply

__all__ = ["HostBridge"]


class HostBridge(wiring.Component):
    """Parse requests from ``rx``, perform them on the buses, reply on ``tx``.

    Ports:
        rx: request bytes (stream of 8 bits). ``ready`` is low while a request is being
            executed; a link that cannot hold bytes back (SPI) drops them, which is why a
            SPI host only sends zeros (``NOP``) while it waits for a reply.
        tx: reply bytes (stream of 8 bits).
        frame_start: a pulse that discards a partly received header (SPI chip-select
            edge); a request whose header is complete is not affected.
        csr_*: Wishbone B4 classic master, 32-bit, word addresses (5 bits), to the
            accelerator's CSR slave.
        mem_*: Wishbone B4 classic master, 32-bit, word addresses (30 bits), to memory.
        irq: the accelerator's interrupt line (``WAIT_IRQ`` returns when it is high).

    One bus transfer at a time; each waits for ``ack`` as long as the slave takes.
    """

    rx: In(stream.Signature(8))
    tx: Out(stream.Signature(8))
    frame_start: In(1)
    csr_cyc: Out(1)
    csr_stb: Out(1)
    csr_we: Out(1)
    csr_adr: Out(5)
    csr_dat_w: Out(32)
    csr_dat_r: In(32)
    csr_ack: In(1)
    mem_cyc: Out(1)
    mem_stb: Out(1)
    mem_we: Out(1)
    mem_adr: Out(30)
    mem_dat_w: Out(32)
    mem_dat_r: In(32)
    mem_ack: In(1)
    irq: In(1)

    def elaborate(self, platform):
        m = Module()

        # The header's bytes shift in where the request keeps them: command, address (byte
        # address, or the cycle budget of WAIT_IRQ), count (words left); no second copy.
        header = Signal(8 * HEADER_BYTES)
        header_count = Signal(range(HEADER_BYTES + 1))
        command = header[0:8]
        address = header[8:40]
        count = header[40:56]
        word = Signal(32)
        byte_index = Signal(2)
        reply = Signal(8)
        to_csr = Signal()  # which bus the current request uses

        bus_access = Signal()
        bus_write = Signal()
        bus_ack = Signal()
        bus_data_r = Signal(32)
        m.d.comb += [
            self.csr_cyc.eq(bus_access & to_csr),
            self.csr_stb.eq(bus_access & to_csr),
            self.csr_we.eq(bus_write),
            self.csr_adr.eq(address[2:7]),
            self.csr_dat_w.eq(word),
            self.mem_cyc.eq(bus_access & ~to_csr),
            self.mem_stb.eq(bus_access & ~to_csr),
            self.mem_we.eq(bus_write),
            self.mem_adr.eq(address[2:32]),
            self.mem_dat_w.eq(word),
            bus_ack.eq(Mux(to_csr, self.csr_ack, self.mem_ack)),
            bus_data_r.eq(Mux(to_csr, self.csr_dat_r, self.mem_dat_r)),
        ]

        # One adder steps the address: the next word (+4), or WAIT_IRQ's budget (-1).
        waiting = Signal()
        address_step = Signal(32)
        m.d.comb += address_step.eq(address + Mux(waiting, 0xFFFF_FFFF, 4))

        with m.FSM():
            with m.State("HEADER"):
                # Collect 7 bytes, the first one ending up in the low byte.
                m.d.comb += self.rx.ready.eq(1)
                with m.If(self.frame_start):
                    m.d.sync += header_count.eq(0)
                with m.Elif(self.rx.valid):
                    m.d.sync += header.eq(Cat(header[8:], self.rx.payload))
                    with m.If(header_count == HEADER_BYTES - 1):
                        m.d.sync += header_count.eq(0)
                        m.next = "DISPATCH"
                    with m.Else():
                        m.d.sync += header_count.eq(header_count + 1)

            with m.State("DISPATCH"):
                m.d.sync += [
                    address[:2].eq(0),  # word aligned (WAIT_IRQ: the budget, kept whole)
                    to_csr.eq((command == Command.CSR_READ) | (command == Command.CSR_WRITE)),
                ]
                with m.Switch(command):
                    with m.Case(Command.NOP):
                        m.next = "HEADER"
                    with m.Case(Command.CSR_READ, Command.MEM_READ):
                        m.d.sync += reply.eq(Reply.ACK)
                        m.next = "READ_STATUS"
                    with m.Case(Command.CSR_WRITE, Command.MEM_WRITE):
                        m.d.sync += reply.eq(Reply.ACK)
                        with m.If(count == 0):
                            m.next = "REPLY"
                        with m.Else():
                            m.next = "RECEIVE_WORD"
                    with m.Case(Command.WAIT_IRQ):
                        m.d.sync += address[:2].eq(address[:2])  # the budget, not aligned
                        m.next = "WAIT_IRQ"
                    with m.Default():
                        m.d.sync += reply.eq(Reply.NAK)
                        m.next = "REPLY"

            with m.State("REPLY"):
                # Status byte of a write, WAIT_IRQ or unknown command; then the next request.
                m.d.comb += [self.tx.valid.eq(1), self.tx.payload.eq(reply)]
                with m.If(self.tx.ready):
                    m.next = "HEADER"

            # -- reads: ACK, then for each word one bus read and 4 bytes out -------------
            with m.State("READ_STATUS"):
                m.d.comb += [self.tx.valid.eq(1), self.tx.payload.eq(reply)]
                with m.If(self.tx.ready):
                    m.next = "READ_BUS"
            with m.State("READ_BUS"):
                with m.If(count == 0):
                    m.next = "HEADER"
                with m.Else():
                    m.d.comb += bus_access.eq(1)
                    with m.If(bus_ack):
                        m.d.sync += [word.eq(bus_data_r), byte_index.eq(0)]
                        m.next = "SEND_WORD"
            with m.State("SEND_WORD"):
                m.d.comb += [self.tx.valid.eq(1),
                             self.tx.payload.eq(word.word_select(byte_index, 8))]
                with m.If(self.tx.ready):
                    m.d.sync += byte_index.eq(byte_index + 1)
                    with m.If(byte_index == 3):
                        m.d.sync += [address.eq(address_step), count.eq(count - 1)]
                        m.next = "READ_BUS"

            # -- writes: for each word 4 bytes in and one bus write, then ACK ------------
            with m.State("RECEIVE_WORD"):
                m.d.comb += self.rx.ready.eq(1)
                with m.If(self.rx.valid):
                    m.d.sync += [word.eq(Cat(word[8:], self.rx.payload)),
                                 byte_index.eq(byte_index + 1)]
                    with m.If(byte_index == 3):
                        m.next = "WRITE_BUS"
            with m.State("WRITE_BUS"):
                m.d.comb += [bus_access.eq(1), bus_write.eq(1)]
                with m.If(bus_ack):
                    m.d.sync += [address.eq(address_step), count.eq(count - 1)]
                    with m.If(count == 1):
                        m.next = "REPLY"
                    with m.Else():
                        m.next = "RECEIVE_WORD"

            # -- WAIT_IRQ: the interrupt or the budget, whichever comes first -----------
            with m.State("WAIT_IRQ"):
                m.d.comb += waiting.eq(1)
                with m.If(self.irq):
                    m.d.sync += reply.eq(Reply.ACK)
                    m.next = "REPLY"
                with m.Elif(address == 0):
                    m.d.sync += reply.eq(Reply.TIMEOUT)
                    m.next = "REPLY"
                with m.Else():
                    m.d.sync += address.eq(address_step)
        return m
