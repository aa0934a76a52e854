"""Bit packings, defined once and imported by hardware, golden models, compiler and driver.

ONNX sub-byte layouts (onnx >= 1.16, opsets 21/23/25):

* 4-bit (INT4, UINT4, FLOAT4E2M1): two elements per byte, element 0 in the low nibble.
* 2-bit (INT2, UINT2): four elements per byte, element 0 in bits 1..0 (least significant first).

An odd tail is padded with zero codes.

Ternary group indices (table-lookup engines). A group of ``G`` ternary weights
``w[0..G-1]`` in {-1, 0, +1} is read as a balanced-ternary number with ``w[0]`` the most
significant trit::

    b = sum_i w[i] * 3**(G-1-i)            (-(3**G - 1)/2 <= b <= (3**G - 1)/2)

The table-lookup engine stores only the non-negative half of the table (sign symmetry:
entry(-w) = -entry(w)), so a group is addressed by ``magnitude = |b|`` and ``sign = b < 0``.

* ``g2`` (TL1 style): 2 weights -> one 4-bit index ``b + 4`` in 0..8, two indices per byte.
* ``g3`` (TL2 style): 3 weights -> 4-bit magnitude (0..13) + 1 sign bit = 5/3 = 1.67 bit/weight.
  Magnitudes are packed two per byte (low nibble first), signs eight per byte (LSB first).
* ``plain2``: each ternary weight as its INT2 two's-complement code, four per byte.
"""

from __future__ import annotations

import numpy as np

from trilobit.errors import PackingError

__all__ = [
    "pack_bits",
    "unpack_bits",
    "ternary_group_value",
    "ternary_group_index",
    "ternary_from_group_index",
    "ternary_table_size",
    "pack_ternary_g2",
    "unpack_ternary_g2",
    "pack_ternary_g3",
    "unpack_ternary_g3",
    "pack_ternary_plain2",
    "unpack_ternary_plain2",
]

TERNARY_GROUP_SIZES = (2, 3, 4)


def pack_bits(codes: np.ndarray, bits: int) -> np.ndarray:
    """Pack unsigned ``bits``-wide codes (1, 2, 4 or 8 bits) into bytes, element 0 in the LSBs.

    This is ONNX's layout for INT4/UINT4/FLOAT4E2M1 (bits=4) and INT2/UINT2 (bits=2).
    Returns a flat uint8 array of ``ceil(codes.size * bits / 8)`` bytes.
    """
    if bits not in (1, 2, 4, 8):
        raise PackingError(f"pack_bits: bits must be 1, 2, 4 or 8, got {bits}")
    flat = np.asarray(codes).reshape(-1)
    if flat.size and (flat.min() < 0 or flat.max() >= (1 << bits)):
        raise PackingError(
            f"pack_bits: codes must lie in 0..{(1 << bits) - 1} for {bits}-bit packing, "
            f"got range {int(flat.min())}..{int(flat.max())}"
        )
    per_byte = 8 // bits
    padded = np.zeros(-(-flat.size // per_byte) * per_byte, dtype=np.uint8)
    padded[: flat.size] = flat
    lanes = padded.reshape(-1, per_byte).astype(np.uint16)
    shifts = (np.arange(per_byte, dtype=np.uint16) * bits)[None, :]
    return np.bitwise_or.reduce(lanes << shifts, axis=1).astype(np.uint8)


def unpack_bits(data: np.ndarray, bits: int, count: int) -> np.ndarray:
    """Inverse of :func:`pack_bits`: the first ``count`` unsigned codes as uint8."""
    if bits not in (1, 2, 4, 8):
        raise PackingError(f"unpack_bits: bits must be 1, 2, 4 or 8, got {bits}")
    data = np.asarray(data, dtype=np.uint8).reshape(-1)
    per_byte = 8 // bits
    if count < 0 or count > data.size * per_byte:
        raise PackingError(
            f"unpack_bits: {data.size} bytes hold at most {data.size * per_byte} "
            f"{bits}-bit codes, asked for {count}"
        )
    shifts = (np.arange(per_byte, dtype=np.uint8) * bits)[None, :]
    codes = (data[:, None] >> shifts) & np.uint8((1 << bits) - 1)
    return codes.reshape(-1)[:count].astype(np.uint8)


def _check_group_size(G: int) -> None:
    if G not in TERNARY_GROUP_SIZES:
        raise PackingError(f"ternary group size G must be one of {TERNARY_GROUP_SIZES}, got {G}")


def _check_ternary(w: np.ndarray, G: int) -> np.ndarray:
    w = np.asarray(w)
    if w.shape[-1:] == () or w.shape[-1] % G:
        raise PackingError(
            f"ternary weights: last axis ({w.shape[-1] if w.ndim else 'scalar'}) must be a "
            f"multiple of the group size G={G}"
        )
    bad = (w != -1) & (w != 0) & (w != 1)
    if bad.any():
        idx = tuple(int(i) for i in np.argwhere(bad)[0])
        raise PackingError(f"ternary weights must be in {{-1, 0, 1}}; w{list(idx)} = {w[idx]}")
    return w.astype(np.int64)


def ternary_table_size(G: int) -> int:
    """Entries of the sign-halved table for group size G: (3**G + 1) // 2 (G=3 -> 14)."""
    _check_group_size(G)
    return (3**G + 1) // 2


def ternary_group_value(w: np.ndarray, G: int) -> np.ndarray:
    """Balanced-ternary value ``b`` of each group of G weights along the last axis.

    Shape ``(..., K)`` -> ``(..., K // G)``, int16, ``w[..., G*j]`` the most significant trit.
    """
    _check_group_size(G)
    w = _check_ternary(w, G)
    groups = w.reshape(*w.shape[:-1], -1, G)
    weights = 3 ** np.arange(G - 1, -1, -1, dtype=np.int64)
    return (groups * weights).sum(axis=-1).astype(np.int16)


def ternary_group_index(w: np.ndarray, G: int) -> tuple[np.ndarray, np.ndarray]:
    """(magnitude, sign) addressing of each group for the sign-halved lookup table.

    ``magnitude = |b|`` in ``0..ternary_table_size(G)-1`` (uint8), ``sign = b < 0`` (uint8).
    """
    b = ternary_group_value(w, G)
    return np.abs(b).astype(np.uint8), (b < 0).astype(np.uint8)


def ternary_from_group_index(magnitude: np.ndarray, sign: np.ndarray, G: int) -> np.ndarray:
    """Inverse of :func:`ternary_group_index`: int8 weights of shape ``(..., groups * G)``."""
    _check_group_size(G)
    magnitude = np.asarray(magnitude, dtype=np.int64)
    sign = np.asarray(sign, dtype=np.int64)
    if magnitude.size and (magnitude.min() < 0 or magnitude.max() >= ternary_table_size(G)):
        raise PackingError(
            f"ternary magnitude index out of range 0..{ternary_table_size(G) - 1} for G={G}"
        )
    if sign.size and (sign.min() < 0 or sign.max() > 1):
        raise PackingError("ternary sign bits must be 0 or 1")
    b = np.where(sign.astype(bool), -magnitude, magnitude)
    return balanced_ternary_digits(b, G).reshape(*b.shape[:-1], -1)


def balanced_ternary_digits(b: np.ndarray, G: int) -> np.ndarray:
    """Digits (most significant first) of balanced-ternary numbers: shape ``(..., G)``, int8."""
    b = np.asarray(b, dtype=np.int64)
    digits = np.empty((*b.shape, G), dtype=np.int8)
    rest = b.copy()
    for i in range(G - 1, -1, -1):
        d = ((rest + 1) % 3) - 1  # digit in {-1, 0, 1}
        digits[..., i] = d
        rest = (rest - d) // 3
    return digits


def pack_ternary_g2(w: np.ndarray) -> np.ndarray:
    """2 weights -> 4-bit index ``b + 4`` (0..8), two indices per byte. Last axis of w flattened."""
    b = ternary_group_value(w, 2)
    return pack_bits((b.reshape(-1) + 4).astype(np.uint8), 4)


def unpack_ternary_g2(data: np.ndarray, count: int) -> np.ndarray:
    """Inverse of :func:`pack_ternary_g2`: ``count`` weights (a multiple of 2), flat int8."""
    if count % 2:
        raise PackingError(f"g2 packing holds an even number of weights, asked for {count}")
    idx = unpack_bits(data, 4, count // 2).astype(np.int64)
    if idx.size and idx.max() > 8:
        raise PackingError(f"g2 index {int(idx.max())} out of range 0..8")
    return balanced_ternary_digits(idx - 4, 2).reshape(-1)


def pack_ternary_g3(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """3 weights -> 4-bit magnitude + sign bit (1.67 bit/weight).

    Returns ``(magnitudes, signs)``: magnitudes two per byte (low nibble first), signs eight
    per byte (LSB first), both flat uint8, over the flattened groups.
    """
    mag, sign = ternary_group_index(w, 3)
    return pack_bits(mag.reshape(-1), 4), pack_bits(sign.reshape(-1), 1)


def unpack_ternary_g3(magnitudes: np.ndarray, signs: np.ndarray, count: int) -> np.ndarray:
    """Inverse of :func:`pack_ternary_g3`: ``count`` weights (a multiple of 3), flat int8."""
    if count % 3:
        raise PackingError(f"g3 packing holds a multiple of 3 weights, asked for {count}")
    groups = count // 3
    mag = unpack_bits(magnitudes, 4, groups)
    sign = unpack_bits(signs, 1, groups)
    return ternary_from_group_index(mag, sign, 3).reshape(-1)


def pack_ternary_plain2(w: np.ndarray) -> np.ndarray:
    """Each ternary weight as its INT2 two's-complement code, four per byte (ONNX INT2 layout)."""
    w = _check_ternary(np.asarray(w).reshape(-1), 1)
    return pack_bits((w & 0b11).astype(np.uint8), 2)


def unpack_ternary_plain2(data: np.ndarray, count: int) -> np.ndarray:
    """Inverse of :func:`pack_ternary_plain2`: ``count`` flat int8 weights."""
    codes = unpack_bits(data, 2, count).astype(np.int8)
    if (codes == 0b10).any():
        raise PackingError("plain2 ternary data holds code 0b10 (-2), not a ternary value")
    return np.where(codes >= 2, codes - 4, codes).astype(np.int8)
