"""Runtime: :class:`Session` runs a compiled model on a backend.

A backend implements one protocol (:class:`Backend`): ``load`` a program's memory image,
``write``/``read`` external memory, ``run`` one kernel (instruction stream at a byte address)
with a cycle budget and return its counters. ``golden`` is the instruction-level numpy model
(:class:`trilobit.sim.golden.GoldenMachine`); ``verilator`` runs the RTL when the
accelerator top exists; ``device`` talks to the Linux driver on a board.

The session walks the IR in order: host steps run through the reference executor (numerics
core, or onnxruntime for HostOps); engine steps run their kernels on the backend, one run per
block of ``tm`` activation rows, with the host preparing the activation matrix (im2col for
convolutions, per-row INT8 quantization for weight-only products) and reassembling tiles.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from trilobit.config import AcceleratorConfig
from trilobit.errors import BackendError, DeviceTimeout, ProgramError
from trilobit.requant import requantize_ort
from trilobit.sw import ir
from trilobit.sw.compiler import Kernel, compile_model, folded_bias, param_bytes, resolve_config
from trilobit.sw.program import Program
from trilobit.sw.reference import ReferenceExecutor, check_feeds, im2col

__all__ = ["Session", "Backend", "GoldenBackend", "VerilatorBackend", "NodeStats",
           "make_backend", "BACKENDS"]

BACKENDS = ("golden", "verilator", "device")


class Backend(Protocol):
    """What a session needs from an accelerator."""

    name: str

    def load(self, program: Program) -> None: ...

    def write(self, address: int, data: np.ndarray) -> None: ...

    def read(self, address: int, size: int) -> np.ndarray: ...

    def run(self, prog_addr: int, timeout_cycles: int | None = None) -> dict: ...


class GoldenBackend:
    """The instruction-level golden model as a backend."""

    name = "golden"
    #: POST requantization modes this backend executes (see trilobit.sw.compiler.Kernel).
    post_modes = ("ort", "dyadic", "host")

    def __init__(self, config: AcceleratorConfig):
        self.config = config
        self.machine = None

    def load(self, program: Program) -> None:
        from trilobit.sim.golden import GoldenMachine

        self.machine = GoldenMachine(self.config, program.memory_image())

    def write(self, address: int, data: np.ndarray) -> None:
        self.machine.write(address, np.ascontiguousarray(data).view(np.uint8).reshape(-1))

    def read(self, address: int, size: int) -> np.ndarray:
        return self.machine.read(address, size)

    def run(self, prog_addr: int, timeout_cycles: int | None = None) -> dict:
        from trilobit.isa import ErrorCode

        result = self.machine.run(prog_base=prog_addr, data_base=0,
                                  watchdog=timeout_cycles or self.config.watchdog_cycles)
        if result.error == ErrorCode.WATCHDOG:
            raise DeviceTimeout(f"golden: run at {prog_addr:#x} exceeded "
                                f"{timeout_cycles or self.config.watchdog_cycles} cycles")
        if not result.ok:
            raise BackendError(f"golden: run at {prog_addr:#x} stopped with "
                               f"{result.error.name} at instruction {result.error_pc}")
        return result.counters


_VERILATOR_MODELS: dict[str, object] = {}


class VerilatorBackend:
    """The accelerator RTL compiled by Verilator; memory lives in the C++ harness per run.

    The RTL executes every POST mode (``"ort"``, ``"dyadic"``) and ``"host"`` requantization
    (int32 accumulators stored, requantized on the host). ``stall_prob`` adds random wait
    states on the data bus.
    """

    name = "verilator"
    post_modes = ("ort", "host", "dyadic")

    def __init__(self, config: AcceleratorConfig, stall_prob: float = 0.0, seed: int = 1):
        try:
            from trilobit.sim.accel_verilator import VerilatorAccelerator
        except ImportError as exc:
            raise BackendError(f"backend 'verilator' is unavailable: {exc}") from exc
        self.config = config
        key = config.hash()
        if key not in _VERILATOR_MODELS:  # converting the RTL to Verilog takes seconds
            _VERILATOR_MODELS[key] = VerilatorAccelerator(config)
        self.accel = _VERILATOR_MODELS[key]
        self.stall_prob = stall_prob
        self.seed = seed
        self.memory = None
        self.figures: dict = {}

    def load(self, program: Program) -> None:
        self.memory = program.memory_image()

    def write(self, address: int, data: np.ndarray) -> None:
        data = np.ascontiguousarray(data).view(np.uint8).reshape(-1)
        self.memory[address : address + data.size] = data

    def read(self, address: int, size: int) -> np.ndarray:
        return self.memory[address : address + size].copy()

    def run(self, prog_addr: int, timeout_cycles: int | None = None) -> dict:
        from trilobit.isa import ErrorCode

        budget = timeout_cycles or self.config.watchdog_cycles
        result, memory, figures = self.accel.run(
            self.memory, prog_addr, 0, (0, self.memory.size), watchdog=budget,
            stall_prob=self.stall_prob, seed=self.seed)
        self.memory = np.array(memory, dtype=np.uint8)
        self.figures = figures
        if result.error == ErrorCode.WATCHDOG:
            raise DeviceTimeout(f"verilator: run at {prog_addr:#x} exceeded {budget} cycles")
        if not result.ok:
            raise BackendError(f"verilator: run at {prog_addr:#x} stopped with "
                               f"{result.error.name} at instruction {result.error_pc}")
        return result.counters


def make_backend(name: str, config: AcceleratorConfig) -> Backend:
    """Backend ``name`` for ``config``; BackendError when it is not available here."""
    if name == "golden":
        return GoldenBackend(config)
    if name == "verilator":
        return VerilatorBackend(config)
    if name == "device":
        try:
            from trilobit.sw.driver import DeviceBackend
        except ImportError as exc:
            raise BackendError("backend 'device' needs the board driver (trilobit.sw.driver), "
                               "which this installation does not have") from exc
        return DeviceBackend(config)
    raise BackendError(f"backend must be one of {BACKENDS}, got {name!r}")


@dataclass
class NodeStats:
    """Measured figures of one engine node over a session's runs."""

    runs: int = 0
    cycles: int = 0
    compute_busy: int = 0
    macs: int = 0
    useful_macs: int = 0
    seconds: float = 0.0

    @property
    def utilization(self) -> float:
        """Fraction of cycles the compute unit was busy."""
        return self.compute_busy / self.cycles if self.cycles else 0.0


@dataclass
class _RunStats:
    nodes: dict[str, NodeStats] = field(default_factory=dict)


class Session:
    """Run a quantized ONNX model (compiled on the fly) or a compiled program.

    Args:
        model_or_program: ONNX path/bytes/ModelProto, a ``.tbp`` path, or a Program.
        config: AcceleratorConfig or preset name (default ``"small"``); a program compiled
            for another configuration raises ProgramError.
        backend: ``"golden"``, ``"verilator"`` or ``"device"``.
        batch: rows per accelerator run the compiler plans for (larger batches run in
            several runs).
        timeout_cycles: cycle budget of each run (default: the config's watchdog).
        post_mode: requantization mode when compiling (default: ``"ort"`` where the backend
            has it, else ``"host"``); see :class:`trilobit.sw.compiler.Kernel`.
    """

    def __init__(self, model_or_program, config: AcceleratorConfig | str | None = None,
                 backend: str = "golden", batch: int = 1, timeout_cycles: int | None = None,
                 post_mode: str | None = None):
        self.config = resolve_config(config)
        self.backend = make_backend(backend, self.config)
        modes = getattr(self.backend, "post_modes", ("ort",))
        self.post_mode = post_mode or ("ort" if "ort" in modes else modes[0])
        self.program = self._program(model_or_program, batch)
        used = {k.post_mode for ks in self.program.kernels.values() for k in ks
                if k.out_kind == "requant" or k.host_requant}
        if used - set(modes):
            raise BackendError(
                f"backend {self.backend.name!r} cannot execute POST mode(s) "
                f"{sorted(used - set(modes))}; compile with post_mode in {modes}")
        self.backend.load(self.program)
        self.timeout_cycles = timeout_cycles
        self._executor = ReferenceExecutor(self.program.graph)
        self.stats = _RunStats()

    def _program(self, source, batch: int) -> Program:
        if isinstance(source, Program):
            if source.config.hash() != self.config.hash():
                raise ProgramError(
                    f"program was compiled for {source.config.name!r} "
                    f"({source.config_hash[:12]}...), not for {self.config.name!r} "
                    f"({self.config.hash()[:12]}...)")
            return source
        if isinstance(source, str | Path) and str(source).endswith(".tbp"):
            return Program.load(source, self.config)
        if isinstance(source, bytes) and source[:4] == b"TBP\x00":
            return Program.from_bytes(source, self.config)
        return compile_model(source, self.config, batch=batch, post_mode=self.post_mode)

    @property
    def graph(self) -> ir.Graph:
        return self.program.graph

    def get_inputs(self) -> list[ir.TensorInfo]:
        return [self.graph.tensors[n] for n in self.graph.inputs]

    def get_outputs(self) -> list[ir.TensorInfo]:
        return [self.graph.tensors[n] for n in self.graph.outputs]

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Outputs by name, with onnxruntime's shapes and dtypes."""
        env: dict[str, np.ndarray] = dict(check_feeds(self.graph, feeds))
        for node in self.graph.nodes:
            args = [env[i] for i in node.inputs]
            if node.engine in ("tlmm", "bitserial"):
                results = self._run_engine(node, args)
            else:
                results = self._executor.execute(node, args)
            env.update(zip(node.outputs, results, strict=True))
        return {name: env[name] for name in self.graph.outputs}

    # -- engine nodes ---------------------------------------------------------------------
    def _run_engine(self, node: ir.Node, args: list[np.ndarray]) -> list[np.ndarray]:
        kernels = self.program.kernels[node.name]
        stats = self.stats.nodes.setdefault(node.name, NodeStats())
        t0 = time.perf_counter()
        if isinstance(node, ir.WeightOnlyMatMul):
            out = self._weight_only(node, kernels, args[0], stats)
        elif isinstance(node, ir.QConv):
            x = args[0]
            a_zp = node.a_zero_point if len(args) < 2 else int(np.asarray(args[1]).reshape(()))
            kh, kw = node.weight.shape[2:]
            rows, (oh, ow) = im2col(x, kh, kw, node.strides, node.pads, node.dilations, a_zp)
            flat = self._matmul(kernels[0], rows.reshape(-1, rows.shape[-1]), a_zp, node, stats)
            out = flat.reshape(x.shape[0], oh * ow, -1).transpose(0, 2, 1)
            out = out.reshape(x.shape[0], -1, oh, ow)
            out = self._finish(node, out, channel_axis=1)
        elif len(kernels) > 1:
            # Batched weights: kernel i multiplies activation slice i (numpy broadcasting).
            a = args[0]
            a_zp = node.a_zero_point if len(args) < 2 else int(np.asarray(args[1]).reshape(()))
            a = np.broadcast_to(a, (len(kernels),) + a.shape[-2:]) if a.ndim == 2 else a
            outs = [self._matmul(kk, np.ascontiguousarray(a[i]), a_zp, node, stats)
                    for i, kk in enumerate(kernels)]
            out = self._finish(node, np.stack(outs), channel_axis=-1)
        else:
            a = args[0]
            a_zp = node.a_zero_point if len(args) < 2 else int(np.asarray(args[1]).reshape(()))
            flat = self._matmul(kernels[0], a.reshape(-1, a.shape[-1]), a_zp, node, stats)
            out = self._finish(node, flat.reshape(a.shape[:-1] + (flat.shape[-1],)),
                               channel_axis=-1)
        stats.seconds += time.perf_counter() - t0
        return [out]

    def _finish(self, node: ir.QMatMul, y: np.ndarray, channel_axis: int) -> np.ndarray:
        if node.out != "float":
            return y
        scale = np.asarray(node.out_scale, np.float32)
        if scale.ndim:
            view = [1] * y.ndim
            view[channel_axis] = scale.size
            scale = scale.reshape(view)
        return (y.astype(np.float32) * scale).astype(np.float32)

    def _matmul(self, kernel: Kernel, a: np.ndarray, a_zp: int, node, stats: NodeStats):
        """Run ``kernel`` over the rows of ``a`` (M, K); int8/uint8 or int32 (M, N) result."""
        line = self.config.line_bytes
        if a_zp != self._static_zp(node):
            bias = folded_bias(getattr(node, "bias", None), kernel.colsum, kernel.a_offset, a_zp)
            self.backend.write(kernel.params_addr, np.frombuffer(
                param_bytes(kernel, bias, line), np.uint8))
        if kernel.split_k:
            a = np.concatenate([a, a], axis=1)
        rows = a.shape[0]
        out = np.empty((rows, kernel.n), np.int32 if kernel.out_kind == "int32" else (
            np.uint8 if kernel.out_unsigned else np.int8))
        block = np.zeros((kernel.tm, kernel.inp_row_bytes), np.uint8)
        for r0 in range(0, rows, kernel.tm):
            r1 = min(rows, r0 + kernel.tm)
            block[:] = 0
            block[: r1 - r0, : kernel.k] = a[r0:r1].view(np.uint8) if a.dtype.itemsize == 1 \
                else a[r0:r1].astype(np.uint8)
            self.backend.write(kernel.inp_addr, block)
            counters = self.backend.run(kernel.prog_addr, self.timeout_cycles)
            stats.runs += 1
            stats.cycles += counters.get("cycles", 0)
            stats.compute_busy += counters.get("compute_busy", 0)
            stats.macs += counters.get("macs", 0)
            stats.useful_macs += (r1 - r0) * kernel.k * kernel.n // (2 if kernel.split_k else 1)
            out[r0:r1] = self._read_tiles(kernel)[: r1 - r0]
        if kernel.host_requant:
            out = requantize_ort(out, kernel.multiplier, kernel.y_zero_point,
                                 kernel.y_dtype).astype(kernel.y_dtype)
        if a_zp != self._static_zp(node):
            # Restore the compiled parameters for the next caller.
            bias = folded_bias(getattr(node, "bias", None), kernel.colsum, kernel.a_offset,
                               self._static_zp(node))
            self.backend.write(kernel.params_addr, np.frombuffer(
                param_bytes(kernel, bias, line), np.uint8))
        return out

    @staticmethod
    def _static_zp(node) -> int:
        return int(getattr(node, "a_zero_point", 0))

    def _read_tiles(self, kernel: Kernel) -> np.ndarray:
        line = self.config.line_bytes
        total = sum(kernel.out_tile_bytes)
        raw = self.backend.read(kernel.out_addr, total)
        cols = []
        offset = 0
        for t, size in enumerate(kernel.out_tile_bytes):
            tn = min(kernel.tn, kernel.n - t * kernel.tn)
            chunk = raw[offset : offset + size]
            offset += size
            if kernel.out_kind == "int32":
                vals = chunk[: kernel.tm * tn * 4].view("<i4").reshape(kernel.tm, tn)
            else:
                row = -(-tn // line) * line
                vals = chunk.reshape(kernel.tm, row)[:, :tn]
                vals = vals if kernel.out_unsigned else vals.view(np.int8)
            cols.append(vals)
        return np.concatenate(cols, axis=1)

    def _weight_only(self, node: ir.WeightOnlyMatMul, kernels: list[Kernel], a: np.ndarray,
                     stats: NodeStats) -> np.ndarray:
        # Same arithmetic as trilobit.sw.reference.weight_only_matmul, block sums on device.
        a = np.asarray(a, np.float32)
        lead = a.shape[:-1]
        a2 = a.reshape(-1, a.shape[-1])
        absmax = np.abs(a2).max(axis=-1, keepdims=True)
        a_scale = np.where(absmax > 0, absmax / np.float32(127), np.float32(1)).astype(np.float32)
        a_q = np.clip(np.rint(a2 / a_scale), -127, 127).astype(np.int8)
        out = np.zeros((a2.shape[0], node.b.shape[1]), np.float32)
        for j, kernel in enumerate(kernels):
            k0 = j * node.block_size
            acc = self._matmul(kernel, np.ascontiguousarray(a_q[:, k0 : k0 + kernel.k]), 0,
                               node, stats)
            out += acc.astype(np.float32) * (a_scale * node.scale[j]).astype(np.float32)
        if node.bias is not None:
            out += node.bias
        return out.reshape(lead + (out.shape[-1],)).astype(np.float32)

    # -- figures ----------------------------------------------------------------------------
    def counters(self) -> dict:
        """Totals over every engine node since the session started."""
        total = NodeStats()
        for s in self.stats.nodes.values():
            total.runs += s.runs
            total.cycles += s.cycles
            total.compute_busy += s.compute_busy
            total.macs += s.macs
            total.useful_macs += s.useful_macs
            total.seconds += s.seconds
        return {"runs": total.runs, "cycles": total.cycles, "compute_busy": total.compute_busy,
                "macs": total.macs, "useful_macs": total.useful_macs,
                "utilization": total.utilization}
