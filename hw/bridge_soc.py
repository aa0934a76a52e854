"""The accelerator system of a CPU-less board: accelerator core, on-chip memory, host bridge.

::

    host link bytes ──► HostBridge ──csr──► AcceleratorCore ──mem (mem_width)──┐
                           └──────────mem (32-bit)──► SharedMemory ◄───────────┘

iCE40 and ECP5 boards have little or no external memory a small design can use without a
controller, so the program image, the inputs and the outputs live in one on-chip memory
(:class:`SharedMemory`, block RAM, or SPRAM where synthesis infers it) at bus address 0.
The accelerator reads and writes whole lines; the bridge reads and writes 32-bit words of
the same memory. The host therefore sees the same address space as the accelerator, and the
driver uses bus base 0.
"""


from amaranth import ClockSignal, Const, Instance, Module, Signal, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from trilobit.config import AcceleratorConfig
from trilobit.errors import ConfigError
from trilobit.hw.accel_core import AcceleratorCore
from trilobit.hw.bridge_host import HostBridge

__all__ = ["SharedMemory", "BridgeSoC", "check_memory"]


def _log2(x: int) -> int:
    return x.bit_length() - 1


def check_memory(width: int, size_bytes: int) -> None:
    """ConfigError unless ``width`` is 32/64/128 bits and ``size_bytes`` a power of two of at
    least one line and at most 16 MiB."""
    if width not in (32, 64, 128):
        raise ConfigError(f"memory width must be 32, 64 or 128 bits, got {width}")
    line = width // 8
    if not line <= size_bytes <= 1 << 24 or size_bytes & (size_bytes - 1):
        raise ConfigError(f"memory_bytes must be a power of two in {line}..{1 << 24}, "
                          f"got {size_bytes}")


class _PortSignals:
    """Address, data and lane enables of a memory port built from primitives."""

    def __init__(self, width: int, index_bits: int, lanes: int):
        self.addr = Signal(index_bits)
        self.data = Signal(width)
        self.en = Signal(lanes)


class SharedMemory(wiring.Component):
    """One memory of ``size_bytes`` with two Wishbone B4 classic slave ports.

    * ``a_*``: ``width`` bits, line addresses (the accelerator's data master), full lines.
    * ``b_*``: 32 bits, word addresses (the host bridge).

    One access per two cycles: the request cycle (address to the memory, write happens at
    its end) and the ``ack`` cycle (read data valid). Port A wins when both request in the
    same cycle. Address bits above the memory size are ignored (the accelerator's window
    and the driver's bounds checks keep accesses inside).

    ``spram=True`` builds the 32-bit, 64 KiB memory from two iCE40 UP5K SPRAM blocks
    (``SB_SPRAM256KA``, 16 Ki x 16 bits each, output registered like a read port) instead
    of block RAM, which the UP5K has only 15 KiB of. Synthesis only: simulators do not
    have the primitive.
    """

    def __init__(self, width: int, size_bytes: int, spram: bool = False):
        check_memory(width, size_bytes)
        if spram and (width, size_bytes) != (32, 1 << 16):
            raise ConfigError(f"an SPRAM memory is 32 bits wide and 65536 bytes, got {width} "
                              f"bits and {size_bytes} bytes")
        line = width // 8
        self.spram = spram
        self.width = width
        self.size_bytes = size_bytes
        self.depth = size_bytes // line
        super().__init__({
            "a_cyc": In(1), "a_stb": In(1), "a_we": In(1), "a_adr": In(32 - _log2(line)),
            "a_dat_w": In(width), "a_dat_r": Out(width), "a_ack": Out(1),
            "b_cyc": In(1), "b_stb": In(1), "b_we": In(1), "b_adr": In(30),
            "b_dat_w": In(32), "b_dat_r": Out(32), "b_ack": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        lanes = self.width // 32
        lane_bits = _log2(lanes)
        index_bits = max(1, _log2(self.depth))
        if self.spram:
            read = _PortSignals(self.width, index_bits, lanes)
            write = _PortSignals(self.width, index_bits, lanes)
            for half in range(2):
                m.submodules[f"spram{half}"] = Instance(
                    "SB_SPRAM256KA",
                    i_ADDRESS=write.addr, i_DATAIN=write.data[16 * half : 16 * half + 16],
                    i_MASKWREN=Const(0b1111, 4), i_WREN=write.en[0], i_CHIPSELECT=1,
                    i_CLOCK=ClockSignal(), i_STANDBY=0, i_SLEEP=0, i_POWEROFF=1,
                    o_DATAOUT=read.data[16 * half : 16 * half + 16])
            # One address for reads and writes: the request logic below gives both the same.
        else:
            m.submodules.storage = storage = Memory(shape=unsigned(self.width),
                                                    depth=self.depth, init=[])
            read = storage.read_port()
            write = storage.write_port(granularity=32)

        a_request = self.a_cyc & self.a_stb & ~self.a_ack
        b_request = self.b_cyc & self.b_stb & ~self.b_ack
        b_lane = Signal(max(1, lane_bits))
        b_lane_held = Signal.like(b_lane)
        if lanes > 1:
            m.d.comb += b_lane.eq(self.b_adr[:lane_bits])
        b_line = self.b_adr[lane_bits:] if lanes > 1 else self.b_adr

        # The read port has one cycle latency: it sees the address in the request cycle and
        # its data is valid in the ack cycle.
        with m.If(a_request):
            m.d.comb += [read.addr.eq(self.a_adr[:index_bits]),
                         write.addr.eq(self.a_adr[:index_bits]),
                         write.data.eq(self.a_dat_w)]
            with m.If(self.a_we):
                m.d.comb += write.en.eq((1 << lanes) - 1)
            m.d.sync += self.a_ack.eq(1)
        with m.Elif(b_request):
            m.d.comb += [read.addr.eq(b_line[:index_bits]),
                         write.addr.eq(b_line[:index_bits]),
                         write.data.eq(self.b_dat_w.replicate(lanes))]
            with m.If(self.b_we):
                m.d.comb += write.en.eq(1 << b_lane)
            m.d.sync += [self.b_ack.eq(1), b_lane_held.eq(b_lane)]
        with m.If(self.a_ack):
            m.d.sync += self.a_ack.eq(0)
        with m.If(self.b_ack):
            m.d.sync += self.b_ack.eq(0)
        m.d.comb += [self.a_dat_r.eq(read.data),
                     self.b_dat_r.eq(read.data.word_select(b_lane_held, 32))]
        return m


class BridgeSoC(wiring.Component):
    """Accelerator + on-chip memory + host bridge, with a byte-stream host link.

    Args:
        config: the accelerator.
        memory_bytes: size of the on-chip memory (power of two), bytes.
        spram: build the memory from iCE40 UP5K SPRAM (see :class:`SharedMemory`).

    Ports: ``rx``/``tx`` byte streams and ``frame_start`` as in :class:`HostBridge`, and
    ``irq`` (the accelerator's interrupt, for an LED or a host GPIO).
    """

    rx: In(stream.Signature(8))
    tx: Out(stream.Signature(8))
    frame_start: In(1)
    irq: Out(1)

    def __init__(self, config: AcceleratorConfig, memory_bytes: int, spram: bool = False):
        self.config = config
        self.memory_bytes = memory_bytes
        self.spram = spram
        check_memory(config.mem_width, memory_bytes)
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        m.submodules.core = core = AcceleratorCore(self.config)
        m.submodules.bridge = bridge = HostBridge()
        m.submodules.memory = memory = SharedMemory(self.config.mem_width, self.memory_bytes,
                                                    self.spram)
        wiring.connect(m, wiring.flipped(self.rx), bridge.rx)
        wiring.connect(m, bridge.tx, wiring.flipped(self.tx))
        m.d.comb += [
            bridge.frame_start.eq(self.frame_start),
            bridge.irq.eq(core.irq),
            self.irq.eq(core.irq),
            # bridge -> CSRs
            core.csr_cyc.eq(bridge.csr_cyc), core.csr_stb.eq(bridge.csr_stb),
            core.csr_we.eq(bridge.csr_we), core.csr_adr.eq(bridge.csr_adr),
            core.csr_dat_w.eq(bridge.csr_dat_w),
            bridge.csr_dat_r.eq(core.csr_dat_r), bridge.csr_ack.eq(core.csr_ack),
            # accelerator -> memory port A
            memory.a_cyc.eq(core.mem_cyc), memory.a_stb.eq(core.mem_stb),
            memory.a_we.eq(core.mem_we), memory.a_adr.eq(core.mem_adr),
            memory.a_dat_w.eq(core.mem_dat_w),
            core.mem_dat_r.eq(memory.a_dat_r), core.mem_ack.eq(memory.a_ack),
            # bridge -> memory port B
            memory.b_cyc.eq(bridge.mem_cyc), memory.b_stb.eq(bridge.mem_stb),
            memory.b_we.eq(bridge.mem_we), memory.b_adr.eq(bridge.mem_adr),
            memory.b_dat_w.eq(bridge.mem_dat_w),
            bridge.mem_dat_r.eq(memory.b_dat_r), bridge.mem_ack.eq(memory.b_ack),
        ]
        return m
