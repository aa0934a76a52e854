"""Whole-program simulation speed of the accelerator harness, build variants side by side.

One generated layer of at least ``--min-cycles`` cycles (the program ``bench_accel.py``
uses) runs on the C++ harness (``trilobit.sim.accel_verilator``) built with the project's
Verilator arguments and with each chosen variant; the runs are interleaved ``--repeats``
times so that every variant sees the same machine load. Each run prints simulated cycles per
wall-clock second and per processor second (``cpu_seconds`` of the harness: on a shared
machine this is the figure to compare; the wall rate is what a user waits for). Every
variant must end with the same memory image and counters as the default build.

Variants (``--variants``, comma separated; first builds take 2-5 min each on 2 cores):

* ``cxx-O2``: ``-CFLAGS -O2`` instead of ``-O3`` for the C++ compiler.
* ``cxx-Os``: ``-CFLAGS -Os``, what the Verilator makefile picks without ``-CFLAGS``.
* ``native``: ``-CFLAGS -march=native`` (not portable: a bench figure only).
* ``one-file``: ``--output-split 0``, the whole model in one C++ file.
* ``threads2``: ``--threads 2``, the model evaluated by two threads.

Usage: ``python bench/bench_sim_speed.py [--preset small] [--stall 0.3]
[--variants cxx-O2,threads2] [--repeats 3]``
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np
from bench_accel import long_case

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="small")
    parser.add_argument("--stall", type=float, default=0.3)
    parser.add_argument("--min-cycles", type=int, default=100_000)
    parser.add_argument("--variants", default="cxx-Os,threads2",
                        help=f"comma separated, from {', '.join(VARIANTS)} ('all': every one)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    names = [n for n in VARIANTS if n != "default"] if args.variants == "all" else \
        [n for n in args.variants.split(",") if n]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        parser.error(f"unknown variants {unknown}; known: {', '.join(VARIANTS)}")
    names = ["default", *[n for n in names if n != "default"]]
    config = preset(args.preset)

    print(f"load average {load()} before building")
    builds = {}
    for name in names:
        t0 = time.perf_counter()
        builds[name] = VerilatorAccelerator(config, verilator_args=VARIANTS[name])
        print(f"  {name:9s} build (or cache) {time.perf_counter() - t0:6.1f} s  "
              f"{' '.join(VARIANTS[name]) or '(project arguments)'}")
    case = long_case(config, builds["default"], args.min_cycles, args.stall)
    print(f"program ({config.name}, {args.stall:.0%} memory stalls): {case.description}")

    wall: dict[str, list[float]] = {n: [] for n in names}
    cpu: dict[str, list[float]] = {n: [] for n in names}
    reference = None
    for repeat in range(args.repeats):
        for name in names:
            result, memory, fig = builds[name].run(case.memory, case.prog_base, case.data_base,
                                                   case.window, stall_prob=args.stall, seed=1)
            assert result.ok, (name, result)
            if reference is None:
                reference = (memory, result.counters)
            assert np.array_equal(memory, reference[0]), f"{name}: memory differs"
            assert result.counters == reference[1], f"{name}: counters differ"
            wall[name].append(fig["sim_cycles"] / fig["seconds"])
            cpu[name].append(fig["sim_cycles"] / max(fig["cpu_seconds"], 1e-9))
        print(f"  repeat {repeat + 1}: load average {load()}")
    cycles = reference[1]["cycles"]
    print(f"{cycles} cycles a run; median of {args.repeats} runs, M cycles/s:")
    base_cpu = statistics.median(cpu["default"])
    for name in names:
        w, c = statistics.median(wall[name]), statistics.median(cpu[name])
        print(f"  {name:9s} wall {w / 1e6:6.3f}   per processor second {c / 1e6:6.3f}   "
              f"({c / base_cpu:4.2f}x default)")
    print(f"load average {load()} after")


if __name__ == "__main__":
    main()
