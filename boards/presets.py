"""Board presets: an :class:`AcceleratorConfig` fitted to each board, and how to build for it.

=============  =====================  ======  =======================================  ========
board          FPGA                   flow    host link / memory                        clock
=============  =====================  ======  =======================================  ========
icebreaker     iCE40 UP5K             open    UART (FTDI) bridge, on-chip 64 KiB SPRAM  12 MHz
ulx3s          ECP5 LFE5U-85F         open    UART (FTDI) bridge, on-chip 256 KiB BRAM  30 MHz
orangecrab     ECP5 LFE5U-25F         open    UART bridge on header pins, 32 KiB BRAM   40 MHz
pynq-z2        Zynq-7020              vivado  AXI4-Lite CSRs (UIO), AXI4 HP0 (u-dma-buf) 20 MHz
kv260          Zynq UltraScale+ K26   vivado  AXI4-Lite CSRs (UIO), AXI4 HP0 (u-dma-buf) 40 MHz
=============  =====================  ======  =======================================  ========

The iCEBreaker runs from its 12 MHz oscillator (the compact core's measured Fmax there:
17.3 MHz). The ECP5 boards run the accelerator from a PLL at or below its measured Fmax (54.9 MHz on
the OrangeCrab for ``tiny``, measured with the PLL at 40 MHz), not from the board
oscillator; ``small`` on the ULX3S routes at 33.6 MHz with the PLL at 30 MHz. The Zynq
clocks are guesses, not measurements (there is no Vivado on the project's machines): check
Vivado's timing report and change ``clock_hz``. The open-flow boards have no CPU: the host
(a PC on the board's USB serial port, or a Raspberry Pi) reaches the accelerator through the bridge
(:mod:`trilobit.hw.bridge_soc`), and programs live in on-chip memory, ``memory_bytes`` of
it. Measured resources and Fmax are in docs/boards.md (``python bench/bench_boards.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

from trilobit.config import PRESETS, AcceleratorConfig, BitSerialParams, TlmmParams
from trilobit.errors import ConfigError

__all__ = ["BoardPreset", "BOARDS", "get_board", "ecp5_pll_dividers"]


@dataclass(frozen=True)
class BoardPreset:
    """A board and the accelerator built for it.

    Attributes:
        name: board name on the command line.
        description: human-readable board and FPGA.
        flow: ``"open"`` (yosys + nextpnr from PyPI, bitstream) or ``"vivado"`` (Verilog, AXI
            wrapper and a Vivado Tcl script; a yosys ``synth_xilinx`` estimate).
        family: ``"ice40"``, ``"ecp5"``, ``"zynq7"`` or ``"zynqmp"``.
        platform: ``module:Class`` of the amaranth-boards platform (open flow), else "".
        part: the FPGA part (Vivado part for the Zynq boards).
        config: the accelerator.
        memory_bytes: on-chip memory behind the bridge (open flow), bytes; 0 on Zynq.
        clock_hz: the accelerator's clock, Hz.
        link: host link: ``"uart"`` or ``"axi"``.
        pll: ECP5 PLL dividers (CLKI_DIV, CLKFB_DIV, CLKOP_DIV) that make ``clock_hz`` from
            the board oscillator, or None to run from the oscillator.
    """

    name: str
    description: str
    flow: str
    family: str
    platform: str
    part: str
    config: AcceleratorConfig
    memory_bytes: int
    clock_hz: float
    link: str
    pll: tuple[int, int, int] | None = None

    def make_platform(self):
        """An instance of the amaranth-boards platform (open flow only)."""
        if self.flow != "open":
            raise ConfigError(f"board {self.name!r} is built with Vivado, not an Amaranth "
                              f"platform")
        import importlib

        module, _, cls = self.platform.partition(":")
        return getattr(importlib.import_module(module), cls)()


def ecp5_pll_dividers(input_hz: float, output_hz: float) -> tuple[int, int, int]:
    """ECP5 ``EHXPLLL`` dividers (CLKI_DIV, CLKFB_DIV, CLKOP_DIV) that make exactly
    ``output_hz`` from ``input_hz``: out = in * CLKFB_DIV / CLKI_DIV, with the phase
    detector (in / CLKI_DIV) at least 3.125 MHz and the VCO (out * CLKOP_DIV) in
    400..800 MHz (Lattice TN1263). The smallest CLKI_DIV wins (least jitter), with the VCO
    nearest the middle of its range.

    Raises:
        ConfigError: no divider set makes ``output_hz`` exactly.
    """
    for clki in range(1, 129):
        if input_hz / clki < 3.125e6:
            break
        clkfb = round(output_hz * clki / input_hz)
        if not 1 <= clkfb <= 128 or abs(input_hz * clkfb / clki - output_hz) > 1:
            continue
        clkops = [op for op in range(1, 129) if 400e6 <= output_hz * op <= 800e6]
        if clkops:
            return clki, clkfb, min(clkops, key=lambda op: abs(output_hz * op - 600e6))
    raise ConfigError(f"no ECP5 PLL setting makes {output_hz / 1e6:g} MHz from "
                      f"{input_hz / 1e6:g} MHz exactly; pick a ratio of small integers")


_ICE40_CONFIG = AcceleratorConfig(
    # UP5K: 5280 logic cells (one LUT4 + one FF each), 30 EBR (15 KiB), 8 DSP, 4 SPRAM.
    # The smallest core: one table-lookup engine of one row (ternary, INT2/INT4 weights; two
    # rows do not fit), the dyadic requantizer only, no performance counters, 3.5 KiB of
    # buffers in EBR (they have a read and a write port, which SPRAM cannot give), the shared
    # memory in two SPRAMs; built compact (area over clock rate: 12 MHz needs none of the
    # pipeline registers). `trilobit build --board icebreaker`: ICESTORM_LC 4749/5280
    # (89.9 %), EBR 24/30, DSP 2/8, SPRAM 2/4, Fmax 17.3 MHz, 203 s (docs/boards.md).
    name="icebreaker",
    tlmm=TlmmParams(group_size=2, rows=1, units=1),
    bitserial=None,
    mem_width=32, bus="wishbone",
    inp_bytes=512, wgt_bytes=1024, acc_bytes=1024, out_bytes=512, param_bytes=512,
    queue_depth=2, token_depth=4,
    requant_modes=("dyadic",), perf_counters=False, compact=True,
    # 17-bit byte addresses: the 64 KiB memory and a window limit at its end (2**16).
    addr_bits=17,
)

# `large` with half the bit-serial channels: the 32-channel x 16-lane engine alone is most of
# `large`, which the yosys estimate puts at 113 % of the K26's LUTs (docs/boards.md).
_KV260_CONFIG = PRESETS["large"].replace(
    name="kv260", bitserial=BitSerialParams(rows=16, lanes=16, bits_per_cycle=2, group_size=128))

BOARDS: dict[str, BoardPreset] = {
    "icebreaker": BoardPreset(
        "icebreaker", "iCEBreaker (Lattice iCE40 UP5K)", "open", "ice40",
        "amaranth_boards.icebreaker:ICEBreakerPlatform", "iCE40UP5K-SG48",
        _ICE40_CONFIG, 1 << 16, 12e6, "uart"),
    "ulx3s": BoardPreset(
        "ulx3s", "ULX3S (Lattice ECP5 LFE5U-85F)", "open", "ecp5",
        "amaranth_boards.ulx3s:ULX3S_85F_Platform", "LFE5U-85F-6BG381C",
        PRESETS["small"].replace(name="ulx3s"), 1 << 18, 30e6, "uart",
        ecp5_pll_dividers(25e6, 30e6)),
    "orangecrab": BoardPreset(
        "orangecrab", "OrangeCrab r0.2 (Lattice ECP5 LFE5U-25F)", "open", "ecp5",
        "amaranth_boards.orangecrab_r0_2:OrangeCrabR0_2_25FPlatform", "LFE5U-25F-8MG285C",
        PRESETS["tiny"].replace(name="orangecrab"), 1 << 15, 40e6, "uart",
        ecp5_pll_dividers(48e6, 40e6)),
    "pynq-z2": BoardPreset(
        "pynq-z2", "PYNQ-Z2 (AMD Zynq-7020)", "vivado", "zynq7", "", "xc7z020clg400-1",
        PRESETS["small"].replace(name="pynq-z2", bus="axi4"), 0, 20e6, "axi"),
    "kv260": BoardPreset(
        "kv260", "Kria KV260 (AMD Zynq UltraScale+ K26)", "vivado", "zynqmp", "",
        "xck26-sfvc784-2LV-c", _KV260_CONFIG, 0, 40e6, "axi"),
}


def get_board(name: str) -> BoardPreset:
    """The preset of board ``name``; ConfigError listing the boards otherwise."""
    try:
        return BOARDS[name]
    except KeyError:
        raise ConfigError(f"board must be one of {sorted(BOARDS)}, got {name!r}") from None
