"""``trilobit demo``: the shipped digits models, compiled and run on the accelerator model.

For every model in ``examples/models`` (MLP and CNN quantized by onnxruntime in QDQ,
QOperator and dynamic forms, the BitNet-style ternary MLP, the INT4 weight-only MLPs):
compile it for the chosen configuration, run the whole digits test set through a
``Session`` (by default on the accelerator RTL in Verilator, cycle-accurate; ``--backend
golden``: the instruction-level model with its cycle model), run
onnxruntime on the same inputs, and print accuracy, whether the outputs are identical (or,
for weight-only models, the relative error), cycles, compute utilization and the projected
throughput at the clock of the configuration's board bitstream. ``--rtl-check`` first runs
the Verilator dot-product check of :mod:`trilobit.demo`.

Exit code 1 when an integer model differs from onnxruntime in any bit, or a weight-only
model's relative error exceeds 2 % or one of its predictions differs.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["register", "run_models_demo", "DemoRow", "DEMO_MODELS", "TARGET_FMAX_MHZ"]

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "models"
#: (model, kind): ``exact`` outputs must equal onnxruntime's; ``faithful`` within 2 %.
DEMO_MODELS = [
    ("mlp_qdq", "exact"), ("mlp_qdq_perchannel", "exact"), ("mlp_qop", "exact"),
    ("mlp_qop_matmul", "exact"), ("mlp_dynamic", "exact"), ("mlp_ternary", "exact"),
    ("cnn_qdq", "exact"), ("cnn_qop", "exact"), ("cnn_dynamic", "exact"),
    ("mlp_matmulnbits", "faithful"), ("mlp_int4_blocked", "faithful"),
]
#: Clock per preset (MHz) for projected throughput: the clock its board bitstream is built
#: and timed at (``tiny`` on the OrangeCrab, routed Fmax 54.9 MHz; ``small`` on the ULX3S,
#: routed 33.7 MHz; docs/boards.md). ``large`` is a nominal Zynq UltraScale+ figure: Vivado
#: has not timed it. Override with --fmax-mhz.
TARGET_FMAX_MHZ = {"tiny": 40.0, "small": 30.0, "large": 250.0}
MAX_RELATIVE_ERROR = 0.02


@dataclass
class DemoRow:
    model: str
    kind: str
    accuracy: float
    ort_accuracy: float
    identical: bool
    same_predictions: bool
    relative_error: float
    cycles: int
    utilization: float
    images: int
    engines: str

    @property
    def ok(self) -> bool:
        if self.kind == "exact":
            return self.identical
        return self.relative_error <= MAX_RELATIVE_ERROR and self.same_predictions


def _inputs(name: str, count: int | None):
    data = np.load(EXAMPLES / "digits_test.npz")
    pixels, labels = data["pixels"][:count], data["labels"][:count]
    x = (pixels.astype(np.float32) / np.float32(16)).astype(np.float32)
    if name.startswith("cnn"):
        x = x.reshape(-1, 1, 8, 8)
    return x, labels


def run_models_demo(config: str = "small", backend: str = "golden", images: int | None = None,
                    batch: int = 64, progress=None) -> list[DemoRow]:
    """Compile and run every demo model; ``progress(name)`` is called before each."""
    import onnx
    import onnxruntime as ort

    from trilobit.sw.runtime import Session

    rows = []
    for name, kind in DEMO_MODELS:
        if progress is not None:
            progress(name)
        path = EXAMPLES / f"digits_{name}.onnx"
        x, labels = _inputs(name, images)
        feed = onnx.load(path).graph.input[0].name
        theirs = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
            None, {feed: x})[0]
        session = Session(path, config=config, backend=backend, batch=batch)
        ours = next(iter(session.run({feed: x}).values()))
        counters = session.counters()
        engines = sorted({n.engine for n in session.graph.nodes
                          if n.engine in ("tlmm", "bitserial")})
        rel = float(np.linalg.norm(ours.astype(np.float64) - theirs) /
                    max(np.linalg.norm(theirs), 1e-30))
        rows.append(DemoRow(
            model=name, kind=kind, accuracy=float((ours.argmax(1) == labels).mean()),
            ort_accuracy=float((theirs.argmax(1) == labels).mean()),
            identical=bool(np.array_equal(ours, theirs)),
            same_predictions=bool(np.array_equal(ours.argmax(1), theirs.argmax(1))),
            relative_error=rel,
            cycles=int(counters["cycles"]), utilization=float(counters["utilization"]),
            images=len(labels), engines="+".join(engines),
        ))
    return rows


def register(subparsers: argparse._SubParsersAction) -> None:
    """``trilobit demo``."""
    parser = subparsers.add_parser(
        "demo", help="compile the shipped digits models, run them, compare with onnxruntime",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="small", choices=sorted(TARGET_FMAX_MHZ))
    parser.add_argument("--backend", default="verilator", choices=("golden", "verilator"),
                        help="verilator: cycle-accurate RTL (default; the first run builds the "
                             "model, about a minute); golden: the instruction-level model")
    parser.add_argument("--images", type=int, default=None,
                        help="test images per model (default: all 360)")
    parser.add_argument("--batch", type=int, default=64, help="rows per accelerator run")
    parser.add_argument("--fmax-mhz", type=float, default=None,
                        help="clock for projected throughput (default: the preset's board clock)")
    parser.add_argument("--rtl-check", action="store_true",
                        help="first run the Verilator int8 dot-product check")
    rtl = parser.add_argument_group(
        "Verilator dot-product check (any of these runs only that check, as before)")
    rtl.add_argument("--vectors", type=int, default=None, help="dot products (default 200)")
    rtl.add_argument("--max-length", type=int, default=None, help="longest vector (default 256)")
    rtl.add_argument("--stall", type=float, default=None,
                     help="stall probability on each stream (default 0.25)")
    rtl.add_argument("--seed", type=int, default=None, help="random seed (default 0)")
    parser.set_defaults(handler=_run_command)


_RTL_DEFAULTS = {"vectors": 200, "max_length": 256, "stall": 0.25, "seed": 0}


def _rtl_args(args: argparse.Namespace) -> argparse.Namespace:
    values = {k: d if getattr(args, k) is None else getattr(args, k)
              for k, d in _RTL_DEFAULTS.items()}
    return argparse.Namespace(**values)


def _run_command(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from trilobit.demo import _run_demo_command as run_rtl_check

    console = Console()
    if any(getattr(args, k) is not None for k in _RTL_DEFAULTS):
        return run_rtl_check(_rtl_args(args))
    if args.rtl_check:
        code = run_rtl_check(_rtl_args(args))
        if code:
            return code
    fmax = args.fmax_mhz or TARGET_FMAX_MHZ[args.config]
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=console) as bar:
        task = bar.add_task("compiling and running", total=len(DEMO_MODELS))
        first = True

        def step(name: str) -> None:
            nonlocal first
            if not first:
                bar.advance(task)
            first = False
            bar.update(task, description=f"digits_{name}")

        rows = run_models_demo(args.config, args.backend, args.images, args.batch, step)
        bar.update(task, completed=len(DEMO_MODELS), description="done")
    table = Table(title=f"digits models on trilobit '{args.config}' ({args.backend} backend), "
                        f"images/s projected at a {fmax:g} MHz clock")
    for col in ("model", "engines", "accuracy", "onnxruntime", "vs onnxruntime", "cycles",
                "utilization", "images/s"):
        table.add_column(col)
    for r in rows:
        verdict = ("identical" if r.identical else
                   f"rel. error {r.relative_error:.2%}" if r.kind == "faithful" else "DIFFERENT")
        rate = r.images / (r.cycles / (fmax * 1e6)) if r.cycles else float("nan")
        table.add_row(r.model, r.engines, f"{r.accuracy:.2%}", f"{r.ort_accuracy:.2%}",
                      verdict, str(r.cycles), f"{r.utilization:.1%}", f"{rate:,.0f}",
                      style=None if r.ok else "red")
    console.print(table)
    bad = [r.model for r in rows if not r.ok]
    if bad:
        console.print(f"[red]not matching onnxruntime: {', '.join(bad)}[/]")
        return 1
    console.print("every integer model is bit-identical to onnxruntime; weight-only models "
                  f"are within {MAX_RELATIVE_ERROR:.0%} with the same predictions")
    console.print(f"images/s at a {fmax:g} MHz clock (the preset's board bitstream clock for "
                  "tiny and small, nominal for large; docs/boards.md)")
    return 0
