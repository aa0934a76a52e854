"""The accelerator's instruction set: one field table, encoder and decoder generated from it.

Every instruction is 128 bits (16 bytes, little endian: bit ``i`` of the instruction is bit
``i % 8`` of byte ``i // 8``). Bits 3..0 hold the opcode and bits 7..4 the dependency flags;
the rest is laid out per opcode in :data:`FORMATS`, the single table that the Python encoder
and decoder here, the golden model and the RTL decoder (``trilobit.hw.accel_*``) all read.
Bits no field covers are reserved and must be zero (otherwise ILLEGAL_INSTRUCTION).

Units and dependency tokens (as in VTA)
---------------------------------------
LOAD runs on the *load* unit, GEMM and POST on the *compute* unit, STORE on the *store*
unit; SYNC, END and JUMP are executed by the dispatcher. The units form a chain
``load <-> compute <-> store``; for a unit, *prev* is its left neighbour and *next* its right
one. Four token channels connect them::

    load  --push_next / pop_prev-->  compute  --push_next / pop_prev-->  store
    load  <--pop_next / push_prev--  compute  <--pop_next / push_prev--  store

An instruction pops its tokens before it starts and pushes after it finishes. A token popped
must have been pushed by an instruction *earlier in program order*; the dispatcher checks
this with per-channel counters, so a program that could deadlock stops with TOKEN_ERROR
instead. ``docs/isa.md`` gives the full semantics.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import numpy as np

from trilobit.errors import ProgramError

__all__ = [
    "INSN_BITS",
    "INSN_BYTES",
    "PARAM_BYTES_PER_CHANNEL",
    "META_BYTES_PER_GROUP",
    "Opcode",
    "Unit",
    "Buffer",
    "LOADABLE",
    "STORABLE",
    "Engine",
    "WeightEncoding",
    "PostMode",
    "ErrorCode",
    "Field",
    "HEADER",
    "FORMATS",
    "Instruction",
    "encode",
    "decode",
    "decode_program",
    "reserved_mask",
    "unit_of",
    "weight_bits",
    "ENGINE_FORMATS",
    "pad_rows",
    "pack_weight_rows",
    "pack_group_meta",
    "pack_post_params",
]

INSN_BITS = 128
INSN_BYTES = INSN_BITS // 8
#: Bytes per output channel in the PARAM buffer (see docs/isa.md, POST).
PARAM_BYTES_PER_CHANNEL = 16
#: Bytes per (output channel, group) of bit-serial weight metadata: type id, scale.
META_BYTES_PER_GROUP = 2


class Opcode(enum.IntEnum):
    """4-bit opcode. 0 and 8..15 are illegal (zeroed memory never executes)."""

    LOAD = 1
    STORE = 2
    GEMM = 3
    POST = 4
    SYNC = 5
    END = 6
    JUMP = 7


class Unit(enum.IntEnum):
    """Which unit executes an opcode."""

    LOAD = 0
    COMPUTE = 1
    STORE = 2
    DISPATCH = 3


class Buffer(enum.IntEnum):
    """On-chip buffers (``buf`` field of LOAD/STORE)."""

    INP = 0  # int8 activations (and residual operands)
    WGT = 1  # packed weights and bit-serial group metadata
    ACC = 2  # int32 accumulators, 4 bytes little endian per entry
    PARAM = 3  # post-processing parameters, 16 bytes per output channel
    OUT = 4  # 8-bit results of POST


#: Buffers LOAD may write and STORE may read.
LOADABLE = (Buffer.INP, Buffer.WGT, Buffer.ACC, Buffer.PARAM)
STORABLE = (Buffer.ACC, Buffer.OUT)


class Engine(enum.IntEnum):
    """``engine`` field of GEMM."""

    TLMM = 0  # ternary table-lookup engine
    BITSERIAL = 1  # bit-serial mixed-datatype engine


class WeightEncoding(enum.IntEnum):
    """``wfmt`` field of GEMM: how one weight is stored in the WGT buffer.

    Storage slots are 8, 4 or 2 bits (ONNX sub-byte order: element 0 in the least
    significant bits of a byte). Narrower codes sit in the low bits of their slot and the
    unused high bits are ignored.
    """

    INT8 = 0  # 8-bit slot, two's complement
    INT6 = 1  # 8-bit slot, low 6 bits two's complement
    INT4 = 2  # 4-bit slot, two's complement
    INT3 = 3  # 4-bit slot, low 3 bits two's complement
    FP4 = 4  # 4-bit slot, BitMoD fp4 candidate chosen by the group's type id
    FP3 = 5  # 4-bit slot, low 3 bits, BitMoD fp3 candidate chosen by the group's type id
    INT2 = 6  # 2-bit slot, two's complement {-2, -1, 0, 1}
    TERNARY = 7  # 2-bit slot, INT2 codes of {-1, 0, +1}; the reserved code 0b10 counts as 0

    @property
    def slot_bits(self) -> int:
        """Bits of WGT storage per weight."""
        return weight_bits(self)

    @property
    def code_bits(self) -> int:
        """Significant bits of the code inside its slot."""
        return {0: 8, 1: 6, 2: 4, 3: 3, 4: 4, 5: 3, 6: 2, 7: 2}[int(self)]


def weight_bits(fmt: WeightEncoding | int) -> int:
    """Storage bits per weight of ``fmt`` (8, 4 or 2)."""
    return {0: 8, 1: 8, 2: 4, 3: 4, 4: 4, 5: 4, 6: 2, 7: 2}[int(fmt)]


#: Weight encodings each engine executes (any other pairing is BAD_FIELD).
ENGINE_FORMATS: dict[Engine, tuple[WeightEncoding, ...]] = {
    Engine.TLMM: (WeightEncoding.TERNARY, WeightEncoding.INT2, WeightEncoding.INT4),
    Engine.BITSERIAL: (
        WeightEncoding.INT8,
        WeightEncoding.INT6,
        WeightEncoding.INT4,
        WeightEncoding.INT3,
        WeightEncoding.FP4,
        WeightEncoding.FP3,
    ),
}


class PostMode(enum.IntEnum):
    """``mode`` field of POST."""

    ORT = 0  # float32 requantization as onnxruntime (trilobit.requant.requantize_ort)
    DYADIC = 1  # integer multiplier and shift (trilobit.requant.requantize_dyadic)
    ACC = 2  # no requantization: the int32 value is written back to the ACC buffer


class ErrorCode(enum.IntEnum):
    """Error code of the STATUS register (0 = no error). Checked in this priority order."""

    NONE = 0
    ILLEGAL_INSTRUCTION = 1  # undefined opcode or a reserved bit set
    BAD_FIELD = 2  # a field value outside its allowed set (zero size, misalignment, ...)
    BUFFER_RANGE = 3  # an on-chip buffer access beyond the buffer
    WINDOW = 4  # an external access (fetch, load, store) outside [WIN_BASE, WIN_LIMIT)
    TOKEN = 5  # pop of a token no earlier instruction pushed, or a channel overflow
    WATCHDOG = 6  # the run exceeded the cycle budget


@dataclass(frozen=True)
class Field:
    """One instruction field: bits ``lsb .. lsb + width - 1``; ``signed``: two's complement."""

    name: str
    lsb: int
    width: int
    signed: bool = False

    @property
    def mask(self) -> int:
        return ((1 << self.width) - 1) << self.lsb

    @property
    def range(self) -> tuple[int, int]:
        """Smallest and largest encodable value."""
        if self.signed:
            return -(1 << (self.width - 1)), (1 << (self.width - 1)) - 1
        return 0, (1 << self.width) - 1


#: Fields shared by every opcode.
HEADER: tuple[Field, ...] = (
    Field("opcode", 0, 4),
    Field("pop_prev", 4, 1),
    Field("pop_next", 5, 1),
    Field("push_prev", 6, 1),
    Field("push_next", 7, 1),
)

_TRANSFER = (
    Field("buf", 8, 3),
    Field("flip", 11, 1),
    Field("sram", 12, 16),  # line address in the buffer
    Field("rows", 28, 12),
    Field("row_lines", 40, 12),
    Field("dram", 52, 32),  # byte offset from DATA_BASE, line aligned
    Field("stride", 84, 24),  # bytes between rows in external memory, line aligned
)

#: Opcode -> fields after the header. THE field table: everything else is generated from it.
FORMATS: dict[Opcode, tuple[Field, ...]] = {
    Opcode.LOAD: _TRANSFER,
    Opcode.STORE: _TRANSFER,
    Opcode.GEMM: (
        Field("engine", 8, 1),
        Field("wfmt", 9, 4),
        Field("accumulate", 13, 1),
        Field("meta", 14, 1),
        Field("m", 16, 8),
        Field("n", 24, 12),
        Field("k", 36, 16),
        Field("inp", 52, 16),  # line address in INP
        Field("wgt", 68, 16),  # line address in WGT
        Field("meta_line", 84, 16),  # line address in WGT of the group metadata
        Field("acc", 100, 16),  # entry address in ACC
    ),
    Opcode.POST: (
        Field("mode", 8, 2),
        Field("out_unsigned", 10, 1),
        Field("bias", 11, 1),
        Field("residual", 12, 1),
        Field("no_acc", 13, 1),
        Field("m", 16, 8),
        Field("n", 24, 12),
        Field("acc", 36, 16),  # entry address in ACC
        Field("param", 52, 16),  # line address in PARAM
        Field("out", 68, 16),  # line address in OUT
        Field("res", 84, 16),  # line address in INP of the residual operand
        Field("res_zp", 100, 8, signed=True),
        Field("res_mult", 108, 16, signed=True),
    ),
    Opcode.SYNC: (),
    Opcode.END: (),
    Opcode.JUMP: (Field("target", 8, 32),),  # instruction index relative to PROG_BASE
}


def _check_table() -> None:
    for op, fields in FORMATS.items():
        used = 0
        for f in HEADER + fields:
            if f.lsb < 0 or f.lsb + f.width > INSN_BITS or used & f.mask:
                raise AssertionError(f"isa: field {op.name}.{f.name} overlaps or overflows")
            used |= f.mask


_check_table()


def reserved_mask(opcode: Opcode | int) -> int:
    """128-bit mask of the bits of ``opcode``'s format that no field covers."""
    used = 0
    for f in HEADER + FORMATS[Opcode(opcode)]:
        used |= f.mask
    return ((1 << INSN_BITS) - 1) & ~used


def unit_of(opcode: Opcode | int) -> Unit:
    """The unit that executes ``opcode``."""
    op = Opcode(opcode)
    if op == Opcode.LOAD:
        return Unit.LOAD
    if op in (Opcode.GEMM, Opcode.POST):
        return Unit.COMPUTE
    if op == Opcode.STORE:
        return Unit.STORE
    return Unit.DISPATCH


@dataclass(frozen=True)
class Instruction:
    """A decoded instruction.

    ``opcode`` is the raw 4-bit value (an :class:`Opcode` when defined); ``fields`` maps every
    field name of the format (header flags included) to its value; ``reserved`` holds the
    reserved bits that were set (nonzero means ILLEGAL_INSTRUCTION).
    """

    opcode: int
    fields: dict
    reserved: int = 0

    @property
    def legal(self) -> bool:
        return self.opcode in _OPCODES and self.reserved == 0

    def __getitem__(self, name: str) -> int:
        return self.fields[name]

    def __str__(self) -> str:
        name = Opcode(self.opcode).name if self.opcode in _OPCODES else f"ILLEGAL{self.opcode}"
        args = " ".join(f"{k}={v}" for k, v in self.fields.items() if k != "opcode" and v)
        return f"{name} {args}".strip()


_OPCODES = {int(op) for op in Opcode}


def encode(opcode: Opcode | int, **fields: int) -> bytes:
    """Encode one instruction; omitted fields are 0. Raises ProgramError on an unknown field
    name or a value outside the field's range."""
    op = Opcode(opcode)
    layout = {f.name: f for f in HEADER + FORMATS[op]}
    word = int(op)
    for name, value in fields.items():
        if name not in layout or name == "opcode":
            raise ProgramError(f"isa: {op.name} has no field {name!r}")
        f = layout[name]
        value = int(value)
        lo, hi = f.range
        if not lo <= value <= hi:
            raise ProgramError(f"isa: {op.name}.{name} must lie in {lo}..{hi}, got {value}")
        word |= (value & ((1 << f.width) - 1)) << f.lsb
    return word.to_bytes(INSN_BYTES, "little")


def _extract(word: int, f: Field) -> int:
    value = (word >> f.lsb) & ((1 << f.width) - 1)
    if f.signed and value >> (f.width - 1):
        value -= 1 << f.width
    return value


def decode(insn: bytes | int) -> Instruction:
    """Decode 16 bytes (or a 128-bit int). Never raises on illegal encodings: an undefined
    opcode decodes with only the header fields, reserved bits are reported."""
    word = int.from_bytes(bytes(insn), "little") if not isinstance(insn, int) else insn
    opcode = word & 0xF
    if opcode not in _OPCODES:
        fields = {f.name: _extract(word, f) for f in HEADER}
        return Instruction(opcode, fields, 0)
    layout = HEADER + FORMATS[Opcode(opcode)]
    fields = {f.name: _extract(word, f) for f in layout}
    return Instruction(opcode, fields, word & reserved_mask(opcode))


def decode_program(program: bytes | np.ndarray) -> list[Instruction]:
    """Decode a whole instruction stream (its length must be a multiple of 16 bytes)."""
    data = bytes(np.asarray(program, dtype=np.uint8).tobytes()) if not isinstance(
        program, bytes | bytearray
    ) else bytes(program)
    if len(data) % INSN_BYTES:
        raise ProgramError(f"isa: program length {len(data)} is not a multiple of {INSN_BYTES}")
    return [decode(data[i : i + INSN_BYTES]) for i in range(0, len(data), INSN_BYTES)]


# -- data layouts the instructions read (one definition, used by compiler and golden) -------


def pad_rows(rows: np.ndarray, line_bytes: int) -> np.ndarray:
    """Bytes ``(R, nbytes)`` laid out as buffer rows, each padded with zeros to whole lines.

    This is the row layout of GEMM activations (``k`` bytes per row), packed weights, group
    metadata, POST outputs and residuals (``n`` bytes per row). Returns flat uint8.
    """
    rows = np.asarray(rows, dtype=np.uint8)
    if rows.ndim != 2:
        raise ProgramError(f"pad_rows: need a 2-D byte array, got shape {rows.shape}")
    width = -(-rows.shape[1] // line_bytes) * line_bytes
    out = np.zeros((rows.shape[0], width), dtype=np.uint8)
    out[:, : rows.shape[1]] = rows
    return out.reshape(-1)


def pack_weight_rows(codes: np.ndarray, fmt: WeightEncoding | int, line_bytes: int) -> np.ndarray:
    """Weight codes ``(N, K)`` (unsigned, one per output channel row) -> WGT bytes.

    Each output channel's ``K`` codes are packed in ``weight_bits(fmt)``-bit slots (element
    0 in the least significant bits) and padded to whole lines.
    """
    codes = np.asarray(codes)
    bits = weight_bits(fmt)
    if codes.ndim != 2:
        raise ProgramError(f"pack_weight_rows: need (N, K) codes, got shape {codes.shape}")
    if codes.size and (codes.min() < 0 or codes.max() >= 1 << bits):
        raise ProgramError(f"pack_weight_rows: codes must lie in 0..{(1 << bits) - 1}")
    per_byte = 8 // bits
    n, k = codes.shape
    padded = np.zeros((n, -(-k // per_byte) * per_byte), dtype=np.uint8)
    padded[:, :k] = codes
    grouped = padded.reshape(n, -1, per_byte).astype(np.uint8)
    shifts = (np.arange(per_byte) * bits).astype(np.uint8)
    packed = np.bitwise_or.reduce(grouped << shifts, axis=2).astype(np.uint8)
    return pad_rows(packed, line_bytes)


def pack_group_meta(type_ids: np.ndarray, scales: np.ndarray, line_bytes: int) -> np.ndarray:
    """Bit-serial group metadata ``(N, groups)`` -> WGT bytes: per group a type id byte
    (bits 1..0) and an unsigned 8-bit integer scale, rows padded to whole lines."""
    type_ids = np.asarray(type_ids)
    scales = np.asarray(scales)
    if type_ids.shape != scales.shape or type_ids.ndim != 2:
        raise ProgramError("pack_group_meta: type_ids and scales must both be (N, groups)")
    if type_ids.min() < 0 or type_ids.max() > 3 or scales.min() < 0 or scales.max() > 255:
        raise ProgramError("pack_group_meta: type ids must lie in 0..3 and scales in 0..255")
    meta = np.stack([type_ids, scales], axis=2).astype(np.uint8)
    return pad_rows(meta.reshape(type_ids.shape[0], -1), line_bytes)


def pack_post_params(
    bias=0,
    multiplier=0,
    shift=0,
    zero_point=0,
    clip_lo=-128,
    clip_hi=127,
    *,
    n: int | None = None,
    mode: PostMode | int = PostMode.DYADIC,
) -> np.ndarray:
    """Per-output-channel POST parameters -> PARAM bytes (16 per channel, little endian).

    ======  =====  ==========================================================
    bytes   type   meaning
    ======  =====  ==========================================================
    0..3    int32  bias
    4..7    u32    DYADIC: multiplier M (bit 31 ignored); ORT: float32 bits
    8       u8     DYADIC: right shift s (low 6 bits, clamped to 1..62)
    9       8 bit  output zero point (int8 or uint8 as the output type)
    10, 11  8 bit  clip low, clip high (same type; ReLU = clip low at the zero point)
    12..15         reserved, zero
    ======  =====  ==========================================================

    Arguments broadcast to ``(n,)``. For ``mode=ORT`` ``multiplier`` is a float (stored as
    float32 bits); for DYADIC an integer.
    """
    arrays = [bias, multiplier, shift, zero_point, clip_lo, clip_hi]
    if n is None:
        n = max(np.size(a) for a in arrays)
    out = np.zeros((n, PARAM_BYTES_PER_CHANNEL), dtype=np.uint8)
    bias = np.ascontiguousarray(np.broadcast_to(np.asarray(bias, dtype="<i4"), (n,)))
    out[:, 0:4] = bias.view(np.uint8).reshape(n, 4)
    if PostMode(mode) == PostMode.ORT:
        mult = np.ascontiguousarray(np.broadcast_to(np.asarray(multiplier, dtype="<f4"), (n,)))
    else:
        mult = np.broadcast_to(np.asarray(multiplier, dtype=np.int64), (n,)).astype("<u4")
    out[:, 4:8] = np.ascontiguousarray(mult).view(np.uint8).reshape(n, 4)
    for col, value in ((8, shift), (9, zero_point), (10, clip_lo), (11, clip_hi)):
        out[:, col] = np.broadcast_to(np.asarray(value, dtype=np.int64), (n,)) & 0xFF
    return out.reshape(-1)
