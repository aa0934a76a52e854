"""``trilobit quantize-weights``: BitMoD per-group datatype search on a weight tensor.

Reads a 2-D weight matrix from an ``.npy`` file or an ONNX initializer, runs
:func:`trilobit.sw.bitmod.quantize_bitmod`, prints the per-type group counts and the weight
MSE next to round-to-nearest INT and plain FP references at the same group size, and writes
an ``.npz`` with ``codes``, ``type_ids``, ``scale_int``, ``shift``, ``fmt``, ``group_size``
and, with ``--columns/--width``, the engine's weight beats in stream order.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from trilobit.errors import ConfigError, ModelError
from trilobit.hw.bitserial_format import WeightFormat
from trilobit.sw.bitmod import candidate_types, pack_engine_tiles, quantize_bitmod, quantize_rtn

__all__ = ["register", "load_weights"]


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "quantize-weights", help="per-group BitMoD datatype search on a weight tensor",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", type=Path, help=".npy file or .onnx model")
    parser.add_argument("--initializer", help="initializer name (ONNX source)")
    parser.add_argument("--in-axis", type=int, choices=(0, 1), default=None,
                        help="axis of the input channels (the group axis); default 1 for "
                             ".npy (out, in) and 0 for ONNX MatMul weights (in, out)")
    parser.add_argument("--format", default="fp4",
                        help="fp3, fp4 (BitMoD candidates) or int3/int4/int6/int8 (default fp4)")
    parser.add_argument("--group-size", type=int, default=128, help="default 128")
    parser.add_argument("--scale-bits", type=int, default=8, help="default 8")
    parser.add_argument("--columns", type=int, help="engine columns (to write weight beats)")
    parser.add_argument("--width", type=int, help="engine width (to write weight beats)")
    parser.add_argument("-o", "--output", type=Path, help=".npz to write")
    parser.set_defaults(handler=_run)


def load_weights(source: Path, initializer: str | None) -> np.ndarray:
    """A 2-D float weight matrix from ``.npy`` or an ONNX initializer (dequantized when the
    initializer is integer: its raw values are returned)."""
    if not source.is_file():
        raise ConfigError(f"source {str(source)!r} does not exist")
    if source.suffix == ".npy":
        w = np.load(source)
    elif source.suffix == ".onnx":
        import onnx
        from onnx import numpy_helper

        model = onnx.load(str(source))
        inits = {i.name: i for i in model.graph.initializer}
        if initializer is None:
            names = [n for n, i in inits.items() if len(i.dims) == 2]
            raise ConfigError(f"--initializer is required for ONNX; 2-D initializers: {names}")
        if initializer not in inits:
            raise ModelError(f"initializer {initializer!r} not in {source}")
        w = numpy_helper.to_array(inits[initializer])
    else:
        raise ConfigError(f"source must be .npy or .onnx, got {source.suffix!r}")
    w = np.asarray(w, dtype=np.float64)
    if w.ndim != 2:
        raise ConfigError(f"weights must be 2-D, got shape {w.shape}")
    return w


def _run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    fmt = WeightFormat.parse(args.format)
    if args.group_size < 1:
        raise ConfigError(f"--group-size must be >= 1, got {args.group_size}")
    if not 1 <= args.scale_bits <= 16:
        raise ConfigError(f"--scale-bits must be in 1..16, got {args.scale_bits}")
    w = load_weights(args.source, args.initializer)
    in_axis = args.in_axis if args.in_axis is not None else (0 if args.source.suffix == ".onnx"
                                                             else 1)
    if in_axis == 0:
        w = w.T  # groups run along the input channels: (out, in)
    q = quantize_bitmod(w, fmt, args.group_size, args.scale_bits)
    mse = float(np.mean((q.dequantize() - w) ** 2))
    table = Table(title=f"{args.source.name}: {w.shape[0]} x {w.shape[1]} (out x in), "
                        f"group {args.group_size}")
    for col in ("scheme", "bits/weight", "MSE", "groups per type"):
        table.add_column(col)
    counts = np.bincount(q.type_ids.ravel(), minlength=len(candidate_types(fmt)))
    table.add_row(f"{fmt.name.lower()} per-group", f"{q.bits_per_weight():.4f}", f"{mse:.4e}",
                  ", ".join(f"{n}: {int(c)}" for n, c in zip(candidate_types(fmt), counts,
                                                             strict=True)))
    meta = args.scale_bits / args.group_size
    refs = [f"int{fmt.bits}"] + (["fp4_e2m1"] if fmt.bits == 4 else [])
    for ref in refs:
        ref_mse = float(np.mean((quantize_rtn(w, ref, args.group_size, args.scale_bits) - w)
                                ** 2))
        table.add_row(f"{ref} RTN", f"{fmt.bits + meta:.4f}", f"{ref_mse:.4e}", "")
    Console().print(table)
    if args.output:
        extra = {}
        if args.columns or args.width:
            if not (args.columns and args.width):
                raise ConfigError("--columns and --width go together")
            tiles = pack_engine_tiles(q, args.columns, args.width)
            extra["weight_beats"] = np.stack([t["weights"] for t in tiles])
        np.savez(args.output, codes=q.codes, type_ids=q.type_ids, scale_int=q.scale_int,
                 shift=q.shift, fmt=int(fmt), group_size=q.group_size, k=q.k, **extra)
        print(f"wrote {args.output}")
    return 0
