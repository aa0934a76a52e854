"""Bit-serial mixed-datatype PE array (BitMoD style): Verilog of the engine and its baseline.

Writes ``bitserial_engine.v`` (and, with ``--baseline``, ``bitparallel_baseline.v``: the
bit-parallel INT8 x INT8 MAC array with the same ports) and returns a manifest describing the
parameters, the stream payload layouts (bit offsets, least significant first) and the cycles
per weight of every format.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from trilobit.hw.bitserial import CODE_SLOT_BITS, BitSerialEngine, BitSerialParams
from trilobit.hw.bitserial_baseline import BitParallelMacArray
from trilobit.hw.bitserial_format import WeightFormat, format_dtype

__all__ = ["add_generate_arguments", "generate_from_args", "manifest_for"]


def add_generate_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``trilobit generate bitserial``."""
    d = BitSerialParams()
    parser.add_argument("--width", type=int, default=d.width,
                        help=f"dot-product width: input channels per chunk (default {d.width})")
    parser.add_argument("--rows", type=int, default=d.rows,
                        help=f"PE rows: activation vectors at once (default {d.rows})")
    parser.add_argument("--columns", type=int, default=d.columns,
                        help=f"PE columns: output channels at once (default {d.columns})")
    parser.add_argument("--bits-per-cycle", type=int, default=d.bits_per_cycle,
                        help=f"weight bits per cycle, 1 or 2 (default {d.bits_per_cycle})")
    parser.add_argument("--group-size", type=int, default=d.group_size,
                        help=f"input channels per scale/type group (default {d.group_size})")
    parser.add_argument("--act-bits", type=int, default=d.act_bits,
                        help=f"signed activation bits, 2..8 (default {d.act_bits})")
    parser.add_argument("--scale-bits", type=int, default=d.scale_bits,
                        help=f"unsigned group-scale mantissa bits (default {d.scale_bits})")
    parser.add_argument("--max-groups", type=int, default=d.max_groups,
                        help=f"most groups per job, sizes the accumulators (default "
                             f"{d.max_groups})")
    parser.add_argument("--baseline", action="store_true",
                        help="also write the bit-parallel INT8 baseline with the same ports")


def params_from_args(args: argparse.Namespace) -> BitSerialParams:
    """Validated parameters (ConfigError names the bad one)."""
    return BitSerialParams(width=args.width, rows=args.rows, columns=args.columns,
                           bits_per_cycle=args.bits_per_cycle, group_size=args.group_size,
                           act_bits=args.act_bits, scale_bits=args.scale_bits,
                           max_groups=args.max_groups)


def _fields(layout_fields: list[tuple[str, int]]) -> list[dict]:
    out, pos = [], 0
    for name, width in layout_fields:
        out.append({"field": name, "lsb": pos, "bits": width})
        pos += width
    return out


def manifest_for(p: BitSerialParams) -> dict:
    """JSON-serialisable description of an engine: parameters, payloads, formats."""
    meta = [("fmt", 3), ("last", 1)]
    for c in range(p.columns):
        meta += [(f"cols[{c}].type_id", 2), (f"cols[{c}].scale", p.scale_bits)]
    return {
        "engine": "bitserial",
        "params": p.as_dict(),
        "max_k": p.max_k,
        "streams": {
            "meta": {"direction": "in", "beat": "one per group", "fields": _fields(meta)},
            "act": {"direction": "in", "beat": "one per chunk of width input channels",
                    "element": f"signed {p.act_bits} bits", "order": "[row][lane]",
                    "bits": p.rows * p.width * p.act_bits},
            "weights": {"direction": "in", "beat": "one per chunk",
                        "element": f"code in a {CODE_SLOT_BITS}-bit slot",
                        "order": "[column][lane]",
                        "bits": p.columns * p.width * CODE_SLOT_BITS},
            "out": {"direction": "out", "beat": "one per job",
                    "element": f"signed {p.acc_bits} bits", "order": "[row][column]",
                    "bits": p.rows * p.columns * p.acc_bits},
        },
        "formats": {
            f.name.lower(): {
                "fmt": int(f),
                "bits": f.bits,
                "cycles_per_weight": p.cycles_per_chunk(f),
                "types": [format_dtype(f, t) for t in range(4 if f.is_fp else 1)],
            }
            for f in WeightFormat
        },
        "dequant_cycles_per_group": p.dequant_cycles,
        "result": "out[r][c] = sum_g scale[c,g] * sum_k w[c,k] * a[r,k] (exact); "
                  "real value = out * 2**-shift * activation scale",
    }


def generate_from_args(args: argparse.Namespace) -> dict:
    """Write the Verilog into ``args.out``; return the manifest."""
    from trilobit.sim.toolchain import verilog_for

    p = params_from_args(args)
    out = Path(args.out)
    files = {"engine": out / "bitserial_engine.v"}
    files["engine"].write_text(verilog_for(BitSerialEngine(p), "bitserial_engine"))
    if args.baseline:
        files["baseline"] = out / "bitparallel_baseline.v"
        files["baseline"].write_text(verilog_for(BitParallelMacArray(p), "bitparallel_baseline"))
    manifest = manifest_for(p)
    manifest["files"] = {k: str(v) for k, v in files.items()}
    return manifest
