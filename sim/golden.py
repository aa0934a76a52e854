"""Instruction-level golden model of the accelerator: numpy, one vectorised step per instruction.

:class:`GoldenMachine` executes the same program bytes as the RTL on a byte-addressed memory
image and produces, bit for bit, what the RTL must produce: every stored byte, the status
and error code, the faulting instruction index and the architecturally defined counters
(instructions retired per unit, bytes loaded and stored, multiply-accumulates). It also
estimates cycles with a small event model of the decoupled load/compute/store units; that
estimate (and the busy/stall counters derived from it) is *not* architectural.

Semantics are those of ``docs/isa.md``; the field table is :data:`trilobit.isa.FORMATS`.
Numerics come from :mod:`trilobit.gemm` (exact integer matmul) and :mod:`trilobit.requant`.

This module holds the reference path (:class:`_Run`: every instruction decoded, checked and
executed afresh), which ``GoldenMachine(..., reference=True)`` uses; by default runs take the
fast path of :mod:`trilobit.sim.golden_fast`, which reuses the checks, the cycle model and
the result of this one and is tested equal to it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from trilobit.config import AcceleratorConfig
from trilobit.dtypes import BITMOD_CANDIDATES, get_dtype
from trilobit.errors import BackendError, ConfigError
from trilobit.gemm import gemm_int
from trilobit.isa import (
    ENGINE_FORMATS,
    INSN_BYTES,
    LOADABLE,
    META_BYTES_PER_GROUP,
    PARAM_BYTES_PER_CHANNEL,
    STORABLE,
    Buffer,
    Engine,
    ErrorCode,
    Instruction,
    Opcode,
    PostMode,
    Unit,
    WeightEncoding,
    decode,
    unit_of,
    weight_bits,
)
from trilobit.requant import MAX_SHIFT, requantize_dyadic, requantize_ort

__all__ = [
    "GoldenMachine",
    "RunResult",
    "Status",
    "decode_weights",
    "weight_row_lines",
    "meta_row_lines",
    "wrap_int32",
    "ort_multiplier_from_bits",
    "CycleModel",
]

_BUFFER_NAMES = {
    Buffer.INP: "inp",
    Buffer.WGT: "wgt",
    Buffer.ACC: "acc",
    Buffer.PARAM: "param",
    Buffer.OUT: "out",
}


class Status:
    """Values of the STATE field of the STATUS register."""

    IDLE = 0
    BUSY = 1
    DONE = 2
    ERROR = 3


@dataclass
class RunResult:
    """Outcome of one run.

    Attributes:
        state: :class:`Status` value (DONE or ERROR).
        error: :class:`trilobit.isa.ErrorCode`.
        error_pc: index of the faulting instruction (0 when no error).
        counters: architectural counters (exact) and ``*_busy``/``*_stall``/``cycles``
            estimates (cycles, not architectural).
    """

    state: int
    error: ErrorCode
    error_pc: int
    counters: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.state == Status.DONE and self.error == ErrorCode.NONE


#: Counters whose values are architecturally defined (RTL must match exactly).
ARCH_COUNTERS = (
    "insns",
    "load_insns",
    "compute_insns",
    "store_insns",
    "bytes_read",
    "bytes_written",
    "macs",
)


def wrap_int32(x: np.ndarray) -> np.ndarray:
    """Two's complement wrap of integers to int32 (the accumulators' modular arithmetic)."""
    return (np.asarray(x).astype(np.int64) & 0xFFFFFFFF).astype(np.uint32).view(np.int32)


def ort_multiplier_from_bits(bits: np.ndarray) -> np.ndarray:
    """float32 multipliers from their IEEE bits; negative, subnormal, inf and NaN read as 0.

    (The post-processing unit multiplies normal non-negative float32 only; see docs/isa.md.)
    """
    bits = np.asarray(bits, dtype=np.uint32)
    exponent = (bits >> 23) & 0xFF
    valid = ((bits >> 31) == 0) & (exponent != 0) & (exponent != 0xFF)
    return np.where(valid, bits, 0).astype(np.uint32).view(np.float32)


def _sign_extend(codes: np.ndarray, bits: int) -> np.ndarray:
    codes = codes.astype(np.int32) & ((1 << bits) - 1)
    return codes - ((codes >> (bits - 1)) << bits)


_TERNARY_VALUES = np.array([0, 1, 0, -1], dtype=np.int32)  # code 0b10 reserved -> 0


def _bitmod_tables(bits: int) -> np.ndarray:
    """(4 type ids, 2**bits codes) integer values of the BitMoD candidates."""
    return np.array(
        [get_dtype(name).values for name in BITMOD_CANDIDATES[bits]], dtype=np.float64
    ).astype(np.int32)


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def weight_row_lines(k: int, fmt: WeightEncoding | int, line_bytes: int) -> int:
    """Lines one output channel's ``k`` packed weights occupy in WGT."""
    return ceil_div(ceil_div(k * weight_bits(fmt), 8), line_bytes)


def meta_row_lines(k: int, group_size: int, line_bytes: int) -> int:
    """Lines one output channel's group metadata occupies in WGT."""
    return ceil_div(ceil_div(k, group_size) * META_BYTES_PER_GROUP, line_bytes)


def decode_weights(
    rows: np.ndarray, fmt: WeightEncoding | int, k: int, type_ids: np.ndarray | None = None,
    group_size: int = 1,
) -> np.ndarray:
    """Integer weight values ``(N, k)`` from packed rows ``(N, row_bytes)`` of WGT bytes.

    ``type_ids`` ``(N, groups)`` selects the BitMoD candidate per group for FP3/FP4 (default 0).
    """
    fmt = WeightEncoding(fmt)
    rows = np.asarray(rows, dtype=np.uint8)
    n = rows.shape[0]
    bits = weight_bits(fmt)
    if bits == 8:
        codes = rows[:, :k].astype(np.int32)
    else:
        per_byte = 8 // bits
        shifts = np.arange(per_byte, dtype=np.uint8) * bits
        codes = ((rows[:, :, None] >> shifts) & ((1 << bits) - 1)).reshape(n, -1)[:, :k]
        codes = codes.astype(np.int32)
    if fmt in (WeightEncoding.FP4, WeightEncoding.FP3):
        cbits = fmt.code_bits
        table = _bitmod_tables(cbits)
        if type_ids is None:
            tid = np.zeros((n, k), dtype=np.int64)
        else:
            tid = np.repeat(np.asarray(type_ids, dtype=np.int64), group_size, axis=1)[:, :k]
        return table[tid & 3, codes & ((1 << cbits) - 1)]
    if fmt == WeightEncoding.TERNARY:
        return _TERNARY_VALUES[codes & 3]
    return _sign_extend(codes, fmt.code_bits)


class CycleModel:
    """Cycle estimates per instruction (not architectural; used for the watchdog and for
    utilisation figures). ``docs/accelerator.md`` explains the terms."""

    #: Cycles from a read request to its first beat (in-simulation memory model).
    MEM_LATENCY = 4
    #: Pipeline fill/drain of an engine or the post-processing unit.
    PIPE = 4

    def __init__(self, config: AcceleratorConfig):
        self.config = config

    def transfer(self, rows: int, row_lines: int) -> int:
        return self.MEM_LATENCY + rows * (row_lines + 1)

    def gemm(self, engine: int, fmt: int, m: int, n: int, k: int, meta: bool = False) -> int:
        """Cycles of the GEMM units of ``trilobit.hw.accel_compute`` (docs/accelerator.md).

        Both units stage the WGT lines of a block's channels two per cycle (the WGT and the
        metadata read ports) while the engine works, so per block the larger of the engine's
        cycles and the staging reads counts. TLMM: ``ceil(k / (G*units))`` beats times the bit
        planes vs ``ceil(rows/2) + 1`` cycles per WGT line (one staging register set) and one
        INP line per cycle; BITSERIAL: the chunks of ``lanes`` channels at the engine's cycles
        per weight vs ``ceil(rows/2)`` cycles per WGT line (double buffered), plus half a cycle
        per metadata line read (``meta``: ``rows`` lines per ``line/2`` groups).
        """
        cfg = self.config
        line = cfg.line_bytes
        fmt = WeightEncoding(fmt)
        if engine == Engine.BITSERIAL:
            p = cfg.bitserial
            per_weight = -(-max(fmt.code_bits, 4) // p.bits_per_cycle)
            padded_k = -(-k // p.group_size) * p.group_size
            staged = ceil_div(ceil_div(padded_k * weight_bits(fmt), 8), line)
            meta_reads = p.rows * ceil_div(ceil_div(k, p.group_size), line // 2) if meta else 0
            fill = staged * ceil_div(p.rows, 2) + ceil_div(meta_reads, 2)
            per_block = max(ceil_div(padded_k, p.lanes) * per_weight, fill)
            return self.PIPE + 2 * p.rows + m * -(-n // p.rows) * per_block
        p = cfg.tlmm
        planes = {WeightEncoding.TERNARY: 1, WeightEncoding.INT2: 2, WeightEncoding.INT4: 4}[fmt]
        beats = ceil_div(k, p.group_size * p.units) * planes
        fill = weight_row_lines(k, fmt, line) * (ceil_div(p.rows, 2) + 1)
        per_block = max(beats, fill, ceil_div(k, line))
        return self.PIPE + 2 * p.rows + m * -(-n // p.rows) * per_block

    def post(self, m: int, n: int) -> int:
        return self.PIPE + m * n


class GoldenMachine:
    """The accelerator at instruction level.

    Args:
        config: the accelerator.
        memory: external memory image (uint8 array, modified in place) or a size in bytes.
        reference: execute on the straightforward reference path (every instruction decoded,
            checked and executed afresh with fancy-indexed buffer accesses) instead of the
            fast path of :mod:`trilobit.sim.golden_fast` (same results, checked by tests).

    Registers (as the CSRs of docs/isa.md): ``prog_base``, ``data_base``, ``win_base``,
    ``win_limit``, ``watchdog`` (cycles; 0 disables). On-chip buffers persist between runs
    and start zeroed. The fast path caches, per machine, decoded instruction words, completed
    runs (replayed while the registers and the instruction bytes are the same), prepared
    weight tiles and POST parameters, each keyed by the bytes it was made from.
    """

    def __init__(self, config: AcceleratorConfig, memory: np.ndarray | int, *,
                 reference: bool = False):
        self.config = config
        if isinstance(memory, int | np.integer):
            memory = np.zeros(int(memory), dtype=np.uint8)
        if not isinstance(memory, np.ndarray) or memory.dtype != np.uint8 or memory.ndim != 1:
            raise ConfigError("GoldenMachine: memory must be a 1-D uint8 array or a size")
        self.memory = memory
        self.buffers = {
            buf: np.zeros(config.buffer_bytes(name), dtype=np.uint8)
            for buf, name in _BUFFER_NAMES.items()
        }
        self.line = config.line_bytes
        self.prog_base = 0
        self.data_base = 0
        self.win_base = 0
        self.win_limit = memory.size
        self.watchdog = config.watchdog_cycles
        self.cycles = CycleModel(config)
        self.reference = reference
        from trilobit.sim.golden_fast import GoldenCaches  # imports this module

        self.caches = GoldenCaches()

    # -- host side --------------------------------------------------------------------------

    def write(self, address: int, data: bytes | np.ndarray) -> None:
        """Host write into external memory (no window check: the host owns memory)."""
        data = np.frombuffer(bytes(data), dtype=np.uint8) if isinstance(data, bytes | bytearray) \
            else np.asarray(data).view(np.uint8).reshape(-1)
        self.memory[address : address + data.size] = data

    def read(self, address: int, size: int) -> np.ndarray:
        """Host read of ``size`` bytes of external memory (a copy)."""
        return self.memory[address : address + size].copy()

    @property
    def acc(self) -> np.ndarray:
        """The ACC buffer as int32 entries (a view)."""
        return self.buffers[Buffer.ACC].view("<i4")

    # -- run --------------------------------------------------------------------------------

    def run(
        self,
        prog_base: int | None = None,
        data_base: int | None = None,
        window: tuple[int, int] | None = None,
        watchdog: int | None = None,
    ) -> RunResult:
        """Start a run (as writing START) and execute until END, an error or the watchdog."""
        if prog_base is not None:
            self.prog_base = int(prog_base)
        if data_base is not None:
            self.data_base = int(data_base)
        if window is not None:
            self.win_base, self.win_limit = (int(w) for w in window)
        if watchdog is not None:
            self.watchdog = int(watchdog)
        # The CSRs hold addr_bits-bit addresses, as the hardware does: the bases drop the
        # bits below their alignment and above addr_bits, the window's ends saturate at
        # 2**addr_bits (so nothing at or beyond it is inside the window).
        top = 1 << self.config.addr_bits
        self.win_base, self.win_limit = min(self.win_base, top), min(self.win_limit, top)
        if not 0 <= self.win_base <= self.win_limit <= min(self.memory.size, 1 << 32):
            raise BackendError(
                f"window [{self.win_base:#x}, {self.win_limit:#x}) must lie inside memory "
                f"of {self.memory.size:#x} bytes"
            )
        self.prog_base &= ~(INSN_BYTES - 1) & (top - 1)
        self.data_base &= ~(self.line - 1) & (top - 1)
        if self.reference:
            return _Run(self).execute()
        from trilobit.sim.golden_fast import FastRun  # imports this module

        return FastRun.start(self)

    # -- helpers used by the run ------------------------------------------------------------

    def buffer_lines(self, buf: Buffer) -> int:
        return self.buffers[buf].size // self.line

    def in_window(self, start: int, end: int) -> bool:
        """True if bytes ``[start, end)`` lie inside the window."""
        return self.win_base <= start and end <= self.win_limit


#: POST mode -> the name :attr:`AcceleratorConfig.requant_modes` lists it under.
_REQUANT_MODE_NAMES = {int(PostMode.ORT): "ort", int(PostMode.DYADIC): "dyadic"}


class _Run:
    """State of one run: token counters, counters, timing model."""

    def __init__(self, machine: GoldenMachine):
        self.m = machine
        self.cfg = machine.config
        self.tokens = {ch: 0 for ch in ("l2c", "c2l", "c2s", "s2c")}
        self.counters = dict.fromkeys(ARCH_COUNTERS, 0)
        # Timing: per unit the cycle it becomes free, per channel the push times pending.
        self.unit_free = {Unit.LOAD: 0, Unit.COMPUTE: 0, Unit.STORE: 0}
        self.unit_starts = {Unit.LOAD: [], Unit.COMPUTE: [], Unit.STORE: []}
        self.token_times = {ch: [] for ch in self.tokens}
        self.busy = {Unit.LOAD: 0, Unit.COMPUTE: 0, Unit.STORE: 0}
        self.stall = {Unit.LOAD: 0, Unit.COMPUTE: 0, Unit.STORE: 0}
        self.dispatch_time = 0

    # Channels popped/pushed by (unit, flag).
    _CHANNELS = {
        (Unit.LOAD, "pop_next"): "c2l",
        (Unit.LOAD, "push_next"): "l2c",
        (Unit.COMPUTE, "pop_prev"): "l2c",
        (Unit.COMPUTE, "push_prev"): "c2l",
        (Unit.COMPUTE, "pop_next"): "s2c",
        (Unit.COMPUTE, "push_next"): "c2s",
        (Unit.STORE, "pop_prev"): "c2s",
        (Unit.STORE, "push_prev"): "s2c",
    }

    def finish(self, state: int, error: ErrorCode, pc: int) -> RunResult:
        end = max([self.dispatch_time, *self.unit_free.values()])
        counters = dict(self.counters)
        counters["cycles"] = end
        for unit, name in ((Unit.LOAD, "load"), (Unit.COMPUTE, "compute"), (Unit.STORE, "store")):
            counters[f"{name}_busy"] = self.busy[unit]
            counters[f"{name}_stall"] = self.stall[unit]
        if not self.cfg.perf_counters:  # only the watchdog's cycle counter is built
            counters = {name: value if name == "cycles" else 0
                        for name, value in counters.items()}
        if state == Status.DONE and self.m.watchdog and end >= self.m.watchdog:
            state, error, pc = Status.ERROR, ErrorCode.WATCHDOG, pc
        return RunResult(state, ErrorCode(error), pc if error else 0, counters)

    def execute(self) -> RunResult:
        m = self.m
        pc = 0
        while True:
            # Dispatch costs one cycle per instruction; the watchdog compares the estimate.
            self.dispatch_time += 1
            if m.watchdog and self.dispatch_time >= m.watchdog:
                return self.finish(Status.ERROR, ErrorCode.WATCHDOG, pc)
            address = m.prog_base + pc * INSN_BYTES
            if not m.in_window(address, address + INSN_BYTES):
                return self.finish(Status.ERROR, ErrorCode.WINDOW, pc)
            insn = decode(bytes(m.memory[address : address + INSN_BYTES]))
            error = self.check(insn)
            if error:
                return self.finish(Status.ERROR, error, pc)
            op = Opcode(insn.opcode)
            self.counters["insns"] += 1
            if op == Opcode.END:
                self.barrier()
                return self.finish(Status.DONE, ErrorCode.NONE, pc)
            if op == Opcode.SYNC:
                self.barrier()
                pc += 1
            elif op == Opcode.JUMP:
                pc = insn["target"]
            else:
                self.execute_unit(op, insn)
                pc += 1

    # -- checks (all at dispatch, in program order) ------------------------------------------

    def check(self, insn: Instruction) -> ErrorCode:
        return self.check_word(insn) or self.check_window(insn) or self.check_tokens(insn)

    def check_word(self, insn: Instruction) -> ErrorCode:
        """The checks that depend on nothing but the instruction word and the configuration
        (the fast path runs them once per distinct word)."""
        if not insn.legal:
            return ErrorCode.ILLEGAL_INSTRUCTION
        if insn.opcode == Opcode.POST and insn["mode"] in _REQUANT_MODE_NAMES and (
                _REQUANT_MODE_NAMES[insn["mode"]] not in self.cfg.requant_modes):
            return ErrorCode.ILLEGAL_INSTRUCTION  # requantizer not built (config.requant_modes)
        return self.check_fields(insn) or self.check_ranges(insn)

    def check_fields(self, insn: Instruction) -> ErrorCode:
        op = Opcode(insn.opcode)
        f = insn.fields
        unit = unit_of(op)
        flags = ("pop_prev", "pop_next", "push_prev", "push_next")
        allowed = {k for (u, k) in self._CHANNELS if u == unit}
        if any(f[k] for k in flags if k not in allowed):
            return ErrorCode.BAD_FIELD
        line = self.m.line
        if op in (Opcode.LOAD, Opcode.STORE):
            bufs = LOADABLE if op == Opcode.LOAD else STORABLE
            if f["buf"] not in [int(b) for b in bufs]:
                return ErrorCode.BAD_FIELD
            if f["flip"] and not (op == Opcode.LOAD and f["buf"] == Buffer.INP):
                return ErrorCode.BAD_FIELD
            if not f["rows"] or not f["row_lines"] or f["dram"] % line or f["stride"] % line:
                return ErrorCode.BAD_FIELD
        elif op == Opcode.GEMM:
            engine = Engine(f["engine"])
            params = self.cfg.tlmm if engine == Engine.TLMM else self.cfg.bitserial
            if params is None:
                return ErrorCode.BAD_FIELD
            if f["wfmt"] not in [int(w) for w in ENGINE_FORMATS[engine]]:
                return ErrorCode.BAD_FIELD
            if f["meta"] and engine != Engine.BITSERIAL:
                return ErrorCode.BAD_FIELD
            if not (f["m"] and f["n"] and f["k"]):
                return ErrorCode.BAD_FIELD
        elif op == Opcode.POST:
            if f["mode"] not in [int(p) for p in PostMode] or not (f["m"] and f["n"]):
                return ErrorCode.BAD_FIELD
            if f["param"] * line % PARAM_BYTES_PER_CHANNEL:
                return ErrorCode.BAD_FIELD  # parameters are read one 16-byte channel at a time
        return ErrorCode.NONE

    def check_ranges(self, insn: Instruction) -> ErrorCode:
        op = Opcode(insn.opcode)
        f = insn.fields
        m = self.m
        line = m.line
        spans = []  # (buffer, first line or entry, count, capacity)
        if op in (Opcode.LOAD, Opcode.STORE):
            buf = Buffer(f["buf"])
            spans.append((f["sram"], f["rows"] * f["row_lines"], m.buffer_lines(buf)))
        elif op == Opcode.GEMM:
            k, n, rows = f["k"], f["n"], f["m"]
            spans.append((f["inp"], rows * -(-k // line), m.buffer_lines(Buffer.INP)))
            wlines = weight_row_lines(k, f["wfmt"], line)
            spans.append((f["wgt"], n * wlines, m.buffer_lines(Buffer.WGT)))
            if f["meta"]:
                mlines = meta_row_lines(k, self.cfg.bitserial.group_size, line)
                spans.append((f["meta_line"], n * mlines, m.buffer_lines(Buffer.WGT)))
            spans.append((f["acc"], rows * n, m.acc.size))
        elif op == Opcode.POST:
            rows, n = f["m"], f["n"]
            row_lines = -(-n // line)
            if not f["no_acc"] or f["mode"] == PostMode.ACC:
                spans.append((f["acc"], rows * n, m.acc.size))
            if f["bias"] or f["mode"] != PostMode.ACC:
                plines = -(-n * PARAM_BYTES_PER_CHANNEL // line)
                spans.append((f["param"], plines, m.buffer_lines(Buffer.PARAM)))
            if f["mode"] != PostMode.ACC:
                spans.append((f["out"], rows * row_lines, m.buffer_lines(Buffer.OUT)))
            if f["residual"]:
                spans.append((f["res"], rows * row_lines, m.buffer_lines(Buffer.INP)))
        for first, count, capacity in spans:
            if first + count > capacity:
                return ErrorCode.BUFFER_RANGE
        return ErrorCode.NONE

    def transfer_span(self, f: dict) -> tuple[int, int]:
        """External byte range ``[start, end)`` a LOAD/STORE touches."""
        start = self.m.data_base + f["dram"]
        end = start + (f["rows"] - 1) * f["stride"] + f["row_lines"] * self.m.line
        return start, end

    def check_window(self, insn: Instruction) -> ErrorCode:
        if insn.opcode in (Opcode.LOAD, Opcode.STORE):
            if not self.m.in_window(*self.transfer_span(insn.fields)):
                return ErrorCode.WINDOW
        return ErrorCode.NONE

    def check_tokens(self, insn: Instruction) -> ErrorCode:
        unit = unit_of(insn.opcode)
        if unit == Unit.DISPATCH:
            return ErrorCode.NONE
        tokens = dict(self.tokens)
        for flag in ("pop_prev", "pop_next"):
            if insn[flag]:
                ch = self._CHANNELS[(unit, flag)]
                if tokens[ch] == 0:
                    return ErrorCode.TOKEN
                tokens[ch] -= 1
        for flag in ("push_prev", "push_next"):
            if insn[flag]:
                ch = self._CHANNELS[(unit, flag)]
                if tokens[ch] == self.cfg.token_depth:
                    return ErrorCode.TOKEN
                tokens[ch] += 1
        self.tokens = tokens
        return ErrorCode.NONE

    # -- timing -----------------------------------------------------------------------------

    def barrier(self) -> None:
        self.dispatch_time = max([self.dispatch_time, *self.unit_free.values()])

    def schedule(self, unit: Unit, insn: Instruction, duration: int) -> None:
        """Event model: start when dispatched, the unit is free and popped tokens arrived."""
        starts = self.unit_starts[unit]
        depth = self.cfg.queue_depth
        if len(starts) >= depth:
            # Dispatch waits for a free slot in the unit's instruction queue.
            self.dispatch_time = max(self.dispatch_time, starts[-depth])
        ready = max(self.dispatch_time, self.unit_free[unit])
        start = ready
        for flag in ("pop_prev", "pop_next"):
            if insn[flag]:
                start = max(start, self.token_times[self._CHANNELS[(unit, flag)]].pop(0))
        self.stall[unit] += start - ready
        self.busy[unit] += duration
        end = start + duration
        self.unit_free[unit] = end
        starts.append(start)
        for flag in ("push_prev", "push_next"):
            if insn[flag]:
                self.token_times[self._CHANNELS[(unit, flag)]].append(end)

    # -- execution --------------------------------------------------------------------------

    def execute_unit(self, op: Opcode, insn: Instruction) -> None:
        f = insn.fields
        if op == Opcode.LOAD:
            self.load(f)
            self.counters["load_insns"] += 1
            self.schedule(Unit.LOAD, insn, self.m.cycles.transfer(f["rows"], f["row_lines"]))
        elif op == Opcode.STORE:
            self.store(f)
            self.counters["store_insns"] += 1
            self.schedule(Unit.STORE, insn, self.m.cycles.transfer(f["rows"], f["row_lines"]))
        elif op == Opcode.GEMM:
            self.gemm(f)
            self.counters["compute_insns"] += 1
            self.counters["macs"] += f["m"] * f["n"] * f["k"]
            duration = self.m.cycles.gemm(f["engine"], f["wfmt"], f["m"], f["n"], f["k"],
                                          bool(f["meta"]))
            self.schedule(Unit.COMPUTE, insn, duration)
        elif op == Opcode.POST:
            self.post(f)
            self.counters["compute_insns"] += 1
            self.schedule(Unit.COMPUTE, insn, self.m.cycles.post(f["m"], f["n"]))

    def _external_index(self, f: dict) -> np.ndarray:
        start = self.m.data_base + f["dram"]
        row_bytes = f["row_lines"] * self.m.line
        return (start + np.arange(f["rows"], dtype=np.int64)[:, None] * f["stride"]
                + np.arange(row_bytes, dtype=np.int64)[None, :])

    def load(self, f: dict) -> None:
        m = self.m
        data = m.memory[self._external_index(f)].reshape(-1)
        if f["flip"]:
            data = data ^ np.uint8(0x80)
        first = f["sram"] * m.line
        m.buffers[Buffer(f["buf"])][first : first + data.size] = data
        self.counters["bytes_read"] += data.size

    def store(self, f: dict) -> None:
        m = self.m
        index = self._external_index(f)
        first = f["sram"] * m.line
        data = m.buffers[Buffer(f["buf"])][first : first + index.size].reshape(index.shape)
        if f["rows"] > 1 and f["stride"] < index.shape[1]:
            for r in range(f["rows"]):  # overlapping rows: later rows win, in order
                m.memory[index[r]] = data[r]
        else:
            m.memory[index] = data
        self.counters["bytes_written"] += index.size

    def _rows(self, buf: Buffer, first_line: int, rows: int, row_lines: int, nbytes: int):
        """``rows`` x ``nbytes`` bytes of ``buf``, row r starting at line first + r*row_lines."""
        line = self.m.line
        starts = (first_line + np.arange(rows, dtype=np.int64) * row_lines) * line
        return self.m.buffers[buf][starts[:, None] + np.arange(nbytes, dtype=np.int64)[None, :]]

    def gemm(self, f: dict) -> None:
        m, line = self.m, self.m.line
        rows, n, k, fmt = f["m"], f["n"], f["k"], WeightEncoding(f["wfmt"])
        a = self._rows(Buffer.INP, f["inp"], rows, -(-k // line), k).view(np.int8)
        row_bytes = -(-k * weight_bits(fmt) // 8)
        packed = self._rows(Buffer.WGT, f["wgt"], n, weight_row_lines(k, fmt, line), row_bytes)
        if f["meta"]:
            gs = self.cfg.bitserial.group_size
            groups = -(-k // gs)
            meta = self._rows(
                Buffer.WGT, f["meta_line"], n, meta_row_lines(k, gs, line),
                groups * META_BYTES_PER_GROUP,
            ).reshape(n, groups, META_BYTES_PER_GROUP)
            type_ids = meta[:, :, 0] & 3
            scales = np.repeat(meta[:, :, 1].astype(np.int64), gs, axis=1)[:, :k]
            w = decode_weights(packed, fmt, k, type_ids, gs).astype(np.int64) * scales
        else:
            w = decode_weights(packed, fmt, k)
        result = gemm_int(a, w.T).astype(np.int64)
        acc = m.acc[f["acc"] : f["acc"] + rows * n]
        if f["accumulate"]:
            result = result + acc.reshape(rows, n)
        acc[:] = wrap_int32(result).reshape(-1)

    def post(self, f: dict) -> None:
        m, line = self.m, self.m.line
        rows, n = f["m"], f["n"]
        mode = PostMode(f["mode"])
        if f["no_acc"]:
            v = np.zeros((rows, n), dtype=np.int64)
        else:
            v = m.acc[f["acc"] : f["acc"] + rows * n].reshape(rows, n).astype(np.int64)
        params = None
        if f["bias"] or mode != PostMode.ACC:
            params = self._rows(Buffer.PARAM, f["param"], 1, 0, n * PARAM_BYTES_PER_CHANNEL)
            params = params.reshape(n, PARAM_BYTES_PER_CHANNEL)
        if f["bias"]:
            v = v + params[:, 0:4].copy().view("<i4").reshape(n).astype(np.int64)
        row_lines = -(-n // line)
        if f["residual"]:
            r = self._rows(Buffer.INP, f["res"], rows, row_lines, n).view(np.int8)
            v = v + (r.astype(np.int64) - f["res_zp"]) * f["res_mult"]
        v = wrap_int32(v)
        if mode == PostMode.ACC:
            m.acc[f["acc"] : f["acc"] + rows * n] = v.reshape(-1)
            return
        out_dtype = "uint8" if f["out_unsigned"] else "int8"
        as_out = np.uint8 if f["out_unsigned"] else np.int8
        mult_bits = params[:, 4:8].copy().view("<u4").reshape(n)
        zp = params[:, 9].view(as_out).astype(np.int32)
        lo = params[:, 10].view(as_out).astype(np.int32)
        hi = params[:, 11].view(as_out).astype(np.int32)
        if mode == PostMode.ORT:
            y = requantize_ort(v, ort_multiplier_from_bits(mult_bits), zp, out_dtype)
        else:
            shift = np.clip(params[:, 8].astype(np.int64) & 63, 1, MAX_SHIFT)
            y = requantize_dyadic(v, mult_bits.astype(np.int64) & 0x7FFFFFFF, shift, zp, out_dtype)
        y = np.minimum(np.maximum(y, lo), hi)
        starts = (f["out"] + np.arange(rows, dtype=np.int64) * row_lines) * line
        index = starts[:, None] + np.arange(n, dtype=np.int64)[None, :]
        m.buffers[Buffer.OUT][index] = (y.astype(np.int64) & 0xFF).astype(np.uint8)
