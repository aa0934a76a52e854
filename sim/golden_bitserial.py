"""numpy golden model of the bit-serial mixed-datatype engine (``trilobit.hw.bitserial``).

The golden model knows nothing about Booth digits, terms or the dequantizer: it decodes
every code through the value tables of :mod:`trilobit.dtypes` and computes ::

    out[r, c] = sum_g scale[c, g] * sum_{k in g} w[c, k] * a[r, k]

with exact integer arithmetic (:func:`trilobit.gemm.gemm_int`). Its cycle model gives the
ideal (stall-free) cycle count of the engine and of the bit-parallel baseline.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from trilobit.dtypes import get_dtype
from trilobit.errors import ConfigError
from trilobit.gemm import gemm_int
from trilobit.hw.bitserial_format import WeightFormat, cycles_per_weight, format_dtype

__all__ = ["EngineJob", "decode_weights", "engine_reference", "ideal_cycles", "job_stream_words",
           "random_job"]


@dataclass
class EngineJob:
    """One job of the engine: ``rows`` activation vectors x ``columns`` output channels.

    Attributes:
        act: int array (rows, K), signed activations.
        codes: int array (columns, K), weight codes of each group's format.
        fmts: int array (n_groups,), :class:`WeightFormat` of each group (shared by columns).
        type_ids: int array (columns, n_groups), 2-bit type id per column and group.
        scales: int array (columns, n_groups), unsigned integer scale mantissas.
    """

    act: np.ndarray
    codes: np.ndarray
    fmts: np.ndarray
    type_ids: np.ndarray
    scales: np.ndarray

    @property
    def n_groups(self) -> int:
        return len(self.fmts)

    @property
    def group_size(self) -> int:
        return self.codes.shape[1] // self.n_groups


def decode_weights(codes: np.ndarray, fmts: np.ndarray, type_ids: np.ndarray) -> np.ndarray:
    """Integer weight values (columns, K) of codes stored per group in ``fmts``/``type_ids``."""
    codes = np.asarray(codes, dtype=np.int64)
    n_cols, k = codes.shape
    n_groups = len(fmts)
    if k % n_groups:
        raise ConfigError(f"K={k} is not a multiple of n_groups={n_groups}")
    g = k // n_groups
    out = np.zeros_like(codes)
    for j, fmt in enumerate(fmts):
        for c in range(n_cols):
            dt = get_dtype(format_dtype(WeightFormat(int(fmt)), int(type_ids[c, j])))
            out[c, j * g:(j + 1) * g] = dt.decode(codes[c, j * g:(j + 1) * g]).astype(np.int64)
    return out


def engine_reference(job: EngineJob) -> np.ndarray:
    """Exact ``out[r, c]`` (int64) of one job."""
    w = decode_weights(job.codes, job.fmts, job.type_ids)
    act = np.asarray(job.act, dtype=np.int64)
    g = job.group_size
    out = np.zeros((act.shape[0], w.shape[0]), dtype=np.int64)
    for j in range(job.n_groups):
        part = gemm_int(act[:, j * g:(j + 1) * g], w[:, j * g:(j + 1) * g].T).astype(np.int64)
        out += part * np.asarray(job.scales, dtype=np.int64)[:, j][None, :]
    return out


def ideal_cycles(fmts, group_size: int, width: int, bits_per_cycle: int = 2) -> int:
    """Stall-free cycles the bit-serial engine spends on the chunks of one job."""
    chunks = group_size // width
    return sum(chunks * cycles_per_weight(WeightFormat(int(f)), bits_per_cycle) for f in fmts)


def random_job(
    rng: np.random.Generator,
    rows: int,
    columns: int,
    group_size: int,
    fmts,
    *,
    act_bits: int = 8,
    scale_bits: int = 8,
    extremes: str | None = None,
) -> EngineJob:
    """A random job; ``extremes`` in (None, "max", "min", "zero_weights", "unit_weights").

    ``max``/``min`` put every activation at +max/-min and every weight at the largest
    magnitude code of its type; scales at their maximum.
    """
    fmts = np.array([int(WeightFormat.parse(f)) for f in fmts], dtype=np.int64)
    n_groups = len(fmts)
    k = n_groups * group_size
    lo, hi = -(1 << (act_bits - 1)), (1 << (act_bits - 1)) - 1
    act = rng.integers(lo, hi + 1, size=(rows, k))
    type_ids = np.zeros((columns, n_groups), dtype=np.int64)
    codes = np.zeros((columns, k), dtype=np.int64)
    scales = rng.integers(0, 1 << scale_bits, size=(columns, n_groups))
    for j, f in enumerate(fmts):
        fmt = WeightFormat(int(f))
        if fmt.is_fp:
            type_ids[:, j] = rng.integers(0, 4, size=columns)
        for c in range(columns):
            dt = get_dtype(format_dtype(fmt, int(type_ids[c, j])))
            sl = slice(j * group_size, (j + 1) * group_size)
            valid = dt.valid_codes
            if extremes in ("max", "min"):
                vals = dt.values[valid]
                pick = valid[np.argmax(np.abs(vals))]
                codes[c, sl] = pick
            elif extremes == "zero_weights":
                codes[c, sl] = dt.encode(np.zeros(group_size))
            elif extremes == "unit_weights":
                codes[c, sl] = dt.encode(rng.choice([-1.0, 1.0], size=group_size))
            else:
                codes[c, sl] = rng.choice(valid, size=group_size)
    if extremes == "max":
        act[:] = hi
        scales[:] = (1 << scale_bits) - 1
    elif extremes == "min":
        act[:] = lo
        scales[:] = (1 << scale_bits) - 1
    return EngineJob(act, codes, fmts, type_ids, scales)


def job_stream_words(params, jobs: list[EngineJob]) -> dict[str, list[int]]:
    """Payload integers of every stream for ``jobs`` run back to back, plus the expected
    ``out`` payloads from :func:`engine_reference`.

    ``params`` is a :class:`trilobit.hw.bitserial.BitSerialParams`. Keys: ``meta``, ``act``,
    ``weights``, ``expected``.
    """
    from trilobit.sw.bitmod import pack_engine_job

    words: dict[str, list[int]] = {"meta": [], "act": [], "weights": [], "expected": []}
    for job in jobs:
        beats = pack_engine_job(job.codes, job.fmts, job.type_ids, job.scales, job.act,
                                params.width)
        words["meta"] += [params.pack_meta(*m) for m in beats["meta"]]
        words["act"] += [params.pack_act(a) for a in beats["act"]]
        words["weights"] += [params.pack_weights(w) for w in beats["weights"]]
        words["expected"].append(params.pack_out(engine_reference(job)))
    return words
