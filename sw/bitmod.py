"""BitMoD per-group weight quantizer and the engine's packing order.

Weights ``w`` (N output channels x K input channels) are cut into groups of ``group_size``
consecutive input channels. For every group and every candidate datatype the quantizer takes
the symmetric absmax scale ``absmax(group) / max|value|``, rounds the scale to the engine's
integer form, rounds every weight to the nearest value (``Datatype.encode``) and keeps the
candidate with the least squared error. Candidates: the four BitMoD types of a precision
(:data:`trilobit.dtypes.BITMOD_CANDIDATES`, position = 2-bit type id) for ``fp3``/``fp4``, or a
single integer type for ``int3``/``int4``/``int6``/``int8``.

Integer form of the scale (what the engine multiplies by): ``scale = scale_int * 2**-shift``
with ``scale_int`` an unsigned ``scale_bits`` integer per group and one ``shift`` per tensor,
chosen so the largest group scale uses the full mantissa range. Every output of the engine
is then the exact integer ``sum_g scale_int[g] * sum_k w_int[k] * a[k]``; the real result is
that times ``2**-shift`` times the activation scale.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from trilobit.dtypes import BITMOD_CANDIDATES, get_dtype
from trilobit.errors import QuantizationError
from trilobit.hw.bitserial_format import WeightFormat, format_dtype

__all__ = [
    "BitModWeights",
    "candidate_types",
    "quantize_scale",
    "quantize_bitmod",
    "quantize_rtn",
    "pack_engine_job",
    "pack_engine_tiles",
]


def candidate_types(fmt: WeightFormat | str) -> tuple[str, ...]:
    """Datatype names a group of format ``fmt`` may choose from (position = type id)."""
    fmt = WeightFormat.parse(fmt)
    if fmt.is_fp:
        return tuple(BITMOD_CANDIDATES[fmt.bits])
    return (format_dtype(fmt),)


def quantize_scale(scale: np.ndarray, scale_bits: int = 8) -> tuple[np.ndarray, int]:
    """Real positive scales -> (unsigned ``scale_bits`` integers, shared power-of-two shift).

    ``scale ~= scale_int * 2**-shift``; the shift puts the largest scale in the top octave of
    the mantissa range. Nonzero scales never round to 0 (they are clamped to 1).
    """
    scale = np.asarray(scale, dtype=np.float64)
    if (scale < 0).any() or not np.isfinite(scale).all():
        raise QuantizationError("scales must be finite and >= 0")
    top = float(scale.max()) if scale.size else 0.0
    if top == 0.0:
        return np.zeros(scale.shape, dtype=np.int64), 0
    max_int = (1 << scale_bits) - 1
    shift = int(np.floor(np.log2(max_int / top)))
    ints = np.clip(np.rint(scale * 2.0**shift), 0, max_int).astype(np.int64)
    ints = np.where((scale > 0) & (ints == 0), 1, ints)
    return ints, shift


@dataclass
class BitModWeights:
    """Per-group quantized weights in the engine's integer form.

    Attributes:
        fmt: precision/format of every group.
        codes: uint8 (N, K_padded) codes of each group's chosen datatype.
        type_ids: int64 (N, n_groups) 2-bit type ids (0 for INT formats).
        scale_int: int64 (N, n_groups) unsigned integer scale mantissas.
        shift: tensor scale exponent: real scale = scale_int * 2**-shift.
        group_size: input channels per group.
        k: input channels before padding to a whole number of groups.
        scale_bits: width of ``scale_int``.
    """

    fmt: WeightFormat
    codes: np.ndarray
    type_ids: np.ndarray
    scale_int: np.ndarray
    shift: int
    group_size: int
    k: int
    scale_bits: int = 8

    @property
    def n_groups(self) -> int:
        return self.type_ids.shape[1]

    def int_weights(self) -> np.ndarray:
        """Integer values (N, K_padded) of the codes."""
        out = np.zeros(self.codes.shape, dtype=np.int64)
        names = candidate_types(self.fmt)
        g = self.group_size
        for t, name in enumerate(names):
            vals = get_dtype(name).values
            mask = np.repeat(self.type_ids == t, g, axis=1)
            out = np.where(mask, vals[self.codes.astype(np.int64)], out)
        return out

    def dequantize(self) -> np.ndarray:
        """Real weights (N, K) represented by the codes, scales and shift."""
        scale = np.repeat(self.scale_int.astype(np.float64), self.group_size, axis=1)
        return (self.int_weights() * scale * 2.0**-self.shift)[:, : self.k]

    def bits_per_weight(self) -> float:
        """Storage per weight including scale and type-id metadata, bits."""
        type_bits = 2 if self.fmt.is_fp else 0
        return self.fmt.bits + (self.scale_bits + type_bits) / self.group_size


def _groups(w: np.ndarray, group_size: int) -> tuple[np.ndarray, int]:
    w = np.asarray(w, dtype=np.float64)
    if w.ndim != 2:
        raise QuantizationError(f"weights must be 2-D (out_channels, in_channels), got {w.shape}")
    if group_size < 1:
        raise QuantizationError(f"group_size must be >= 1, got {group_size}")
    if not np.isfinite(w).all():
        raise QuantizationError("weights contain NaN or inf")
    n, k = w.shape
    kp = -(-k // group_size) * group_size
    padded = np.zeros((n, kp))
    padded[:, :k] = w
    return padded.reshape(n, kp // group_size, group_size), k


def quantize_bitmod(
    w: np.ndarray, fmt: WeightFormat | str = "fp4", group_size: int = 128, scale_bits: int = 8
) -> BitModWeights:
    """Per-group least-squared-error datatype search (see module docstring).

    ``w`` is (out_channels, in_channels); the group axis is the input channel. K is padded
    with zero weights to a multiple of ``group_size``.
    """
    fmt = WeightFormat.parse(fmt)
    groups, k = _groups(w, group_size)
    names = candidate_types(fmt)
    dts = [get_dtype(n) for n in names]
    absmax = np.abs(groups).max(axis=2)
    max_abs = [max(abs(dt.min), abs(dt.max)) for dt in dts]
    # one shared shift for every candidate: fixed by the largest scale any candidate needs
    _, shift = quantize_scale(absmax / min(max_abs), scale_bits)
    best_err = np.full(absmax.shape, np.inf)
    best = (np.zeros(groups.shape, np.int64), np.zeros(absmax.shape, np.int64),
            np.zeros(absmax.shape, np.int64))
    max_int = (1 << scale_bits) - 1
    for t, (dt, top) in enumerate(zip(dts, max_abs, strict=True)):
        s_int = np.clip(np.rint(absmax / top * 2.0**shift), 0, max_int).astype(np.int64)
        s_int = np.where((absmax > 0) & (s_int == 0), 1, s_int)
        s = s_int * 2.0**-shift
        safe = np.where(s > 0, s, 1.0)[..., None]
        codes = dt.encode(np.where(s[..., None] > 0, groups / safe, 0.0)).astype(np.int64)
        err = ((dt.values[codes] * s[..., None] - groups) ** 2).sum(axis=2)
        better = err < best_err
        best_err = np.where(better, err, best_err)
        best = (np.where(better[..., None], codes, best[0]), np.where(better, t, best[1]),
                np.where(better, s_int, best[2]))
    n = groups.shape[0]
    return BitModWeights(fmt, best[0].reshape(n, -1).astype(np.uint8), best[1], best[2], shift,
                         group_size, k, scale_bits)


def quantize_rtn(
    w: np.ndarray, dtype: str, group_size: int = 128, scale_bits: int = 8
) -> np.ndarray:
    """Round-to-nearest reference: one datatype, per-group absmax scale in the same integer
    form (scale_int * 2**-shift). Returns the dequantized weights (N, K)."""
    groups, k = _groups(w, group_size)
    dt = get_dtype(dtype)
    top = max(abs(dt.min), abs(dt.max))
    absmax = np.abs(groups).max(axis=2)
    s_int, shift = quantize_scale(absmax / top, scale_bits)
    s = (s_int * 2.0**-shift)[..., None]
    codes = dt.encode(np.where(s > 0, groups / np.where(s > 0, s, 1.0), 0.0))
    return (dt.values[codes.astype(np.int64)] * s).reshape(groups.shape[0], -1)[:, :k]


def pack_engine_job(
    codes: np.ndarray,
    fmts,
    type_ids: np.ndarray,
    scales: np.ndarray,
    act: np.ndarray,
    width: int,
) -> dict:
    """Beats of one engine job in the order the streams carry them.

    Arguments are one column tile: ``codes`` (columns, K), ``type_ids``/``scales``
    (columns, n_groups), ``act`` (rows, K). Returns ``meta``: list of
    ``(fmt, last, type_ids[columns], scales[columns])`` (one per group), ``weights``: uint8
    (n_chunks, columns, width) and ``act``: int (n_chunks, rows, width); chunk ``j`` covers
    input channels ``j*width .. j*width+width-1`` and chunks of group ``g`` follow meta beat
    ``g``.
    """
    codes = np.asarray(codes)
    act = np.asarray(act)
    n_cols, k = codes.shape
    fmts = [int(WeightFormat.parse(f)) for f in fmts]
    if k % width or k % len(fmts):
        raise QuantizationError(f"K={k} must be a multiple of width={width} and of the group count")
    meta = [(f, j == len(fmts) - 1, [int(t) for t in type_ids[:, j]],
             [int(s) for s in scales[:, j]]) for j, f in enumerate(fmts)]
    weights = codes.reshape(n_cols, k // width, width).transpose(1, 0, 2).astype(np.uint8)
    acts = act.reshape(act.shape[0], k // width, width).transpose(1, 0, 2)
    return {"meta": meta, "weights": weights, "act": acts}


def pack_engine_tiles(q: BitModWeights, columns: int, width: int) -> list[dict]:
    """Weights and metadata of a quantized tensor, one dict per tile of ``columns`` output
    channels (the last tile padded with zero-scale channels), in engine stream order.

    Each dict has ``meta`` and ``weights`` as in :func:`pack_engine_job`.
    """
    n = q.codes.shape[0]
    tiles = []
    for c0 in range(0, n, columns):
        sl = slice(c0, min(n, c0 + columns))
        pad = columns - (sl.stop - sl.start)
        codes = np.pad(q.codes[sl], ((0, pad), (0, 0)))
        tids = np.pad(q.type_ids[sl], ((0, pad), (0, 0)))
        scales = np.pad(q.scale_int[sl], ((0, pad), (0, 0)))
        job = pack_engine_job(codes, [q.fmt] * q.n_groups, tids, scales,
                              np.zeros((1, codes.shape[1]), np.int64), width)
        tiles.append({"meta": job["meta"], "weights": job["weights"]})
    return tiles
