"""AXI adapters of the accelerator for the Zynq boards.

* :class:`AxiLiteCsrAdapter`: an AXI4-Lite slave (the processor's general-purpose master
  port) in front of the accelerator's Wishbone CSR slave.
* :class:`AxiMasterAdapter`: the accelerator's Wishbone data master as an AXI4 master (a
  high-performance port into DDR): single-beat transfers (``len`` 0), INCR, ID 0, all byte
  lanes, one outstanding transfer; a slave error is not reported (the memory window and
  the driver's bounds checks keep transfers inside the DMA buffer).
* :class:`AxiAccelerator`: the core with both adapters, flat ports ``s_axi_*`` and
  ``m_axi_*`` that Vivado recognises as AXI interfaces, and ``irq``.
"""

from amaranth import Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out
from trilobit.hw.accel_core import AcceleratorCore

from trilobit.config import AcceleratorConfig

__all__ = ["AxiLiteCsrAdapter", "AxiMasterAdapter", "AxiAccelerator", "CSR_ADDRESS_BITS"]

#: Byte address bits of the CSR window (32 registers of 4 bytes).
CSR_ADDRESS_BITS = 7


def _axi_lite_slave(address_bits: int) -> dict:
    return {
        "s_axi_awaddr": In(address_bits), "s_axi_awvalid": In(1), "s_axi_awready": Out(1),
        "s_axi_wdata": In(32), "s_axi_wstrb": In(4), "s_axi_wvalid": In(1),
        "s_axi_wready": Out(1),
        "s_axi_bresp": Out(2), "s_axi_bvalid": Out(1), "s_axi_bready": In(1),
        "s_axi_araddr": In(address_bits), "s_axi_arvalid": In(1), "s_axi_arready": Out(1),
        "s_axi_rdata": Out(32), "s_axi_rresp": Out(2), "s_axi_rvalid": Out(1),
        "s_axi_rready": In(1),
    }


def _axi_master(width: int) -> dict:
    return {
        "m_axi_awaddr": Out(32), "m_axi_awlen": Out(8), "m_axi_awsize": Out(3),
        "m_axi_awburst": Out(2), "m_axi_awvalid": Out(1), "m_axi_awready": In(1),
        "m_axi_wdata": Out(width), "m_axi_wstrb": Out(width // 8), "m_axi_wlast": Out(1),
        "m_axi_wvalid": Out(1), "m_axi_wready": In(1),
        "m_axi_bresp": In(2), "m_axi_bvalid": In(1), "m_axi_bready": Out(1),
        "m_axi_araddr": Out(32), "m_axi_arlen": Out(8), "m_axi_arsize": Out(3),
        "m_axi_arburst": Out(2), "m_axi_arvalid": Out(1), "m_axi_arready": In(1),
        "m_axi_rdata": In(width), "m_axi_rresp": In(2), "m_axi_rlast": In(1),
        "m_axi_rvalid": In(1), "m_axi_rready": Out(1),
    }


def _wishbone_csr_master() -> dict:
    return {"csr_cyc": Out(1), "csr_stb": Out(1), "csr_we": Out(1), "csr_adr": Out(5),
            "csr_dat_w": Out(32), "csr_dat_r": In(32), "csr_ack": In(1)}


class AxiLiteCsrAdapter(wiring.Component):
    """AXI4-Lite slave to Wishbone CSR master; one transaction at a time, writes first.

    A write takes AW and W together (both must be valid), then answers on B; a read takes
    AR, then answers on R. Responses are OKAY.
    """

    def __init__(self):
        super().__init__({**_axi_lite_slave(CSR_ADDRESS_BITS), **_wishbone_csr_master()})

    def elaborate(self, platform):
        m = Module()
        address = Signal(CSR_ADDRESS_BITS)
        m.d.comb += self.csr_adr.eq(address[2:])
        with m.FSM():
            with m.State("IDLE"):
                with m.If(self.s_axi_awvalid & self.s_axi_wvalid):
                    m.d.comb += [self.s_axi_awready.eq(1), self.s_axi_wready.eq(1)]
                    m.d.sync += [address.eq(self.s_axi_awaddr),
                                 self.csr_dat_w.eq(self.s_axi_wdata)]
                    m.next = "WRITE"
                with m.Elif(self.s_axi_arvalid):
                    m.d.comb += self.s_axi_arready.eq(1)
                    m.d.sync += address.eq(self.s_axi_araddr)
                    m.next = "READ"
            with m.State("WRITE"):
                m.d.comb += [self.csr_cyc.eq(1), self.csr_stb.eq(1), self.csr_we.eq(1)]
                with m.If(self.csr_ack):
                    m.next = "B"
            with m.State("B"):
                m.d.comb += self.s_axi_bvalid.eq(1)
                with m.If(self.s_axi_bready):
                    m.next = "IDLE"
            with m.State("READ"):
                m.d.comb += [self.csr_cyc.eq(1), self.csr_stb.eq(1)]
                with m.If(self.csr_ack):
                    m.d.sync += self.s_axi_rdata.eq(self.csr_dat_r)
                    m.next = "R"
            with m.State("R"):
                m.d.comb += self.s_axi_rvalid.eq(1)
                with m.If(self.s_axi_rready):
                    m.next = "IDLE"
        return m


class AxiMasterAdapter(wiring.Component):
    """Wishbone B4 classic slave (line addresses, ``width`` bits) to an AXI4 master."""

    def __init__(self, width: int):
        self.width = width
        self.line_bits = (width // 8).bit_length() - 1
        super().__init__({
            "mem_cyc": In(1), "mem_stb": In(1), "mem_we": In(1),
            "mem_adr": In(32 - self.line_bits), "mem_dat_w": In(width),
            "mem_dat_r": Out(width), "mem_ack": Out(1),
            **_axi_master(width),
        })

    def elaborate(self, platform):
        m = Module()
        size = self.line_bits  # AxSIZE: log2 bytes per beat
        byte_address = Signal(32)
        m.d.comb += [
            byte_address.eq(self.mem_adr << self.line_bits),
            self.m_axi_awaddr.eq(byte_address), self.m_axi_araddr.eq(byte_address),
            self.m_axi_awlen.eq(0), self.m_axi_arlen.eq(0),
            self.m_axi_awsize.eq(size), self.m_axi_arsize.eq(size),
            self.m_axi_awburst.eq(1), self.m_axi_arburst.eq(1),
            self.m_axi_wdata.eq(self.mem_dat_w),
            self.m_axi_wstrb.eq((1 << (self.width // 8)) - 1), self.m_axi_wlast.eq(1),
        ]
        aw_done = Signal()
        w_done = Signal()
        request = self.mem_cyc & self.mem_stb
        with m.FSM():
            with m.State("IDLE"):
                with m.If(request & self.mem_we):
                    m.d.sync += [aw_done.eq(0), w_done.eq(0)]
                    m.next = "WRITE"
                with m.Elif(request):
                    m.next = "READ_ADDRESS"
            with m.State("WRITE"):
                # Address and data go out independently; both must be taken before B.
                m.d.comb += [self.m_axi_awvalid.eq(~aw_done), self.m_axi_wvalid.eq(~w_done)]
                aw_now = aw_done | self.m_axi_awready
                w_now = w_done | self.m_axi_wready
                m.d.sync += [aw_done.eq(aw_now), w_done.eq(w_now)]
                with m.If(aw_now & w_now):
                    m.next = "WRITE_RESPONSE"
            with m.State("WRITE_RESPONSE"):
                m.d.comb += self.m_axi_bready.eq(1)
                with m.If(self.m_axi_bvalid):
                    m.d.comb += self.mem_ack.eq(1)
                    m.next = "IDLE"
            with m.State("READ_ADDRESS"):
                m.d.comb += self.m_axi_arvalid.eq(1)
                with m.If(self.m_axi_arready):
                    m.next = "READ_DATA"
            with m.State("READ_DATA"):
                m.d.comb += [self.m_axi_rready.eq(1), self.mem_dat_r.eq(self.m_axi_rdata)]
                with m.If(self.m_axi_rvalid):
                    m.d.comb += self.mem_ack.eq(1)
                    m.next = "IDLE"
        return m


class AxiAccelerator(wiring.Component):
    """The accelerator for a Zynq: AXI4-Lite CSRs, AXI4 data master, ``irq``."""

    def __init__(self, config: AcceleratorConfig):
        self.config = config
        super().__init__({**_axi_lite_slave(CSR_ADDRESS_BITS), **_axi_master(config.mem_width),
                          "irq": Out(1)})

    def elaborate(self, platform):
        m = Module()
        m.submodules.core = core = AcceleratorCore(self.config)
        m.submodules.csr = csr = AxiLiteCsrAdapter()
        m.submodules.data = data = AxiMasterAdapter(self.config.mem_width)
        for name in _wishbone_csr_master():
            if name in ("csr_dat_r", "csr_ack"):
                m.d.comb += getattr(csr, name).eq(getattr(core, name))
            else:
                m.d.comb += getattr(core, name).eq(getattr(csr, name))
        for name in ("mem_cyc", "mem_stb", "mem_we", "mem_adr", "mem_dat_w"):
            m.d.comb += getattr(data, name).eq(getattr(core, name))
        m.d.comb += [core.mem_dat_r.eq(data.mem_dat_r), core.mem_ack.eq(data.mem_ack),
                     self.irq.eq(core.irq)]
        for name, member in _axi_lite_slave(CSR_ADDRESS_BITS).items():
            if member.flow == wiring.In:
                m.d.comb += getattr(csr, name).eq(getattr(self, name))
            else:
                m.d.comb += getattr(self, name).eq(getattr(csr, name))
        for name, member in _axi_master(self.config.mem_width).items():
            if member.flow == wiring.In:
                m.d.comb += getattr(data, name).eq(getattr(self, name))
            else:
                m.d.comb += getattr(self, name).eq(getattr(data, name))
        return m
