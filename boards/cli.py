"""``trilobit build --board NAME``: a bitstream (iCE40/ECP5, open toolchain) or Zynq sources."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from trilobit.boards.presets import BOARDS, get_board

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``build`` subcommand."""
    parser = subparsers.add_parser(
        "build", help="build the accelerator for a board",
        description="iCEBreaker, ULX3S, OrangeCrab: bitstream with yosys + nextpnr from PyPI "
                    "(YoWASP), utilization table and Fmax. PYNQ-Z2, KV260: Verilog, AXI "
                    "wrapper, Vivado Tcl script and a yosys resource estimate (the bitstream "
                    "needs Vivado). Boards: " + ", ".join(BOARDS))
    parser.add_argument("--board", required=True, choices=sorted(BOARDS))
    parser.add_argument("--link", choices=("uart", "spi"), default="uart",
                        help="host link of the iCE40/ECP5 boards (default uart; SPI pins in "
                             "docs/boards.md)")
    parser.add_argument("--no-estimate", action="store_true",
                        help="Zynq boards: skip the yosys synth_xilinx resource estimate")
    parser.add_argument("--out", type=Path, default=None,
                        help="output folder (default: build/BOARD)")
    parser.set_defaults(handler=_build)


def _build(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
    from rich.table import Table

    board = get_board(args.board)
    out = args.out or Path("build") / board.name
    console = Console()
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                  console=console, transient=True) as progress:
        task = progress.add_task(f"{board.name}: starting")

        def step(message: str) -> None:
            progress.update(task, description=f"{board.name}: {message}")

        if board.flow == "open":
            from trilobit.boards.build import build_open

            result = build_open(board, out, step, args.link).to_dict()
        else:
            from trilobit.boards.zynq import build_zynq

            result = build_zynq(board, out, step, estimate=not args.no_estimate)
    table = Table(title=f"{board.description}: accelerator {board.config.name!r} "
                        f"({board.config.hash()[:12]})")
    for column in ("resource", "used", "available", "%"):
        table.add_column(column, justify="right" if column != "resource" else "left")
    for name, (used, available) in result["utilization"].items():
        if used:
            table.add_row(name, str(used), str(available),
                          f"{100 * used / available:.1f}" if available else "-")
    if table.row_count:
        console.print(table)
    if board.flow == "open":
        console.print(f"Fmax {result['fmax_mhz']:.1f} MHz (accelerator clock "
                      f"{result['target_mhz']:.1f} MHz); bitstream {result['bitstream']}; "
                      f"{result['seconds']} s")
    else:
        console.print(f"[bold]{result['note']}[/]")
        console.print(f"files in {out}: " + ", ".join(result["files"]))
    (Path(out) / "build.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    return 0
