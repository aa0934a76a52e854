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

ONNX form (``docs/compiler.md``, "Per-group datatypes (BitMoD) in ONNX")
------------------------------------------------------------------------
A quantized weight is stored as the integer-form values in an int8 initializer (K, N) and a
float32 scale (ceil(K / group_size), N) equal to ``scale_int * 2**-shift``, read by an opset-21
blocked ``DequantizeLinear(axis=0, block_size=group_size)`` feeding the MatMul; onnxruntime
runs it as is (:func:`onnx_block_arrays`). The compiler recovers the engine form from the
values alone: :func:`integer_scales` splits the scales into ``scale_int`` and ``shift`` and
:func:`plan_groups` gives every engine group the first format of :data:`GROUP_FORMATS` (and
in it the first candidate type) whose value set holds every value of the group.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from trilobit.dtypes import BITMOD_CANDIDATES, get_dtype
from trilobit.errors import QuantizationError
from trilobit.hw.bitserial_format import WeightFormat, format_dtype

__all__ = [
    "GROUP_FORMATS",
    "GroupPlan",
    "block_values",
    "integer_scales",
    "onnx_block_arrays",
    "plan_groups",
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


# -- ONNX form and its detection ---------------------------------------------------------------

#: Engine formats a weight tensor may take, in order of preference: fewer cycles per weight
#: first; at equal width the integer type first (its groups need no type id).
GROUP_FORMATS: tuple[WeightFormat, ...] = (
    WeightFormat.INT3, WeightFormat.FP3, WeightFormat.INT4, WeightFormat.FP4,
    WeightFormat.INT6, WeightFormat.INT8,
)

#: Largest activation magnitude the engines multiply (int8, and uint8 after the -128 flip).
_MAX_ACTIVATION = 128
_INT32_MAX = (1 << 31) - 1


def onnx_block_arrays(q: BitModWeights) -> tuple[np.ndarray, np.ndarray]:
    """The ONNX form of ``q``: int8 integer-form values (K, N) and float32 block scales
    (ceil(K / group_size), N), exactly ``scale_int * 2**-shift``.

    A K that is not a multiple of the group size leaves the last block short (ONNX blocked
    quantization allows it); the quantizer's zero padding is not written.
    """
    values = q.int_weights()[:, : q.k].T
    if values.size and (values.min() < -128 or values.max() > 127):
        raise QuantizationError("integer-form weights do not fit int8")
    scales = np.ldexp(q.scale_int.astype(np.float64), -q.shift).T
    exact = scales.astype(np.float32)
    if not np.array_equal(exact.astype(np.float64), scales):
        raise QuantizationError(f"scales * 2**-{q.shift} are not exact in float32")
    return np.ascontiguousarray(values.astype(np.int8)), np.ascontiguousarray(exact)


def integer_scales(scale: np.ndarray, scale_bits: int = 8) -> tuple[np.ndarray, int]:
    """Split float scales exactly into ``scale_int * 2**-shift`` (one shift for the tensor).

    Returns ``(scale_int, shift)`` with ``scale_int`` int64 in ``0 .. 2**scale_bits - 1``,
    using the smallest shift that makes every scale an integer. Raises QuantizationError
    saying why when no such split exists (negative or non-finite scales, too many mantissa
    bits between the largest and the finest scale).
    """
    s = np.asarray(scale, dtype=np.float64)
    if not np.isfinite(s).all():
        raise QuantizationError("scales are not finite")
    if (s < 0).any():
        raise QuantizationError("negative scales (the engine's group scales are unsigned)")
    nonzero = s[s > 0]
    if nonzero.size == 0:
        return np.zeros(s.shape, np.int64), 0
    mant, exp = np.frexp(nonzero)  # s = mant * 2**exp, mant in [0.5, 1): 53 bits
    ints = np.ldexp(mant, 53).astype(np.int64)
    trailing = np.frexp((ints & -ints).astype(np.float64))[1] - 1  # trailing zero bits
    lowest = exp - 53 + trailing  # s = odd integer * 2**lowest
    shift = int(-lowest.min())
    scale_int = np.ldexp(s, shift)
    top = (1 << scale_bits) - 1
    if scale_int.max() > top:
        raise QuantizationError(
            f"scales need {int(scale_int.max()).bit_length()} mantissa bits with one shared "
            f"power-of-two shift (the engine's group scale has {scale_bits})")
    return scale_int.astype(np.int64), shift


@dataclass
class GroupPlan:
    """Weights of one product in the bit-serial engine's per-group form.

    Attributes:
        fmt: engine format of every group.
        codes: uint8 (N, K) codes of each group's type.
        type_ids: int64 (N, n_groups) candidate index per group (0 for INT formats).
        scale_int: int64 (N, n_groups) unsigned integer scale per group.
        group_size: input channels per engine group (``config.bitserial.group_size``).
    """

    fmt: WeightFormat
    codes: np.ndarray
    type_ids: np.ndarray
    scale_int: np.ndarray
    group_size: int

    def type_counts(self) -> dict[str, int]:
        """Groups per datatype name, in type-id order (types with no group left out)."""
        names = candidate_types(self.fmt)
        counts = np.bincount(self.type_ids.ravel(), minlength=len(names))
        return {name: int(c) for name, c in zip(names, counts, strict=True) if c}

    def describe(self) -> str:
        """One line for the compile report, e.g. ``fp4 groups of 32: fp4_er_pos 10, ...``."""
        counts = ", ".join(f"{n} {c}" for n, c in self.type_counts().items())
        return f"{self.fmt.name.lower()} groups of {self.group_size}: {counts}"


def plan_groups(values: np.ndarray, scale_int: np.ndarray, block_size: int,
                group_size: int) -> GroupPlan:
    """Engine form of integer weights ``values`` (K, N) with block scales ``scale_int``
    (ceil(K / block_size), N) along K.

    Every engine group of ``group_size`` input channels must lie inside one block (so it has
    one scale). The tensor takes the first format of :data:`GROUP_FORMATS` in which every
    group fits one candidate type; each group takes the first such candidate. Raises
    QuantizationError saying why when there is none, or when the int32 accumulator could
    overflow for an activation of magnitude 128.
    """
    values = np.asarray(values)
    scale_int = np.asarray(scale_int, dtype=np.int64)
    if values.ndim != 2:
        raise QuantizationError(f"weights must be (K, N), got shape {values.shape}")
    k, n = values.shape
    if block_size < 1 or scale_int.shape != (-(-k // block_size), n):
        raise QuantizationError(
            f"block scales must be (ceil(K / {block_size}), N) = "
            f"({-(-k // max(block_size, 1))}, {n}), got {scale_int.shape}")
    n_groups = -(-k // group_size)
    starts = np.arange(n_groups) * group_size
    ends = np.minimum(starts + group_size, k) - 1
    if (starts // block_size != ends // block_size).any():
        raise QuantizationError(
            f"block size {block_size} is not a multiple of the engine's group size "
            f"{group_size}: a group would need two scales")
    group_scale = scale_int[starts // block_size].T  # (N, n_groups)
    effective = values.astype(np.int64) * np.repeat(scale_int, block_size, axis=0)[:k]
    bound = _MAX_ACTIVATION * int(np.abs(effective).sum(axis=0).max(initial=0))
    if bound > _INT32_MAX:
        raise QuantizationError(
            f"the int32 accumulator could overflow (bound {bound} > 2**31 - 1)")
    padded = np.zeros((n, n_groups * group_size), np.float64)
    padded[:, :k] = values.T
    groups = padded.reshape(n, n_groups, group_size)
    for fmt in GROUP_FORMATS:
        names = candidate_types(fmt)
        fits = np.stack([np.isin(groups, get_dtype(name).finite_values()).all(axis=2)
                         for name in names])  # (types, N, n_groups)
        if not fits.any(axis=0).all():
            continue
        type_ids = fits.argmax(axis=0).astype(np.int64)
        codes = np.zeros(groups.shape, np.int64)
        for t, name in enumerate(names):
            codes = np.where((type_ids == t)[..., None], get_dtype(name).encode(groups), codes)
        codes = codes.reshape(n, -1)[:, :k].astype(np.uint8)
        return GroupPlan(fmt, codes, type_ids, group_scale, group_size)
    raise QuantizationError("weights beyond int8 have no engine format")


def block_values(products: np.ndarray, int_block_scale: np.ndarray, block_size: int) -> np.ndarray:
    """Integer-form values (K, N) of exact products ``values * int_block_scale[k // block]``
    (0 where the block scale is 0)."""
    products = np.asarray(products, dtype=np.int64)
    scale = np.repeat(np.asarray(int_block_scale, np.int64), block_size, axis=0)[
        : products.shape[0]]
    values = np.where(scale > 0, products // np.where(scale > 0, scale, 1), 0)
    if not np.array_equal(values * scale, np.where(scale > 0, products, 0)):
        raise QuantizationError("weights are not whole multiples of their block scales")
    return values
