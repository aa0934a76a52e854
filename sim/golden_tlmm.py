"""numpy golden model of the ternary table-lookup matmul engine (:mod:`trilobit.hw.tlmm`).

The golden computes exactly what the engine outputs, the way the engine does it (tables of
signed sums indexed by :func:`trilobit.packing.ternary_group_index`, planes combined by
shift-add), and is itself checked against :func:`trilobit.gemm.gemm_int` in the tests. It also
turns matrices into the engine's stream beats (one packing definition for the Amaranth
simulator, cocotb and the C++ harness) and predicts cycle counts.

Weight kinds: ``"ternary"`` (values in {-1, 0, 1}, one plane) or ``"int2"``, ``"int3"``,
``"int4"`` (two's-complement values, ``b`` planes; see :func:`weight_planes`).
"""

from __future__ import annotations

import numpy as np

from trilobit.errors import ConfigError
from trilobit.gemm import gemm_int
from trilobit.hw.tlmm import OUTPUT_LATENCY, TlmmParams
from trilobit.packing import balanced_ternary_digits, ternary_group_index

__all__ = [
    "WEIGHT_KINDS",
    "plane_count",
    "weight_planes",
    "padded_k",
    "tlmm_golden",
    "tlmm_reference",
    "gemv_streams",
    "pack_beats",
    "beat_ints",
    "unpack_out",
    "expected_cycles",
    "random_weights",
]

WEIGHT_KINDS = ("ternary", "int2", "int3", "int4")


def plane_count(kind: str) -> int:
    """Weight planes of a weight kind: 1 for ternary, b for INT-b."""
    if kind not in WEIGHT_KINDS:
        raise ConfigError(f"weight kind must be one of {WEIGHT_KINDS}, got {kind!r}")
    return 1 if kind == "ternary" else int(kind[3:])


def weight_planes(w: np.ndarray, kind: str) -> np.ndarray:
    """Decompose weights into ternary planes: ``w = sum_j 2**j * planes[j]``.

    Ternary: one plane, ``w`` itself. INT-b: ``planes[j] = bit_j(w)`` (in {0, 1}) for
    ``j < b-1`` and ``planes[b-1] = -bit_{b-1}(w)`` (in {0, -1}): the two's-complement MSB
    weighs ``-2**(b-1)``. Shape ``(planes, *w.shape)``, int8.
    """
    b = plane_count(kind)
    w = np.asarray(w, dtype=np.int64)
    lo, hi = (-1, 1) if kind == "ternary" else (-(1 << (b - 1)), (1 << (b - 1)) - 1)
    if w.size and (w.min() < lo or w.max() > hi):
        raise ConfigError(f"{kind} weights must lie in {lo}..{hi}, got {w.min()}..{w.max()}")
    if kind == "ternary":
        return w[None].astype(np.int8)
    codes = w & ((1 << b) - 1)
    planes = np.stack([(codes >> j) & 1 for j in range(b)]).astype(np.int8)
    planes[b - 1] = -planes[b - 1]
    return planes


def padded_k(params: TlmmParams, k: int) -> int:
    """K rounded up to whole activation beats (G * units activations)."""
    step = params.activations_per_beat
    return -(-k // step) * step


def tlmm_reference(a: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Plain exact integer ``a @ w.T``: a ``(M, K)``, w ``(N, K)`` -> ``(M, N)``."""
    return gemm_int(np.atleast_2d(a), np.asarray(w).T).astype(np.int64)


def tlmm_golden(params: TlmmParams, a: np.ndarray, w: np.ndarray, kind: str) -> np.ndarray:
    """What the engine outputs for activations ``a`` (M, K) and weights ``w`` (N, K): (M, N) int64.

    Computed the table way: per group of G activations the sign-halved table
    ``table[m] = digits(m) . a_group``, per weight group ``±table[|b|]``, planes shift-added.
    K is zero-padded to whole beats (zero activations and weights add nothing).
    """
    G = params.group_size
    a = np.atleast_2d(np.asarray(a, dtype=np.int64))
    lo, hi = -(1 << (params.act_bits - 1)), (1 << (params.act_bits - 1)) - 1
    if a.size and (a.min() < lo or a.max() > hi):
        raise ConfigError(f"activations must lie in {lo}..{hi} for act_bits={params.act_bits}")
    k = a.shape[1]
    if k > params.max_beats * params.activations_per_beat:
        raise ConfigError(f"K={k} exceeds the engine's max_k={params.max_k}")
    planes = weight_planes(w, kind)
    kp = -(-k // G) * G
    a = np.pad(a, ((0, 0), (0, kp - k)))
    planes = np.pad(planes, ((0, 0), (0, 0), (0, kp - k)))
    digits = balanced_ternary_digits(np.arange(params.table_size), G).astype(np.int64)
    # tables[m_vec, group, entry]
    tables = np.einsum("mgi,ei->mge", a.reshape(a.shape[0], -1, G), digits)
    out = np.zeros((a.shape[0], planes.shape[1]), dtype=np.int64)
    groups = np.arange(kp // G)
    for j, plane in enumerate(planes):
        magnitude, sign = ternary_group_index(plane, G)  # (N, groups)
        looked = tables[:, groups[None, :], magnitude.astype(np.int64)]  # (M, N, groups)
        signed_values = np.where(sign.astype(bool)[None], -looked, looked)
        out += signed_values.sum(axis=-1) << j
    return out


def random_weights(rng: np.random.Generator, shape: tuple[int, ...], kind: str) -> np.ndarray:
    """Uniform random weights of a kind (int8)."""
    b = plane_count(kind)
    lo, hi = (-1, 1) if kind == "ternary" else (-(1 << (b - 1)), (1 << (b - 1)) - 1)
    return rng.integers(lo, hi + 1, size=shape, dtype=np.int64).astype(np.int8)


# --------------------------------------------------------------------------------------
# Stream beats


def pack_beats(fields: np.ndarray, width: int) -> np.ndarray:
    """Pack beats of unsigned fields into little-endian 32-bit words.

    ``fields`` ``(beats, n)`` non-negative integers below ``2**width``; field 0 lands in the
    least significant bits. Returns ``(beats, ceil(n*width/32))`` uint32, the layout of a
    Verilator wide signal (word 0 least significant) and of an Amaranth ArrayLayout.
    """
    fields = np.asarray(fields, dtype=np.uint64)
    beats, n = fields.shape
    words = max(1, -(-n * width // 32))
    bits = ((fields[:, :, None] >> np.arange(width, dtype=np.uint64)) & np.uint64(1)).astype(
        np.uint8
    ).reshape(beats, n * width)
    bits = np.pad(bits, ((0, 0), (0, words * 32 - n * width)))
    packed = np.packbits(bits, axis=1, bitorder="little")
    return packed.view("<u4").reshape(beats, words)


def beat_ints(words: np.ndarray) -> list[int]:
    """Each row of :func:`pack_beats` as one Python int (for simulators taking ints)."""
    return [int.from_bytes(row.tobytes(), "little") for row in np.ascontiguousarray(words)]


def unpack_out(value: int, params: TlmmParams) -> list[int]:
    """The ``rows`` signed accumulators of an ``out`` beat given as an int."""
    width = params.acc_bits
    mask = (1 << width) - 1
    values = []
    for r in range(params.rows):
        field = (value >> (r * width)) & mask
        values.append(field - (1 << width) if field >> (width - 1) else field)
    return values


def gemv_streams(params: TlmmParams, a: np.ndarray, w: np.ndarray, kind: str,
                 *, weight_format: str = "index", row_slots: int = 1) -> dict:
    """Beats of all four streams for ``a @ w.T``: a ``(M, K)``, w ``(N, K)``.

    One command per (activation vector, block of ``rows * row_slots`` output rows),
    vector-major; K is zero-padded to whole beats and N to whole row blocks. ``weight_format``:
    ``"index"`` (engine: ``{magnitude, sign}`` per group) or ``"plain2"`` (baseline: G
    two's-complement 2-bit codes per group, weight 0 of the group in the low bits).
    ``row_slots`` (T, :class:`trilobit.hw.tlmm_lutram.TlmmLutramEngine`): weight beats of a
    command run beat-major, then plane, then slot ``t``, beat ``t`` carrying rows
    ``t*rows .. t*rows + rows-1`` of the block; T = 1 is the engine's order.

    Returns a dict of uint32 word arrays ``cmd``, ``act``, ``weights`` (one row per beat) and
    ``commands``, ``blocks`` (output beats: commands * T, each ``rows`` accumulators in row
    order), ``beats``, ``planes`` and ``rows_padded``.
    """
    G, P, T = params.group_size, params.units, row_slots
    R = params.rows * T  # rows of one command
    a = np.atleast_2d(np.asarray(a, dtype=np.int64))
    planes = weight_planes(w, kind)
    n_planes = planes.shape[0]
    if n_planes > params.max_planes:
        raise ConfigError(f"{kind} needs {n_planes} planes, engine max_planes={params.max_planes}")
    M, K = a.shape
    N = planes.shape[1]
    kp = padded_k(params, K)
    if kp > params.max_beats * params.activations_per_beat:
        raise ConfigError(f"K={K} exceeds the engine's max_k={params.max_k}")
    n_blocks = -(-N // R)
    beats = kp // params.activations_per_beat
    a = np.pad(a, ((0, 0), (0, kp - K)))
    planes = np.pad(planes, ((0, 0), (0, n_blocks * R - N), (0, kp - K)))

    act_codes = (a & ((1 << params.act_bits) - 1)).reshape(M * beats, P * G)
    act_one = pack_beats(act_codes, params.act_bits).reshape(M, beats, -1)
    act = np.repeat(act_one, n_blocks, axis=0).reshape(M * n_blocks * beats, -1)

    if weight_format == "index":
        magnitude, sign = ternary_group_index(planes, G)  # (planes, Npad, groups)
        elements = magnitude.astype(np.uint64) | (sign.astype(np.uint64) << params.magnitude_bits)
        width = params.magnitude_bits + 1
    elif weight_format == "plain2":
        codes = (planes.astype(np.int64) & 0b11).reshape(*planes.shape[:2], -1, G)
        elements = np.zeros(codes.shape[:-1], dtype=np.uint64)
        for i in range(G):
            elements |= codes[..., i].astype(np.uint64) << np.uint64(2 * i)
        width = 2 * G
    else:
        raise ConfigError(f"weight_format must be 'index' or 'plain2', got {weight_format!r}")
    # (planes, blocks, T, rows, beats, P) -> (blocks, beats, planes, T, rows, P)
    elements = elements.reshape(n_planes, n_blocks, T, params.rows, beats, P)
    elements = elements.transpose(1, 4, 0, 2, 3, 5)
    weights_one = pack_beats(elements.reshape(-1, params.rows * P), width)
    weights = np.tile(weights_one, (M, 1))

    cmd_value = beats | (n_planes << params.beats_bits)
    cmd = np.full((M * n_blocks, 1), cmd_value, dtype=np.uint32)
    return {
        "cmd": cmd,
        "act": act,
        "weights": weights,
        "commands": M * n_blocks,
        "blocks": M * n_blocks * T,
        "n_blocks": n_blocks,
        "beats": beats,
        "planes": n_planes,
        "rows_padded": n_blocks * R,
    }


def expected_cycles(params: TlmmParams, k: int, n: int, planes: int = 1, m: int = 1) -> int:
    """Cycles from the first beat to the last output with streams never stalling.

    One weight beat per cycle: ``m * ceil(n/R) * beats * planes``, plus 2 cycles to fill the
    table double buffer and :data:`OUTPUT_LATENCY` to drain.
    """
    beats = padded_k(params, k) // params.activations_per_beat
    return m * -(-n // params.rows) * beats * planes + 2 + OUTPUT_LATENCY
