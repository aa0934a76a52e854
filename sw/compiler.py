"""Compiler passes: import -> legalise -> tile -> pack -> schedule -> emit.

Each pass is a small function over the plain IR (:mod:`trilobit.sw.ir`) or over the
:class:`Kernel` records it produces.

* **legalise** (:func:`trilobit.sw.legalise.legalise` plus :func:`fit_engine`): which engine
  runs a node; a node whose operands do not fit the engines (weights beyond 9 bits after the
  zero point, weights of rank > 3, an absent engine) runs on the host, with the reason
  recorded.
* **tile** (:func:`plan_tiles`): one accelerator run computes a block of ``tm`` rows of the
  product; K is split into ``tk``-long steps accumulated in ACC and N into ``tn``-wide tiles,
  so that each on-chip buffer holds *two* tiles (double buffering).
* **pack** (:func:`pack_kernel`): weights become WGT rows in the GEMM's encoding
  (ternary 2-bit, INT3/INT4 4-bit, INT8 8-bit; :func:`trilobit.isa.pack_weight_rows`), one
  block per (N tile, K tile); per-channel POST parameters via
  :func:`trilobit.isa.pack_post_params`.
* **schedule + emit** (:func:`emit_kernel`): the instruction stream with dependency tokens
  (VTA style): loads of step ``s`` wait for compute step ``s - 2`` to release its buffer
  half, GEMMs wait for their loads, the first GEMM of tile ``t`` waits for the store of tile
  ``t - 2`` to release its ACC/OUT half, stores wait for POST.

Zero points never reach the datapath: uint8 activations are loaded with ``flip`` (a - 128),
and ``(offset - a_zp) * colsum(W')`` with ``W' = W - w_zp`` joins the int32 bias
(``docs/compiler.md``). A runtime activation zero point (DynamicQuantizeLinear) makes the
runtime rewrite the PARAM block before each run.

Convolutions are lowered to GEMM by im2col on the host (see :mod:`trilobit.sw.ir`).
Weight-only products become one int32 kernel per K block; the host quantizes each row to
INT8 and combines the blocks with their scales.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field

import numpy as np

from trilobit.config import AcceleratorConfig, preset
from trilobit.errors import ConfigError, ModelError
from trilobit.isa import (
    INSN_BYTES,
    Buffer,
    Engine,
    PostMode,
    WeightEncoding,
    pack_group_meta,
    pack_post_params,
    pack_weight_rows,
    weight_bits,
)
from trilobit.sw import ir
from trilobit.sw.bitmod import GroupPlan
from trilobit.sw.legalise import group_plan, is_ternary, legalise

__all__ = [
    "Kernel",
    "CompiledGraph",
    "fit_engine",
    "plan_tiles",
    "pack_kernel",
    "emit_kernel",
    "compile_graph",
    "compile_model",
    "resolve_config",
    "estimate_cycles",
]

#: Most rows one GEMM instruction takes (the 8-bit ``m`` field).
MAX_TILE_ROWS = 255
#: Most output channels of one GEMM (the 12-bit ``n`` field).
MAX_TILE_COLS = 4095


def resolve_config(config: AcceleratorConfig | str | None) -> AcceleratorConfig:
    """A preset name, a config, or None (the ``small`` preset)."""
    if config is None:
        return preset("small")
    if isinstance(config, str):
        return preset(config)
    if not isinstance(config, AcceleratorConfig):
        raise ConfigError(f"config must be an AcceleratorConfig or a preset name, got {config!r}")
    return config


@dataclass
class Kernel:
    """One accelerator run type: ``out[tm, N] = A[tm, K] @ W'[K, N]`` then POST.

    Byte addresses are offsets from DATA_BASE (= 0) in the program's memory image.
    ``out_kind``: ``"requant"`` (8-bit OUT tiles) or ``"int32"`` (ACC tiles).
    """

    @property
    def host_requant(self) -> bool:
        return self.post_mode == "host"

    @property
    def y_dtype(self) -> str:
        return "uint8" if self.out_unsigned else "int8"


    node: str
    engine: int
    wfmt: int
    tm: int
    k: int
    n: int
    tk: int
    tn: int
    flip: bool
    out_kind: str
    out_unsigned: bool
    #: Weights minus zero point needed 9 bits: W' = W_a + W_b with both in int8, stacked
    #: along K (k = 2 x the model's K); the host repeats each activation row twice.
    split_k: bool = False
    #: POST requantization: ``"ort"`` (float32, bit-identical to onnxruntime), ``"dyadic"``
    #: (integer multiplier and shift, at most one unit from onnxruntime) or ``"host"`` (the
    #: run stores int32 accumulators; the host requantizes as onnxruntime).
    post_mode: str = "ort"
    #: Input channels per group when the GEMMs read per-group metadata (BitMoD type ids and
    #: integer scales, stored after each weight block in WGT); 0: no metadata.
    group_size: int = 0
    prog_addr: int = 0
    prog_len: int = 0
    weights_addr: int = 0
    params_addr: int = 0
    params_len: int = 0
    inp_addr: int = 0
    out_addr: int = 0
    inp_row_bytes: int = 0
    #: Output bytes per N tile (tile-major layout of the result).
    out_tile_bytes: list[int] = field(default_factory=list)
    #: Column sums of W' (int64, N) for a runtime activation zero point.
    colsum: np.ndarray | None = field(default=None, repr=False)
    bias: np.ndarray | None = field(default=None, repr=False)
    multiplier: np.ndarray | None = field(default=None, repr=False)
    y_zero_point: int = 0
    a_offset: int = 0
    macs_per_run: int = 0
    est_cycles_per_run: int = 0

    @property
    def n_tiles(self) -> int:
        return -(-self.n // self.tn)

    @property
    def k_tiles(self) -> int:
        return -(-self.k // self.tk)


@dataclass
class CompiledGraph:
    """The output of compilation before serialization (see :mod:`trilobit.sw.program`)."""

    config: AcceleratorConfig
    graph: ir.Graph
    kernels: dict[str, list[Kernel]]
    instructions: bytes
    constants: bytes
    constants_addr: int
    scratch_addr: int
    memory_bytes: int
    compile_seconds: float = 0.0
    weights_packed: int = 0


# -- legalise (fit) ---------------------------------------------------------------------------


def _weights_of(node: ir.QMatMul) -> np.ndarray:
    return node.weight.reshape(node.weight.shape[0], -1).T if isinstance(node, ir.QConv) \
        else node.b


def fit_engine(node: ir.Node, config: AcceleratorConfig) -> ir.Node:
    """Check that an engine node's operands fit the chosen engine; else send it to the host."""
    def host(reason: str) -> ir.Node:
        return dataclasses.replace(node, engine="host", reason=reason)

    if node.engine not in ("tlmm", "bitserial"):
        return node
    if isinstance(node, ir.WeightOnlyMatMul):
        if config.bitserial is None:
            return host("the configuration has no bitserial engine")
        return node
    assert isinstance(node, ir.QMatMul)
    if node.int_block_scale is not None:
        return node  # legalise checked the per-group form against the engine
    if node.b.ndim > 3 and not isinstance(node, ir.QConv):
        return host(f"weights of rank {node.b.ndim} (at most one batch dimension)")
    w = _weights_of(node).astype(np.int64) - np.asarray(node.b_zero_point, np.int64)
    if w.size and (w.min() < -255 or w.max() > 255):
        return host("weights minus their zero point exceed 9 bits")
    engine_params = config.tlmm if node.engine == "tlmm" else config.bitserial
    if engine_params is None:
        other = "bitserial" if node.engine == "tlmm" else "tlmm"
        if getattr(config, other) is not None and other == "bitserial":
            return dataclasses.replace(node, engine="bitserial",
                                       reason=node.reason + "; no tlmm engine: bit-serial INT3")
        return host(f"the configuration has no {node.engine} engine")
    return node


def weight_encoding(node: ir.Node, w: np.ndarray) -> tuple[Engine, WeightEncoding]:
    """Narrowest encoding of the engine holding every value of ``w`` (W minus zero point)."""
    if node.engine == "tlmm" and is_ternary(w, 0):
        return Engine.TLMM, WeightEncoding.TERNARY
    if getattr(node, "b_dtype", "") == "fp4":
        # BitMoD fp4 codes; the -0 code (an extra value in the candidates) is never produced.
        return Engine.BITSERIAL, WeightEncoding.FP4
    lo, hi = (int(w.min()), int(w.max())) if w.size else (0, 0)
    if -4 <= lo and hi <= 3:
        return Engine.BITSERIAL, WeightEncoding.INT3
    if -8 <= lo and hi <= 7:
        return Engine.BITSERIAL, WeightEncoding.INT4
    return Engine.BITSERIAL, WeightEncoding.INT8


# -- tile -------------------------------------------------------------------------------------


def _lines(nbytes: int, line: int) -> int:
    return -(-nbytes // line)


def plan_tiles(config: AcceleratorConfig, k: int, n: int, wfmt: WeightEncoding, rows_hint: int,
               out_kind: str, group_size: int = 0) -> tuple[int, int, int]:
    """(tm, tk, tn) so that two tiles fit each buffer.

    ``tk`` is a multiple of the line size (activation rows are loaded line by line from a
    strided matrix); rows first take what the activation buffer allows, then K, then N.
    With per-group metadata (``group_size`` > 0) a K tile is whole groups (a GEMM numbers
    its groups from its first input channel) and each channel's metadata lines join its
    weight lines in WGT. Raises ConfigError when not even one line (or group) of K fits.
    """
    line = config.line_bytes
    inp_half = config.inp_bytes // line // 2
    wgt_half = config.wgt_bytes // line // 2
    acc_half = config.acc_bytes // 4 // 2
    out_half = config.out_bytes // line // 2
    param_half = config.param_bytes // 2
    k_lines = _lines(k, line)
    # Fewest K lines a tile may have: one line, or one whole group with metadata.
    min_lines = min(k_lines, _lines(group_size, line)) if group_size else 1

    def wgt_row(tk: int) -> int:  # WGT lines of one channel of a tile
        meta = _lines(2 * -(-tk // group_size), line) if group_size else 0
        return _lines(_lines(tk * weight_bits(wfmt), 8), line) + meta

    tm = max(1, min(MAX_TILE_ROWS, rows_hint, inp_half))
    tk_lines = min(k_lines, inp_half // tm)
    while tk_lines < min_lines and tm > 1:
        tm //= 2
        tk_lines = min(k_lines, inp_half // tm)
    wrow = wgt_row(tk_lines * line)
    while tk_lines > min_lines and wgt_half < wrow:
        tk_lines //= 2
        wrow = wgt_row(tk_lines * line)
    tk = min(k, tk_lines * line)
    if group_size and tk < k:
        tk -= tk % group_size
    if tk_lines < 1 or tk < 1 or wgt_half < wgt_row(max(tk, 1)):
        raise ConfigError(f"buffers of config {config.name!r} cannot hold one tile")
    wrow = wgt_row(tk)
    tn = min(n, MAX_TILE_COLS, wgt_half // wrow, param_half // 16)
    # ACC (int32, tm x tn per half) and OUT (tm rows of whole lines per half).
    while tn > 1 and (tm * tn > acc_half or tm * _lines(tn, line) > out_half):
        tn = max(1, tn // 2)
    while tm > 1 and (tm * tn > acc_half or tm * _lines(tn, line) > out_half):
        tm //= 2
    return tm, tk, tn


# -- pack -------------------------------------------------------------------------------------


def _codes(w: np.ndarray, wfmt: WeightEncoding) -> np.ndarray:
    if wfmt == WeightEncoding.FP4:
        from trilobit.dtypes import get_dtype

        return get_dtype("fp4").encode_exact(w.astype(np.float64)).astype(np.uint8)
    return (w.astype(np.int64) & ((1 << wfmt.code_bits) - 1)).astype(np.uint8)


def pack_kernel(kernel: Kernel, w: np.ndarray, line: int,
                plan: GroupPlan | None = None) -> tuple[bytes, bytes]:
    """WGT blocks (N tile major, then K tile) and PARAM blocks (per N tile) as bytes.

    With a per-group ``plan`` the codes are the plan's and each weight block is followed by
    its channels' group metadata (:func:`trilobit.isa.pack_group_meta`).
    """
    wfmt = WeightEncoding(kernel.wfmt)
    codes = plan.codes if plan is not None else _codes(w, wfmt).T  # (N, K): a channel per row
    blocks = []
    for n0 in range(0, kernel.n, kernel.tn):
        for k0 in range(0, kernel.k, kernel.tk):
            blk = codes[n0 : n0 + kernel.tn, k0 : k0 + kernel.tk]
            blocks.append(pack_weight_rows(blk, wfmt, line).tobytes())
            if plan is not None:
                groups = slice(k0 // plan.group_size, -(-(k0 + blk.shape[1]) // plan.group_size))
                blocks.append(pack_group_meta(plan.type_ids[n0 : n0 + kernel.tn, groups],
                                              plan.scale_int[n0 : n0 + kernel.tn, groups],
                                              line).tobytes())
    return b"".join(blocks), param_bytes(kernel, kernel.bias, line)


def param_bytes(kernel: Kernel, bias: np.ndarray, line: int) -> bytes:
    """PARAM blocks, one per N tile, each padded to whole lines (16 bytes per channel)."""
    blocks = []
    lo, hi = (0, 255) if kernel.out_unsigned else (-128, 127)
    for n0 in range(0, kernel.n, kernel.tn):
        sl = slice(n0, min(kernel.n, n0 + kernel.tn))
        cols = sl.stop - sl.start
        mult = None if kernel.multiplier is None else np.broadcast_to(
            np.asarray(kernel.multiplier, np.float32), (kernel.n,))[sl]
        if kernel.out_kind == "requant" and kernel.post_mode == "dyadic":
            from trilobit.requant import dyadic_from_scale

            pairs = [dyadic_from_scale(float(v)) for v in mult]
            raw = pack_post_params(bias[sl], [p[0] for p in pairs], [p[1] for p in pairs],
                                   kernel.y_zero_point, lo, hi, n=cols, mode=PostMode.DYADIC)
        elif kernel.out_kind == "requant":
            raw = pack_post_params(bias[sl], mult, 0, kernel.y_zero_point, lo, hi, n=cols,
                                   mode=PostMode.ORT)
        else:
            raw = pack_post_params(bias[sl], 0, 1, 0, n=cols, mode=PostMode.DYADIC)
        padded = np.zeros(_lines(raw.size, line) * line, np.uint8)
        padded[: raw.size] = raw
        blocks.append(padded.tobytes())
    return b"".join(blocks)


def folded_bias(bias: np.ndarray | None, colsum: np.ndarray, a_offset: int,
                a_zp: int) -> np.ndarray:
    """int32 bias with the activation zero point folded in: ``bias + (offset - zp) colsum``."""
    b = np.zeros(colsum.shape, np.int64) if bias is None else np.asarray(bias, np.int64)
    total = b + (a_offset - a_zp) * colsum
    if total.size and (total.min() < -(1 << 31) or total.max() >= 1 << 31):
        raise ConfigError("folded bias exceeds int32")
    return total.astype(np.int32)


# -- schedule + emit --------------------------------------------------------------------------


def emit_kernel(kernel: Kernel, config: AcceleratorConfig) -> bytes:
    """The instruction stream of one run (double-buffered, token-synchronised, ends in END)."""
    from trilobit.sim.asm import Assembler

    line = config.line_bytes
    inp_half = config.inp_bytes // line // 2
    wgt_half = config.wgt_bytes // line // 2
    param_half = config.param_bytes // line // 2
    out_half = config.out_bytes // line // 2
    acc_half = config.acc_bytes // 4 // 2
    wfmt = WeightEncoding(kernel.wfmt)
    asm = Assembler()
    step = 0
    w_addr = kernel.weights_addr
    p_addr = kernel.params_addr
    out_addr = kernel.out_addr
    tiles_k = list(range(0, kernel.k, kernel.tk))
    for t, n0 in enumerate(range(0, kernel.n, kernel.tn)):
        tn = min(kernel.tn, kernel.n - n0)
        p_lines = _lines(tn * 16, line)
        for kt, k0 in enumerate(tiles_k):
            tk = min(kernel.tk, kernel.k - k0)
            half = step % 2
            w_lines = _lines(_lines(tk * weight_bits(wfmt), 8), line)
            m_lines = _meta_lines(kernel, tk, line)
            loads = []
            if kt == 0:
                loads.append(dict(buf=Buffer.PARAM, sram=(t % 2) * param_half, dram=p_addr,
                                  rows=1, row_lines=p_lines, stride=p_lines * line))
                p_addr += p_lines * line
            loads.append(dict(buf=Buffer.INP, sram=half * inp_half, dram=kernel.inp_addr + k0,
                              rows=kernel.tm, row_lines=_lines(tk, line),
                              stride=kernel.inp_row_bytes, flip=kernel.flip))
            loads.append(dict(buf=Buffer.WGT, sram=half * wgt_half, dram=w_addr, rows=tn,
                              row_lines=w_lines, stride=w_lines * line))
            w_addr += tn * w_lines * line
            meta_line = None
            if m_lines:  # the block's group metadata, right after its weights
                meta_line = half * wgt_half + tn * w_lines
                loads.append(dict(buf=Buffer.WGT, sram=meta_line, dram=w_addr, rows=tn,
                                  row_lines=m_lines, stride=m_lines * line))
                w_addr += tn * m_lines * line
            for i, spec in enumerate(loads):
                asm.load(**spec, pop_next=(i == 0 and step >= 2),
                         push_next=(i == len(loads) - 1))
            last_k = kt == len(tiles_k) - 1
            asm.gemm(Engine(kernel.engine), wfmt, m=kernel.tm, n=tn, k=tk,
                     inp=half * inp_half, wgt=half * wgt_half, acc=(t % 2) * acc_half,
                     accumulate=kt > 0, meta_line=meta_line, pop_prev=True,
                     pop_next=(kt == 0 and t >= 2), push_prev=not last_k)
            step += 1
        # POST releases this step's buffers (it reads PARAM) and hands the tile to STORE.
        o_lines = _lines(tn, line)
        if kernel.out_kind == "requant":
            mode = PostMode.DYADIC if kernel.post_mode == "dyadic" else PostMode.ORT
            asm.post(mode, m=kernel.tm, n=tn, acc=(t % 2) * acc_half,
                     param=(t % 2) * param_half, out=(t % 2) * out_half,
                     out_unsigned=kernel.out_unsigned, bias=True, push_prev=True, push_next=True)
            size = kernel.tm * o_lines * line
            asm.store(Buffer.OUT, sram=(t % 2) * out_half, dram=out_addr, rows=kernel.tm,
                      row_lines=o_lines, stride=o_lines * line, pop_prev=True, push_prev=True)
        else:
            asm.post(PostMode.ACC, m=kernel.tm, n=tn, acc=(t % 2) * acc_half,
                     param=(t % 2) * param_half, bias=True, push_prev=True, push_next=True)
            a_lines = _lines(kernel.tm * tn * 4, line)
            size = a_lines * line
            asm.store(Buffer.ACC, sram=(t % 2) * acc_half * 4 // line, dram=out_addr, rows=1,
                      row_lines=a_lines, stride=a_lines * line, pop_prev=True, push_prev=True)
        out_addr += size
    asm.end()
    return asm.assemble()


def _meta_lines(kernel: Kernel, tk: int, line: int) -> int:
    """WGT lines of one channel's group metadata in a K tile of ``tk`` (0 without)."""
    if not kernel.group_size:
        return 0
    from trilobit.sim.golden import meta_row_lines

    return meta_row_lines(tk, kernel.group_size, line)


def kernel_out_tiles(kernel: Kernel, line: int) -> list[int]:
    sizes = []
    for n0 in range(0, kernel.n, kernel.tn):
        tn = min(kernel.tn, kernel.n - n0)
        if kernel.out_kind == "requant":
            sizes.append(kernel.tm * _lines(tn, line) * line)
        else:
            sizes.append(_lines(kernel.tm * tn * 4, line) * line)
    return sizes


def estimate_cycles(kernel: Kernel, config: AcceleratorConfig) -> int:
    """Cycles of one run from the golden model's cycle model, units overlapped: the busiest
    unit's total plus the first load and the last store (pipeline fill and drain)."""
    from trilobit.sim.golden import CycleModel

    cm = CycleModel(config)
    line = config.line_bytes
    wfmt = WeightEncoding(kernel.wfmt)
    load = compute = store = 0
    first_load = last_store = 0
    for n0 in range(0, kernel.n, kernel.tn):
        tn = min(kernel.tn, kernel.n - n0)
        for kt, k0 in enumerate(range(0, kernel.k, kernel.tk)):
            tk = min(kernel.tk, kernel.k - k0)
            step_load = cm.transfer(kernel.tm, _lines(tk, line)) + cm.transfer(
                tn, _lines(_lines(tk * weight_bits(wfmt), 8), line))
            if kernel.group_size:
                step_load += cm.transfer(tn, _meta_lines(kernel, tk, line))
            if kt == 0:
                step_load += cm.transfer(1, _lines(tn * 16, line))
            first_load = first_load or step_load
            load += step_load
            compute += cm.gemm(kernel.engine, kernel.wfmt, kernel.tm, tn, tk,
                               bool(kernel.group_size))
        compute += cm.post(kernel.tm, tn)
        last_store = cm.transfer(kernel.tm, _lines(tn, line))
        store += last_store
    return max(load, compute, store) + first_load + last_store


# -- whole graph ------------------------------------------------------------------------------


def _rows_hint(graph: ir.Graph, node: ir.QMatMul, batch: int) -> int:
    if isinstance(node, ir.QConv):
        info = graph.tensors.get(node.outputs[0])
        if info and len(info.shape) == 4 and all(isinstance(d, int) and d > 0
                                                  for d in info.shape[2:]):
            return batch * info.shape[2] * info.shape[3]
        return 64
    return batch


def _kernel_specs(node: ir.Node, config: AcceleratorConfig) -> list[dict]:
    """(weights W' (K, N), bias, out_kind, per-group plan, ...) per kernel of an engine node."""
    # BitMoD per-group weights: one kernel over all of K (legalise checked the plan exists).
    plan = group_plan(node, config) if getattr(node, "int_block_scale", None) is not None \
        else None
    if isinstance(node, ir.WeightOnlyMatMul):
        specs = []
        k = node.b.shape[0]
        for j, k0 in enumerate(range(0, k, node.block_size)):
            blk = node.b[k0 : k0 + node.block_size].astype(np.int64)
            zp = 0 if node.zero_point is None else node.zero_point[j]
            specs.append(dict(w=blk - zp, split_k=False, bias=None, out_kind="int32",
                              a_dtype="int8", plan=plan,
                              a_zp=0, multiplier=None, y_zp=0, y_dtype="int8",
                              name=f"{node.name}#k{j}"))
        return specs
    weights = _weights_of(node)
    # Batched (B, K, N) weights: one kernel per batch index, run on that activation slice.
    slices = [(weights, node.name)] if weights.ndim == 2 else [
        (weights[i], f"{node.name}#b{i}") for i in range(weights.shape[0])]
    specs = []
    for wi, name in slices:
        w = wi.astype(np.int64) - np.asarray(node.b_zero_point, np.int64)
        split = plan is None and bool(w.size) and (w.min() < -128 or w.max() > 127)
        if split:
            # Exact: W' = clip(W', int8) + remainder, both halves int8, accumulated in ACC.
            w_a = np.clip(w, -128, 127)
            w = np.concatenate([w_a, w - w_a], axis=0)
        out_kind = "requant" if node.out == "requant" else "int32"
        specs.append(dict(w=w, split_k=split, bias=node.bias, out_kind=out_kind, plan=plan,
                          a_dtype=node.a_dtype, a_zp=node.a_zero_point,
                          multiplier=node.multiplier, y_zp=node.y_zero_point,
                          y_dtype=node.y_dtype, name=name))
    return specs


POST_MODES = ("ort", "dyadic", "host")


def compile_graph(graph: ir.Graph, config: AcceleratorConfig | str | None = None,
                  batch: int = 1, post_mode: str = "ort") -> CompiledGraph:
    """Legalise, tile, pack, schedule and emit every engine node of ``graph``.

    ``post_mode`` chooses how requantized outputs are produced (see :class:`Kernel`).
    """
    if post_mode not in POST_MODES:
        raise ConfigError(f"post_mode must be one of {POST_MODES}, got {post_mode!r}")
    t0 = time.perf_counter()
    config = resolve_config(config)
    graph = legalise(graph, config)
    graph = dataclasses.replace(graph, nodes=[fit_engine(n, config) for n in graph.nodes])
    if post_mode == "ort" and "ort" not in config.requant_modes:
        # No float32 requantizer in this accelerator (config.requant_modes): dyadic instead.
        post_mode = "dyadic"
        graph = dataclasses.replace(graph, nodes=[_note_dyadic(n) for n in graph.nodes])
    elif post_mode in config.requant_modes + ("host",):
        pass
    else:
        raise ConfigError(f"post_mode {post_mode!r} is not built into this accelerator "
                          f"(config.requant_modes = {config.requant_modes})")
    _require_engine_work(graph)
    line = config.line_bytes
    kernels: dict[str, list[Kernel]] = {}
    weight_blobs: list[tuple[Kernel, bytes, bytes]] = []
    packed = 0
    for node in graph.nodes:
        if node.engine not in ("tlmm", "bitserial"):
            continue
        node_kernels = []
        for spec in _kernel_specs(node, config):
            w, plan = spec["w"], spec["plan"]
            k, n = w.shape
            if plan is not None:
                engine, wfmt = Engine.BITSERIAL, WeightEncoding[plan.fmt.name]
            else:
                engine, wfmt = weight_encoding(node, w)
            if engine == Engine.TLMM and config.tlmm is None:
                engine, wfmt = Engine.BITSERIAL, WeightEncoding.INT3
            rows = _rows_hint(graph, node, batch) if isinstance(node, ir.QMatMul) else batch
            out_kind = spec["out_kind"]
            mode = post_mode if out_kind == "requant" else "ort"
            if mode == "host":
                out_kind = "int32"
            group_size = plan.group_size if plan is not None else 0
            tm, tk, tn = plan_tiles(config, k, n, wfmt, rows, out_kind, group_size)
            flip = spec["a_dtype"] == "uint8"
            a_offset = 128 if flip else 0
            colsum = w.sum(axis=0).astype(np.int64)
            kernel = Kernel(
                node=spec["name"], engine=int(engine), wfmt=int(wfmt), tm=tm, k=k, n=n,
                tk=tk, tn=tn, flip=flip, out_kind=out_kind, post_mode=mode,
                split_k=spec["split_k"], group_size=group_size,
                out_unsigned=spec["y_dtype"] == "uint8", colsum=colsum,
                multiplier=spec["multiplier"], y_zero_point=int(spec["y_zp"]),
                a_offset=a_offset, inp_row_bytes=_lines(k, line) * line,
                macs_per_run=tm * k * n,
            )
            kernel.bias = folded_bias(spec["bias"], colsum, a_offset, int(spec["a_zp"]))
            wblob, pblob = pack_kernel(kernel, w, line, plan)
            packed += w.size
            kernel.params_len = len(pblob)
            kernel.out_tile_bytes = kernel_out_tiles(kernel, line)
            kernel.est_cycles_per_run = estimate_cycles(kernel, config)
            weight_blobs.append((kernel, wblob, pblob))
            node_kernels.append(kernel)
        kernels[node.name] = node_kernels
    # Memory image: [instructions | constants (weights, params) | scratch (inp, out)].
    all_kernels = [k for ks in kernels.values() for k in ks]
    # Instruction sizes do not depend on addresses: emit once to measure, then for real.
    sizes = [len(emit_kernel(k, config)) for k in all_kernels]
    prog_bytes = sum(sizes)
    constants_addr = _align(prog_bytes, max(line, 64))
    cursor = constants_addr
    constants = bytearray()
    for kernel, wblob, pblob in weight_blobs:
        kernel.weights_addr = cursor
        constants += wblob
        cursor += len(wblob)
        kernel.params_addr = cursor
        constants += pblob
        cursor += len(pblob)
    scratch_addr = _align(cursor, 64)
    inp_size = max((k.tm * k.inp_row_bytes for k in all_kernels), default=0)
    out_size = max((sum(k.out_tile_bytes) for k in all_kernels), default=0)
    insns = bytearray()
    for kernel, size in zip(all_kernels, sizes, strict=True):
        kernel.inp_addr = scratch_addr
        kernel.out_addr = _align(scratch_addr + inp_size, 64)
        kernel.prog_addr = len(insns)
        code = emit_kernel(kernel, config)
        assert len(code) == size
        kernel.prog_len = len(code) // INSN_BYTES
        insns += code
    memory_bytes = _align(scratch_addr + _align(inp_size, 64) + out_size + 64, 4096)
    return CompiledGraph(
        config=config, graph=graph, kernels=kernels, instructions=bytes(insns),
        constants=bytes(constants), constants_addr=constants_addr, scratch_addr=scratch_addr,
        memory_bytes=memory_bytes, compile_seconds=time.perf_counter() - t0,
        weights_packed=packed,
    )


def _note_dyadic(node: ir.Node) -> ir.Node:
    """Say in the node's reason (compile report) that its outputs are requantized dyadic."""
    if node.engine not in ("tlmm", "bitserial") or getattr(node, "out", None) != "requant":
        return node
    note = "requantization dyadic (no ort in config.requant_modes): at most 1 LSB from onnxruntime"
    return dataclasses.replace(node, reason=f"{node.reason}; {note}" if node.reason else note)


_FLOAT_COMPUTE = ("MatMul", "Gemm", "Conv", "ConvTranspose")


def _require_engine_work(graph: ir.Graph) -> None:
    """A model none of whose products reach an engine is not quantized (or not supported):
    say so, naming the node, rather than silently running everything on the host."""
    if any(n.engine in ("tlmm", "bitserial") for n in graph.nodes):
        return
    float_ops = [n for n in graph.nodes if isinstance(n, ir.HostOp) and n.op_type in
                 _FLOAT_COMPUTE]
    if float_ops:
        n = float_ops[0]
        raise ModelError(
            f"model is not quantized: {n.op_type} node {n.name!r} computes in float and no "
            f"node maps to an accelerator engine (quantize it with onnxruntime.quantization)")
    host = [n for n in graph.nodes if n.engine == "host"]
    detail = f"; e.g. node {host[0].name!r}: {host[0].reason}" if host else ""
    raise ModelError(f"no node of the model maps to an accelerator engine{detail}")


def _align(x: int, a: int) -> int:
    return -(-x // a) * a


def compile_model(model, config: AcceleratorConfig | str | None = None, batch: int = 1,
                  post_mode: str = "ort"):
    """Import an ONNX model and compile it into a :class:`trilobit.sw.program.Program`."""
    from trilobit.sw.onnx_import import import_model
    from trilobit.sw.program import Program

    t0 = time.perf_counter()
    compiled = compile_graph(import_model(model), config, batch=batch, post_mode=post_mode)
    compiled.compile_seconds = time.perf_counter() - t0
    return Program.from_compiled(compiled)
