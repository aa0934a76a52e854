"""Shared fixtures for the compiler/runtime tests: the shipped digits models and test set."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

MODELS = Path(__file__).resolve().parents[2] / "examples" / "models"

#: Models whose engine paths are integer: outputs must equal onnxruntime's exactly.
EXACT_MODELS = [
    "mlp_qdq", "mlp_qdq_perchannel", "mlp_qop", "mlp_qop_matmul", "mlp_dynamic",
    "mlp_ternary", "cnn_qdq", "cnn_qop", "cnn_dynamic",
]
#: Weight-only models: activations quantized per row on the fly; faithful, not identical.
WEIGHT_ONLY_MODELS = ["mlp_matmulnbits", "mlp_int4_blocked"]


def model_path(name: str) -> Path:
    return MODELS / f"digits_{name}.onnx"


def digits_inputs(name: str, count: int | None = None) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Feeds for model ``name`` (pixels / 16 as float32, images for CNNs) and the labels."""
    data = np.load(MODELS / "digits_test.npz")
    pixels, labels = data["pixels"][:count], data["labels"][:count]
    x = (pixels.astype(np.float32) / np.float32(16)).astype(np.float32)
    model = onnx.load(model_path(name))
    feed = model.graph.input[0].name
    if name.startswith("cnn"):
        x = x.reshape(-1, 1, 8, 8)
    return {feed: x}, labels


def ort_outputs(name: str, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    session = ort.InferenceSession(str(model_path(name)), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)
