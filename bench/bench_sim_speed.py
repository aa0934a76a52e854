"""Whole-program simulation speed of the accelerator harness, per preset and build variant.

For each preset (``--preset small,tiny``) one generated layer of at least ``--min-cycles``
cycles (the program ``bench_accel.py`` uses) runs on the C++ harness
(``trilobit.sim.accel_verilator``) built with the project's Verilator arguments and with each
chosen variant; the runs are interleaved ``--repeats`` times so that every variant sees the
same machine load. Each run prints simulated cycles per wall-clock second and per processor
second (``cpu_seconds`` of the harness: on a shared machine this is the figure to compare;
the wall rate is what a user waits for). Every variant must end with the same memory image
and counters as the default build.

``--instructions`` adds a load-independent figure: machine instructions per simulated cycle
of the default build, counted by ``valgrind --tool=callgrind`` on two runs of the same program
stopped after ``N`` and ``2 N`` cycles (the difference divided by ``N``: start-up, CSR
set-up and file I/O cancel out). ``--cocotb`` adds, for the default build, the same program
with the memory served from Python every cycle by cocotb (``bench_accel.sim_speed``) and the
ratio of the two rates. The last lines sum up every preset side by side.

Variants (``--variants``, comma separated; first builds take 2-5 min each on 2 cores):

* ``cxx-O2``: ``-CFLAGS -O2`` instead of ``-O3`` for the C++ compiler.
* ``cxx-Os``: ``-CFLAGS -Os``, what the Verilator makefile picks without ``-CFLAGS``.
* ``native``: ``-CFLAGS -march=native`` (not portable: a bench figure only).
* ``one-file``: ``--output-split 0``, the whole model in one C++ file.
* ``threads2``: ``--threads 2``, the model evaluated by two threads.

Usage: ``python bench/bench_sim_speed.py [--preset small,tiny] [--stall 0.3]
[--variants cxx-O2,threads2] [--repeats 3] [--instructions] [--cocotb]``; the figures of
``docs/accelerator.md``: ``--preset small,tiny --variants threads2 --instructions`` and
``--preset tiny --variants "" --cocotb``.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
from bench_accel import long_case, sim_speed

from trilobit.config import preset
from trilobit.sim.accel_verilator import VerilatorAccelerator

#: Build variant name -> Verilator arguments added to the project's defaults.
VARIANTS: dict[str, tuple[str, ...]] = {
    "default": (),
    "cxx-O2": ("-CFLAGS", "-O2"),
    "cxx-Os": ("-CFLAGS", "-Os"),
    "native": ("-CFLAGS", "-march=native"),
    "one-file": ("--output-split", "0"),
    "threads2": ("--threads", "2"),
}


def load() -> str:
    """The 1/5/15-minute load averages (runnable processes; the machine has 2 cores)."""
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


def instructions_per_cycle(rtl: VerilatorAccelerator, case, stall: float,
                           cycles: int = 10_000) -> float:
    """Machine instructions per simulated cycle of ``rtl`` on ``case`` (callgrind).

    Two runs stopped after ``cycles`` and ``2 * cycles`` simulated cycles; the difference of
    their instruction counts divided by ``cycles``. The program must run longer than
    ``2 * cycles`` cycles.
    """
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        raise RuntimeError("--instructions needs valgrind on PATH")
    counts = []
    with tempfile.TemporaryDirectory(prefix="trilobit-callgrind-") as tmp:
        image = Path(tmp) / "memory.bin"
        case.memory.tofile(image)
        for stop in (cycles, 2 * cycles):
            command = [valgrind, "--tool=callgrind", f"--callgrind-out-file={tmp}/cg.out",
                       str(rtl.executable), str(image), f"{tmp}/out.bin", str(case.prog_base),
                       str(case.data_base), str(case.window[0]), str(case.window[1]), "0",
                       repr(float(stall)), "1", str(stop)]
            done = subprocess.run(command, capture_output=True, text=True, check=True)
            found = re.search(r"Collected\s*:\s*(\d+)", done.stderr)
            if found is None:
                raise RuntimeError(f"no instruction count from callgrind:\n{done.stderr}")
            counts.append(int(found.group(1)))
    return (counts[1] - counts[0]) / cycles


def bench_preset(name: str, variants: list[str], args: argparse.Namespace) -> dict:
    """Build, run and report one preset; returns its summary figures."""
    config = preset(name)
    print(f"== {name}: load average {load()} before building")
    builds = {}
    for variant in variants:
        t0 = time.perf_counter()
        builds[variant] = VerilatorAccelerator(config, verilator_args=VARIANTS[variant])
        print(f"  {variant:9s} build (or cache) {time.perf_counter() - t0:6.1f} s  "
              f"{' '.join(VARIANTS[variant]) or '(project arguments)'}")
    case = long_case(config, builds["default"], args.min_cycles, args.stall)
    print(f"program ({config.name}, {args.stall:.0%} memory stalls): {case.description}")

    wall: dict[str, list[float]] = {n: [] for n in variants}
    cpu: dict[str, list[float]] = {n: [] for n in variants}
    reference = None
    for repeat in range(args.repeats):
        for variant in variants:
            result, memory, fig = builds[variant].run(case.memory, case.prog_base,
                                                      case.data_base, case.window,
                                                      stall_prob=args.stall, seed=1)
            assert result.ok, (variant, result)
            if reference is None:
                reference = (memory, result.counters)
            assert np.array_equal(memory, reference[0]), f"{variant}: memory differs"
            assert result.counters == reference[1], f"{variant}: counters differ"
            wall[variant].append(fig["sim_cycles"] / fig["seconds"])
            cpu[variant].append(fig["sim_cycles"] / max(fig["cpu_seconds"], 1e-9))
        print(f"  repeat {repeat + 1}: load average {load()}")
    cycles = reference[1]["cycles"]
    busy = reference[1]["compute_busy"] / cycles
    print(f"{name}: {cycles} cycles a run, compute unit busy in {busy:.1%} of them; median of "
          f"{args.repeats} runs, M cycles/s:")
    base_cpu = statistics.median(cpu["default"])
    summary = {"cycles": cycles}
    for variant in variants:
        w, c = statistics.median(wall[variant]), statistics.median(cpu[variant])
        summary[variant] = (w, c)
        print(f"  {variant:9s} wall {w / 1e6:6.3f}   per processor second {c / 1e6:6.3f}   "
              f"({c / base_cpu:4.2f}x default)")
    if args.instructions:
        per_cycle = instructions_per_cycle(builds["default"], case, args.stall)
        summary["instructions"] = per_cycle
        print(f"  default   {per_cycle:8.0f} instructions per simulated cycle (callgrind)")
    if args.cocotb:
        summary["cocotb"] = sim_speed(config, builds["default"], case, args.stall,
                                      use_cocotb=True)
    print(f"load average {load()} after")
    return summary


def print_summary(summaries: dict[str, dict], variants: list[str]) -> None:
    """Every preset side by side: M simulated cycles per processor second / per wall second."""
    print("summary (M simulated cycles per processor second / per wall-clock second):")
    for name, s in summaries.items():
        parts = [f"{v} {s[v][1] / 1e6:.3f} / {s[v][0] / 1e6:.3f}" for v in variants]
        if "instructions" in s:
            parts.append(f"{s['instructions']:.0f} instructions per cycle")
        if "cocotb" in s:
            c = s["cocotb"]
            parts.append(f"cocotb {c['cocotb_cpu'] / 1e6:.4f} / {c['cocotb_wall'] / 1e6:.4f} "
                         f"(harness {c['harness_cpu'] / c['cocotb_cpu']:.0f}x / "
                         f"{c['harness_wall'] / c['cocotb_wall']:.0f}x)")
        print(f"  {name} ({s['cycles']} cycles): " + "; ".join(parts))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="small", help="comma separated preset names")
    parser.add_argument("--stall", type=float, default=0.3)
    parser.add_argument("--min-cycles", type=int, default=100_000)
    parser.add_argument("--variants", default="cxx-Os,threads2",
                        help=f"comma separated, from {', '.join(VARIANTS)} ('all': every one)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--instructions", action="store_true",
                        help="also count instructions per simulated cycle with callgrind")
    parser.add_argument("--cocotb", action="store_true",
                        help="also run the program with memory served per cycle from cocotb")
    args = parser.parse_args()
    names = [n for n in VARIANTS if n != "default"] if args.variants == "all" else \
        [n for n in args.variants.split(",") if n]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        parser.error(f"unknown variants {unknown}; known: {', '.join(VARIANTS)}")
    variants = ["default", *[n for n in names if n != "default"]]
    summaries = {name: bench_preset(name, variants, args)
                 for name in args.preset.split(",") if name}
    print_summary(summaries, variants)


if __name__ == "__main__":
    main()
