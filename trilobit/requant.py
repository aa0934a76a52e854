"""Requantization of int32 accumulators to int8/uint8.

Two modes, both exact and vectorised:

``ort``
    onnxruntime's float path for QLinearMatMul / QLinearConv: the multiplier
    ``a_scale * b_scale / y_scale`` is computed in float32 (left to right), the accumulator is
    converted to float32, multiplied, clamped to ``[qmin - zp, qmax - zp]``, rounded half to
    even and offset by the output zero point. Bit-identical to onnxruntime.

``dyadic``
    What hardware does: ``y = ((acc * M + 2**(s-1)) >> s) + zp`` with an integer multiplier
    ``2**30 <= M < 2**31`` and a right shift ``s`` (round half up), then saturation. The
    product needs 62 bits plus sign. :func:`dyadic_from_scale` picks ``M, s`` so that
    ``M / 2**s`` equals the float32 multiplier to a relative error below ``2**-31``.

Worst-case difference between the modes: **one unit** of the output type. Both modes land
within ``0.5 + eps`` of the exact product ``acc * multiplier`` (ort: two float32 roundings,
relative ``2**-24`` each; dyadic: relative ``2**-31``), so they can disagree only where that
product lies within ``eps`` of a rounding boundary (a ``.5`` point), and then by exactly one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from trilobit.dtypes import get_dtype
from trilobit.errors import QuantizationError

__all__ = [
    "RequantParams",
    "ort_multiplier",
    "requantize_ort",
    "dyadic_from_scale",
    "requantize_dyadic",
    "requantize",
    "MAX_SHIFT",
]

#: Largest right shift the dyadic form uses (the hardware's shifter width is 6 bits).
MAX_SHIFT = 62


def _out_range(dtype: str) -> tuple[int, int]:
    dt = get_dtype(dtype)
    if dt.kind not in ("int", "uint"):
        raise QuantizationError(f"requantize: output type must be an integer type, got {dt.name}")
    return int(dt.min), int(dt.max)


def ort_multiplier(a_scale, b_scale, y_scale) -> np.ndarray:
    """float32 ``a_scale * b_scale / y_scale`` evaluated as onnxruntime does (left to right)."""
    a = np.asarray(a_scale, dtype=np.float32)
    b = np.asarray(b_scale, dtype=np.float32)
    y = np.asarray(y_scale, dtype=np.float32)
    return ((a * b).astype(np.float32) / y).astype(np.float32)


def requantize_ort(acc: np.ndarray, multiplier, zero_point=0, dtype: str = "int8") -> np.ndarray:
    """onnxruntime's float32 requantization of ``acc`` (per-tensor or broadcast multiplier).

    Returns int32 values in the range of ``dtype``.
    """
    qmin, qmax = _out_range(dtype)
    zp = np.asarray(zero_point, dtype=np.int32)
    m = np.asarray(multiplier, dtype=np.float32)
    f = np.asarray(acc).astype(np.float32) * m
    lo = (qmin - zp).astype(np.float32)
    hi = (qmax - zp).astype(np.float32)
    f = np.minimum(np.maximum(f, lo), hi)
    return (np.rint(f).astype(np.int32) + zp).astype(np.int32)


def dyadic_from_scale(scale: float) -> tuple[int, int]:
    """``(M, s)`` with ``M / 2**s`` ~ ``scale``, ``2**30 <= M < 2**31`` and ``1 <= s <= 62``.

    Scales so small that ``s`` would exceed :data:`MAX_SHIFT` keep ``s = 62`` with a smaller
    ``M`` (fewer significant bits; outputs are then 0 or saturate long before precision
    matters). Raises QuantizationError for non-positive, non-finite or ``>= 2**30`` scales.
    """
    scale = float(np.float32(scale)) if not isinstance(scale, float) else scale
    if not math.isfinite(scale) or scale <= 0:
        raise QuantizationError(f"dyadic_from_scale: scale must be finite and > 0, got {scale}")
    frac, exp = math.frexp(scale)  # scale = frac * 2**exp, 0.5 <= frac < 1
    shift = 31 - exp
    mult = round(frac * (1 << 31))
    if mult == 1 << 31:
        mult, shift = 1 << 30, shift - 1
    if shift > MAX_SHIFT:
        mult = round(scale * 2.0**MAX_SHIFT)
        shift = MAX_SHIFT
    if shift < 1:
        raise QuantizationError(f"dyadic_from_scale: scale {scale} is too large (>= 2**30)")
    return int(mult), int(shift)


def requantize_dyadic(
    acc: np.ndarray, multiplier, shift, zero_point=0, dtype: str = "int8"
) -> np.ndarray:
    """``clip(((acc * M + 2**(s-1)) >> s) + zp)`` in exact int64 arithmetic (int32 result).

    ``multiplier`` and ``shift`` may be arrays broadcast against ``acc`` (per channel).
    ``acc`` must fit in int32 (the product then fits in 63 bits).
    """
    qmin, qmax = _out_range(dtype)
    acc = np.asarray(acc).astype(np.int64)
    if acc.size and (acc.min() < -(1 << 31) or acc.max() >= 1 << 31):
        raise QuantizationError("requantize_dyadic: accumulator exceeds int32")
    m = np.asarray(multiplier, dtype=np.int64)
    s = np.asarray(shift, dtype=np.int64)
    if m.size and (m.min() < 0 or m.max() >= 1 << 31):
        raise QuantizationError("requantize_dyadic: multiplier must be in 0..2**31-1")
    if s.size and (s.min() < 1 or s.max() > MAX_SHIFT):
        raise QuantizationError(f"requantize_dyadic: shift must be in 1..{MAX_SHIFT}")
    rounded = (acc * m + (np.int64(1) << (s - 1))) >> s
    return np.clip(rounded + np.asarray(zero_point, dtype=np.int64), qmin, qmax).astype(np.int32)


@dataclass(frozen=True)
class RequantParams:
    """Everything one requantization needs, in both modes.

    ``multiplier`` is the float32 multiplier (ort mode); ``dyadic`` holds per-channel
    ``(M, s)`` pairs derived from it.
    """

    multiplier: np.ndarray
    zero_point: np.ndarray
    dtype: str = "int8"

    @classmethod
    def from_scales(cls, a_scale, b_scale, y_scale, zero_point=0, dtype: str = "int8"):
        return cls(ort_multiplier(a_scale, b_scale, y_scale), np.asarray(zero_point), dtype)

    def dyadic(self) -> tuple[np.ndarray, np.ndarray]:
        flat = np.asarray(self.multiplier, dtype=np.float32).reshape(-1)
        pairs = [dyadic_from_scale(float(v)) for v in flat]
        shape = np.shape(self.multiplier)
        m = np.array([p[0] for p in pairs], dtype=np.int64).reshape(shape)
        s = np.array([p[1] for p in pairs], dtype=np.int64).reshape(shape)
        return m, s


def requantize(acc: np.ndarray, params: RequantParams, mode: str = "ort") -> np.ndarray:
    """Requantize ``acc`` with ``params`` in ``mode`` (``"ort"`` or ``"dyadic"``)."""
    if mode == "ort":
        return requantize_ort(acc, params.multiplier, params.zero_point, params.dtype)
    if mode == "dyadic":
        m, s = params.dyadic()
        return requantize_dyadic(acc, m, s, params.zero_point, params.dtype)
    raise QuantizationError(f"requantize: mode must be 'ort' or 'dyadic', got {mode!r}")
