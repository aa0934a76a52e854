"""Build every open-flow board (and the Zynq yosys estimates with --zynq) in one run and print
resources, Fmax and build time side by side. Slow (minutes per board): not a test.

    python bench/bench_boards.py [--boards icebreaker,ulx3s,orangecrab] [--zynq] [--out DIR]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from trilobit.boards import BOARDS, get_board
from trilobit.boards.build import build_open
from trilobit.boards.zynq import build_zynq
from trilobit.errors import ToolchainError


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--boards", default="orangecrab,ulx3s,icebreaker")
    parser.add_argument("--zynq", action="store_true", help="also the Zynq yosys estimates")
    parser.add_argument("--out", type=Path, default=Path("build/bench_boards"))
    args = parser.parse_args()
    names = [n for n in args.boards.split(",") if n]
    if args.zynq:
        names += [n for n, b in BOARDS.items() if b.flow == "vivado"]
    rows = []
    for name in names:
        board = get_board(name)
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
