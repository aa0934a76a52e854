"""Legalisation: decide which engine runs each IR node.

* QMatMul / QConv with INT8/UINT8 activations:
    - weights all in {-1, 0, +1} with zero point 0 (int8, int4 or int2 initializers) ->
      ``tlmm``, the ternary table-lookup engine (weights are re-typed ``"ternary"``);
    - other integer weights of 2..8 bits -> ``bitserial`` (INT weights as radix-4 Booth
      digits, 2 bits per cycle);
    - grouped convolutions, wider types -> ``host``.
* WeightOnlyMatMul (float activations, low-bit weights) -> ``bitserial`` with activations
  quantized per row to INT8 on the fly.
* BitMoD per-group weights (``int_block_scale`` set by the importer) -> ``bitserial`` with
  per-group type ids and integer scales (:func:`group_plan`) when every engine group lies in
  one block; otherwise weight-only products go back to their per-block form (INT8 weights,
  one kernel per block) and QDQ products to the host, the reason saying why.
* Quantize / Dequantize / DynamicQuantize / QAdd on INT8/UINT8 -> ``post`` (the
  post-processing unit); other formats -> ``host``.
* HostOp -> ``host``.

A configuration without an engine (``config.tlmm`` / ``config.bitserial`` false or absent)
sends that engine's nodes to the host with a reason saying so.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from trilobit.errors import QuantizationError
from trilobit.sw import ir
from trilobit.sw.bitmod import GroupPlan, block_values, plan_groups

__all__ = ["legalise", "is_ternary", "group_plan"]

_ACT_TYPES = ("int8", "uint8")
_WEIGHT_TYPES = ("int2", "int3", "int4", "int5", "int6", "int7", "int8",
                 "uint2", "uint4", "uint8")


def is_ternary(values: np.ndarray, zero_point) -> bool:
    """All weights in {-1, 0, +1} and a zero (or absent) zero point."""
    zp = np.asarray(0 if zero_point is None else zero_point)
    v = np.asarray(values)
    return bool(v.size) and not np.any(zp) and bool(np.isin(v, (-1, 0, 1)).all())


def _engine_present(config, engine: str) -> bool:
    if config is None:
        return True
    flag = getattr(config, engine, None)
    if flag is None:
        flag = getattr(config, f"has_{engine}", True)
    return bool(flag)


def group_plan(node: ir.QMatMul | ir.WeightOnlyMatMul, config) -> GroupPlan:
    """The bit-serial engine's per-group form of a node with BitMoD per-group weights
    (``int_block_scale`` set). Raises QuantizationError saying why it has none."""
    from trilobit.config import BitSerialParams

    params = getattr(config, "bitserial", None) or BitSerialParams()
    values = block_values(node.b, node.int_block_scale, node.int_block_size)
    return plan_groups(values, node.int_block_scale, node.int_block_size, params.group_size)


def _per_block_form(node: ir.WeightOnlyMatMul) -> ir.WeightOnlyMatMul:
    """The same product as one int8 kernel per block with float block scales."""
    shift_scale = node.scale.reshape(-1)[0]  # 2**-shift
    scale = (node.int_block_scale * shift_scale).astype(np.float32)
    return dataclasses.replace(
        node, b=block_values(node.b, node.int_block_scale, node.int_block_size), scale=scale,
        block_size=node.int_block_size, int_block_scale=None, int_block_size=0)


def _assign(node: ir.Node, config) -> ir.Node:
    def to(engine: str, reason: str) -> ir.Node:
        if engine in ("tlmm", "bitserial") and not _engine_present(config, engine):
            return dataclasses.replace(
                node, engine="host", reason=f"the configuration has no {engine} engine")
        return dataclasses.replace(node, engine=engine, reason=reason)

    if isinstance(node, ir.QMatMul):
        if node.a_dtype not in _ACT_TYPES:
            return to("host", f"activations of type {node.a_dtype} (engines take int8/uint8)")
        if isinstance(node, ir.QConv) and node.group != 1:
            return to("host", f"grouped convolution (group={node.group})")
        if node.int_block_scale is not None:
            try:
                plan = group_plan(node, config)
            except QuantizationError as exc:
                return to("host", f"BitMoD per-group weights off the engine: {exc}")
            return to("bitserial", f"BitMoD per-group weights, {plan.describe()} ({node.kind})")
        weights = node.weight if isinstance(node, ir.QConv) else node.b
        if is_ternary(weights, node.b_zero_point):
            node = dataclasses.replace(node, b_dtype="ternary")
            return to("tlmm", f"ternary weights ({node.kind})")
        if node.b_dtype in _WEIGHT_TYPES:
            return to("bitserial", f"{node.b_dtype} weights ({node.kind})")
        return to("host", f"weights of type {node.b_dtype}")
    if isinstance(node, ir.WeightOnlyMatMul):
        if node.int_block_scale is not None:
            try:
                plan = group_plan(node, config)
                return to("bitserial", f"BitMoD per-group weight-only, {plan.describe()}; "
                                       "INT8 activations per row")
            except QuantizationError as exc:
                node = _per_block_form(node)
                return to("bitserial", f"{node.b_dtype} weight-only per block of "
                                       f"{node.block_size}, INT8 activations per row (no "
                                       f"per-group metadata: {exc})")
        note = f" ({node.reason})" if node.reason else ""  # the importer's, e.g. why no groups
        return to("bitserial", f"{node.b_dtype} weight-only, INT8 activations per row{note}")
    if isinstance(node, (ir.Quantize, ir.Dequantize)):
        layout = ("blocked" if node.block_size else
                  "per-axis" if np.size(node.scale) > 1 else "per-tensor")
        return to("post", f"{layout} {node.dtype} {node.kind.lower()}")
    if isinstance(node, ir.DynamicQuantize):
        return to("post", "uint8 dynamic quantization (min/max reduction)")
    if isinstance(node, ir.QAdd):
        return to("post", f"{node.dtype} quantized add")
    return dataclasses.replace(node, engine="host", reason=node.reason or "no accelerator mapping")


def legalise(graph: ir.Graph, config=None) -> ir.Graph:
    """A copy of ``graph`` with every node's ``engine`` and ``reason`` set."""
    return dataclasses.replace(graph, nodes=[_assign(n, config) for n in graph.nodes])
