"""Train small classifiers on scikit-learn's bundled digits and export quantized ONNX models.

Every model here is a real trained model with its real test accuracy:

* ``mlp``: MLPClassifier 64-64-10 (ReLU), exported as Gemm / Relu / Gemm.
* ``mlp_mm``: the same weights exported as MatMul + Add (the form dynamic quantization and
  QLinearMatMul / MatMulNBits need).
* ``cnn``: a 3x3 convolution whose 8 filters are the principal components of the training
  images' 3x3 patches (scikit-learn PCA), ReLU, 2x2 max pooling, then an MLPClassifier head
  (128-32-10) trained on those features. Exported as Conv / Relu / MaxPool / Flatten / Gemm.
* ``mlp_ternary``: a BitNet-style MLP trained in numpy with absmean ternary weights
  (straight-through estimator), int8 absmax activations; exported in QDQ form with int8
  weight initializers whose values are all in {-1, 0, 1}.
* ``mlp_bitmod``: the MLP's weights quantized by trilobit's BitMoD per-group datatype search
  (``trilobit quantize-weights``), groups of 32 along K: fc1 FP4 candidates, fc2 FP3
  candidates, in the per-group ONNX form (int8 values + blocked DequantizeLinear).
* ``mlp_bitmod_qdq``: the per-channel QDQ model (int8 activations) with its weights
  requantized the same way (FP4, groups of 32) and its biases in the accumulator unit.

Quantized forms come from stock ``onnxruntime.quantization``: QDQ (``quantize_static``,
per tensor and per channel), QOperator (QGemm / QLinearMatMul / QLinearConv), dynamic
(DynamicQuantizeLinear + MatMulInteger / ConvInteger) and weight-only INT4
(``MatMulNBitsQuantizer``: com.microsoft MatMulNBits and blocked DequantizeLinear + MatMul).

Run ``python examples/make_models.py`` to regenerate ``examples/models/*.onnx`` and
``examples/models/digits_test.npz`` (test images as 0..16 pixel values and labels).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization import (
    CalibrationDataReader,
    QuantFormat,
    QuantType,
    quantize_dynamic,
    quantize_static,
)
from onnxruntime.quantization.matmul_nbits_quantizer import (
    DefaultWeightOnlyQuantConfig,
    MatMulNBitsQuantizer,
)
from sklearn.datasets import load_digits
from sklearn.decomposition import PCA
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier

MODELS_DIR = Path(__file__).resolve().parent / "models"
OPSET = 21
#: Pixel values of the digits data run 0..16; models take pixels / 16.
PIXEL_MAX = 16.0
SEED = 0


def load_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Train/test split of the digits (pixels as uint8 0..16, labels as int64)."""
    digits = load_digits()
    x = digits.data.astype(np.uint8)
    y = digits.target.astype(np.int64)
    return train_test_split(x, y, test_size=0.2, random_state=SEED, stratify=y)


def to_float(pixels: np.ndarray) -> np.ndarray:
    return (pixels.astype(np.float32) / np.float32(PIXEL_MAX)).astype(np.float32)


def _model(nodes, inputs, outputs, initializers, name: str, opset: int = OPSET) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, name, inputs, outputs, initializer=initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    # INT2 initializers need opset 25, which needs IR version 11.
    model.ir_version = 11 if opset >= 25 else 10
    onnx.checker.check_model(model, full_check=True)
    return model


def _init(name: str, array: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(np.ascontiguousarray(array.astype(np.float32)), name)


# ---------------------------------------------------------------------------------------
# MLP
# ---------------------------------------------------------------------------------------


def train_mlp(x: np.ndarray, y: np.ndarray) -> MLPClassifier:
    clf = MLPClassifier(hidden_layer_sizes=(64,), max_iter=400, random_state=SEED)
    clf.fit(to_float(x), y)
    return clf


def export_mlp(clf: MLPClassifier, matmul_add: bool) -> onnx.ModelProto:
    """Float MLP: Gemm/Relu/Gemm, or MatMul+Add/Relu/MatMul+Add with ``matmul_add``."""
    (w1, w2), (b1, b2) = clf.coefs_, clf.intercepts_
    inits = [_init("fc1.weight", w1), _init("fc1.bias", b1),
             _init("fc2.weight", w2), _init("fc2.bias", b2)]
    if matmul_add:
        nodes = [
            helper.make_node("MatMul", ["pixels", "fc1.weight"], ["fc1.mm"], name="fc1"),
            helper.make_node("Add", ["fc1.mm", "fc1.bias"], ["fc1.out"], name="fc1.add"),
            helper.make_node("Relu", ["fc1.out"], ["relu1"], name="relu1"),
            helper.make_node("MatMul", ["relu1", "fc2.weight"], ["fc2.mm"], name="fc2"),
            helper.make_node("Add", ["fc2.mm", "fc2.bias"], ["logits"], name="fc2.add"),
        ]
    else:
        nodes = [
            helper.make_node("Gemm", ["pixels", "fc1.weight", "fc1.bias"], ["fc1.out"], name="fc1"),
            helper.make_node("Relu", ["fc1.out"], ["relu1"], name="relu1"),
            helper.make_node("Gemm", ["relu1", "fc2.weight", "fc2.bias"], ["logits"], name="fc2"),
        ]
    inputs = [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, ["N", 64])]
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])]
    return _model(nodes, inputs, outputs, inits, "digits_mlp")


# ---------------------------------------------------------------------------------------
# CNN: PCA filters + trained MLP head
# ---------------------------------------------------------------------------------------

CNN_FILTERS = 8


def _patches(images: np.ndarray) -> np.ndarray:
    """3x3 patches with zero padding 1: (N, 64, 9) for (N, 8, 8) images."""
    padded = np.pad(images, ((0, 0), (1, 1), (1, 1)))
    cols = [padded[:, dy : dy + 8, dx : dx + 8] for dy in range(3) for dx in range(3)]
    return np.stack(cols, axis=-1).reshape(images.shape[0], 64, 9)


def cnn_features(images: np.ndarray, filters: np.ndarray) -> np.ndarray:
    """Conv(pad 1) -> ReLU -> MaxPool 2x2 -> flatten (NCHW order), float32."""
    conv = _patches(images) @ filters.reshape(CNN_FILTERS, 9).T  # (N, 64, F)
    conv = np.maximum(conv, 0).reshape(-1, 8, 8, CNN_FILTERS).transpose(0, 3, 1, 2)
    pooled = conv.reshape(-1, CNN_FILTERS, 4, 2, 4, 2).max(axis=(3, 5))
    return pooled.reshape(images.shape[0], -1).astype(np.float32)


def train_cnn(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, MLPClassifier]:
    images = to_float(x).reshape(-1, 8, 8)
    patches = _patches(images).reshape(-1, 9)
    pca = PCA(n_components=CNN_FILTERS, random_state=SEED).fit(patches)
    filters = pca.components_.astype(np.float32).reshape(CNN_FILTERS, 1, 3, 3)
    head = MLPClassifier(hidden_layer_sizes=(32,), max_iter=400, random_state=SEED)
    head.fit(cnn_features(images, filters), y)
    return filters, head


def export_cnn(filters: np.ndarray, head: MLPClassifier) -> onnx.ModelProto:
    (w1, w2), (b1, b2) = head.coefs_, head.intercepts_
    inits = [_init("conv.weight", filters), _init("conv.bias", np.zeros(CNN_FILTERS)),
             _init("fc1.weight", w1), _init("fc1.bias", b1),
             _init("fc2.weight", w2), _init("fc2.bias", b2)]
    nodes = [
        helper.make_node("Conv", ["image", "conv.weight", "conv.bias"], ["conv.out"],
                         name="conv", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["conv.out"], ["conv.relu"], name="conv.relu"),
        helper.make_node("MaxPool", ["conv.relu"], ["pool"], name="pool",
                         kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Flatten", ["pool"], ["flat"], name="flatten", axis=1),
        helper.make_node("Gemm", ["flat", "fc1.weight", "fc1.bias"], ["fc1.out"], name="fc1"),
        helper.make_node("Relu", ["fc1.out"], ["relu1"], name="relu1"),
        helper.make_node("Gemm", ["relu1", "fc2.weight", "fc2.bias"], ["logits"], name="fc2"),
    ]
    inputs = [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 1, 8, 8])]
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])]
    return _model(nodes, inputs, outputs, inits, "digits_cnn")


# ---------------------------------------------------------------------------------------
# BitNet-style ternary MLP (absmean weights, absmax int8 activations), numpy training
# ---------------------------------------------------------------------------------------


def absmean_ternary(w: np.ndarray) -> tuple[np.ndarray, np.float32]:
    """BitNet b1.58 weight quantizer: ``round(clip(w / mean|w|, -1, 1))`` and the scale."""
    gamma = np.float32(np.abs(w).mean() + 1e-8)
    return np.clip(np.rint(w / gamma), -1, 1).astype(np.int8), gamma


def train_ternary_mlp(x: np.ndarray, y: np.ndarray, hidden: int = 96, epochs: int = 60):
    """Two ternary layers without bias, trained with a straight-through estimator."""
    rng = np.random.default_rng(SEED)
    xf = to_float(x)
    w1 = rng.normal(0, 1 / np.sqrt(64), (64, hidden)).astype(np.float32)
    w2 = rng.normal(0, 1 / np.sqrt(hidden), (hidden, 10)).astype(np.float32)
    onehot = np.eye(10, dtype=np.float32)[y]
    lr = 0.05
    for epoch in range(epochs):
        order = rng.permutation(len(xf))
        for start in range(0, len(xf), 32):
            idx = order[start : start + 32]
            t1, g1 = absmean_ternary(w1)
            t2, g2 = absmean_ternary(w2)
            q1, q2 = t1 * g1, t2 * g2
            h_pre = xf[idx] @ q1
            h = np.maximum(h_pre, 0)
            logits = h @ q2
            p = np.exp(logits - logits.max(axis=1, keepdims=True))
            p /= p.sum(axis=1, keepdims=True)
            d_logits = (p - onehot[idx]) / len(idx)
            d_h = (d_logits @ q2.T) * (h_pre > 0)
            # Straight-through: gradients w.r.t. the quantized weights update the latent ones.
            w2 -= lr * (h.T @ d_logits)
            w1 -= lr * (xf[idx].T @ d_h)
        if epoch == epochs // 2:
            lr *= 0.3
    return w1, w2


def export_ternary_mlp(w1: np.ndarray, w2: np.ndarray, x_calib: np.ndarray,
                       weight_type: int = TensorProto.INT8) -> onnx.ModelProto:
    """QDQ graph: Q(x) -> DQ -> MatMul(DQ(W1)) -> Q(uint8, zp 0 = ReLU) -> DQ -> MatMul(DQ(W2))
    -> Q(int8) -> DQ -> logits. Activation scales are absmax over the calibration set."""
    t1, g1 = absmean_ternary(w1)
    t2, g2 = absmean_ternary(w2)
    xf = to_float(x_calib)
    s_x = np.float32(np.abs(xf).max() / 127)
    h = np.maximum(xf @ (t1 * g1), 0)
    s_h = np.float32(h.max() / 255)
    s_y = np.float32(np.abs(h @ (t2 * g2)).max() / 127)
    f32 = TensorProto.FLOAT

    def scalar(name, value, elem=f32):
        return helper.make_tensor(name, elem, [], [value])

    def weight(name, t):
        return helper.make_tensor(name, weight_type, list(t.shape), t.reshape(-1).tolist())

    inits = [
        scalar("x.scale", float(s_x)), scalar("x.zp", 0, TensorProto.INT8),
        weight("fc1.weight_q", t1), scalar("fc1.weight_scale", float(g1)),
        scalar("fc1.weight_zp", 0, weight_type),
        scalar("h.scale", float(s_h)), scalar("h.zp", 0, TensorProto.UINT8),
        weight("fc2.weight_q", t2), scalar("fc2.weight_scale", float(g2)),
        scalar("fc2.weight_zp", 0, weight_type),
        scalar("y.scale", float(s_y)), scalar("y.zp", 0, TensorProto.INT8),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["pixels", "x.scale", "x.zp"], ["x_q"], name="x.q"),
        helper.make_node("DequantizeLinear", ["x_q", "x.scale", "x.zp"], ["x_dq"], name="x.dq"),
        helper.make_node("DequantizeLinear", ["fc1.weight_q", "fc1.weight_scale", "fc1.weight_zp"],
                         ["fc1.weight"], name="fc1.weight.dq"),
        helper.make_node("MatMul", ["x_dq", "fc1.weight"], ["fc1.out"], name="fc1"),
        helper.make_node("QuantizeLinear", ["fc1.out", "h.scale", "h.zp"], ["h_q"], name="h.q"),
        helper.make_node("DequantizeLinear", ["h_q", "h.scale", "h.zp"], ["h_dq"], name="h.dq"),
        helper.make_node("DequantizeLinear", ["fc2.weight_q", "fc2.weight_scale", "fc2.weight_zp"],
                         ["fc2.weight"], name="fc2.weight.dq"),
        helper.make_node("MatMul", ["h_dq", "fc2.weight"], ["fc2.out"], name="fc2"),
        helper.make_node("QuantizeLinear", ["fc2.out", "y.scale", "y.zp"], ["y_q"], name="y.q"),
        helper.make_node("DequantizeLinear", ["y_q", "y.scale", "y.zp"], ["logits"], name="y.dq"),
    ]
    inputs = [helper.make_tensor_value_info("pixels", f32, ["N", 64])]
    outputs = [helper.make_tensor_value_info("logits", f32, ["N", 10])]
    opset = 25 if weight_type in (TensorProto.INT2, TensorProto.UINT2) else OPSET
    return _model(nodes, inputs, outputs, inits, "digits_mlp_ternary", opset)


# ---------------------------------------------------------------------------------------
# Quantization with stock onnxruntime.quantization
# ---------------------------------------------------------------------------------------


class _Calibration(CalibrationDataReader):
    def __init__(self, name: str, batches: list[np.ndarray]):
        self._items = iter([{name: b} for b in batches])

    def get_next(self):
        return next(self._items, None)


def quantize_static_model(model: onnx.ModelProto, input_name: str, calib: np.ndarray, *,
                          fmt: QuantFormat, per_channel: bool, activation: QuantType,
                          tmp: Path) -> onnx.ModelProto:
    src, dst = tmp / "float.onnx", tmp / "quant.onnx"
    onnx.save(model, src)
    batches = [calib[i : i + 64] for i in range(0, len(calib), 64)]
    quantize_static(src, dst, _Calibration(input_name, batches), quant_format=fmt,
                    per_channel=per_channel, activation_type=activation,
                    weight_type=QuantType.QInt8)
    return onnx.load(dst)


def quantize_dynamic_model(model: onnx.ModelProto, tmp: Path) -> onnx.ModelProto:
    src, dst = tmp / "float.onnx", tmp / "dyn.onnx"
    onnx.save(model, src)
    quantize_dynamic(src, dst, weight_type=QuantType.QInt8)
    return onnx.load(dst)


def quantize_int4_model(model: onnx.ModelProto, qdq: bool, block_size: int = 32):
    """INT4 weight-only: MatMulNBits (accuracy_level 4) or blocked DequantizeLinear + MatMul."""
    config = DefaultWeightOnlyQuantConfig(
        block_size=block_size, is_symmetric=True, accuracy_level=None if qdq else 4,
        quant_format=QuantFormat.QDQ if qdq else QuantFormat.QOperator,
    )
    model = onnx.ModelProto.FromString(model.SerializeToString())  # the quantizer edits in place
    quantizer = MatMulNBitsQuantizer(
        model, block_size=block_size, is_symmetric=True, algo_config=config,
        quant_format=QuantFormat.QDQ if qdq else QuantFormat.QOperator,
    )
    quantizer.process()
    return quantizer.model.model


def bitmod_model(model: onnx.ModelProto) -> onnx.ModelProto:
    """Weight-only BitMoD per-group model: fc1 FP4, fc2 FP3, groups of 32 along K."""
    from trilobit.sw.quantize_cli import quantize_model_weights

    model, _ = quantize_model_weights(model, ["fc1.weight"], "fp4", group_size=32)
    model, _ = quantize_model_weights(model, ["fc2.weight"], "fp3", group_size=32)
    return model


def bitmod_qdq_model(qdq: onnx.ModelProto) -> onnx.ModelProto:
    """A QDQ model's int8 weights requantized into BitMoD FP4 groups of 32."""
    from trilobit.sw.quantize_cli import qdq_matmul_weights, quantize_model_weights

    model, _ = quantize_model_weights(qdq, qdq_matmul_weights(qdq), "fp4", group_size=32)
    return model


def accuracy(model: onnx.ModelProto, feed_name: str, x: np.ndarray, y: np.ndarray) -> float:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    logits = session.run(None, {feed_name: x})[0]
    return float((logits.argmax(axis=1) == y).mean())


def main() -> None:
    MODELS_DIR.mkdir(parents=True, exist_ok=True)
    x_train, x_test, y_train, y_test = load_split()
    np.savez_compressed(MODELS_DIR / "digits_test.npz", pixels=x_test, labels=y_test)
    calib = to_float(x_train[:256])
    xt = to_float(x_test)
    models: dict[str, tuple[onnx.ModelProto, str, np.ndarray]] = {}

    mlp = train_mlp(x_train, y_train)
    mlp_gemm, mlp_mm = export_mlp(mlp, matmul_add=False), export_mlp(mlp, matmul_add=True)
    filters, head = train_cnn(x_train, y_train)
    cnn = export_cnn(filters, head)
    w1, w2 = train_ternary_mlp(x_train, y_train)

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        models["mlp_float"] = (mlp_gemm, "pixels", xt)
        models["mlp_qdq"] = (quantize_static_model(
            mlp_gemm, "pixels", calib, fmt=QuantFormat.QDQ, per_channel=False,
            activation=QuantType.QUInt8, tmp=tmp), "pixels", xt)
        models["mlp_qdq_perchannel"] = (quantize_static_model(
            mlp_gemm, "pixels", calib, fmt=QuantFormat.QDQ, per_channel=True,
            activation=QuantType.QInt8, tmp=tmp), "pixels", xt)
        models["mlp_qop"] = (quantize_static_model(
            mlp_gemm, "pixels", calib, fmt=QuantFormat.QOperator, per_channel=False,
            activation=QuantType.QUInt8, tmp=tmp), "pixels", xt)
        models["mlp_qop_matmul"] = (quantize_static_model(
            mlp_mm, "pixels", calib, fmt=QuantFormat.QOperator, per_channel=False,
            activation=QuantType.QUInt8, tmp=tmp), "pixels", xt)
        models["mlp_dynamic"] = (quantize_dynamic_model(mlp_mm, tmp), "pixels", xt)
        models["mlp_matmulnbits"] = (quantize_int4_model(mlp_mm, qdq=False), "pixels", xt)
        models["mlp_int4_blocked"] = (quantize_int4_model(mlp_mm, qdq=True), "pixels", xt)

        ximg = xt.reshape(-1, 1, 8, 8)
        cimg = calib.reshape(-1, 1, 8, 8)
        models["cnn_float"] = (cnn, "image", ximg)
        models["cnn_qdq"] = (quantize_static_model(
            cnn, "image", cimg, fmt=QuantFormat.QDQ, per_channel=True,
            activation=QuantType.QUInt8, tmp=tmp), "image", ximg)
        models["cnn_qop"] = (quantize_static_model(
            cnn, "image", cimg, fmt=QuantFormat.QOperator, per_channel=False,
            activation=QuantType.QUInt8, tmp=tmp), "image", ximg)
        models["cnn_dynamic"] = (quantize_dynamic_model(cnn, tmp), "image", ximg)

    models["mlp_ternary"] = (export_ternary_mlp(w1, w2, x_train), "pixels", xt)
    models["mlp_bitmod"] = (bitmod_model(mlp_gemm), "pixels", xt)
    models["mlp_bitmod_qdq"] = (bitmod_qdq_model(models["mlp_qdq_perchannel"][0]), "pixels", xt)


    for name, (model, feed, x) in models.items():
        onnx.save(model, MODELS_DIR / f"digits_{name}.onnx")
        acc = accuracy(model, feed, x, y_test)
        size = (MODELS_DIR / f"digits_{name}.onnx").stat().st_size
        print(f"digits_{name:20s} accuracy {acc:.4f}  {size / 1024:6.1f} KiB")


if __name__ == "__main__":
    main()
