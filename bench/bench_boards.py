"""Build every open-flow board (and the Zynq yosys estimates with --zynq) in one run and print
resources, Fmax and build time side by side. Slow (minutes per board): not a test.

    python bench/bench_boards.py [--boards icebreaker,ulx3s,orangecrab] [--zynq] [--out DIR]
                                 [--clock ulx3s=40,orangecrab=40]
    python bench/bench_boards.py --breakdown icebreaker [--config-json '{"bitserial": null}']

``--breakdown BOARD`` synthesises the board's bridge system for its FPGA family with the
hierarchy kept (yosys ``synth_*`` up to LUT mapping, then ``abc -lut 4``, per module) and
prints the cells of each module: where the logic cells, DSPs and RAMs go. Per-module LUT
counts from ``abc`` are within a few percent of the flattened ``abc9`` result.

``--clock BOARD=MHZ`` builds an ECP5 board with its PLL at another clock than its preset's
(nextpnr works towards the clock it is given): to measure how fast the core can go before
choosing the preset's clock, which must then be at or below the measured Fmax.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import time
from pathlib import Path

from trilobit.boards import BOARDS, get_board
from trilobit.boards.build import build_open
from trilobit.boards.presets import BoardPreset, ecp5_pll_dividers
from trilobit.boards.zynq import build_zynq
from trilobit.errors import ToolchainError

#: Per-module synthesis for iCE40 (abc9 asserts on unflattened designs in yosys 0.70). Block
#: RAM reads don't care about a same-cycle write of their address, as in the board build
#: (boards/build.py: SCRIPT_AFTER_READ; from Verilog, -no-rw-check does it).
ICE40_HIERARCHY_SCRIPT = """read_verilog top.v
synth_ice40 -dsp -no-rw-check -noflatten -top trilobit -run :map_luts
techmap -map +/ice40/latches_map.v
abc -lut 4
ice40_wrapcarry -unwrap
techmap -map +/ice40/ff_map.v
clean
opt_lut -tech ice40
techmap -map +/ice40/cells_map.v
clean
tee -o stat.txt stat
"""
ECP5_HIERARCHY_SCRIPT = """read_verilog top.v
synth_ecp5 -noflatten -top trilobit -noabc9
tee -o stat.txt stat
"""


def module_breakdown(board_name: str, out: Path, changes: dict | None = None
                     ) -> dict[str, dict[str, int]]:
    """Cells of each module of ``board_name``'s bridge system (config with ``changes``)."""
    from trilobit.hw.bridge_soc import BridgeSoC
    from trilobit.sim.toolchain import verilog_for, yowasp_env

    board = get_board(board_name)
    from trilobit.config import AcceleratorConfig

    config = AcceleratorConfig.from_dict({**board.config.to_dict(), **(changes or {})})
    out.mkdir(parents=True, exist_ok=True)
    soc = BridgeSoC(config, board.memory_bytes, spram=board.family == "ice40")
    (out / "top.v").write_text(verilog_for(soc, "trilobit"))
    script = ICE40_HIERARCHY_SCRIPT if board.family == "ice40" else ECP5_HIERARCHY_SCRIPT
    (out / "hierarchy.ys").write_text(script)
    subprocess.run([yowasp_env()["YOSYS"], "-q", "-l", "yosys.log", "-s", "hierarchy.ys"],
                   cwd=out, check=True, capture_output=True)
    modules: dict[str, dict[str, int]] = {}
    current = None
    for line in (out / "stat.txt").read_text().splitlines():
        header = re.match(r"^=== (.+) ===$", line)
        if header:  # a module, or the closing "design hierarchy" summary
            current = None if " " in header[1] else modules.setdefault(header[1], {})
            continue
        cell = re.match(r"^\s+(\d+)\s+((?:SB|TRELLIS|MULT|DP16|LUT|CCU|PFU|EHX|L6)\w*)\s*$",
                        line)
        if cell and current is not None:
            current[cell[2]] = current.get(cell[2], 0) + int(cell[1])
    return modules


def with_clock(board: BoardPreset, mhz: float) -> BoardPreset:
    """``board`` with its ECP5 PLL making ``mhz`` from the board oscillator."""
    import dataclasses

    oscillator = board.make_platform().default_clk_frequency
    return dataclasses.replace(board, clock_hz=mhz * 1e6,
                               pll=ecp5_pll_dividers(oscillator, mhz * 1e6))


def print_breakdown(modules: dict[str, dict[str, int]]) -> None:
    kinds = sorted({kind for cells in modules.values() for kind in cells})
    print(f"{'module':48s} " + " ".join(f"{k:>13s}" for k in kinds))
    for name, cells in sorted(modules.items()):
        print(f"{name:48s} " + " ".join(f"{cells.get(k, 0):13d}" for k in kinds))
    print(f"{'total':48s} " + " ".join(
        f"{sum(c.get(k, 0) for c in modules.values()):13d}" for k in kinds))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--boards", default="orangecrab,ulx3s,icebreaker")
    parser.add_argument("--zynq", action="store_true", help="also the Zynq yosys estimates")
    parser.add_argument("--out", type=Path, default=Path("build/bench_boards"))
    parser.add_argument("--breakdown", metavar="BOARD",
                        help="per-module cells of BOARD's bridge system instead of builds")
    parser.add_argument("--clock", default="",
                        help="BOARD=MHZ[,BOARD=MHZ]: build ECP5 boards at another PLL clock")
    parser.add_argument("--config-json", default="{}",
                        help="with --breakdown: config fields to change, as JSON")
    args = parser.parse_args()
    if args.breakdown:
        changes = json.loads(args.config_json)
        start = time.monotonic()
        print_breakdown(module_breakdown(args.breakdown, args.out / f"breakdown_{args.breakdown}",
                                         changes))
        print(f"{time.monotonic() - start:.0f} s")
        return
    names = [n for n in args.boards.split(",") if n]
    if args.zynq:
        names += [n for n, b in BOARDS.items() if b.flow == "vivado"]
    clocks = {name: float(mhz) for name, _, mhz in
              (item.partition("=") for item in args.clock.split(",") if item)}
    rows = []
    for name in names:
        board = get_board(name)
        if name in clocks:
            board = with_clock(board, clocks[name])
        start = time.monotonic()
        try:
            if board.flow == "open":
                result = build_open(board, args.out / name).to_dict()
                summary = f"Fmax {result['fmax_mhz']:.1f} MHz (clock {result['target_mhz']:.0f})"
            else:
                result = build_zynq(board, args.out / name)
                summary = "yosys synth_xilinx estimate"
            usage = ", ".join(f"{k} {u}/{a}" for k, (u, a) in result["utilization"].items()
                              if u)
        except ToolchainError as error:
            summary, usage = "FAILED", str(error).splitlines()[0]
        rows.append((name, board.config.name, summary, usage, time.monotonic() - start))
        print(f"{name:11s} {board.config.name:11s} {summary:34s} {rows[-1][4]:6.0f} s  {usage}",
              flush=True)


if __name__ == "__main__":
    main()
