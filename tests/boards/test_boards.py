"""Board presets, reproducible Verilog, the build command, the UART link and the Zynq sources."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from amaranth.sim import Simulator

from trilobit.boards import BOARDS, get_board
from trilobit.boards.zynq import TOP, build_zynq, vivado_tcl
from trilobit.cli import build_parser
from trilobit.config import preset
from trilobit.errors import ConfigError
from trilobit.hw.bridge_soc import BridgeSoC
from trilobit.hw.bridge_uart import UartReceiver, UartTransmitter, uart_divisor
from trilobit.sim.toolchain import verilog_for


@pytest.mark.parametrize("name", sorted(BOARDS))
def test_each_board_has_a_valid_config_and_a_memory_that_holds_its_buffers(name):
    board = get_board(name)
    assert board.config.name == name
    assert board.flow in ("open", "vivado")
    if board.flow == "open":
        assert board.config.bus == "wishbone" and board.memory_bytes >= 1 << 15
        oscillator = board.make_platform().default_clk_frequency
        ratio = board.pll[1] / board.pll[0] if board.pll else 1  # PLL: in * CLKFB / CLKI
        assert board.clock_hz == pytest.approx(oscillator * ratio)
    else:
        assert board.config.bus == "axi4" and board.memory_bytes == 0


def test_unknown_board_lists_the_boards():
    with pytest.raises(ConfigError, match="board must be one of"):
        get_board("de10-nano")


def test_same_config_gives_byte_identical_verilog():
    config = get_board("icebreaker").config
    first = verilog_for(BridgeSoC(config, 1 << 16), "trilobit")
    second = verilog_for(BridgeSoC(config.replace(name="renamed"), 1 << 16), "trilobit")
    assert hashlib.sha256(first.encode()).digest() == hashlib.sha256(second.encode()).digest()


def test_build_command_is_registered_with_every_board():
    args = build_parser().parse_args(["build", "--board", "ulx3s"])
    assert args.board == "ulx3s" and callable(args.handler)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["build", "--board", "nosuch"])


def test_zynq_sources_name_the_part_the_ports_and_say_vivado_is_needed(tmp_path):
    board = get_board("pynq-z2")
    manifest = build_zynq(board, tmp_path, estimate=False)
    assert "Vivado is needed" in manifest["note"]
    verilog = (tmp_path / f"{TOP}.v").read_text()
    for port in ("s_axil_awaddr", "s_axil_rdata", "m_axi_araddr", "m_axi_wdata", "irq"):
        assert f" {port}" in verilog
    tcl = vivado_tcl(board)
    assert "xc7z020clg400-1" in tcl and "S_AXI_HP0" in tcl and "IRQ_F2P" in tcl
    kv260 = vivado_tcl(get_board("kv260"))
    assert "xck26-sfvc784-2LV-c" in kv260 and "pl_ps_irq0" in kv260


def test_uart_divisor_rejects_rates_the_clock_cannot_make():
    assert uart_divisor(12e6, 1_000_000) == 12
    with pytest.raises(ConfigError, match="baud"):
        uart_divisor(12e6, 4_000_000)


def test_uart_transmitter_and_receiver_carry_random_bytes_back_to_back():
    divisor = 5
    rng = np.random.default_rng(3)
    payload = [0x00, 0xFF, 0x55, 0xAA] + [int(b) for b in rng.integers(0, 256, 20)]
    from amaranth import Module

    m = Module()
    m.submodules.tx = tx = UartTransmitter(divisor)
    m.submodules.rx = rx = UartReceiver(divisor)
    m.d.comb += rx.rx.eq(tx.tx)
    received = []

    async def send(ctx):
        for value in payload:
            ctx.set(tx.bytes.payload, value)
            ctx.set(tx.bytes.valid, 1)
            await ctx.tick().until(tx.bytes.ready)
            ctx.set(tx.bytes.valid, 0)

    async def receive(ctx):
        ctx.set(rx.bytes.ready, 1)
        while len(received) < len(payload):
            _, _, valid, data = await ctx.tick().sample(rx.bytes.valid, rx.bytes.payload)
            if valid:
                received.append(data)

    sim = Simulator(m)
    sim.add_clock(1e-6)
    sim.add_testbench(send)
    sim.add_testbench(receive)
    sim.run_until(1e-6 * divisor * 10 * (len(payload) + 4))
    assert received == payload


def test_preset_configs_match_the_project_presets_where_shared():
    assert get_board("ulx3s").config.hash() == preset("small").hash()
    assert get_board("orangecrab").config.hash() == preset("tiny").hash()
    # The KV260 keeps `large` except for half the bit-serial channels (large does not fit).
    kv260 = get_board("kv260").config
    assert kv260.replace(bitserial=preset("large").bitserial).hash() == preset("large").hash()
    assert kv260.bitserial.rows == preset("large").bitserial.rows // 2


def test_board_top_with_the_spi_link_constrains_the_spi_pins():
    from trilobit.boards.build import SPI_PINS, BoardTop, _platform

    board = get_board("icebreaker")
    plan = _platform(board).prepare(BoardTop(board, "spi"), name="trilobit")
    pcf = plan.files["trilobit.pcf"]
    pcf = pcf if isinstance(pcf, str) else pcf.decode()
    for signal in ("spi_target_0__cs", "spi_target_0__clk", "spi_target_0__copi",
                   "spi_target_0__cipo"):
        assert signal in pcf
    assert "uart_0__rx" not in pcf  # one host link per bitstream
    assert set(SPI_PINS) == {n for n, b in BOARDS.items() if b.flow == "open"}


# nextpnr's utilisation lines of an iCEBreaker build from before the compact core (it did not
# fit a UP5K).
UP5K_LOG = """Info: Device utilisation:
Info: 	         ICESTORM_LC:  9184/ 5280   173%
Info: 	        ICESTORM_RAM:   144/   30   480%
Info: 	               SB_IO:     4/   96     4%
Info: 	         ICESTORM_DSP:    18/    8   225%
"""


def test_fit_error_names_each_overfull_resource_and_by_how_much():
    from trilobit.boards.build import fit_error

    board = get_board("icebreaker")
    message = fit_error(board, UP5K_LOG)
    assert "does not fit the iCE40UP5K-SG48" in message
    assert "ICESTORM_LC 9184/5280 (3904 over, 174%)" in message
    assert "ICESTORM_RAM 144/30 (114 over, 480%)" in message
    assert "ICESTORM_DSP 18/8 (10 over, 225%)" in message
    assert "SB_IO" not in message
    assert fit_error(board, UP5K_LOG.replace("9184", "5000").replace("144/", " 20/")
                     .replace("18/", " 8/")) is None


def test_timing_error_says_by_how_many_mhz():
    from trilobit.boards.build import timing_error

    board = get_board("orangecrab")
    assert timing_error(board, 11.04, 48.0) == (
        "orangecrab: misses timing: Fmax 11.0 MHz < accelerator clock 48.0 MHz "
        "(short by 37.0 MHz)")
    assert timing_error(board, 11.4, 8.0) is None


def test_xilinx_estimate_reads_yosys_stat_cells():
    from trilobit.boards.zynq import estimate_from_stat

    stat = """
=== trilobit_axi ===
   Number of cells:               9000
       33   DSP48E1
     1581   FDRE
        1   FDSE
     1506   LUT2
      774   LUT6
       17   RAMB36E1
        4   RAMB18E1
       22   RAM32M
"""
    estimate = estimate_from_stat(stat, "xc7z020clg400-1")
    assert estimate["LUT"] == (1506 + 774, 53200)
    assert estimate["FF"] == (1582, 106400)
    assert estimate["RAMB36"] == (19, 140)  # two RAMB18 make one RAMB36
    assert estimate["DSP"] == (33, 220)
    assert estimate["LUTRAM cells"][0] == 22


def test_xilinx_verilog_drops_zero_inits_and_sends_large_buffers_to_ultraram():
    from trilobit.boards.zynq import URAM_MIN_BITS, xilinx_verilog

    depth = URAM_MIN_BITS // 128
    verilog = (f"  reg [127:0] wgt [{depth - 1}:0];\n"
               "  initial begin\n"
               "    wgt[0] = 128'h00000000000000000000000000000000;\n"
               "    wgt[1] = 128'd0;\n"
               "  end\n"
               f"  reg [127:0] out [{depth // 2 - 1}:0];\n"
               "  reg [7:0] table [3:0];\n"
               "  initial begin\n"
               "    table[0] = 8'h00;\n"
               "    table[1] = 8'h07;\n"
               "  end\n")
    ultra = xilinx_verilog(verilog, "zynqmp")
    assert "wgt[0]" not in ultra and "table[1] = 8'h07;" in ultra  # non-zero contents kept
    assert ultra.count('(* ram_style = "ultra" *)') == 1
    assert f'(* ram_style = "ultra" *)\n  reg [127:0] wgt [{depth - 1}:0];' in ultra
    zynq7 = xilinx_verilog(verilog, "zynq7")  # no UltraRAM on the Zynq-7000
    assert "ultra" not in zynq7 and "wgt[0]" not in zynq7 and "table[1]" in zynq7


def test_zynqmp_sources_put_buffers_of_512_kibit_in_ultraram(tmp_path):
    import dataclasses

    # The kv260 board with a small accelerator whose weight buffer alone is URAM-sized (the
    # `large` Verilog takes minutes to write).
    config = preset("tiny").replace(name="kv260", bus="axi4", wgt_bytes=1 << 16)
    board = dataclasses.replace(get_board("kv260"), config=config)
    build_zynq(board, tmp_path, estimate=False)
    verilog = (tmp_path / f"{TOP}.v").read_text()
    assert verilog.count('(* ram_style = "ultra" *)') == 1
    marked = verilog.index('(* ram_style = "ultra" *)')
    assert verilog[marked:].splitlines()[1].strip() == "reg [31:0] wgt [16383:0];"
    assert "wgt[0] =" not in verilog and "inp[0] =" not in verilog  # zero contents dropped


def test_xilinx_estimate_counts_ultraram():
    from trilobit.boards.zynq import estimate_from_stat

    estimate = estimate_from_stat("       14   URAM288\n      100   LUT6\n", "xck26-sfvc784-2LV-c")
    assert estimate["URAM"] == (14, 64) and estimate["LUT"] == (100, 117120)


def test_ecp5_pll_dividers_make_the_clock_exactly_within_the_pll_limits():
    from trilobit.boards.presets import ecp5_pll_dividers

    for f_in, f_out in ((25e6, 5e6), (48e6, 8e6), (25e6, 12.5e6), (48e6, 20e6), (25e6, 30e6)):
        clki, clkfb, clkop = ecp5_pll_dividers(f_in, f_out)
        assert f_in * clkfb / clki == pytest.approx(f_out, abs=1)
        assert f_in / clki >= 3.125e6 and 400e6 <= f_out * clkop <= 800e6
    with pytest.raises(ConfigError, match="no ECP5 PLL setting makes 7.3 MHz"):
        ecp5_pll_dividers(25e6, 7.3e6)


def test_ecp5_script_maps_luts_with_abc_after_synth_ecp5_stops_before_abc9():
    from trilobit.boards.build import SCRIPT_AFTER_SYNTH, SYNTH_OPTS, BoardTop, _platform

    board = get_board("orangecrab")
    plan = _platform(board).prepare(BoardTop(board), name="trilobit",
                                    synth_opts=SYNTH_OPTS["ecp5"],
                                    script_after_synth=SCRIPT_AFTER_SYNTH["ecp5"])
    script = plan.files["trilobit.ys"]
    script = script if isinstance(script, str) else script.decode()
    synth = script.index("synth_ecp5 -run :map_luts")
    assert synth < script.index("abc -lut 4") < script.index("cells_map_trellis.v") < script.index(
        "write_json")
    assert "abc9" not in script
