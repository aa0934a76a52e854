"""Board builds.

Open flow (iCE40, ECP5): the board top (:class:`BoardTop`: bridge system + UART pins + an
LED on the interrupt) goes through the amaranth-boards platform to yosys, nextpnr and the
packer, all from PyPI (YoWASP). nextpnr's ``--report`` JSON gives the utilization and the
Fmax; a design that does not fit or misses the board clock fails with the numbers.

Vivado flow (Zynq): :mod:`trilobit.boards.zynq`.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from amaranth import Elaboratable, Module
from amaranth.build import Attrs
from amaranth_boards.resources import SPIResource, UARTResource

from trilobit.boards.presets import BoardPreset
from trilobit.errors import ConfigError, ToolchainError

__all__ = ["BoardTop", "BuildResult", "build_open", "fit_error", "timing_error", "UART_BAUD"]

#: Host link speed of the UART bridge, bits per second (FTDI parts run it on every board).
UART_BAUD = 1_000_000
TOP_NAME = "trilobit"


#: SPI target pins per board (connector, cs_n, clk, copi, cipo), 3.3 V (docs/boards.md).
SPI_PINS = {
    "icebreaker": (("pmod", 0), "1", "4", "2", "3"),
    "ulx3s": (("gpio", 0), "0+", "1+", "2+", "3+"),
    "orangecrab": (("io", 0), "5", "6", "9", "10"),
}
LINKS = ("uart", "spi")
#: yosys ``synth_*`` options per FPGA family (iCE40: multipliers into SB_MAC16). On ECP5,
#: yosys 0.70's abc9 asserts on the core (rtlil.cc:3091 in ABC_OPS_REINTEGRATE) and
#: ``synth_ecp5`` has no other LUT mapper, so synthesis stops before ``map_luts`` and
#: :data:`SCRIPT_AFTER_SYNTH` finishes it with ``abc`` (synth_lattice's remaining steps).
SYNTH_OPTS = {"ice40": "-dsp -dff", "ecp5": "-run :map_luts"}
#: yosys commands right after reading the design. iCE40: the synchronous read ports of the
#: block RAMs may return anything when the same address is written in that cycle. Amaranth
#: asks for the old data there, which yosys emulates around every iCE40 RAM by delaying its
#: writes a cycle and bypassing them to the reads (about 700 logic cells on the iCEBreaker
#: core). The core never uses such a read: its instruction-queue RAM never reads the slot it
#: writes, each unit reads a buffer line only after its own write of it is done, and units
#: touch the same lines only when the program orders them by tokens (otherwise the results
#: are undefined by the ISA anyway); reads nobody takes (idle ports) are ignored.
SCRIPT_AFTER_READ = {
    "ice40": "setparam -set COLLISION_X_MASK 1'1 t:$memrd_v2 r:CLK_ENABLE=1 %i",
    "ecp5": "",
}
SCRIPT_AFTER_SYNTH = {
    "ice40": "",
    "ecp5": "\n".join([
        "techmap -map +/lattice/latches_map.v", "abc -lut 4", "clean",
        "techmap -map +/lattice/cells_map_trellis.v", "opt_lut_ins -tech lattice", "clean",
        "autoname", "hierarchy -check", "stat", "check -noinit", "blackbox =A:whitebox"]),
}
#: nextpnr options per family besides the report. ECP5 routes with router2: on the ULX3S
#: ``small`` build router1 left 103k of 134k arcs congested after 10 minutes, router2
#: finished in about 90 iterations.
NEXTPNR_OPTS = {"ice40": "", "ecp5": "--router router2"}


class BoardTop(Elaboratable):
    """The bridge system on a board's pins: the host link (UART ``rx``/``tx`` or an SPI
    target, :data:`SPI_PINS`), LED 0 shows the interrupt."""

    def __init__(self, board: BoardPreset, link: str = "uart"):
        if link not in LINKS:
            raise ConfigError(f"link must be one of {LINKS}, got {link!r}")
        self.board = board
        self.link = link

    def elaborate(self, platform):
        from amaranth.build import ResourceError
        from amaranth.lib import io, wiring

        from trilobit.hw.bridge_soc import BridgeSoC
        from trilobit.hw.bridge_spi import SpiTarget
        from trilobit.hw.bridge_uart import UartReceiver, UartTransmitter, uart_divisor

        m = Module()
        if self.board.pll is not None:
            _ecp5_pll(m, platform, self.board)
        # The UP5K's 15 KiB of block RAM go to the accelerator's buffers; the shared memory
        # takes two of its SPRAM blocks.
        spram = self.board.family == "ice40"
        m.submodules.soc = soc = BridgeSoC(self.board.config, self.board.memory_bytes, spram)
        if self.link == "uart":
            divisor = uart_divisor(self.board.clock_hz, UART_BAUD)
            uart = platform.request("uart", 0, dir="-")
            m.submodules.uart_rx = uart_rx = io.Buffer("i", uart.rx)
            m.submodules.uart_tx = uart_tx = io.Buffer("o", uart.tx)
            m.submodules.receiver = receiver = UartReceiver(divisor)
            m.submodules.transmitter = transmitter = UartTransmitter(divisor)
            m.d.comb += [receiver.rx.eq(uart_rx.i), uart_tx.o.eq(transmitter.tx)]
            wiring.connect(m, receiver.bytes, soc.rx)
            wiring.connect(m, soc.tx, transmitter.bytes)
        else:
            spi = platform.request("spi_target", 0, dir="-")
            buffers = {name: io.Buffer("i", getattr(spi, name)) for name in ("cs", "clk", "copi")}
            buffers["cipo"] = io.Buffer("o", spi.cipo)
            for name, buffer in buffers.items():
                m.submodules[f"spi_{name}"] = buffer
            m.submodules.spi = target = SpiTarget()
            # cs is declared active low, so its buffer reads high while selected; CIPO is
            # driven only then, so the bus can be shared.
            m.d.comb += [target.sck.eq(buffers["clk"].i), target.cs_n.eq(~buffers["cs"].i),
                         target.mosi.eq(buffers["copi"].i), buffers["cipo"].o.eq(target.miso),
                         buffers["cipo"].oe.eq(buffers["cs"].i),
                         soc.frame_start.eq(target.frame_start)]
            wiring.connect(m, target.rx, soc.rx)
            wiring.connect(m, soc.tx, target.tx)
        try:
            led = platform.request("led", 0, dir="-")
        except ResourceError:  # boards without a plain LED (OrangeCrab: RGB LED) go without
            led = None
        if led is not None:
            m.submodules.led = led_buffer = io.Buffer("o", led)
            m.d.comb += led_buffer.o.eq(soc.irq)
        return m


def _ecp5_pll(m: Module, platform, board: BoardPreset) -> None:
    """Drive the ``sync`` domain from an ECP5 PLL (``EHXPLLL``) at ``board.clock_hz``.

    ``board.pll`` = (CLKI_DIV, CLKFB_DIV, CLKOP_DIV): out = in * CLKFB_DIV / CLKI_DIV, with
    the VCO (out * CLKOP_DIV) in 400..800 MHz and the phase detector (in / CLKI_DIV) at
    least 3.125 MHz. The core's long combinational paths (post-processing) set its Fmax
    well below the boards' oscillators, so it runs from a slower PLL clock.
    """
    from amaranth import ClockDomain, ClockSignal, Instance, Signal
    from amaranth.lib import io
    from amaranth.lib.cdc import ResetSynchronizer

    clki_div, clkfb_div, clkop_div = board.pll
    f_in = platform.default_clk_frequency
    f_out = f_in * clkfb_div / clki_div
    assert abs(f_out - board.clock_hz) < 1, (f_out, board.clock_hz)
    assert 400e6 <= f_out * clkop_div <= 800e6 and f_in / clki_div >= 3.125e6
    clock_in = io.Buffer("i", platform.request(platform.default_clk, dir="-"))
    m.submodules.clock_in = clock_in
    m.domains.sync = ClockDomain("sync")
    locked = Signal()
    pll_clock = Signal()  # a plain signal: clock constraints cannot name a ClockSignal
    m.submodules.pll = Instance(
        "EHXPLLL",
        a_FREQUENCY_PIN_CLKI=f"{f_in / 1e6:g}", a_FREQUENCY_PIN_CLKOP=f"{f_out / 1e6:g}",
        a_ICP_CURRENT="12", a_LPF_RESISTOR="8", a_MFG_ENABLE_FILTEROPAMP="1",
        a_MFG_GMCREF_SEL="2",
        p_PLLRST_ENA="DISABLED", p_INTFB_WAKE="DISABLED", p_STDBY_ENABLE="DISABLED",
        p_DPHASE_SOURCE="DISABLED", p_OUTDIVIDER_MUXA="DIVA", p_CLKOP_ENABLE="ENABLED",
        p_CLKI_DIV=clki_div, p_CLKFB_DIV=clkfb_div, p_CLKOP_DIV=clkop_div,
        p_CLKOP_CPHASE=clkop_div // 2 - 1, p_CLKOP_FPHASE=0, p_FEEDBK_PATH="CLKOP",
        i_RST=0, i_STDBY=0, i_CLKI=clock_in.i, i_CLKFB=pll_clock,
        i_PHASESEL0=0, i_PHASESEL1=0, i_PHASEDIR=0, i_PHASESTEP=0, i_PHASELOADREG=0,
        i_PLLWAKESYNC=0, i_ENCLKOP=0,
        o_CLKOP=pll_clock, o_LOCK=locked)
    m.d.comb += ClockSignal("sync").eq(pll_clock)
    platform.add_clock_constraint(pll_clock, f_out)
    m.submodules.reset_sync = ResetSynchronizer(~locked, domain="sync")


def _platform(board: BoardPreset):
    platform = board.make_platform()
    connector, cs_n, clk, copi, cipo = SPI_PINS[board.name]
    platform.add_resources([SPIResource("spi_target", 0, cs_n=cs_n, clk=clk, copi=copi,
                                        cipo=cipo, conn=connector, role="peripheral",
                                        attrs=Attrs(IO_TYPE="LVCMOS33") if board.family ==
                                        "ecp5" else Attrs())])
    if board.name == "orangecrab":
        # No USB serial bridge on the OrangeCrab: the UART comes out on feather pins 0 (rx)
        # and 1 (tx), wired to a USB-serial adapter or a Raspberry Pi (docs/boards.md).
        platform.add_resources([UARTResource(0, rx="0", tx="1", conn=("io", 0),
                                             attrs=Attrs(IO_TYPE="LVCMOS33"))])
    return platform


@dataclass
class BuildResult:
    """What a board build produced and measured."""

    board: str
    bitstream: Path | None
    utilization: dict[str, tuple[int, int]] = field(default_factory=dict)  # used, available
    fmax_mhz: float = 0.0
    target_mhz: float = 0.0
    seconds: float = 0.0
    verilog: Path | None = None

    def to_dict(self) -> dict:
        return {"board": self.board, "bitstream": str(self.bitstream),
                "utilization": {k: list(v) for k, v in self.utilization.items()},
                "fmax_mhz": self.fmax_mhz, "target_mhz": self.target_mhz,
                "seconds": round(self.seconds, 1), "verilog": str(self.verilog)}


_UTILISATION_LINE = re.compile(r"^Info:\s+(\w+):\s+(\d+)/\s*(\d+)\s+\d+%", re.M)


def _log_utilisation(log: str) -> dict[str, tuple[int, int]]:
    return {name: (int(used), int(avail))
            for name, used, avail in _UTILISATION_LINE.findall(log)}


def fit_error(board: BoardPreset, nextpnr_log: str) -> str | None:
    """Why the design does not fit ``board``, from nextpnr's utilisation lines; else None."""
    usage = _log_utilisation(nextpnr_log)
    over = {k: v for k, v in usage.items() if v[0] > v[1]}
    if not over and "Unable to place" not in nextpnr_log:
        return None
    detail = ", ".join(f"{k} {u}/{a} ({u - a} over, {100 * u / a:.0f}%)"
                       for k, (u, a) in over.items()) or "placement failed"
    return (f"{board.name}: the design does not fit the {board.part}: {detail}. Use a smaller "
            f"config (trilobit.boards.presets)")


def timing_error(board: BoardPreset, fmax_mhz: float, clock_mhz: float) -> str | None:
    """How far the design misses the accelerator clock, or None when it meets it."""
    if fmax_mhz >= clock_mhz:
        return None
    return (f"{board.name}: misses timing: Fmax {fmax_mhz:.1f} MHz < accelerator clock "
            f"{clock_mhz:.1f} MHz (short by {clock_mhz - fmax_mhz:.1f} MHz)")


def build_open(board: BoardPreset, out: Path,
               step: Callable[[str], None] = lambda message: None,
               link: str = "uart") -> BuildResult:
    """Build ``board``'s bitstream in ``out`` with host ``link``; returns measured figures.

    Raises:
        ToolchainError: a tool failed; the design does not fit (which resources, by how
            much); or it misses the board clock (by how many MHz).
    """
    from trilobit.sim.toolchain import yowasp_env

    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    platform = _platform(board)
    step("elaborating and writing Verilog")
    plan = platform.prepare(BoardTop(board, link), name=TOP_NAME,
                            synth_opts=SYNTH_OPTS[board.family],
                            script_after_read=SCRIPT_AFTER_READ[board.family],
                            script_after_synth=SCRIPT_AFTER_SYNTH[board.family],
                            nextpnr_opts="--report report.json --timing-allow-fail "
                                         + NEXTPNR_OPTS[board.family])
    plan.extract(out)
    step("synthesis, place and route, packing (yosys, nextpnr; minutes)")
    # DFU_SUFFIX: the OrangeCrab's script tags the bitstream for its DFU loader; not needed
    # for the .bit file itself.
    env = {**os.environ, **yowasp_env(), "DFU_SUFFIX": "true"}
    done = subprocess.run(["sh", f"build_{TOP_NAME}.sh"], cwd=out, env=env,
                          capture_output=True, text=True)
    (out / "build.log").write_text(done.stdout + done.stderr)
    # Amaranth's script logs nextpnr to NAME.tim.
    log_path = out / f"{TOP_NAME}.tim"
    log = log_path.read_text() if log_path.exists() else ""
    fit = fit_error(board, log)
    if fit is not None:
        raise ToolchainError(f"{fit}; log {log_path}")
    if done.returncode:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-15:])
        raise ToolchainError(f"{board.name}: build failed (exit {done.returncode}); log "
                             f"{out / 'build.log'}\n{tail}")
    report = json.loads((out / "report.json").read_text())
    utilization = {name: (int(v["used"]), int(v["available"]))
                   for name, v in report.get("utilization", {}).items()}
    # The clock with the least margin (Fmax over its constraint) decides.
    fmax = sorted(report.get("fmax", {}).values(),
                  key=lambda clock: clock["achieved"] / clock["constraint"])
    achieved, target = ((fmax[0]["achieved"], fmax[0]["constraint"]) if fmax
                        else (0.0, board.clock_hz / 1e6))
    result = BuildResult(board.name, next(iter(sorted(out.glob(f"{TOP_NAME}.bi*"))), None),
                         utilization, achieved, target, time.monotonic() - start,
                         next(iter(out.glob(f"{TOP_NAME}*.v")), None))
    (out / "build.json").write_text(json.dumps(result.to_dict(), indent=2) + "\n")
    late = timing_error(board, achieved, target)
    if late is not None:
        raise ToolchainError(f"{late}; the bitstream {result.bitstream} would be unreliable")
    return result
