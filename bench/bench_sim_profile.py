"""Where a simulated cycle of the accelerator goes: instructions per cycle by design block.

The generated layer of ``bench_sim_speed.py`` (same preset, stall rate and seed) runs on a
build of the harness with debug information (``-CFLAGS -g``: same optimisation, so the same
instructions) under ``valgrind --tool=callgrind``, stopped after ``N`` and ``2 N`` cycles;
``callgrind_annotate`` gives instructions per line of the C++ Verilator generated (generated
again, identically, into a temporary folder, since the cached build keeps only the
executable; the profile's file names are pointed there). Each statement is charged to the
block of the first hierarchical name on it (the signal it assigns, as a rule): GEMM units,
their engines, the bit-serial engine's term decoders, the POST unit, queues, the core's own
logic, the simulation top; lines of Verilator's runtime headers (inlined helpers such as sign
extension) are shown apart; the C library (copies, locks of the eval entry) is not counted.
The difference of the two runs divided by ``N`` leaves start-up out.

Usage: ``python bench/bench_sim_profile.py [--preset small] [--stall 0.3] [--cycles 10000]``
"""

from __future__ import annotations

import argparse
import collections
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from bench_accel import long_case

from trilobit.config import preset
from trilobit.sim.accel_verilator import (
    SIM_TOP,
    VerilatorAccelerator,
    harness_source,
    simulation_verilog,
)
from trilobit.sim.toolchain import VERILATOR_OPT_ARGS, use_verilator

DEBUG_ARGS = ("-CFLAGS", "-g")
_HIERARCHY = re.compile(rf"{SIM_TOP}__DOT__(\w+)")


def block_of(name: str) -> str:
    """Design block of a flattened Verilator name (``core__DOT__gemm_tlmm__DOT__...``)."""
    parts = name.split("__DOT__")
    if parts[0] != "core":
        return "simulation top (bus side of the memory, input registers)"
    if len(parts) == 2:
        return "core's own logic (dispatch, checks, transfers, CSRs)"
    block = parts[1]
    if block.startswith("gemm_") and len(parts) > 3 and parts[2] == "engine":
        if len(parts) > 4 and parts[3].startswith("decode_"):
            return f"{block}: engine's term decoders"
        return f"{block}: engine"
    return f"{block}: unit" if block.startswith("gemm_") else block


def charge(annotated: str) -> collections.Counter:
    """Instructions per block from ``callgrind_annotate --auto=yes`` output."""
    counts: collections.Counter = collections.Counter()
    source, block = None, "?"
    for line in annotated.splitlines():
        header = re.match(r"-- Auto-annotated source: (.*)", line)
        if header:
            source, block = header.group(1).strip(), "?"
            continue
        row = re.match(r"\s*([\d,]+|\.)\s(.*)", line)
        if source is None or row is None:
            continue
        text = row.group(2)
        if text.lstrip().startswith("=>") or "events annotated" in text:
            continue  # inclusive cost of a call, or the summary line
        count = 0 if row.group(1) == "." else int(row.group(1).replace(",", ""))
        if "__024root__" not in source:
            counts[f"runtime and harness ({Path(source).name})"] += count
            continue
        names = _HIERARCHY.findall(text)
        if names:
            block = block_of(names[0])
        counts[block] += count  # a continuation line belongs to the statement above
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="small")
    parser.add_argument("--stall", type=float, default=0.3)
    parser.add_argument("--cycles", type=int, default=10_000)
    args = parser.parse_args()
    for tool in ("valgrind", "callgrind_annotate"):
        if shutil.which(tool) is None:
            raise SystemExit(f"needs {tool} on PATH")
    config = preset(args.preset)
    case = long_case(config, VerilatorAccelerator(config), 100_000, args.stall)
    rtl = VerilatorAccelerator(config, verilator_args=DEBUG_ARGS)
    with tempfile.TemporaryDirectory(prefix="trilobit-profile-") as tmp:
        folder = Path(tmp)
        (folder / f"{SIM_TOP}.v").write_text(simulation_verilog(config))
        (folder / "harness.cpp").write_text(harness_source(config))
        subprocess.run([str(use_verilator()), "--cc", "--exe", "--top-module", SIM_TOP,
                        "-Mdir", "obj", *VERILATOR_OPT_ARGS, *DEBUG_ARGS, "harness.cpp",
                        f"{SIM_TOP}.v"], cwd=folder, check=True, capture_output=True)
        case.memory.tofile(folder / "memory.bin")
        charged = []
        for stop in (args.cycles, 2 * args.cycles):
            out = folder / f"callgrind.{stop}"
            subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
                            str(rtl.executable), "memory.bin", "out.bin", str(case.prog_base),
                            str(case.data_base), str(case.window[0]), str(case.window[1]), "0",
                            repr(args.stall), "1", str(stop)],
                           cwd=folder, check=True, capture_output=True)
            # The executable's debug information names the build's own (deleted) folder.
            out.write_text(re.sub(r"^(c?f[lie]=\(\d+\) )\S*/obj/", rf"\g<1>{folder}/obj/",
                                  out.read_text(), flags=re.MULTILINE))
            annotate = ["callgrind_annotate", "--auto=yes", "--show-percs=no",
                        "--context=1000000", str(out)]
            annotated = subprocess.run(annotate, cwd=folder, check=True, capture_output=True,
                                       text=True).stdout
            charged.append(charge(annotated))
    per_cycle = {b: (charged[1][b] - charged[0][b]) / args.cycles
                 for b in set(charged[0]) | set(charged[1])}
    total = sum(per_cycle.values())
    print(f"{config.name}: {case.description}, {args.stall:.0%} memory stalls")
    print(f"instructions per simulated cycle: {total:.0f}")
    for block, value in sorted(per_cycle.items(), key=lambda item: -item[1]):
        if value >= 0.5:
            print(f"  {value:7.0f}  {value / total:6.1%}  {block}")


if __name__ == "__main__":
    main()
