"""IR executor built only on the numerics core: what the accelerator must compute.

Every engine node is evaluated with :mod:`trilobit.gemm` (exact integer GEMM),
:mod:`trilobit.quant` and :mod:`trilobit.requant` (onnxruntime's float32 requantization), so
for the integer paths the result is bit-identical to onnxruntime; HostOps run through
onnxruntime itself. Weight-only nodes follow the accelerator (activations quantized per
row to INT8 on the fly), which is faithful but not bit-identical to onnxruntime's float path.

Integer tensors are held as numpy int8 (signed formats up to 8 bits) or uint8 (unsigned
formats, and codes of floating-point formats such as float4e2m1).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from trilobit.dtypes import get_dtype
from trilobit.errors import BackendError, ModelError
from trilobit.gemm import gemm_int
from trilobit.quant import dequantize_linear, dynamic_quantize_linear, quantize_linear
from trilobit.requant import requantize_ort
from trilobit.sw import ir

__all__ = [
    "ReferenceExecutor",
    "quantized_add",
    "fma_f32",
    "storage_dtype",
    "im2col",
    "conv_output_size",
    "weight_only_matmul",
    "check_feeds",
]


def storage_dtype(dtype: str) -> np.dtype:
    """numpy dtype holding values of trilobit/ONNX datatype ``dtype`` in this executor."""
    if dtype in ("float32", "float64", "float16", "int32", "int64", "bool"):
        return np.dtype(dtype)
    dt = get_dtype(dtype)
    if dt.kind in ("int", "ternary", "binary"):
        return np.dtype(np.int8)
    return np.dtype(np.uint8)


def conv_output_size(size: int, kernel: int, stride: int, pad_lo: int, pad_hi: int,
                     dilation: int) -> int:
    """Output length (pixels) of one spatial axis of a convolution."""
    return (size + pad_lo + pad_hi - dilation * (kernel - 1) - 1) // stride + 1


def im2col(x: np.ndarray, kh: int, kw: int, strides, pads, dilations, pad_value) -> np.ndarray:
    """(N, C, H, W) -> (N, OH*OW, C*kh*kw) rows in (c, ky, kx) order, matching
    ``weight.reshape(M, -1)``. Padding uses ``pad_value`` (the activation zero point, so a
    padded tap contributes exactly zero after the zero point is subtracted)."""
    n, c, h, w = x.shape
    sh, sw = strides
    top, left, bottom, right = pads
    dh, dw = dilations
    oh = conv_output_size(h, kh, sh, top, bottom, dh)
    ow = conv_output_size(w, kw, sw, left, right, dw)
    padded = np.full((n, c, h + top + bottom, w + left + right), pad_value, dtype=x.dtype)
    padded[:, :, top : top + h, left : left + w] = x
    cols = np.empty((n, c, kh, kw, oh, ow), dtype=x.dtype)
    for ky in range(kh):
        for kx in range(kw):
            y0, x0 = ky * dh, kx * dw
            cols[:, :, ky, kx] = padded[:, :, y0 : y0 + sh * (oh - 1) + 1 : sh,
                                        x0 : x0 + sw * (ow - 1) + 1 : sw]
    return cols.reshape(n, c * kh * kw, oh * ow).transpose(0, 2, 1), (oh, ow)


def weight_only_matmul(a: np.ndarray, node: ir.WeightOnlyMatMul) -> np.ndarray:
    """Accelerator semantics of a weight-only product (float32 result).

    Each row of ``a`` is quantized to INT8 symmetrically (scale = absmax / 127, round half to
    even); each K block accumulates exactly in integers, then is scaled by
    ``a_scale * w_scale[block]`` and summed in float32 in block order.
    """
    a = np.asarray(a, dtype=np.float32)
    k, n = node.b.shape
    absmax = np.abs(a).max(axis=-1, keepdims=True)
    a_scale = np.where(absmax > 0, absmax / np.float32(127), np.float32(1)).astype(np.float32)
    a_q = np.clip(np.rint(a / a_scale), -127, 127).astype(np.int32)
    out = np.zeros(a.shape[:-1] + (n,), np.float32)
    for j, k0 in enumerate(range(0, k, node.block_size)):
        blk = slice(k0, min(k, k0 + node.block_size))
        zp = 0 if node.zero_point is None else node.zero_point[j]
        acc = gemm_int(a_q[..., blk], node.b[blk], 0, zp)
        out += acc.astype(np.float32) * (a_scale * node.scale[j]).astype(np.float32)
    if node.bias is not None:
        out += node.bias
    return out.astype(np.float32)


def fma_f32(x, y, z) -> np.ndarray:
    """float32 ``x * y + z`` with a single rounding (ties to even), as the FMA instruction.

    ``x * y`` is exact in float64; TwoSum gives ``hi + lo == x*y + z`` exactly; rounding
    ``hi`` to float32 is then corrected where ``hi`` sits exactly on a float32 midpoint and
    ``lo`` says on which side the exact value lies (the double-rounding case).
    """
    p = np.asarray(x, np.float32).astype(np.float64) * np.asarray(y, np.float32).astype(
        np.float64)
    z = np.asarray(z, np.float32).astype(np.float64)
    hi = p + z
    bb = hi - p
    lo = (p - (hi - bb)) + (z - bb)
    r = hi.astype(np.float32)
    err = hi - r.astype(np.float64)
    up = np.nextafter(r, np.float32(np.inf))
    dn = np.nextafter(r, np.float32(-np.inf))
    on_mid_up = err == (up.astype(np.float64) - r.astype(np.float64)) / 2
    on_mid_dn = -err == (r.astype(np.float64) - dn.astype(np.float64)) / 2
    r = np.where(on_mid_up & (lo > 0), up, r)
    r = np.where(on_mid_dn & (lo < 0), dn, r)
    return r.astype(np.float32)


def quantized_add(a: np.ndarray, b: np.ndarray, node: ir.QAdd) -> np.ndarray:
    """com.microsoft QLinearAdd exactly as onnxruntime's x86-64 (AVX2) kernel computes it.

    ``fixed = zc - (sa/sc * za + sb/sc * zb)`` in float32; per element
    ``t = fma(a, sa/sc, fma(b, sb/sc, fixed))``, rounded half to even and saturated. The
    float formula ``rint((sa(a-za) + sb(b-zb)) / sc) + zc`` differs from it by one unit near
    ties, which is why the FMA order is reproduced here.
    """
    f = np.float32
    r_a = f(f(node.a_scale) / f(node.y_scale))
    r_b = f(f(node.b_scale) / f(node.y_scale))
    fixed = f(f(node.y_zero_point) - f(f(r_a * f(node.a_zero_point)) +
                                       f(r_b * f(node.b_zero_point))))
    a32, b32 = np.broadcast_arrays(np.asarray(a).astype(np.float32),
                                   np.asarray(b).astype(np.float32))
    t = fma_f32(a32, r_a, fma_f32(b32, r_b, fixed))
    dt = get_dtype(node.dtype)
    return np.clip(np.rint(t), dt.min, dt.max).astype(storage_dtype(node.dtype))


def check_feeds(graph: ir.Graph, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Validate names, dtypes and static dims of the inputs; ModelError names the tensor."""
    missing = [n for n in graph.inputs if n not in feeds]
    if missing:
        raise ModelError(f"missing input tensor(s) {missing}; the model takes {graph.inputs}")
    unknown = [n for n in feeds if n not in graph.inputs]
    if unknown:
        raise ModelError(f"unknown input tensor(s) {unknown}; the model takes {graph.inputs}")
    out = {}
    for name in graph.inputs:
        value = np.asarray(feeds[name])
        info = graph.tensors.get(name)
        if info is not None and info.dtype != "unknown":
            want = storage_dtype(info.dtype) if info.dtype not in ("float32",) else np.float32
            if value.dtype != want:
                raise ModelError(
                    f"input {name!r}: dtype {value.dtype} but the model expects {info.dtype}"
                )
            static_mismatch = any(
                isinstance(d, int) and d > 0 and d != s
                for d, s in zip(info.shape, value.shape, strict=False)
            )
            if info.shape and (len(info.shape) != value.ndim or static_mismatch):
                raise ModelError(
                    f"input {name!r}: shape {value.shape} does not match the model's {info.shape}"
                )
        out[name] = value
    return out


class ReferenceExecutor:
    """Run an IR graph node by node; ``run(feeds)`` returns the graph outputs by name."""

    def __init__(self, graph: ir.Graph):
        self.graph = graph
        self._host_sessions: dict[str, object] = {}

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        env: dict[str, np.ndarray] = dict(check_feeds(self.graph, feeds))
        for node in self.graph.nodes:
            try:
                results = self.execute(node, [env[i] for i in node.inputs])
            except KeyError as exc:
                raise BackendError(f"node {node.name!r}: input {exc} was never produced") from exc
            env.update(zip(node.outputs, results, strict=True))
        return {name: env[name] for name in self.graph.outputs}

    def execute(self, node: ir.Node, args: list[np.ndarray]) -> list[np.ndarray]:
        method = getattr(self, f"_run_{node.kind}")
        return method(node, args)

    # -- engine nodes -------------------------------------------------------------------
    def _accumulate(self, node: ir.QMatMul, args) -> np.ndarray:
        a_zp = node.a_zero_point if len(args) < 2 else int(np.asarray(args[1]).reshape(()))
        if isinstance(node, ir.QConv):
            return self._conv_acc(node, args[0], a_zp)
        acc = gemm_int(args[0], node.b, a_zp, node.b_zero_point).astype(np.int64)
        if node.bias is not None:
            acc = acc + node.bias.astype(np.int64)
        return acc

    def _conv_acc(self, node: ir.QConv, x: np.ndarray, a_zp: int) -> np.ndarray:
        m, cg, kh, kw = node.weight.shape
        n = x.shape[0]
        outs = []
        for g in range(node.group):
            xg = x[:, g * cg : (g + 1) * cg]
            rows, (oh, ow) = im2col(xg, kh, kw, node.strides, node.pads, node.dilations, a_zp)
            mg = m // node.group
            wg = node.weight[g * mg : (g + 1) * mg].reshape(mg, -1).T
            zp = node.b_zero_point
            zp = zp[g * mg : (g + 1) * mg] if np.ndim(zp) else zp
            outs.append(gemm_int(rows, wg, a_zp, zp).astype(np.int64))
        acc = np.concatenate(outs, axis=-1)  # (N, OH*OW, M)
        if node.bias is not None:
            acc = acc + node.bias.astype(np.int64)
        return acc.transpose(0, 2, 1).reshape(n, m, oh, ow)

    def _finish(self, node: ir.QMatMul, acc: np.ndarray) -> np.ndarray:
        """Requantize / pass through / dequantize the accumulator (channel axis: last for
        QMatMul, 1 for QConv)."""
        channel_axis = 1 if isinstance(node, ir.QConv) else acc.ndim - 1

        def per_channel(v):
            v = np.asarray(v)
            if v.ndim == 0:
                return v
            view = [1] * acc.ndim
            view[channel_axis] = v.size
            return v.reshape(view)

        if node.out == "int32":
            return acc.astype(np.int32)
        if node.out == "float":
            return (acc.astype(np.float32) * per_channel(node.out_scale)).astype(np.float32)
        y = requantize_ort(acc, per_channel(node.multiplier), node.y_zero_point, node.y_dtype)
        return y.astype(storage_dtype(node.y_dtype))

    def _run_QMatMul(self, node: ir.QMatMul, args):
        return [self._finish(node, self._accumulate(node, args))]

    _run_QConv = _run_QMatMul

    def _run_QAdd(self, node: ir.QAdd, args):
        b = node.b_const if node.b_const is not None else args[1]
        return [quantized_add(args[0], b, node)]

    def _run_Quantize(self, node: ir.Quantize, args):
        y = quantize_linear(args[0], node.scale, node.zero_point, dtype=node.dtype,
                            axis=node.axis, block_size=node.block_size)
        return [y.astype(storage_dtype(node.dtype))]

    def _run_Dequantize(self, node: ir.Dequantize, args):
        return [dequantize_linear(args[0], node.scale, node.zero_point, dtype=node.dtype,
                                  axis=node.axis, block_size=node.block_size)]

    def _run_DynamicQuantize(self, node: ir.DynamicQuantize, args):
        y, scale, zp = dynamic_quantize_linear(args[0])
        return [y, np.asarray(scale, np.float32), np.asarray(zp, np.uint8)][: len(node.outputs)]

    def _run_WeightOnlyMatMul(self, node: ir.WeightOnlyMatMul, args):
        return [weight_only_matmul(args[0], node)]

    # -- host -----------------------------------------------------------------------------
    def _run_HostOp(self, node: ir.HostOp, args):
        import onnxruntime as ort

        session = self._host_sessions.get(node.name)
        if session is None:
            try:
                session = ort.InferenceSession(node.model, providers=["CPUExecutionProvider"])
            except Exception as exc:
                raise BackendError(f"host op {node.name!r} ({node.op_type}): {exc}") from exc
            self._host_sessions[node.name] = session
        try:
            return session.run(node.outputs, dict(zip(node.inputs, args, strict=True)))
        except Exception as exc:
            raise BackendError(f"host op {node.name!r} ({node.op_type}) failed: {exc}") from exc
