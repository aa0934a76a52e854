"""Numeric datatypes, one definition each.

Every datatype is a table ``values[code]`` (float64) over its ``2**bits`` codes plus exact,
vectorised ``encode`` (nearest representable value, ties to even) and ``decode``. Hardware
generators, golden models, quantizers and the compiler all read these tables; nothing else
re-derives a value set.

Families
--------
* ``int2`` .. ``int8``: two's complement; ``uint2`` .. ``uint8``: unsigned.
* ``binary`` = {-1, +1} (code 0 -> -1), ``ternary`` = {-1, 0, +1} as INT2 codes (code 2 unused).
* Sign-magnitude floating point (sign in the top bit), built from (exponent bits, mantissa
  bits, bias) with subnormals: ``fp4_e2m1`` (ONNX FLOAT4E2M1, values 0..6), ``fp6_e2m3``,
  ``fp6_e3m2`` (OCP MX, no inf/NaN), ``fp8_e4m3`` (ONNX FLOAT8E4M3FN: NaN at 0x7F/0xFF, max
  448), ``fp8_e5m2`` (IEEE-like: inf and NaN, max 57344).
* BitMoD integer forms (the per-group scale absorbs the unit):
  ``fp3`` = {0, ±1, ±2, ±4} (E2M0) and ``fp4`` = {0, ±1, ±2, ±3, ±4, ±6, ±8, ±12} (E2M1 × 2).
  The extended variants give the code that would be -0 (sign bit set, magnitude 0) an extra
  value: ``*_er_pos``/``*_er_neg`` add +3/-3 (FP3) or +10/-10 (FP4) ("extra resolution"),
  ``*_ea_pos``/``*_ea_neg`` add +6/-6 (FP3) or +16/-16 (FP4) ("extra asymmetry").
  :data:`BITMOD_CANDIDATES` lists, per precision, the four candidates a group chooses from;
  the tuple position is the 2-bit type id.
* ``pow2_4``: sign + 3-bit exponent, {0, ±1, ±2, ±4, ..., ±64} (power-of-two weights).

Ties
----
``encode`` rounds to the nearest value; an exact tie goes to the candidate whose code is even
(for integers this is round-half-to-even, for floating point the even mantissa). If both
candidates have even codes (possible only next to a BitMoD extra value) the smaller magnitude
wins. Inputs beyond the range saturate to the extreme finite value (ONNX ``saturate=1``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from trilobit.errors import DatatypeError

__all__ = ["Datatype", "DATATYPES", "BITMOD_CANDIDATES", "get_dtype", "dtype_names"]


@dataclass(frozen=True, eq=False)
class Datatype:
    """A numeric format: ``values[code]`` for every code in ``0 .. 2**bits - 1``.

    Attributes:
        name: registry key, e.g. ``"int4"`` or ``"fp4_ea_pos"``.
        bits: storage width of one code, in bits.
        kind: ``"int"``, ``"uint"``, ``"binary"``, ``"ternary"``, ``"fp"`` or ``"pow2"``.
        values: float64 array of length ``2**bits``; NaN marks NaN codes, ``nan`` too for codes
            a type does not use (the ternary code 2).
        sign_magnitude: codes are sign bit + magnitude code (floating point, pow2) and
            ``encode`` keeps the sign of zero, as ONNX casts to float4/float8 do.
        onnx_type: the ``onnx.TensorProto`` element type of this format, or None.
    """

    name: str
    bits: int
    kind: str
    values: np.ndarray = field(repr=False)
    sign_magnitude: bool = False
    onnx_type: int | None = None
    valid_codes: np.ndarray = field(init=False, repr=False)
    _sorted_values: np.ndarray = field(init=False, repr=False)
    _sorted_codes: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        values = np.asarray(self.values, dtype=np.float64)
        if values.shape != (1 << self.bits,):
            raise DatatypeError(f"{self.name}: need {1 << self.bits} values, got {values.shape}")
        values.setflags(write=False)
        object.__setattr__(self, "values", values)
        finite = np.flatnonzero(np.isfinite(values))
        if self.sign_magnitude:
            # The nearest-value search runs over magnitudes; the sign is applied afterwards.
            half = 1 << (self.bits - 1)
            finite = finite[finite < half]
        else:
            # Drop duplicate values (e.g. a -0 code) so each value has one canonical code.
            _, first = np.unique(values[finite], return_index=True)
            finite = finite[np.sort(first)]
        order = np.argsort(values[finite], kind="stable")
        codes = finite[order].astype(np.int64)
        object.__setattr__(self, "_sorted_values", values[codes])
        object.__setattr__(self, "_sorted_codes", codes)
        valid = np.flatnonzero(~np.isnan(values) | self._nan_codes_mask())
        object.__setattr__(self, "valid_codes", valid)

    def _nan_codes_mask(self) -> np.ndarray:
        mask = np.zeros(1 << self.bits, dtype=bool)
        if self.kind == "fp":
            mask |= np.isnan(self.values)
        return mask

    # -- properties -------------------------------------------------------------------------
    @property
    def signed(self) -> bool:
        """True when the format has negative values."""
        return bool(np.nanmin(self.values) < 0)

    @property
    def min(self) -> float:
        """Smallest finite value."""
        return float(self._sorted_values[0] if not self.sign_magnitude else -self.max)

    @property
    def max(self) -> float:
        """Largest finite value."""
        return float(self._sorted_values[-1])

    @property
    def has_nan(self) -> bool:
        return bool(self._nan_codes_mask().any())

    def finite_values(self) -> np.ndarray:
        """Sorted distinct finite values (``-0`` and ``+0`` count once)."""
        vals = self.values[np.isfinite(self.values)]
        return np.unique(vals + 0.0)

    @property
    def storage_dtype(self) -> type[np.integer]:
        """numpy dtype holding one code."""
        return np.uint8 if self.bits <= 8 else np.uint16

    # -- conversions ------------------------------------------------------------------------
    def decode(self, codes: np.ndarray) -> np.ndarray:
        """Values of ``codes`` (float64). Codes outside ``0..2**bits-1`` raise DatatypeError."""
        codes = np.asarray(codes)
        if codes.size:
            if not np.issubdtype(codes.dtype, np.integer):
                raise DatatypeError(
                    f"{self.name}.decode: codes must be integers, got {codes.dtype}"
                )
            lo, hi = int(codes.min()), int(codes.max())
            if lo < 0 or hi >= (1 << self.bits):
                raise DatatypeError(
                    f"{self.name}.decode: codes must lie in 0..{(1 << self.bits) - 1}, "
                    f"got range {lo}..{hi}"
                )
        out = self.values[codes.astype(np.int64)]
        if not self.has_nan and codes.size and np.isnan(out).any():
            bad = int(codes.reshape(-1)[np.flatnonzero(np.isnan(out.reshape(-1)))[0]])
            raise DatatypeError(f"{self.name}.decode: code {bad} is not used by this format")
        return out

    def encode(self, x: np.ndarray) -> np.ndarray:
        """Codes of the nearest representable values (ties to even code, saturating).

        NaN inputs map to the NaN code of formats that have one and raise DatatypeError
        otherwise.
        """
        x = np.asarray(x, dtype=np.float64)
        nan = np.isnan(x)
        if nan.any() and not self.has_nan:
            idx = tuple(int(i) for i in np.argwhere(nan)[0])
            raise DatatypeError(f"{self.name}.encode: NaN at index {list(idx)} has no code")
        if self.sign_magnitude:
            mag_codes = self._nearest(np.where(nan, 0.0, np.abs(x)))
            sign = np.signbit(x).astype(np.int64) << (self.bits - 1)
            codes = mag_codes | sign
        else:
            codes = self._nearest(np.where(nan, 0.0, x))
        if nan.any():
            nan_code = int(np.flatnonzero(np.isnan(self.values))[-1])
            codes = np.where(nan, nan_code, codes)
        return codes.astype(self.storage_dtype)

    def encode_exact(self, x: np.ndarray) -> np.ndarray:
        """Codes of values that must already be representable; anything else raises."""
        x = np.asarray(x, dtype=np.float64)
        codes = self.encode(x)
        back = self.decode(codes)
        bad = ~((back == x) | (np.isnan(back) & np.isnan(x)))
        if bad.any():
            idx = tuple(int(i) for i in np.argwhere(bad)[0])
            raise DatatypeError(
                f"value {x[idx]!r} at index {list(idx)} is not representable in {self.name} "
                f"(values: {self.finite_values().tolist()})"
            )
        return codes

    def quantize(self, x: np.ndarray) -> np.ndarray:
        """Nearest representable values (``decode(encode(x))``)."""
        return self.decode(self.encode(x))

    def _nearest(self, x: np.ndarray) -> np.ndarray:
        vals, codes = self._sorted_values, self._sorted_codes
        hi = np.clip(np.searchsorted(vals, x, side="left"), 0, len(vals) - 1)
        lo = np.clip(hi - 1, 0, len(vals) - 1)
        d_lo = np.abs(x - vals[lo])
        d_hi = np.abs(vals[hi] - x)
        c_lo, c_hi = codes[lo], codes[hi]
        tie = d_lo == d_hi
        tie_pick_lo = np.where(
            (c_lo % 2 == 0) != (c_hi % 2 == 0),
            c_lo % 2 == 0,
            np.abs(vals[lo]) <= np.abs(vals[hi]),
        )
        pick_lo = np.where(tie, tie_pick_lo, d_lo < d_hi)
        return np.where(pick_lo, c_lo, c_hi).astype(np.int64)


# -- constructors -----------------------------------------------------------------------------


def _int_values(bits: int) -> np.ndarray:
    codes = np.arange(1 << bits)
    return np.where(codes >= (1 << (bits - 1)), codes - (1 << bits), codes).astype(np.float64)


def _fp_magnitudes(exp_bits: int, man_bits: int, bias: int) -> np.ndarray:
    mags = []
    for code in range(1 << (exp_bits + man_bits)):
        e, m = code >> man_bits, code & ((1 << man_bits) - 1)
        if e == 0:
            mags.append(m / (1 << man_bits) * 2.0 ** (1 - bias))
        else:
            mags.append((1 + m / (1 << man_bits)) * 2.0 ** (e - bias))
    return np.array(mags, dtype=np.float64)


def _sign_magnitude(mags: np.ndarray) -> np.ndarray:
    return np.concatenate([mags, -mags])


def _fp(exp_bits: int, man_bits: int, bias: int, scale: float = 1.0) -> np.ndarray:
    return _sign_magnitude(_fp_magnitudes(exp_bits, man_bits, bias) * scale)


def _with_extra(values: np.ndarray, extra: float) -> np.ndarray:
    out = values.copy()
    out[len(values) // 2] = extra  # the code that would be -0
    return out


def _build_registry() -> dict[str, Datatype]:
    from onnx import TensorProto as TP

    reg: dict[str, Datatype] = {}

    def add(dt: Datatype) -> None:
        reg[dt.name] = dt

    onnx_int = {2: TP.INT2, 4: TP.INT4, 8: TP.INT8}
    onnx_uint = {2: TP.UINT2, 4: TP.UINT4, 8: TP.UINT8}
    for bits in range(2, 9):
        add(Datatype(f"int{bits}", bits, "int", _int_values(bits), onnx_type=onnx_int.get(bits)))
        add(Datatype(f"uint{bits}", bits, "uint", np.arange(1 << bits, dtype=np.float64),
                     onnx_type=onnx_uint.get(bits)))
    add(Datatype("binary", 1, "binary", np.array([-1.0, 1.0])))
    add(Datatype("ternary", 2, "ternary", np.array([0.0, 1.0, np.nan, -1.0])))

    add(Datatype("fp4_e2m1", 4, "fp", _fp(2, 1, 1), sign_magnitude=True,
                 onnx_type=TP.FLOAT4E2M1))
    add(Datatype("fp6_e2m3", 6, "fp", _fp(2, 3, 1), sign_magnitude=True))
    add(Datatype("fp6_e3m2", 6, "fp", _fp(3, 2, 3), sign_magnitude=True))
    e4m3 = _fp(4, 3, 7)
    e4m3[0x7F] = e4m3[0xFF] = np.nan
    add(Datatype("fp8_e4m3", 8, "fp", e4m3, sign_magnitude=True, onnx_type=TP.FLOAT8E4M3FN))
    e5m2 = _fp(5, 2, 15)
    e5m2[0x7C], e5m2[0xFC] = np.inf, -np.inf
    e5m2[[0x7D, 0x7E, 0x7F, 0xFD, 0xFE, 0xFF]] = np.nan
    add(Datatype("fp8_e5m2", 8, "fp", e5m2, sign_magnitude=True, onnx_type=TP.FLOAT8E5M2))
    add(Datatype("pow2_4", 4, "pow2",
                 _sign_magnitude(np.array([0.0] + [2.0**k for k in range(7)])),
                 sign_magnitude=True))

    fp3 = _fp(2, 0, 1)  # E2M0 integer form: {0, 1, 2, 4}
    fp4 = _fp(2, 1, 1, scale=2.0)  # E2M1 x 2: {0, 1, 2, 3, 4, 6, 8, 12}
    add(Datatype("fp3", 3, "fp", fp3, sign_magnitude=True))
    add(Datatype("fp4", 4, "fp", fp4, sign_magnitude=True))
    for base, vals, er, ea in (("fp3", fp3, 3.0, 6.0), ("fp4", fp4, 10.0, 16.0)):
        bits = reg[base].bits
        for suffix, extra in (("er_pos", er), ("er_neg", -er), ("ea_pos", ea), ("ea_neg", -ea)):
            add(Datatype(f"{base}_{suffix}", bits, "fp", _with_extra(vals, extra)))
    return reg


DATATYPES: dict[str, Datatype] = _build_registry()

#: Per precision (bits), the four BitMoD candidate types; the position is the 2-bit type id.
BITMOD_CANDIDATES: dict[int, tuple[str, str, str, str]] = {
    3: ("fp3_er_pos", "fp3_er_neg", "fp3_ea_pos", "fp3_ea_neg"),
    4: ("fp4_er_pos", "fp4_er_neg", "fp4_ea_pos", "fp4_ea_neg"),
}

_ALIASES = {
    "int1": "binary", "float4e2m1": "fp4_e2m1", "float8e4m3fn": "fp8_e4m3",
    "float8e5m2": "fp8_e5m2", "e2m1": "fp4_e2m1",
}


def dtype_names() -> list[str]:
    """Every registered datatype name."""
    return sorted(DATATYPES)


def get_dtype(name: str | Datatype) -> Datatype:
    """The registered :class:`Datatype` called ``name`` (case-insensitive)."""
    if isinstance(name, Datatype):
        return name
    key = str(name).lower()
    key = _ALIASES.get(key, key)
    try:
        return DATATYPES[key]
    except KeyError:
        raise DatatypeError(
            f"unknown datatype {name!r}; known: {', '.join(dtype_names())}"
        ) from None
