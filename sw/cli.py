"""``trilobit compile`` and ``trilobit run``.

::

    trilobit compile model.onnx --config small -o model.tbp
    trilobit run model.onnx --input x.npy --backend golden --compare-ort

``run`` accepts an ONNX model or a ``.tbp`` program, feeds ``--input`` files (``.npy``, or
``.npz`` keyed by input name) and prints the compile report, the largest difference from
onnxruntime (with ``--compare-ort``; needs the ONNX model), the cycles and the utilization.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from trilobit.errors import ModelError

__all__ = ["register_compile", "register_run", "load_feeds"]


def _add_config(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default="small",
                        help="accelerator preset (tiny, small, large) or a JSON config file")
    parser.add_argument("--batch", type=int, default=1,
                        help="activation rows one accelerator run processes (default 1)")


def _config(arg: str):
    from trilobit.config import AcceleratorConfig, preset

    path = Path(arg)
    if path.suffix == ".json" and path.is_file():
        import json

        return AcceleratorConfig.from_dict(json.loads(path.read_text()))
    return preset(arg)


def register_compile(subparsers: argparse._SubParsersAction) -> None:
    """``trilobit compile MODEL --config NAME -o OUT.tbp``."""
    parser = subparsers.add_parser(
        "compile", help="compile a quantized ONNX model into a .tbp program",
        description="Import, legalise, tile, pack, schedule and emit; print the compile report.")
    parser.add_argument("model", type=Path, help="quantized ONNX model")
    _add_config(parser)
    parser.add_argument("-o", "--output", type=Path, help="program file (default MODEL.tbp)")
    parser.set_defaults(handler=_run_compile)


def _run_compile(args: argparse.Namespace) -> int:
    from rich.console import Console

    from trilobit.sw.compiler import compile_model
    from trilobit.sw.report import render_report

    program = compile_model(args.model, _config(args.config), batch=args.batch)
    out = args.output or args.model.with_suffix(".tbp")
    program.save(out)
    console = Console()
    render_report(program, console=console)
    console.print(f"wrote {out} ({out.stat().st_size} bytes, "
                  f"{len(program.instructions) // 16} instructions, "
                  f"{len(program.constants)} constant bytes) in {program.compile_seconds:.3f} s")
    return 0


def register_run(subparsers: argparse._SubParsersAction) -> None:
    """``trilobit run MODEL --input x.npy [--backend B] [--compare-ort]``."""
    parser = subparsers.add_parser(
        "run", help="run a model or program on a backend",
        description="Run an ONNX model (compiled on the fly) or a .tbp program.")
    parser.add_argument("model", type=Path, help="ONNX model or .tbp program")
    parser.add_argument("--input", type=Path, action="append", required=True,
                        help=".npy (one per model input, in order) or .npz keyed by input name")
    parser.add_argument("--backend", default="golden", choices=("golden", "verilator", "device"))
    parser.add_argument("--compare-ort", action="store_true",
                        help="also run onnxruntime and print the largest difference")
    parser.add_argument("--save", type=Path, help="save the outputs to this .npz")
    _add_config(parser)
    parser.set_defaults(handler=_run_run)


def load_feeds(paths: list[Path], input_names: list[str]) -> dict[str, np.ndarray]:
    """Feeds from ``.npz`` files (by name) or ``.npy`` files (in input order)."""
    feeds: dict[str, np.ndarray] = {}
    npy = []
    for path in paths:
        if not path.is_file():
            raise ModelError(f"input file {str(path)!r} does not exist")
        if path.suffix == ".npz":
            with np.load(path) as data:
                feeds.update({k: data[k] for k in data.files})
        else:
            npy.append(np.load(path))
    free = [n for n in input_names if n not in feeds]
    if len(npy) > len(free):
        raise ModelError(f"{len(npy)} .npy inputs for {len(free)} model inputs {free}")
    feeds.update(zip(free, npy, strict=False))
    return feeds


def _run_run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from trilobit.sw.report import render_report
    from trilobit.sw.runtime import Session

    console = Console()
    session = Session(str(args.model), config=_config(args.config), backend=args.backend,
                      batch=args.batch)
    feeds = load_feeds(args.input, session.graph.inputs)
    outputs = session.run(feeds)
    render_report(session.program, session, console=console)
    for name, value in outputs.items():
        console.print(f"output {name}: shape {value.shape} dtype {value.dtype}")
    if args.compare_ort:
        if args.model.suffix == ".tbp":
            raise ModelError("--compare-ort needs the ONNX model, not a .tbp program")
        import onnxruntime as ort

        ref = ort.InferenceSession(str(args.model), providers=["CPUExecutionProvider"])
        theirs = dict(zip([o.name for o in ref.get_outputs()], ref.run(None, feeds),
                          strict=True))
        for name, value in outputs.items():
            diff = np.abs(value.astype(np.float64) - theirs[name].astype(np.float64))
            console.print(f"largest difference from onnxruntime on {name}: {diff.max():.6g}")
    counters = session.counters()
    console.print(f"cycles {counters['cycles']} over {counters['runs']} runs, utilization "
                  f"{counters['utilization']:.1%}, useful MACs {counters['useful_macs']}")
    if args.save:
        np.savez(args.save, **outputs)
    return 0
