"""BitMoD per-group ONNX weights on the digits MLP: error against onnxruntime and engine cycles.

    python bench/bench_bitmod_onnx.py [--config tiny] [--group-size 32] [--rows 360] [--rtl]

For each format the float digits MLP (``examples/models/digits_mlp_float.onnx``) is rewritten
by ``trilobit quantize-weights --all`` into the per-group ONNX form and run on the golden
model over the digits test set. Printed side by side, from the same run:

* relative L2 error of the logits against onnxruntime's ONNX definition (float
  DequantizeLinear + MatMul, ORT_ENABLE_BASIC) and against onnxruntime's default session
  (which fuses the pattern into MatMulNBits with int8 activations);
* predictions equal to onnxruntime's, and test accuracy;
* measured engine cycles of the per-group path, and of the per-block INT8 path the compiler
  falls back to (same weights with scales moved off the ``uint8 * 2**-shift`` form by a
  factor 1 + 2**-20, so the importer no longer recognises them).

``--rtl`` adds the shipped ``digits_mlp_bitmod.onnx`` on 8 images, both paths, measured on the
accelerator RTL (Verilator) next to the golden model's estimate.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper
from rich.console import Console
from rich.table import Table

from trilobit.sw.quantize_cli import quantize_model_weights
from trilobit.sw.runtime import Session

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "examples" / "models"


def ort_logits(model: onnx.ModelProto, x: np.ndarray, definition: bool) -> np.ndarray:
    options = ort.SessionOptions()
    if definition:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    session = ort.InferenceSession(model.SerializeToString(), options,
                                   providers=["CPUExecutionProvider"])
    return session.run(None, {"pixels": x})[0]


def off_form(model: onnx.ModelProto) -> onnx.ModelProto:
    """The same model with every block scale multiplied by 1 + 2**-20 (not uint8 * 2**-k)."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    for i, init in enumerate(model.graph.initializer):
        if init.name.endswith(".scale"):
            s = numpy_helper.to_array(init) * np.float32(1 + 2.0**-20)
            model.graph.initializer[i].CopyFrom(numpy_helper.from_array(s.astype(np.float32),
                                                                        init.name))
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="tiny")
    parser.add_argument("--group-size", type=int, default=32)
    parser.add_argument("--rows", type=int, default=360, help="test images (at most 360)")
    parser.add_argument("--rtl", action="store_true", help="also measure cycles on the RTL")
    args = parser.parse_args()
    data = np.load(MODELS / "digits_test.npz")
    x = (data["pixels"][: args.rows].astype(np.float32) / np.float32(16)).astype(np.float32)
    labels = data["labels"][: args.rows]
    float_model = onnx.load(MODELS / "digits_mlp_float.onnx")
    names = ["fc1.weight", "fc2.weight"]
    table = Table(title=f"digits MLP, per-group weights (groups of {args.group_size}), "
                        f"config {args.config}, {len(x)} images")
    for col in ("format", "rel. error vs ONNX def.", "vs ORT default", "same prediction",
                "accuracy (ORT def.)", "engine cycles", "per-block INT8 cycles", "ratio"):
        table.add_column(col)
    for fmt in ("fp3", "fp4", "int4", "int8"):
        model, _ = quantize_model_weights(float_model, names, fmt, args.group_size)
        definition = ort_logits(model, x, True)
        default = ort_logits(model, x, False)
        grouped = Session(model, config=args.config, batch=64)
        ours = grouped.run({"pixels": x})["logits"]
        per_block = Session(off_form(model), config=args.config, batch=64)
        per_block.run({"pixels": x})
        rel = np.linalg.norm(ours - definition) / np.linalg.norm(definition)
        rel_default = np.linalg.norm(ours - default) / np.linalg.norm(default)
        same = (ours.argmax(1) == definition.argmax(1)).mean()
        cycles, block_cycles = grouped.counters()["cycles"], per_block.counters()["cycles"]
        table.add_row(fmt, f"{rel:.3%}", f"{rel_default:.3%}", f"{same:.2%}",
                      f"{(ours.argmax(1) == labels).mean():.2%} "
                      f"({(definition.argmax(1) == labels).mean():.2%})",
                      str(cycles), str(block_cycles), f"{block_cycles / cycles:.2f}x")
    Console(width=160).print(table)
    if args.rtl:
        shipped = onnx.load(MODELS / "digits_mlp_bitmod.onnx")
        rtl = Table(title=f"digits_mlp_bitmod.onnx, 8 images, config {args.config}, runs of 4")
        for col in ("path", "golden estimate (cycles)", "RTL (cycles)"):
            rtl.add_column(col)
        for name, model in (("per-group", shipped), ("per-block INT8", off_form(shipped))):
            cycles = []
            for backend in ("golden", "verilator"):
                session = Session(model, config=args.config, backend=backend, batch=4)
                session.run({"pixels": x[:8]})
                cycles.append(str(session.counters()["cycles"]))
            rtl.add_row(name, *cycles)
        Console(width=160).print(rtl)


if __name__ == "__main__":
    main()
