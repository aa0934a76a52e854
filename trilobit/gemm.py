"""Exact integer GEMM, fast.

``gemm_int(a, b) = (a - a_zp) @ (b - b_zp)`` over the integers. Float BLAS is used only where
exactness is provable: if every product is at most ``P`` in magnitude and the reduction has
``K`` terms, every partial sum of any summation order is an integer of magnitude at most
``K * P``; float32 represents all integers up to ``2**24`` and float64 up to ``2**53``
exactly, so a float matmul over a chunk of ``K`` with ``K * P <= 2**24`` (or ``2**53``) is
exact. Longer reductions are split into such chunks, each summed exactly in float64 (or
int64 when even float64 could overflow its exact range).
"""

from __future__ import annotations

import numpy as np

from trilobit.errors import QuantizationError

__all__ = ["gemm_int", "exact_chunk"]

_F32_EXACT = 1 << 24
_F64_EXACT = 1 << 53


def exact_chunk(max_abs_a: int, max_abs_b: int, limit: int) -> int:
    """Longest reduction length whose partial sums stay within ``limit`` (0: not even one)."""
    p = max(1, int(max_abs_a) * int(max_abs_b))
    return limit // p


def _max_abs_shifted(x: np.ndarray, zp: np.ndarray) -> int:
    """max |x - zp| without materialising x - zp (and without int8 abs(-128) overflow)."""
    if not x.size:
        return 0
    lo, hi = int(x.min()), int(x.max())
    zlo, zhi = int(zp.min()), int(zp.max())
    return max(abs(hi - zlo), abs(lo - zhi), abs(hi - zhi), abs(lo - zlo))


def _as_int(x: np.ndarray, name: str) -> np.ndarray:
    x = np.asarray(x)
    if not (np.issubdtype(x.dtype, np.integer) or x.dtype == np.bool_):
        raise QuantizationError(f"gemm_int: {name} must be an integer array, got {x.dtype}")
    return x


def gemm_int(a: np.ndarray, b: np.ndarray, a_zero_point=0, b_zero_point=0) -> np.ndarray:
    """Exact ``(a - a_zero_point) @ (b - b_zero_point)``.

    Args:
        a: integer array ``(..., M, K)`` (or ``(K,)``).
        b: integer array ``(K, N)`` (or ``(..., K, N)`` broadcast as numpy matmul).
        a_zero_point: scalar, or per-row ``(M,)`` (MatMulInteger's per-row a zero point).
        b_zero_point: scalar, or per-column ``(N,)``.

    Returns:
        int32 when the result provably fits in int32 (``K * max|a'| * max|b'| < 2**31``),
        else int64.
    """
    a = _as_int(a, "a")
    b = _as_int(b, "b")
    vector_b = b.ndim == 1
    if vector_b:
        b = b[:, None]
    azp = np.asarray(a_zero_point, dtype=np.int64)
    if azp.ndim == 1 and a.ndim >= 2:
        azp = azp[:, None]  # per-row zero point
    bzp = np.asarray(b_zero_point, dtype=np.int64)
    k = a.shape[-1]
    if b.shape[-2] != k:
        raise QuantizationError(f"gemm_int: inner dimensions differ: a {a.shape}, b {b.shape}")
    ma = _max_abs_shifted(a, azp)
    mb = _max_abs_shifted(b, bzp)
    if k * ma * mb >= 1 << 63:
        raise QuantizationError(
            f"gemm_int: K={k} with operands up to {ma} and {mb} can overflow int64"
        )
    out_dtype = np.int32 if k * ma * mb < (1 << 31) else np.int64
    if ma * mb > _F64_EXACT:
        # Single products are beyond float64's exact range: integer matmul (no BLAS).
        out = np.matmul(a.astype(np.int64) - azp, b.astype(np.int64) - bzp)
        return out[..., 0] if vector_b else out

    chunk = exact_chunk(ma, mb, _F32_EXACT)
    if chunk >= max(1, min(k, 256)) and k * ma * mb <= _F64_EXACT:
        # float32 BLAS on exact chunks, chunk results summed exactly in float64. Operands
        # and zero points are below 2**24, so converting and subtracting in float32 is exact.
        ftype, acc_dtype = np.float32, np.float64
    else:
        chunk = exact_chunk(ma, mb, _F64_EXACT)
        ftype, acc_dtype = np.float64, np.int64
    af = a.astype(ftype)
    bf = b.astype(ftype)
    if azp.any():
        af -= azp.astype(ftype)
    if bzp.any():
        bf -= bzp.astype(ftype)
    acc = None
    for k0 in range(0, max(k, 1), chunk):
        part = np.matmul(af[..., k0 : k0 + chunk], bf[..., k0 : k0 + chunk, :]).astype(acc_dtype)
        acc = part if acc is None else acc + part
    out = acc.astype(out_dtype)
    return out[..., 0] if vector_b else out
