"""``AcceleratorConfig``: the one object that describes a concrete accelerator.

The RTL generator, the golden model, the compiler and the runtime all read the same
configuration; :meth:`AcceleratorConfig.hash` identifies the hardware it describes, and a
program records that hash so a backend can refuse a program built for another accelerator.

Engines
-------
* :class:`TlmmParams` - the ternary table-lookup engine (weights ternary, INT2 or INT4 by
  bit planes; activations int8).
* :class:`BitSerialParams` - the BitMoD-style bit-serial engine (INT3/4/6/8 and FP3/FP4
  weights, 2 weight bits per cycle; activations int8).

Activations and zero points
---------------------------
Both engines multiply **signed int8** activations. General int8/uint8 models (QLinearMatMul,
MatMulInteger, QLinearConv) are executed as follows, with no extra hardware:

* INT8 weights (after subtracting a weight zero point, which must leave them in int8) run on
  the bit-serial engine as format ``INT8`` (4 cycles per weight).
* A uint8 activation ``a`` with zero point ``za`` is loaded with the ``flip`` flag of LOAD,
  which XORs bit 7 of every byte: the buffer then holds ``a' = a - 128`` (int8). Since
  ``sum_k (a - za) w = sum_k a' w + (128 - za) * sum_k w`` and the weights are constants,
  the compiler folds ``(128 - za) * colsum(W)`` into the int32 bias of the post-processing
  unit. An int8 activation with zero point ``za`` folds ``-za * colsum(W)`` the same way.

So the hardware datapath is int8 x weight -> int32 everywhere; zero points live in the bias.

Buffers
-------
All on-chip buffers are addressed in *lines* of ``mem_width // 8`` bytes by LOAD/STORE (one
bus beat per line). Sizes are given in bytes and must be whole lines.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field

from trilobit.errors import ConfigError

__all__ = [
    "TlmmParams",
    "BitSerialParams",
    "AcceleratorConfig",
    "PRESETS",
    "preset",
    "MEM_WIDTHS",
    "BUSES",
    "REQUANT_MODES",
]

#: External memory data widths supported by the memory interface, in bits.
MEM_WIDTHS = (32, 64, 128)
#: System buses: data port and CSR port (AXI4 pairs with AXI4-Lite CSRs).
BUSES = ("wishbone", "axi4")
#: Requantization modes the post-processing unit can implement (docs/numerics.md): ``"ort"``
#: (float32, bit-identical to onnxruntime; the larger circuit) and ``"dyadic"`` (integer
#: multiplier and shift, at most one unit of the output type from onnxruntime).
REQUANT_MODES = ("ort", "dyadic")
#: Range of :attr:`AcceleratorConfig.addr_bits`: 32-bit CSRs and ISA addresses at most; at
#: least 4 KiB of address space.
ADDR_BITS_MIN, ADDR_BITS_MAX = 12, 32


def _check_int(owner: str, name: str, value: int, lo: int, hi: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise ConfigError(f"{owner}.{name} must be an integer in {lo}..{hi}, got {value!r}")


def _check_choice(owner: str, name: str, value, choices) -> None:
    if value not in choices:
        raise ConfigError(f"{owner}.{name} must be one of {choices}, got {value!r}")


def _is_pow2(x: int) -> bool:
    return x > 0 and x & (x - 1) == 0


@dataclass(frozen=True)
class TlmmParams:
    """Ternary table-lookup engine.

    Attributes:
        group_size: G, activations per table (table of ``(3**G + 1) // 2`` entries); 2..4.
        rows: R, output rows that share one table per cycle; 1..64.
        units: P, independent table units working on consecutive groups of K; 1..16.
    """

    group_size: int = 3
    rows: int = 8
    units: int = 1

    def __post_init__(self) -> None:
        _check_int("tlmm", "group_size", self.group_size, 2, 4)
        _check_int("tlmm", "rows", self.rows, 1, 64)
        _check_int("tlmm", "units", self.units, 1, 16)


@dataclass(frozen=True)
class BitSerialParams:
    """Bit-serial mixed-datatype engine.

    Attributes:
        rows: output channels computed in parallel (PE rows); 1..64.
        lanes: input channels consumed per cycle by each row; 1..64.
        bits_per_cycle: weight bits consumed per cycle (1 or 2).
        group_size: input channels sharing one type id and integer scale; power of two 8..1024.
    """

    rows: int = 8
    lanes: int = 8
    bits_per_cycle: int = 2
    group_size: int = 128

    def __post_init__(self) -> None:
        _check_int("bitserial", "rows", self.rows, 1, 64)
        _check_int("bitserial", "lanes", self.lanes, 1, 64)
        _check_choice("bitserial", "bits_per_cycle", self.bits_per_cycle, (1, 2))
        _check_int("bitserial", "group_size", self.group_size, 8, 1024)
        if not _is_pow2(self.group_size):
            raise ConfigError(
                f"bitserial.group_size must be a power of two in 8..1024, got {self.group_size}"
            )


@dataclass(frozen=True)
class AcceleratorConfig:
    """A concrete accelerator.

    Attributes:
        name: a label (a preset name); not part of :meth:`hash`.
        tlmm: ternary table-lookup engine parameters, or None if absent.
        bitserial: bit-serial engine parameters, or None if absent.
        mem_width: external memory data width in bits (one line per bus beat).
        bus: ``"wishbone"`` or ``"axi4"`` (CSRs on Wishbone or AXI4-Lite accordingly).
        inp_bytes: activation buffer (int8), bytes.
        wgt_bytes: weight buffer (packed weights and per-group metadata), bytes.
        acc_bytes: accumulator buffer (int32 entries), bytes.
        out_bytes: output buffer (8-bit results of post-processing), bytes.
        param_bytes: post-processing parameter buffer (16 bytes per channel), bytes.
        queue_depth: instructions buffered per unit queue (load, compute, store); 2..64.
        token_depth: dependency tokens a channel may hold; 1..255.
        watchdog_cycles: default cycle budget of a run written to the WATCHDOG CSR.
        requant_modes: POST requantization modes built into the hardware, a non-empty subset
            of :data:`REQUANT_MODES`; a POST in an absent mode is ILLEGAL_INSTRUCTION. Slim
            parts drop ``"ort"`` (the float32 requantizer).
        perf_counters: build the performance counters; without them every counter CSR reads
            0 except ``cycles`` (the watchdog counts it).
        compact: area over clock rate, for the smallest parts at low clocks: the core keeps
            fewer pipeline registers (dispatch checks, post-processing, GEMM unit beat
            formation), so it reaches a lower Fmax. Results, status and counters are the
            same; only cycle timing differs.
        addr_bits: width of the external byte address space, bits (12..32): the core's
            address registers, adders and window comparators are this wide. PROG_BASE and
            DATA_BASE keep their low ``addr_bits`` bits, WIN_BASE and WIN_LIMIT saturate at
            ``2**addr_bits``, so an access reaching ``2**addr_bits`` or beyond is outside the
            window (docs/isa.md). Part of :meth:`hash` only when not 32, so configs that
            leave it at 32 keep the hash they had before the field existed.
    """

    name: str = "custom"
    tlmm: TlmmParams | None = field(default_factory=TlmmParams)
    bitserial: BitSerialParams | None = field(default_factory=BitSerialParams)
    mem_width: int = 64
    bus: str = "wishbone"
    inp_bytes: int = 8192
    wgt_bytes: int = 16384
    acc_bytes: int = 16384
    out_bytes: int = 4096
    param_bytes: int = 4096
    queue_depth: int = 4
    token_depth: int = 8
    watchdog_cycles: int = 1 << 24
    requant_modes: tuple[str, ...] = REQUANT_MODES
    perf_counters: bool = True
    compact: bool = False
    addr_bits: int = ADDR_BITS_MAX

    def __post_init__(self) -> None:
        if not isinstance(self.name, str):
            raise ConfigError(f"config.name must be a string, got {self.name!r}")
        if self.tlmm is not None and not isinstance(self.tlmm, TlmmParams):
            raise ConfigError(f"config.tlmm must be TlmmParams or None, got {self.tlmm!r}")
        if self.bitserial is not None and not isinstance(self.bitserial, BitSerialParams):
            raise ConfigError(
                f"config.bitserial must be BitSerialParams or None, got {self.bitserial!r}"
            )
        if self.tlmm is None and self.bitserial is None:
            raise ConfigError("config: at least one engine (tlmm or bitserial) is required")
        _check_choice("config", "mem_width", self.mem_width, MEM_WIDTHS)
        _check_choice("config", "bus", self.bus, BUSES)
        line = self.mem_width // 8
        for name in ("inp_bytes", "wgt_bytes", "acc_bytes", "out_bytes", "param_bytes"):
            value = getattr(self, name)
            # 1 MiB is the reach of the 16-bit line addresses of the ISA at 128-bit lines.
            _check_int("config", name, value, line, 1 << 20)
            if value % line or not _is_pow2(value):
                raise ConfigError(
                    f"config.{name} must be a power of two multiple of the line size "
                    f"({line} bytes) in {line}..{1 << 20}, got {value}"
                )
            if value // line > 1 << 16:
                raise ConfigError(
                    f"config.{name} must be at most 65536 lines of {line} bytes (16-bit line "
                    f"addresses), got {value} bytes"
                )
        if self.acc_bytes // 4 > 1 << 16:
            raise ConfigError(
                f"config.acc_bytes must hold at most 65536 int32 entries, got {self.acc_bytes}"
            )
        _check_int("config", "queue_depth", self.queue_depth, 2, 64)
        _check_int("config", "token_depth", self.token_depth, 1, 255)
        _check_int("config", "watchdog_cycles", self.watchdog_cycles, 1, (1 << 32) - 1)
        modes = self.requant_modes
        if isinstance(modes, list):  # from JSON
            modes = tuple(modes)
            object.__setattr__(self, "requant_modes", modes)
        if (not isinstance(modes, tuple) or not modes or len(set(modes)) != len(modes)
                or any(mode not in REQUANT_MODES for mode in modes)):
            raise ConfigError(
                f"config.requant_modes must be a non-empty tuple of distinct modes from "
                f"{REQUANT_MODES}, got {self.requant_modes!r}")
        if not isinstance(self.perf_counters, bool):
            raise ConfigError(f"config.perf_counters must be True or False, "
                              f"got {self.perf_counters!r}")
        if not isinstance(self.compact, bool):
            raise ConfigError(f"config.compact must be True or False, got {self.compact!r}")
        _check_int("config", "addr_bits", self.addr_bits, ADDR_BITS_MIN, ADDR_BITS_MAX)

    @property
    def line_bytes(self) -> int:
        """Bytes per line (one external bus beat, one buffer row)."""
        return self.mem_width // 8

    def buffer_bytes(self, buffer: str) -> int:
        """Size in bytes of buffer ``"inp" | "wgt" | "acc" | "out" | "param"``."""
        try:
            return getattr(self, f"{buffer}_bytes")
        except AttributeError:
            raise ConfigError(f"unknown buffer {buffer!r}") from None

    def to_dict(self) -> dict:
        """Plain JSON-able dict (nested engine parameters as dicts, absent engines None)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> AcceleratorConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise ConfigError."""
        data = dict(data)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ConfigError(f"config: unknown parameters {sorted(unknown)}")
        try:
            if data.get("tlmm") is not None:
                data["tlmm"] = TlmmParams(**data["tlmm"])
            if data.get("bitserial") is not None:
                data["bitserial"] = BitSerialParams(**data["bitserial"])
        except TypeError as exc:
            raise ConfigError(f"config: bad engine parameters: {exc}") from None
        return cls(**data)

    def canonical_json(self) -> str:
        """Sorted-key, whitespace-free JSON of every hardware parameter (``name`` excluded)."""
        data = self.to_dict()
        del data["name"]
        if data["addr_bits"] == ADDR_BITS_MAX:  # the hash from before the field existed
            del data["addr_bits"]
        return json.dumps(data, sort_keys=True, separators=(",", ":"))

    def hash(self) -> str:
        """sha256 hex digest of :meth:`canonical_json`: identifies the hardware."""
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()

    def hash32(self) -> int:
        """First 32 bits of :meth:`hash`, as exposed by the accelerator's ID register."""
        return int(self.hash()[:8], 16)

    def replace(self, **changes) -> AcceleratorConfig:
        """A copy with ``changes`` applied (validated again)."""
        return dataclasses.replace(self, **changes)


PRESETS: dict[str, AcceleratorConfig] = {
    # Fits an iCE40 UP5K-class part with room to spare: one small engine of each kind.
    "tiny": AcceleratorConfig(
        name="tiny",
        tlmm=TlmmParams(group_size=2, rows=4, units=1),
        bitserial=BitSerialParams(rows=2, lanes=4, bits_per_cycle=2, group_size=32),
        mem_width=32,
        bus="wishbone",
        inp_bytes=2048,
        wgt_bytes=4096,
        acc_bytes=4096,
        out_bytes=1024,
        param_bytes=1024,
        queue_depth=2,
        token_depth=4,
    ),
    # ECP5-45/85 class (ULX3S, OrangeCrab 85).
    "small": AcceleratorConfig(
        name="small",
        tlmm=TlmmParams(group_size=3, rows=8, units=2),
        bitserial=BitSerialParams(rows=8, lanes=8, bits_per_cycle=2, group_size=128),
        mem_width=64,
        bus="wishbone",
        inp_bytes=8192,
        wgt_bytes=16384,
        acc_bytes=16384,
        out_bytes=4096,
        param_bytes=4096,
        queue_depth=4,
        token_depth=8,
    ),
    # Zynq UltraScale+ (KV260) on an HP port.
    "large": AcceleratorConfig(
        name="large",
        tlmm=TlmmParams(group_size=4, rows=32, units=4),
        bitserial=BitSerialParams(rows=32, lanes=16, bits_per_cycle=2, group_size=128),
        mem_width=128,
        bus="axi4",
        inp_bytes=65536,
        wgt_bytes=262144,
        acc_bytes=131072,
        out_bytes=32768,
        param_bytes=16384,
        queue_depth=8,
        token_depth=16,
    ),
}


def preset(name: str) -> AcceleratorConfig:
    """The preset ``"tiny"``, ``"small"`` or ``"large"``."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ConfigError(f"preset must be one of {sorted(PRESETS)}, got {name!r}") from None
