"""Weight MSE of BitMoD per-group mixed datatypes vs INT round-to-nearest and plain FP4.

    python bench/bench_bitmod_mse.py [--group-size 128] [--json mse.json]

Weights: a scikit-learn MLP trained on the bundled digits data (64-256-128-10), the digits
MLP/CNN float models in ``examples/models`` (when present), and synthetic heavy-tailed
matrices (Student-t with 3 degrees of freedom; Gaussian with 0.5 % outliers x10). Every
scheme uses per-group symmetric absmax scales of ``group_size`` input channels in the same
integer form (8-bit mantissa x one power of two per tensor). Bits per weight include the
per-group metadata (8-bit scale, plus the 2-bit type id for the mixed schemes). MSE is
reported relative to the mean squared weight (lower is better).
"""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.progress import track
from rich.table import Table

from trilobit.sw.bitmod import quantize_bitmod, quantize_rtn

ROOT = Path(__file__).resolve().parents[1]
SCALE_BITS = 8


def digits_mlp_weights() -> dict[str, np.ndarray]:
    """(out, in) weight matrices of an MLP trained on sklearn's digits data."""
    from sklearn.datasets import load_digits
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    x, y = load_digits(return_X_y=True)
    clf = MLPClassifier(hidden_layer_sizes=(256, 128), max_iter=200, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(x / 16.0, y)
    return {f"sklearn digits MLP layer {i} ({w.shape[1]}x{w.shape[0]})": w.T
            for i, w in enumerate(clf.coefs_)}


def example_model_weights() -> dict[str, np.ndarray]:
    import onnx
    from onnx import numpy_helper

    out = {}
    for name in ("digits_mlp_float.onnx", "digits_cnn_float.onnx"):
        path = ROOT / "examples" / "models" / name
        if not path.is_file():
            continue
        for init in onnx.load(str(path)).graph.initializer:
            w = numpy_helper.to_array(init).astype(np.float64)
            if w.ndim == 2 and w.size >= 256:
                out[f"{name} {init.name}"] = w.T  # MatMul weights are (in, out)
    return out


def synthetic_weights(rng: np.random.Generator) -> dict[str, np.ndarray]:
    t = rng.standard_t(3, size=(256, 1024)) * 0.02
    g = rng.normal(0, 0.02, size=(256, 1024))
    mask = rng.random(g.shape) < 0.005
    g[mask] *= 10
    return {"synthetic Student-t(3) 256x1024": t, "synthetic Gaussian + 0.5% outliers x10": g}


SCHEMES = [
    ("INT3 RTN", lambda w, g: quantize_rtn(w, "int3", g, SCALE_BITS)),
    ("FP3 mixed (BitMoD)", lambda w, g: quantize_bitmod(w, "fp3", g, SCALE_BITS).dequantize()),
    ("INT4 RTN", lambda w, g: quantize_rtn(w, "int4", g, SCALE_BITS)),
    ("FP4 (E2M1) RTN", lambda w, g: quantize_rtn(w, "fp4_e2m1", g, SCALE_BITS)),
    ("FP4 mixed (BitMoD)", lambda w, g: quantize_bitmod(w, "fp4", g, SCALE_BITS).dequantize()),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--group-size", type=int, default=128)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    g = args.group_size
    rng = np.random.default_rng(0)
    tensors = {**digits_mlp_weights(), **example_model_weights(), **synthetic_weights(rng)}
    results = {}
    for name, w in track(list(tensors.items()), description="quantizing"):
        power = float(np.mean(w**2))
        results[name] = {s: float(np.mean((fn(w, g) - w) ** 2) / power) for s, fn in SCHEMES}
    console = Console(width=160)
    table = Table(title=f"relative weight MSE, group {g} (x1e-3, lower is better)")
    table.add_column("tensor")
    for s, _ in SCHEMES:
        table.add_column(f"{s}\n{_bpw(s, g):.4f} b/w", justify="right")
    for name, row in results.items():
        table.add_row(name, *[f"{row[s] * 1e3:.3f}" for s, _ in SCHEMES])
    geo = {s: float(np.exp(np.mean([np.log(r[s]) for r in results.values()])))
           for s, _ in SCHEMES}
    table.add_row("geometric mean", *[f"{geo[s] * 1e3:.3f}" for s, _ in SCHEMES])
    console.print(table)
    console.print(f"FP3 mixed / INT3 RTN: {geo['FP3 mixed (BitMoD)'] / geo['INT3 RTN']:.3f}   "
                  f"FP4 mixed / INT4 RTN: {geo['FP4 mixed (BitMoD)'] / geo['INT4 RTN']:.3f}   "
                  f"FP4 mixed / FP4 RTN: {geo['FP4 mixed (BitMoD)'] / geo['FP4 (E2M1) RTN']:.3f}")
    if args.json:
        args.json.write_text(json.dumps({"group_size": g, "relative_mse": results,
                                         "geometric_mean": geo}, indent=2))


def _bpw(scheme: str, group_size: int) -> float:
    bits = 3 if "3" in scheme.split()[0] else 4
    meta = SCALE_BITS + (2 if "mixed" in scheme else 0)
    return bits + meta / group_size


if __name__ == "__main__":
    main()
