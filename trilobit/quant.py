"""Linear quantization with ONNX semantics (QuantizeLinear / DequantizeLinear, opset 21+).

``y = saturate(round_half_even(x / scale) + zero_point)`` for integer targets, and
``y = cast(x / scale)`` for floating-point targets (float4/float8, saturating). Scales are
per tensor (scalar), per axis (1-D, length ``x.shape[axis]``) or blocked (same rank as
``x``, ``ceil(x.shape[axis] / block_size)`` along ``axis``). Arithmetic is float32, as in
onnxruntime, so results are bit-identical to it.
"""

from __future__ import annotations

import numpy as np

from trilobit.dtypes import Datatype, get_dtype
from trilobit.errors import QuantizationError

__all__ = [
    "broadcast_qparam",
    "quantize_linear",
    "dequantize_linear",
    "dynamic_quantize_linear",
    "choose_qparams",
    "codes_to_ints",
    "ints_to_codes",
]


def broadcast_qparam(
    param: np.ndarray,
    shape: tuple[int, ...],
    axis: int = 1,
    block_size: int = 0,
    name: str = "scale",
) -> np.ndarray:
    """Expand a per-tensor, per-axis or blocked quantization parameter to ``shape``."""
    param = np.asarray(param)
    rank = len(shape)
    if param.ndim == 0 or param.size == 1 and block_size == 0 and param.ndim <= 1:
        return np.broadcast_to(param.reshape(()), shape)
    if rank == 0:
        raise QuantizationError(f"{name}: a scalar input needs a scalar {name}, got {param.shape}")
    if not -rank <= axis < rank:
        raise QuantizationError(f"axis {axis} is out of range for an input of rank {rank}")
    axis %= rank
    if block_size == 0:
        if param.ndim != 1 or param.shape[0] != shape[axis]:
            raise QuantizationError(
                f"per-axis {name} must be 1-D of length {shape[axis]} (input dim {axis}), "
                f"got shape {param.shape}"
            )
        view = [1] * rank
        view[axis] = shape[axis]
        return np.broadcast_to(param.reshape(view), shape)
    if block_size < 0:
        raise QuantizationError(f"block_size must be >= 0, got {block_size}")
    blocks = -(-shape[axis] // block_size)
    expected = tuple(blocks if i == axis else d for i, d in enumerate(shape))
    if param.shape != expected:
        raise QuantizationError(
            f"blocked {name} (block_size={block_size}, axis={axis}) must have shape {expected} "
            f"for an input of shape {tuple(shape)}, got {param.shape}"
        )
    return np.repeat(param, block_size, axis=axis).take(range(shape[axis]), axis=axis)


def codes_to_ints(codes: np.ndarray, dtype: str | Datatype) -> np.ndarray:
    """Integer values (int32) of integer-format codes (sign-extends two's complement)."""
    dt = get_dtype(dtype)
    if dt.kind not in ("int", "uint", "ternary", "binary"):
        raise QuantizationError(f"codes_to_ints: {dt.name} is not an integer format")
    return dt.decode(np.asarray(codes)).astype(np.int32)


def ints_to_codes(values: np.ndarray, dtype: str | Datatype) -> np.ndarray:
    """Codes of integer values that must be representable in ``dtype`` (else DatatypeError)."""
    return get_dtype(dtype).encode_exact(values)


def _is_integer_type(dt: Datatype) -> bool:
    return dt.kind in ("int", "uint")


def quantize_linear(
    x: np.ndarray,
    scale: np.ndarray | float,
    zero_point: np.ndarray | int | None = None,
    *,
    dtype: str | Datatype = "int8",
    axis: int = 1,
    block_size: int = 0,
) -> np.ndarray:
    """ONNX QuantizeLinear. Returns integer values (int32) for integer ``dtype`` and codes
    (uint8) for floating-point ``dtype`` (float4e2m1, float8...).

    Integer values, not codes, so that results compose with arithmetic; use
    :func:`ints_to_codes` / :mod:`trilobit.packing` to store them.
    """
    dt = get_dtype(dtype)
    x = np.asarray(x, dtype=np.float32)
    s = broadcast_qparam(np.asarray(scale, dtype=np.float32), x.shape, axis, block_size)
    if (s == 0).any() or not np.isfinite(s).all():
        raise QuantizationError("quantize_linear: scale must be finite and non-zero")
    q = x / s  # float32 division, as onnxruntime
    if _is_integer_type(dt):
        zp = np.zeros((), np.int32) if zero_point is None else np.asarray(zero_point)
        zp = broadcast_qparam(zp, x.shape, axis, block_size, name="zero_point").astype(np.float32)
        y = np.clip(np.rint(q) + zp, dt.min, dt.max)
        return y.astype(np.int32)
    if zero_point is not None and np.any(np.asarray(zero_point, dtype=np.float64) != 0):
        raise QuantizationError(f"quantize_linear: {dt.name} takes no non-zero zero point")
    if dt.bits < 8:
        # onnx adds the (zero) zero point in float before casting to float4, so -0.0 + 0.0
        # gives +0.0; its float8 path casts x / scale directly and keeps -0.0.
        q = q + np.float32(0.0)
    return dt.encode(q)


def dequantize_linear(
    q: np.ndarray,
    scale: np.ndarray | float,
    zero_point: np.ndarray | int | None = None,
    *,
    dtype: str | Datatype = "int8",
    axis: int = 1,
    block_size: int = 0,
) -> np.ndarray:
    """ONNX DequantizeLinear: ``(q - zero_point) * scale`` in float32.

    ``q`` holds integer values for integer ``dtype`` and codes for floating-point ``dtype``.
    """
    dt = get_dtype(dtype)
    q = np.asarray(q)
    s = broadcast_qparam(np.asarray(scale, dtype=np.float32), q.shape, axis, block_size)
    if _is_integer_type(dt):
        if q.size and (q.min() < dt.min or q.max() > dt.max):
            raise QuantizationError(
                f"dequantize_linear: values {int(q.min())}..{int(q.max())} exceed {dt.name}"
            )
        zp = np.zeros((), np.int32) if zero_point is None else np.asarray(zero_point)
        zp = broadcast_qparam(zp, q.shape, axis, block_size, name="zero_point")
        return ((q.astype(np.int32) - zp.astype(np.int32)).astype(np.float32) * s).astype(
            np.float32
        )
    return (dt.decode(q).astype(np.float32) * s).astype(np.float32)


def dynamic_quantize_linear(x: np.ndarray) -> tuple[np.ndarray, np.float32, np.uint8]:
    """ONNX DynamicQuantizeLinear: uint8 values, scale and zero point of ``x`` (float32)."""
    x = np.asarray(x, dtype=np.float32)
    x_min = np.minimum(np.float32(0), x.min() if x.size else np.float32(0))
    x_max = np.maximum(np.float32(0), x.max() if x.size else np.float32(0))
    scale = np.float32((x_max - x_min) / np.float32(255))
    if scale == 0:
        zp = np.uint8(0)
        return np.zeros(x.shape, np.uint8), np.float32(0), zp
    zp = np.uint8(np.clip(np.rint(np.float32(0) - x_min / scale), 0, 255))
    y = np.clip(np.rint(x / scale) + np.float32(zp), 0, 255).astype(np.uint8)
    return y, scale, zp


def choose_qparams(
    x: np.ndarray,
    dtype: str | Datatype = "int8",
    *,
    symmetric: bool = True,
    axis: int | None = None,
    block_size: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Scale and zero point covering ``x`` (min/max calibration, float32).

    ``axis=None`` gives per-tensor parameters; otherwise one per index of ``axis`` or, with
    ``block_size``, one per block along ``axis``. Symmetric parameters have zero point 0
    (int types) and scale ``absmax / max``; asymmetric ones map ``[min(x,0), max(x,0)]``
    onto the full code range (ONNX DynamicQuantizeLinear's rule).
    """
    dt = get_dtype(dtype)
    x = np.asarray(x, dtype=np.float32)
    if axis is None:
        reduce_axes: tuple[int, ...] = tuple(range(x.ndim))
        xr = x
    else:
        axis %= x.ndim
        if block_size:
            if block_size < 0:
                raise QuantizationError(f"block_size must be > 0, got {block_size}")
            pad = (-x.shape[axis]) % block_size
            widths = [(0, pad if i == axis else 0) for i in range(x.ndim)]
            xr = np.pad(x, widths)
            new_shape = list(xr.shape)
            new_shape[axis : axis + 1] = [xr.shape[axis] // block_size, block_size]
            xr = xr.reshape(new_shape)
            reduce_axes = (axis + 1,)
        else:
            xr = x
            reduce_axes = tuple(i for i in range(x.ndim) if i != axis)
    lo = np.minimum(xr.min(axis=reduce_axes), 0).astype(np.float32)
    hi = np.maximum(xr.max(axis=reduce_axes), 0).astype(np.float32)
    if symmetric or dt.kind == "fp":
        absmax = np.maximum(np.abs(lo), np.abs(hi))
        top = dt.max
        scale = (absmax / np.float32(top)).astype(np.float32)
        zp = np.zeros_like(scale, dtype=np.int32)
        if dt.kind == "uint":
            zp = np.full_like(zp, (int(dt.max) + 1) // 2)
            scale = (absmax / np.float32((dt.max + 1) / 2 - 1 or 1)).astype(np.float32)
    else:
        scale = ((hi - lo) / np.float32(dt.max - dt.min)).astype(np.float32)
        safe = np.where(scale == 0, np.float32(1), scale)
        zp = np.clip(np.rint(np.float32(dt.min) - lo / safe), dt.min, dt.max).astype(np.int32)
    scale = np.where(scale == 0, np.float32(1), scale).astype(np.float32)
    return scale, zp
