"""Weight formats of the bit-serial mixed-datatype engine and their term decomposition.

A group of weights (``group_size`` consecutive input channels of one output column) is stored
in one *format* and, for the floating-point formats, one of the four BitMoD candidate types
selected by a 2-bit *type id* (:data:`trilobit.dtypes.BITMOD_CANDIDATES`, tuple position = id).

=========  ==================================  =============================
format     value set (``trilobit.dtypes``)      cycles per weight at 2 b/cycle
=========  ==================================  =============================
``INT3``   ``int3``                             2
``INT4``   ``int4``                             2
``INT6``   ``int6``                             3
``INT8``   ``int8``                             4
``FP3``    ``BITMOD_CANDIDATES[3][type_id]``    2
``FP4``    ``BITMOD_CANDIDATES[4][type_id]``    2
=========  ==================================  =============================

Unified term representation
---------------------------
Every weight is consumed as ``cycles_per_weight`` *terms*, one per cycle. A term is
``0`` or ``±(1 << lane_shift)``; on top of it the whole array applies a common
``step_shift`` for that cycle. The product contributed by weight ``w`` and activation ``a`` in
step ``s`` is ``±(a << lane_shift) << step_shift``, and the sum over the steps is ``w * a``.

* INT weights are radix-4 Booth digits ``d_s = -2 b[2s+1] + b[2s] + b[2s-1]`` (``b[-1] = 0``)
  of the code sign-extended to ``2 * cycles`` bits: ``d_s`` in {-2..2} is a term with
  ``lane_shift = (|d_s| == 2)`` and ``step_shift = 2 s``.
* FP weights have at most two nonzero non-adjacent-form digits (e.g. 12 = 16 - 4,
  10 = 8 + 2): step 0 carries the larger one, step 1 the smaller, ``step_shift = 0``.

The floating-point term tables are derived here from the value tables of
:mod:`trilobit.dtypes`; nothing in this module restates a value set.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from functools import cache

import numpy as np

from trilobit.dtypes import BITMOD_CANDIDATES, get_dtype
from trilobit.errors import ConfigError

__all__ = [
    "WeightFormat",
    "Term",
    "SUPPORTED_BITS_PER_CYCLE",
    "format_dtype",
    "cycles_per_weight",
    "weight_terms",
    "fp_term_table",
    "fp_decode_tables",
    "FpDecodeTables",
    "booth_digits",
    "naf_digits",
    "max_lane_shift",
]

#: Bits of a weight consumed per cycle that the engine supports (radix-2 and radix-4 Booth).
SUPPORTED_BITS_PER_CYCLE = (1, 2)


class WeightFormat(enum.IntEnum):
    """Per-group weight format; the value is the 3-bit ``fmt`` field of a metadata beat."""

    INT3 = 0
    INT4 = 1
    INT6 = 2
    INT8 = 3
    FP3 = 4
    FP4 = 5

    @property
    def bits(self) -> int:
        """Storage bits of one weight code."""
        return {0: 3, 1: 4, 2: 6, 3: 8, 4: 3, 5: 4}[int(self)]

    @property
    def is_fp(self) -> bool:
        return self in (WeightFormat.FP3, WeightFormat.FP4)

    @classmethod
    def parse(cls, name: str | int | WeightFormat) -> WeightFormat:
        """``"int4"``, ``"FP3"``, ``5`` or a member -> member; anything else raises ConfigError."""
        if isinstance(name, WeightFormat):
            return name
        if isinstance(name, int | np.integer):
            try:
                return cls(int(name))
            except ValueError:
                pass
        else:
            try:
                return cls[str(name).upper()]
            except KeyError:
                pass
        raise ConfigError(
            f"weight format must be one of {', '.join(f.name.lower() for f in cls)}, got {name!r}"
        )


def format_dtype(fmt: WeightFormat | str, type_id: int = 0) -> str:
    """Name of the :mod:`trilobit.dtypes` datatype a group of format ``fmt`` decodes with."""
    fmt = WeightFormat.parse(fmt)
    if not 0 <= int(type_id) <= 3:
        raise ConfigError(f"type_id must lie in 0..3, got {type_id}")
    if fmt.is_fp:
        return BITMOD_CANDIDATES[fmt.bits][int(type_id)]
    return f"int{fmt.bits}"


def cycles_per_weight(fmt: WeightFormat | str, bits_per_cycle: int = 2) -> int:
    """Cycles the engine spends per weight (and per chunk of ``width`` weights)."""
    fmt = WeightFormat.parse(fmt)
    if bits_per_cycle not in SUPPORTED_BITS_PER_CYCLE:
        raise ConfigError(
            f"bits_per_cycle must be one of {SUPPORTED_BITS_PER_CYCLE}, got {bits_per_cycle}"
        )
    # 3-bit codes take the slots of a 4-bit code: INT3 is sign-extended, FP3 has <= 2 terms.
    slot_bits = max(fmt.bits, 4)
    return -(-slot_bits // bits_per_cycle)


@dataclass(frozen=True)
class Term:
    """One cycle's contribution of a weight: ``sign * (1 << lane_shift) << step_shift``.

    ``sign`` is -1, 0 or +1 (0: no contribution this cycle).
    """

    sign: int
    lane_shift: int
    step_shift: int

    @property
    def value(self) -> int:
        return self.sign * (1 << (self.lane_shift + self.step_shift))


def booth_digits(value: int, n_digits: int, bits_per_cycle: int = 2) -> list[int]:
    """Booth digits (radix ``2**bits_per_cycle``), least significant first.

    ``value`` must fit ``n_digits * bits_per_cycle`` bits two's complement. Radix 4 gives digits
    in {-2..2}, radix 2 in {-1, 0, 1}; ``sum(d * radix**i) == value``.
    """
    width = n_digits * bits_per_cycle
    if not -(1 << (width - 1)) <= value < (1 << (width - 1)):
        raise ConfigError(f"value {value} does not fit {width} bits two's complement")
    bit = [(value >> i) & 1 for i in range(width)]
    digits = []
    for s in range(n_digits):
        lo = s * bits_per_cycle
        prev = bit[lo - 1] if lo else 0
        if bits_per_cycle == 1:
            digits.append(prev - bit[lo])
        else:
            digits.append(-2 * bit[lo + 1] + bit[lo] + prev)
    return digits


def naf_digits(value: int) -> list[tuple[int, int]]:
    """Non-adjacent form of ``value`` as ``(sign, position)`` pairs, largest position first."""
    digits = []
    v, pos = value, 0
    while v:
        if v & 1:
            d = 2 - (v & 3)  # +1 if v = 1 mod 4, -1 if v = 3 mod 4
            digits.append((d, pos))
            v -= d
        v >>= 1
        pos += 1
    return digits[::-1]


@cache
def _fp_terms(fmt: WeightFormat, type_id: int, code: int) -> tuple[Term, ...]:
    value = get_dtype(format_dtype(fmt, type_id)).values[code]
    if not np.isfinite(value) or value != int(value):
        raise ConfigError(f"{format_dtype(fmt, type_id)} code {code} has no integer value")
    digits = naf_digits(int(value))
    if len(digits) > 2:
        raise ConfigError(
            f"{format_dtype(fmt, type_id)} value {value} needs {len(digits)} terms; the engine "
            "decodes floating-point weights into at most two"
        )
    terms = [Term(sign, pos, 0) for sign, pos in digits]
    return tuple(terms + [Term(0, 0, 0)] * (2 - len(terms)))


def fp_term_table(fmt: WeightFormat) -> dict[tuple[int, int], tuple[Term, Term]]:
    """``(type_id, code) -> (term for step 0, term for step 1)`` for an FP format."""
    fmt = WeightFormat.parse(fmt)
    if not fmt.is_fp:
        raise ConfigError(f"{fmt.name} is not a floating-point format")
    return {
        (t, c): _fp_terms(fmt, t, c) for t in range(4) for c in range(1 << fmt.bits)
    }


@dataclass(frozen=True)
class FpDecodeTables:
    """Compact decoding of a BitMoD FP format, derived from the value tables.

    ``magnitude[m]`` are the two terms of ``+value`` of magnitude code ``m`` (same for all
    four candidates; a set sign bit negates them), ``extra[type_id]`` the terms of the
    candidate's extra value at the code that would be -0.
    """

    magnitude: tuple[tuple[Term, Term], ...]
    extra: tuple[tuple[Term, Term], ...]


@cache
def fp_decode_tables(fmt: WeightFormat) -> FpDecodeTables:
    """Split :func:`fp_term_table` into sign-magnitude and extra-value parts, checking that
    the value tables have that structure (they do for every BitMoD candidate)."""
    fmt = WeightFormat.parse(fmt)
    table = fp_term_table(fmt)
    half = 1 << (fmt.bits - 1)
    magnitude = tuple(table[(0, m)] for m in range(half))
    extra = tuple(table[(t, half)] for t in range(4))
    for (t, code), terms in table.items():
        if code == half:
            continue
        flip = -1 if code >= half else 1
        want = tuple(Term(flip * x.sign, x.lane_shift, x.step_shift)
                     for x in magnitude[code % half])
        if terms != want:
            raise ConfigError(
                f"{format_dtype(fmt, t)} code {code} is not sign-magnitude of the base values"
            )
    return FpDecodeTables(magnitude, extra)


def weight_terms(
    fmt: WeightFormat | str, type_id: int, code: int, bits_per_cycle: int = 2
) -> list[Term]:
    """The ``cycles_per_weight`` terms of one weight code, in the order the engine applies them."""
    fmt = WeightFormat.parse(fmt)
    cycles = cycles_per_weight(fmt, bits_per_cycle)
    if not 0 <= code < (1 << fmt.bits):
        raise ConfigError(f"{fmt.name} code must lie in 0..{(1 << fmt.bits) - 1}, got {code}")
    if fmt.is_fp:
        terms = list(_fp_terms(fmt, int(type_id), int(code)))
        return terms + [Term(0, 0, 0)] * (cycles - len(terms))
    value = int(get_dtype(format_dtype(fmt)).values[code])
    terms = []
    for s, d in enumerate(booth_digits(value, cycles, bits_per_cycle)):
        terms.append(Term(int(np.sign(d)), int(abs(d) == 2), s * bits_per_cycle))
    return terms


def max_lane_shift() -> int:
    """Largest ``lane_shift`` any format needs (sizes the per-lane shifter)."""
    shifts = [1]  # radix-4 Booth digit +-2
    for fmt in (WeightFormat.FP3, WeightFormat.FP4):
        shifts += [t.lane_shift for pair in fp_term_table(fmt).values() for t in pair]
    return max(shifts)
