"""``trilobit sim PROGRAM.tbp``: run a compiled program on the cycle-accurate RTL.

Runs every accelerator kernel of the program in Verilator (memory model inside the
simulation, optional random memory stalls), the host parts on the CPU, and prints the
outputs, the accelerator counters and the simulation speed. ``--waves out.vcd`` writes a
waveform per accelerator run (FST when the file name ends in ``.fst`` and the system has
lz4). ``--check`` also runs the golden model and fails unless every output is identical.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from trilobit.errors import BackendError

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "sim", help="run a .tbp program on the RTL in Verilator",
        description="Run a compiled program cycle-accurately (Verilator); Python stays off "
                    "the clock.")
    parser.add_argument("program", type=Path, help="compiled program (.tbp)")
    parser.add_argument("--input", type=Path, action="append", default=[],
                        help=".npy/.npz inputs (default: random inputs from --seed)")
    parser.add_argument("--waves", type=Path, help="write waves here (.vcd, or .fst)")
    parser.add_argument("--stall", type=float, default=0.0,
                        help="probability of a memory wait state per bus cycle (0..1)")
    parser.add_argument("--seed", type=int, default=0, help="seed of inputs and stalls")
    parser.add_argument("--check", action="store_true",
                        help="also run the golden model and require identical outputs")
    parser.set_defaults(handler=run_sim)


def _random_feeds(session, rng: np.random.Generator) -> dict[str, np.ndarray]:
    feeds = {}
    for info in session.get_inputs():
        shape = tuple(d if isinstance(d, int) and d > 0 else 1 for d in info.shape)
        if info.dtype in ("uint8", "int8"):
            lo, hi = (0, 256) if info.dtype == "uint8" else (-128, 128)
            feeds[info.name] = rng.integers(lo, hi, shape).astype(info.dtype)
        else:
            feeds[info.name] = rng.standard_normal(shape).astype(info.dtype)
    return feeds


def run_sim(args: argparse.Namespace) -> int:
    from rich.console import Console

    from trilobit.sim.accel_verilator import VerilatorAccelerator
    from trilobit.sw.cli import load_feeds
    from trilobit.sw.program import Program
    from trilobit.sw.runtime import Session

    console = Console()
    program = Program.load(args.program)
    if not 0.0 <= args.stall < 1.0:
        raise BackendError(f"--stall must lie in 0..1 (exclusive), got {args.stall}")
    if args.waves is not None and args.waves.suffix == ".fst":
        from trilobit.sim.toolchain import waves_format

        if waves_format() != "fst":
            console.print("[yellow]FST needs lz4.h, which this system lacks: writing VCD[/]")
            args.waves = args.waves.with_suffix(".vcd")
    session = Session(program, config=program.config, backend="verilator")
    backend = session.backend
    backend.stall_prob, backend.seed = args.stall, args.seed
    if args.waves is not None:
        backend.accel = VerilatorAccelerator(program.config, waves=args.waves)
    rng = np.random.default_rng(args.seed)
    names = [t.name for t in session.get_inputs()]
    feeds = load_feeds(args.input, names) if args.input else _random_feeds(session, rng)
    outputs = session.run(feeds)
    for name, value in outputs.items():
        console.print(f"{name}: shape {tuple(value.shape)} {value.dtype} "
                      f"sum {float(np.asarray(value, dtype=np.float64).sum()):.6g}")
    counters = session.counters()
    console.print(f"accelerator runs {counters['runs']}, cycles {counters['cycles']}, "
                  f"MACs {counters['macs']}, utilization {counters['utilization']:.3f}")
    figures = backend.figures
    if figures.get("seconds"):
        console.print(f"last run: {figures['sim_cycles']} cycles in {figures['seconds']:.4f} s "
                      f"({figures['sim_cycles'] / figures['seconds'] / 1e6:.2f} M cycles/s)")
    if args.waves is not None:
        console.print(f"waves: {args.waves} ({backend.accel.runs} file(s))")
    if args.check:
        golden = Session(program, config=program.config, backend="golden").run(feeds)
        for name, value in outputs.items():
            if not np.array_equal(value, golden[name]):
                console.print(f"[red]{name} differs from the golden model[/]")
                return 1
        console.print("[green]outputs identical to the golden model[/]")
    return 0
