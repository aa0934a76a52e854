"""AXI4 bus adapters of the accelerator (Zynq HP ports): the data master becomes an AXI4
master, the CSRs an AXI4-Lite slave.

:class:`AcceleratorAxi` wraps :class:`trilobit.hw.accel_core.AcceleratorCore` with

* :class:`WishboneToAxi4` - each Wishbone beat of the core becomes one single-beat AXI4
  transaction (``LEN = 0``, ``SIZE = log2(line bytes)``, ``BURST = INCR``, ID 0): a read is an
  AR handshake then an R handshake, a write an AW and a W handshake (in either order) then a
  B handshake; the core's ``ack`` pulses with the R or B handshake. One transaction is
  outstanding at a time. Response codes are ignored (the window check happens before the
  bus, so a decode error means a wrong window).
* :class:`AxiLiteToWishbone` - AXI4-Lite writes (AW + W, then B) and reads (AR, then R) map
  to one Wishbone CSR access each; responses are always OKAY.

Ports are flat: ``m_axi_*`` and ``s_axil_*`` with the AXI signal names, and ``irq``.
"""

from __future__ import annotations

from amaranth import Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from trilobit.config import AcceleratorConfig
from trilobit.hw.accel_core import AcceleratorCore

__all__ = ["AcceleratorAxi", "WishboneToAxi4", "AxiLiteToWishbone", "AXI_ADDR_BITS"]

AXI_ADDR_BITS = 32
CSR_ADDR_BITS = 7  # 32 words of 4 bytes


def axi4_master_ports(width: int) -> dict:
    return {
        "m_axi_awaddr": Out(AXI_ADDR_BITS), "m_axi_awlen": Out(8), "m_axi_awsize": Out(3),
        "m_axi_awburst": Out(2), "m_axi_awvalid": Out(1), "m_axi_awready": In(1),
        "m_axi_wdata": Out(width), "m_axi_wstrb": Out(width // 8), "m_axi_wlast": Out(1),
        "m_axi_wvalid": Out(1), "m_axi_wready": In(1),
        "m_axi_bresp": In(2), "m_axi_bvalid": In(1), "m_axi_bready": Out(1),
        "m_axi_araddr": Out(AXI_ADDR_BITS), "m_axi_arlen": Out(8), "m_axi_arsize": Out(3),
        "m_axi_arburst": Out(2), "m_axi_arvalid": Out(1), "m_axi_arready": In(1),
        "m_axi_rdata": In(width), "m_axi_rresp": In(2), "m_axi_rlast": In(1),
        "m_axi_rvalid": In(1), "m_axi_rready": Out(1),
    }


def axi_lite_slave_ports() -> dict:
    return {
        "s_axil_awaddr": In(CSR_ADDR_BITS), "s_axil_awvalid": In(1), "s_axil_awready": Out(1),
        "s_axil_wdata": In(32), "s_axil_wstrb": In(4), "s_axil_wvalid": In(1),
        "s_axil_wready": Out(1),
        "s_axil_bresp": Out(2), "s_axil_bvalid": Out(1), "s_axil_bready": In(1),
        "s_axil_araddr": In(CSR_ADDR_BITS), "s_axil_arvalid": In(1), "s_axil_arready": Out(1),
        "s_axil_rdata": Out(32), "s_axil_rresp": Out(2), "s_axil_rvalid": Out(1),
        "s_axil_rready": In(1),
    }


class WishboneToAxi4(wiring.Component):
    """Wishbone B4 classic slave (line addresses) -> AXI4 master, one beat per transaction."""

    def __init__(self, width: int):
        self.width = width
        self.lb = (width // 8).bit_length() - 1
        super().__init__({
            "wb_cyc": In(1), "wb_stb": In(1), "wb_we": In(1), "wb_adr": In(32 - self.lb),
            "wb_dat_w": In(width), "wb_dat_r": Out(width), "wb_ack": Out(1),
            **axi4_master_ports(width),
        })

    def elaborate(self, platform):
        m = Module()
        request = self.wb_cyc & self.wb_stb
        byte_address = self.wb_adr << self.lb
        m.d.comb += [
            self.m_axi_awlen.eq(0), self.m_axi_arlen.eq(0),
            self.m_axi_awsize.eq(self.lb), self.m_axi_arsize.eq(self.lb),
            self.m_axi_awburst.eq(1), self.m_axi_arburst.eq(1),
            self.m_axi_wstrb.eq(-1), self.m_axi_wlast.eq(1),
            self.m_axi_awaddr.eq(byte_address), self.m_axi_araddr.eq(byte_address),
            self.m_axi_wdata.eq(self.wb_dat_w),
            self.wb_dat_r.eq(self.m_axi_rdata),
        ]
        aw_done = Signal()
        w_done = Signal()
        with m.FSM(name="axi4_master"):
            with m.State("IDLE"):
                with m.If(request & ~self.wb_we):
                    m.next = "AR"
                with m.Elif(request & self.wb_we):
                    m.d.sync += [aw_done.eq(0), w_done.eq(0)]
                    m.next = "AW_W"
            with m.State("AR"):
                m.d.comb += self.m_axi_arvalid.eq(1)
                with m.If(self.m_axi_arready):
                    m.next = "R"
            with m.State("R"):
                m.d.comb += self.m_axi_rready.eq(1)
                with m.If(self.m_axi_rvalid):
                    # A request abandoned meanwhile (watchdog) gets no acknowledge.
                    m.d.comb += self.wb_ack.eq(request)
                    m.next = "IDLE"
            with m.State("AW_W"):
                m.d.comb += [self.m_axi_awvalid.eq(~aw_done), self.m_axi_wvalid.eq(~w_done)]
                aw_now = aw_done | self.m_axi_awready
                w_now = w_done | self.m_axi_wready
                m.d.sync += [aw_done.eq(aw_now), w_done.eq(w_now)]
                with m.If(aw_now & w_now):
                    m.next = "B"
            with m.State("B"):
                m.d.comb += self.m_axi_bready.eq(1)
                with m.If(self.m_axi_bvalid):
                    m.d.comb += self.wb_ack.eq(request)
                    m.next = "IDLE"
        return m


class AxiLiteToWishbone(wiring.Component):
    """AXI4-Lite slave -> Wishbone B4 classic master for the 32-bit CSR block."""

    def __init__(self):
        super().__init__({
            **axi_lite_slave_ports(),
            "wb_cyc": Out(1), "wb_stb": Out(1), "wb_we": Out(1), "wb_adr": Out(5),
            "wb_dat_w": Out(32), "wb_dat_r": In(32), "wb_ack": In(1),
        })

    def elaborate(self, platform):
        m = Module()
        address = Signal(5)
        data = Signal(32)
        m.d.comb += [self.s_axil_bresp.eq(0), self.s_axil_rresp.eq(0),
                     self.s_axil_rdata.eq(data), self.wb_adr.eq(address),
                     self.wb_dat_w.eq(data)]
        with m.FSM(name="axi_lite_slave"):
            with m.State("IDLE"):
                # Writes take both channels together; reads wait while a write is offered.
                with m.If(self.s_axil_awvalid & self.s_axil_wvalid):
                    m.d.comb += [self.s_axil_awready.eq(1), self.s_axil_wready.eq(1)]
                    m.d.sync += [address.eq(self.s_axil_awaddr[2:]),
                                 data.eq(self.s_axil_wdata)]
                    m.next = "WRITE"
                with m.Elif(self.s_axil_arvalid):
                    m.d.comb += self.s_axil_arready.eq(1)
                    m.d.sync += address.eq(self.s_axil_araddr[2:])
                    m.next = "READ"
            with m.State("WRITE"):
                m.d.comb += [self.wb_cyc.eq(1), self.wb_stb.eq(1), self.wb_we.eq(1)]
                with m.If(self.wb_ack):
                    m.next = "B"
            with m.State("B"):
                m.d.comb += self.s_axil_bvalid.eq(1)
                with m.If(self.s_axil_bready):
                    m.next = "IDLE"
            with m.State("READ"):
                m.d.comb += [self.wb_cyc.eq(1), self.wb_stb.eq(1)]
                with m.If(self.wb_ack):
                    m.d.sync += data.eq(self.wb_dat_r)
                    m.next = "R"
            with m.State("R"):
                m.d.comb += self.s_axil_rvalid.eq(1)
                with m.If(self.s_axil_rready):
                    m.next = "IDLE"
        return m


class AcceleratorAxi(wiring.Component):
    """The accelerator with an AXI4 data master and AXI4-Lite CSRs (``bus = "axi4"``)."""

    def __init__(self, config: AcceleratorConfig):
        self.config = config
        super().__init__({**axi4_master_ports(config.mem_width), **axi_lite_slave_ports(),
                          "irq": Out(1)})

    def elaborate(self, platform):
        m = Module()
        m.submodules.core = core = AcceleratorCore(self.config)
        m.submodules.master = master = WishboneToAxi4(self.config.mem_width)
        m.submodules.csr = csr = AxiLiteToWishbone()
        for name in ("cyc", "stb", "we", "adr", "dat_w"):
            m.d.comb += getattr(master, f"wb_{name}").eq(getattr(core, f"mem_{name}"))
        m.d.comb += [core.mem_dat_r.eq(master.wb_dat_r), core.mem_ack.eq(master.wb_ack)]
        for name in ("cyc", "stb", "we", "adr", "dat_w"):
            m.d.comb += getattr(core, f"csr_{name}").eq(getattr(csr, f"wb_{name}"))
        m.d.comb += [csr.wb_dat_r.eq(core.csr_dat_r), csr.wb_ack.eq(core.csr_ack),
                     self.irq.eq(core.irq)]
        for name, member in axi4_master_ports(self.config.mem_width).items():
            outer, inner = getattr(self, name), getattr(master, name)
            m.d.comb += (inner.eq(outer) if member.flow == wiring.In else outer.eq(inner))
        for name, member in axi_lite_slave_ports().items():
            outer, inner = getattr(self, name), getattr(csr, name)
            m.d.comb += (inner.eq(outer) if member.flow == wiring.In else outer.eq(inner))
        return m
