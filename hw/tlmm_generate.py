"""Ternary table-lookup matmul engine: Verilog and a JSON manifest (``trilobit generate tlmm``).

Example: ``trilobit generate tlmm --G 3 --rows 16 --units 4 -o out/`` writes ``out/tlmm.v`` and
returns the manifest (parameters, derived widths, ports with their payload fields, cycles per
GEMV) that the command prints and saves as ``out/manifest.json``.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from trilobit.errors import ConfigError
from trilobit.hw.tlmm import OUTPUT_LATENCY, TlmmEngine, TlmmParams
from trilobit.hw.tlmm_baseline import TlmmBaseline
from trilobit.hw.tlmm_lutram import LUTRAM_DEPTH, TlmmLutramEngine, lutram_ideal_cycles
from trilobit.sim.golden_tlmm import expected_cycles
from trilobit.sim.toolchain import verilog_for

__all__ = ["add_generate_arguments", "params_from_args", "manifest_for", "generate_from_args"]


def add_generate_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the engine's parameters to ``parser`` (the CLI adds ``--out``)."""
    d = TlmmParams()
    parser.add_argument("-o", dest="out", type=Path, default=argparse.SUPPRESS,
                        help="same as --out")
    parser.add_argument("--G", "--group-size", dest="group_size", type=int, default=d.group_size,
                        help=f"activations per table, 2..4 (default {d.group_size})")
    parser.add_argument("--rows", type=int, default=d.rows,
                        help=f"output rows sharing each table, >= 1 (default {d.rows})")
    parser.add_argument("--units", type=int, default=d.units,
                        help=f"tables built and read in parallel, >= 1 (default {d.units})")
    parser.add_argument("--act-bits", type=int, default=d.act_bits,
                        help=f"signed activation width, 4..16 bits (default {d.act_bits})")
    parser.add_argument("--max-k", type=int, default=d.max_k,
                        help=f"largest reduction length K, >= 1 (default {d.max_k})")
    parser.add_argument("--max-planes", type=int, default=d.max_planes,
                        help="weight planes per command, 1..4 (1: ternary only, b: INT-b weights)"
                             f" (default {d.max_planes})")
    parser.add_argument("--tables", choices=("registers", "lutram"), default="registers",
                        help="where tables live: registers (one row per read port, one "
                             "command = rows rows) or lutram (distributed RAM, each read port "
                             "serves --row-slots rows in turn; the cheaper design on FPGAs)")
    parser.add_argument("--row-slots", type=int, default=LUTRAM_DEPTH - 1,
                        help="lutram only: rows served per read port and group, "
                             f"1..{LUTRAM_DEPTH} (default {LUTRAM_DEPTH - 1})")
    parser.add_argument("--baseline", action="store_true",
                        help="generate the mux + adder-tree baseline with the same interface")


def params_from_args(args: argparse.Namespace) -> TlmmParams:
    """Validated parameters (raises ConfigError naming the parameter and its range)."""
    return TlmmParams(group_size=args.group_size, rows=args.rows, units=args.units,
                      act_bits=args.act_bits, max_k=args.max_k, max_planes=args.max_planes)


def _port(name: str, direction: str, fields: list[dict], note: str) -> dict:
    return {"name": name, "direction": direction, "signals": {
        "payload": f"{name}__payload", "valid": f"{name}__valid", "ready": f"{name}__ready"},
        "payload_bits": sum(f["bits"] * f.get("count", 1) for f in fields),
        "fields": fields, "beat": note}


def manifest_for(p: TlmmParams, baseline: bool = False, row_slots: int | None = None) -> dict:
    """Parameters, widths, ports (payload fields, least significant first) and cycle counts."""
    weight_element = (
        [{"name": "codes", "bits": 2, "count": p.group_size, "format": "plain2"}]
        if baseline else
        [{"name": "magnitude", "bits": p.magnitude_bits}, {"name": "sign", "bits": 1}]
    )
    element_bits = sum(f["bits"] * f.get("count", 1) for f in weight_element)
    ports = [
        _port("cmd", "in", [{"name": "beats", "bits": p.beats_bits},
                            {"name": "planes", "bits": p.plane_bits}],
              "one per output row block: activation beats K/(G*units), weight planes"),
        _port("act", "in", [{"name": "activation", "bits": p.act_bits, "signed": True,
                             "count": p.activations_per_beat}],
              "element p*G+i = activation i of unit p's group"),
        _port("weights", "in", [{"name": "group", "bits": element_bits,
                                 "count": p.rows * p.units, "element": weight_element}],
              "element r*units+p = row r, unit p; beats*planes beats per command, plane-minor"),
        _port("out", "out", [{"name": "accumulator", "bits": p.acc_bits, "signed": True,
                              "count": p.rows}], "one per command"),
    ]
    k = n = p.max_beats * p.activations_per_beat
    cycles = {}
    for planes, kind in ((1, "ternary"), (2, "int2"), (3, "int3"), (4, "int4")):
        if planes <= p.max_planes:
            cycles[kind] = (expected_cycles(p, k, n, planes) if row_slots is None
                            else lutram_ideal_cycles(p, row_slots, k, n, planes))
    formula = ("ceil(N/rows) * ceil(K/(G*units)) * planes + 2 + "
               f"{OUTPUT_LATENCY} (streams never stalling)")
    if row_slots is not None:
        formula = (f"ceil(N/(rows*{row_slots})) * ceil(K/(G*units)) * planes * {row_slots} "
                   "weight beats at full rate (docs/tlmm.md: LUT-RAM timing)")
        ports[0]["beat"] = f"one per row tile of rows*{row_slots} output rows"
        ports[2]["beat"] = (f"beats*planes*{row_slots} beats per command: beat-major, then "
                            "plane, then slot t (rows t*rows .. t*rows+rows-1)")
        ports[3]["beat"] = f"{row_slots} per command: beat t = rows t*rows .. t*rows+rows-1"
    engine = "tlmm_baseline" if baseline else "tlmm" if row_slots is None else "tlmm_lutram"
    return {
        "engine": engine,
        "toplevel": "tlmm",
        "parameters": p.as_dict(),
        "derived": {
            "table_entries": p.table_size,
            "magnitude_bits": p.magnitude_bits,
            "entry_bits": p.entry_bits,
            "acc_bits": p.acc_bits,
            "max_beats": p.max_beats,
            "ternary_macs_per_cycle": p.macs_per_cycle,
            "output_latency_cycles": OUTPUT_LATENCY,
        },
        "clock": "clk (rising edge), rst synchronous active high",
        "ports": ports,
        "cycles_per_gemv": {
            "formula": formula,
            "K": k, "N": n, **cycles,
            "ideal_ternary": math.ceil(k * n / p.macs_per_cycle),
        },
    }


def generate_from_args(args: argparse.Namespace) -> dict:
    """Write ``tlmm.v`` into ``args.out`` and return the manifest."""
    p = params_from_args(args)
    lutram = getattr(args, "tables", "registers") == "lutram"
    row_slots = getattr(args, "row_slots", LUTRAM_DEPTH - 1) if lutram else None
    if lutram and args.baseline:
        raise ConfigError("--baseline and --tables lutram exclude each other: the baseline "
                          "has no tables")
    if lutram and not 1 <= row_slots <= LUTRAM_DEPTH:
        raise ConfigError(f"row_slots must be in 1..{LUTRAM_DEPTH}, got {row_slots}")
    if args.baseline:
        design = TlmmBaseline(p)
    elif lutram:
        design = TlmmLutramEngine(p, row_slots=row_slots)
    else:
        design = TlmmEngine(p)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    verilog_path = out / "tlmm.v"
    verilog_path.write_text(verilog_for(design, "tlmm"))
    manifest = manifest_for(p, baseline=args.baseline, row_slots=row_slots)
    manifest["files"] = {"verilog": str(verilog_path)}
    return manifest
