"""``trilobit quantize-weights``: BitMoD per-group datatype search on a weight tensor.

Reads a 2-D weight matrix from an ``.npy`` file or an ONNX initializer, runs
:func:`trilobit.sw.bitmod.quantize_bitmod`, prints the per-type group counts and the weight
MSE next to round-to-nearest INT and plain FP references at the same group size, and writes
an ``.npz`` with ``codes``, ``type_ids``, ``scale_int``, ``shift``, ``fmt``, ``group_size``
and, with ``--columns/--width``, the engine's weight beats in stream order.

With an ONNX model and ``-o OUT.onnx`` it rewrites the float weight ``--initializer W`` (or,
with ``--all``, every float weight of a MatMul/Gemm, and every int8 weight a QDQ model's
DequantizeLinear feeds to one) into the per-group ONNX form that
onnxruntime runs as is: the integer-form values in an int8 initializer ``W.bitmod``, the
block scales ``scale_int * 2**-shift`` in a float32 initializer ``W.scale`` and an opset-21
blocked ``DequantizeLinear(axis=0, block_size=group_size)`` whose output keeps the name
``W``. A Gemm using the weight becomes MatMul (+ Add of its bias). In a QDQ model the weight's
DequantizeLinear is rewritten in place (the int8 weights are dequantized and searched again)
and a Gemm's int32 bias is requantized to the accumulator unit ``a_scale * 2**-shift``.
Everything else is kept.
The compiler recognises the form from the values and runs it on the bit-serial engine with
per-group type ids and scales (``docs/compiler.md``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from trilobit.errors import ConfigError, ModelError
from trilobit.hw.bitserial_format import WeightFormat
from trilobit.sw.bitmod import (
    BitModWeights,
    candidate_types,
    onnx_block_arrays,
    pack_engine_tiles,
    quantize_bitmod,
    quantize_rtn,
)

__all__ = ["register", "load_weights", "matmul_weights", "qdq_matmul_weights",
           "quantize_model_weights"]

#: Opset of blocked DequantizeLinear (``block_size``).
BLOCKED_DQ_OPSET = 21


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "quantize-weights", help="per-group BitMoD datatype search on a weight tensor",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", type=Path, help=".npy file or .onnx model")
    parser.add_argument("--initializer", help="initializer name (ONNX source)")
    parser.add_argument("--in-axis", type=int, choices=(0, 1), default=None,
                        help="axis of the input channels (the group axis); default 1 for "
                             ".npy (out, in) and 0 for ONNX MatMul weights (in, out)")
    parser.add_argument("--format", default="fp4",
                        help="fp3, fp4 (BitMoD candidates) or int3/int4/int6/int8 (default fp4)")
    parser.add_argument("--group-size", type=int, default=128, help="default 128")
    parser.add_argument("--scale-bits", type=int, default=8, help="default 8")
    parser.add_argument("--columns", type=int, help="engine columns (to write weight beats)")
    parser.add_argument("--width", type=int, help="engine width (to write weight beats)")
    parser.add_argument("--all", action="store_true",
                        help="ONNX -> ONNX: quantize every float MatMul/Gemm weight")
    parser.add_argument("-o", "--output", type=Path,
                        help=".npz to write, or .onnx: the model with the weight(s) in the "
                             "per-group ONNX form")
    parser.set_defaults(handler=_run)


def load_weights(source: Path, initializer: str | None) -> np.ndarray:
    """A 2-D float weight matrix from ``.npy`` or an ONNX initializer (dequantized when the
    initializer is integer: its raw values are returned)."""
    if not source.is_file():
        raise ConfigError(f"source {str(source)!r} does not exist")
    if source.suffix == ".npy":
        w = np.load(source)
    elif source.suffix == ".onnx":
        import onnx
        from onnx import numpy_helper

        model = onnx.load(str(source))
        inits = {i.name: i for i in model.graph.initializer}
        if initializer is None:
            names = [n for n, i in inits.items() if len(i.dims) == 2]
            raise ConfigError(f"--initializer is required for ONNX; 2-D initializers: {names}")
        if initializer not in inits:
            raise ModelError(f"initializer {initializer!r} not in {source}")
        w = numpy_helper.to_array(inits[initializer])
    else:
        raise ConfigError(f"source must be .npy or .onnx, got {source.suffix!r}")
    w = np.asarray(w, dtype=np.float64)
    if w.ndim != 2:
        raise ConfigError(f"weights must be 2-D, got shape {w.shape}")
    return w


def _run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    fmt = WeightFormat.parse(args.format)
    if args.group_size < 1:
        raise ConfigError(f"--group-size must be >= 1, got {args.group_size}")
    if not 1 <= args.scale_bits <= 16:
        raise ConfigError(f"--scale-bits must be in 1..16, got {args.scale_bits}")
    if args.output is not None and args.output.suffix == ".onnx":
        return _run_onnx(args, fmt)
    if args.all:
        raise ConfigError("--all needs an ONNX source and an .onnx output (-o OUT.onnx)")
    w = load_weights(args.source, args.initializer)
    in_axis = args.in_axis if args.in_axis is not None else (0 if args.source.suffix == ".onnx"
                                                             else 1)
    if in_axis == 0:
        w = w.T  # groups run along the input channels: (out, in)
    q = quantize_bitmod(w, fmt, args.group_size, args.scale_bits)
    mse = float(np.mean((q.dequantize() - w) ** 2))
    table = Table(title=f"{args.source.name}: {w.shape[0]} x {w.shape[1]} (out x in), "
                        f"group {args.group_size}")
    for col in ("scheme", "bits/weight", "MSE", "groups per type"):
        table.add_column(col)
    counts = np.bincount(q.type_ids.ravel(), minlength=len(candidate_types(fmt)))
    table.add_row(f"{fmt.name.lower()} per-group", f"{q.bits_per_weight():.4f}", f"{mse:.4e}",
                  ", ".join(f"{n}: {int(c)}" for n, c in zip(candidate_types(fmt), counts,
                                                             strict=True)))
    meta = args.scale_bits / args.group_size
    refs = [f"int{fmt.bits}"] + (["fp4_e2m1"] if fmt.bits == 4 else [])
    for ref in refs:
        ref_mse = float(np.mean((quantize_rtn(w, ref, args.group_size, args.scale_bits) - w)
                                ** 2))
        table.add_row(f"{ref} RTN", f"{fmt.bits + meta:.4f}", f"{ref_mse:.4e}", "")
    Console().print(table)
    if args.output:
        extra = {}
        if args.columns or args.width:
            if not (args.columns and args.width):
                raise ConfigError("--columns and --width go together")
            tiles = pack_engine_tiles(q, args.columns, args.width)
            extra["weight_beats"] = np.stack([t["weights"] for t in tiles])
        np.savez(args.output, codes=q.codes, type_ids=q.type_ids, scale_int=q.scale_int,
                 shift=q.shift, fmt=int(fmt), group_size=q.group_size, k=q.k, **extra)
        print(f"wrote {args.output}")
    return 0


# -- ONNX -> ONNX ------------------------------------------------------------------------------


def matmul_weights(model) -> list[str]:
    """Names of the float 2-D initializers used as input B of a MatMul or Gemm, in order."""
    from onnx import TensorProto

    inits = {i.name: i for i in model.graph.initializer}
    names: list[str] = []
    for node in model.graph.node:
        if node.op_type in ("MatMul", "Gemm") and node.domain in ("", "ai.onnx") \
                and len(node.input) > 1 and node.input[1] in inits:
            init = inits[node.input[1]]
            if init.data_type == TensorProto.FLOAT and len(init.dims) == 2 \
                    and init.name not in names:
                names.append(init.name)
    return names


def qdq_matmul_weights(model) -> list[str]:
    """Names of the integer initializers a DequantizeLinear (per tensor or per axis) turns
    into input B of a MatMul or Gemm (the weights of a QDQ model), in order."""
    inits = {i.name for i in model.graph.initializer}
    names: list[str] = []
    for node in model.graph.node:
        if node.op_type == "DequantizeLinear" and node.input[0] in inits \
                and _qdq_weight(model, node.input[0], strict=False) is not None \
                and node.input[0] not in names:
            names.append(node.input[0])
    return names


def _qdq_weight(model, name: str, strict: bool = True):
    """(DequantizeLinear node, indices of its MatMul/Gemm readers) when integer initializer
    ``name`` is a QDQ weight; else ConfigError naming it (``strict``) or None."""
    from onnx import helper

    def no(why: str):
        if strict:
            raise ConfigError(f"initializer {name!r} is not the 2-D weight of a MatMul or Gemm: "
                              f"{why}")
        return None

    nodes = model.graph.node
    readers = [n for n in nodes if name in n.input]
    if len(readers) != 1 or readers[0].op_type != "DequantizeLinear" \
            or readers[0].input[0] != name:
        return no("it is read other than by one DequantizeLinear")
    dq = readers[0]
    if any(a.name == "block_size" and helper.get_attribute_value(a) for a in dq.attribute):
        return no("it is already blocked")
    init = next(i for i in model.graph.initializer if i.name == name)
    if len(init.dims) != 2:
        return no(f"it has shape {tuple(init.dims)}, not 2-D")
    users = [i for i, n in enumerate(nodes) if dq.output[0] in n.input]
    for i in users:
        node = nodes[i]
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type not in ("MatMul", "Gemm") or list(node.input).index(dq.output[0]) != 1 \
                or attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0 \
                or attrs.get("transA", 0):
            return no(f"its DequantizeLinear output feeds {node.op_type} "
                      f"{node.name!r} other than as a plain MatMul/Gemm B")
    if not users or len({_trans_b(nodes[i]) for i in users}) > 1:
        return no("no MatMul/Gemm reads it in one orientation")
    return dq, users


def _weight_users(model, name: str) -> list[int]:
    """Indices of the nodes reading ``name``; ConfigError naming it unless each reads it as
    a 2-D float MatMul B or a Gemm B (alpha = beta = 1, transA = 0)."""
    from onnx import TensorProto, helper

    inits = {i.name: i for i in model.graph.initializer}
    if name not in inits:
        raise ModelError(f"initializer {name!r} is not in the model; float MatMul/Gemm "
                         f"weights: {matmul_weights(model)}")
    init = inits[name]
    index = [i for i, n in enumerate(model.graph.node) if name in n.input]
    users = [model.graph.node[i] for i in index]
    why = None
    if init.data_type != TensorProto.FLOAT:
        why = f"its type is {TensorProto.DataType.Name(init.data_type)}, not FLOAT"
    elif len(init.dims) != 2:
        why = f"it has shape {tuple(init.dims)}, not 2-D"
    elif not users:
        why = "no node reads it"
    for node in users if why is None else []:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if why is not None:
            break
        if node.op_type not in ("MatMul", "Gemm") or list(node.input).index(name) != 1:
            why = f"node {node.name or node.op_type!r} ({node.op_type}) reads it as other " \
                  f"than input B of a MatMul/Gemm"
        elif node.op_type == "Gemm" and (attrs.get("alpha", 1.0) != 1.0
                                         or attrs.get("beta", 1.0) != 1.0
                                         or attrs.get("transA", 0)):
            why = f"Gemm {node.name!r} has alpha/beta != 1 or transA"
    if why is None and len({_trans_b(n) for n in users}) > 1:
        why = "Gemm nodes read it both transposed and not"
    if why is not None:
        raise ConfigError(f"initializer {name!r} is not the 2-D float weight of a MatMul or "
                          f"Gemm: {why}")
    return index


def _trans_b(node) -> bool:
    from onnx import helper

    return node.op_type == "Gemm" and any(
        a.name == "transB" and helper.get_attribute_value(a) for a in node.attribute)


def _unique(name: str, taken: set[str]) -> str:
    out, i = name, 1
    while out in taken:
        out, i = f"{name}_{i}", i + 1
    taken.add(out)
    return out


def quantize_model_weights(model, names: list[str], fmt: WeightFormat | str = "fp4",
                           group_size: int = 128, scale_bits: int = 8):
    """A copy of ``model`` with each float weight in ``names`` in the per-group ONNX form
    (module docstring). Returns ``(model, results)``: ``results[name]`` is the
    :class:`~trilobit.sw.bitmod.BitModWeights` of that weight and the float weight it
    quantized, both (N, K) (groups along K).

    The model's default opset is raised to 21 when lower (onnx's version converter); a
    weight that is not a 2-D float MatMul/Gemm B raises ConfigError naming it.
    """
    import onnx
    from onnx import helper, numpy_helper, version_converter

    fmt = WeightFormat.parse(fmt)
    if scale_bits > 8:
        raise ConfigError(f"--scale-bits must be <= 8 for the engine's group scale, got "
                          f"{scale_bits}")
    model = onnx.ModelProto.FromString(model.SerializeToString())
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < BLOCKED_DQ_OPSET:
        try:
            model = version_converter.convert_version(model, BLOCKED_DQ_OPSET)
        except Exception as exc:
            raise ModelError(f"model opset {opset} < {BLOCKED_DQ_OPSET} (blocked "
                             f"DequantizeLinear) and onnx cannot convert it: {exc}") from exc
    model.ir_version = max(model.ir_version, 10)
    graph = model.graph
    taken = {i.name for i in graph.initializer} | {o for n in graph.node for o in n.output} \
        | {i.name for i in graph.input}
    results: dict[str, tuple[BitModWeights, np.ndarray]] = {}
    dq_nodes, new_nodes = [], []
    replaced: dict[int, list] = {}  # node index -> its replacement nodes
    for name in dict.fromkeys(names):
        init = next((i for i in graph.initializer if i.name == name), None)
        if init is not None and init.data_type != onnx.TensorProto.FLOAT \
                and any(n.op_type == "DequantizeLinear" for n in graph.node if name in n.input):
            results[name] = _rewrite_qdq_weight(model, name, fmt, group_size, scale_bits, taken)
            continue
        users = _weight_users(model, name)
        w = numpy_helper.to_array(init).astype(np.float64)
        transposed = _trans_b(graph.node[users[0]])
        w_kn = w.T if transposed else w
        q = quantize_bitmod(w_kn.T, fmt, group_size, scale_bits)
        values, scales = onnx_block_arrays(q)
        v_name, s_name = _unique(f"{name}.bitmod", taken), _unique(f"{name}.scale", taken)
        out = _unique(f"{name}.kn", taken) if transposed else name
        graph.initializer.remove(init)
        graph.initializer.extend([numpy_helper.from_array(values, v_name),
                                  numpy_helper.from_array(scales, s_name)])
        for inp in [i for i in graph.input if i.name == name]:
            graph.input.remove(inp)
        dq_nodes.append(helper.make_node("DequantizeLinear", [v_name, s_name], [out],
                                         name=_unique(f"{name}.dequantize", taken),
                                         axis=0, block_size=q.group_size))
        for i in users:
            replaced[i] = _as_matmul(graph.node[i], out, taken)
        results[name] = (q, w_kn.T)
    for name, (q, _) in results.items():
        counts = np.bincount(q.type_ids.ravel(), minlength=len(candidate_types(fmt)))
        helper.set_model_props(model, {**{p.key: p.value for p in model.metadata_props},
                                       f"trilobit.bitmod.{name}": json.dumps({
            "format": fmt.name.lower(), "group_size": q.group_size, "shift": q.shift,
            "groups": {n: int(c) for n, c in zip(candidate_types(fmt), counts, strict=True)},
        })})
    for i, node in enumerate(graph.node):
        new_nodes.extend(replaced.get(i, [node]))
    del graph.node[:]
    graph.node.extend(dq_nodes + new_nodes)
    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ModelError(f"the rewritten model does not check: {exc}") from exc
    return model, results


def _rewrite_qdq_weight(model, name: str, fmt: WeightFormat, group_size: int, scale_bits: int,
                        taken: set[str]) -> tuple[BitModWeights, np.ndarray]:
    """Requantize the QDQ weight ``name`` (per tensor / per axis) into the per-group form in
    place: its DequantizeLinear reads the new values and block scales; a Gemm bias
    ``DequantizeLinear(int32)`` is requantized to the accumulator unit
    ``a_scale * 2**-shift`` when the activation scale is a constant, so it stays exact."""
    from onnx import helper, numpy_helper

    from trilobit.quant import dequantize_linear
    from trilobit.sw.onnx_import import ONNX_TO_DTYPE

    graph = model.graph
    dq, users = _qdq_weight(model, name)
    inits = {i.name: i for i in graph.initializer}

    def const(n: str) -> np.ndarray | None:
        return numpy_helper.to_array(inits[n]) if n in inits else None

    attrs = {a.name: helper.get_attribute_value(a) for a in dq.attribute}
    zp = const(dq.input[2]) if len(dq.input) > 2 and dq.input[2] else None
    w = dequantize_linear(const(name), const(dq.input[1]), zp,
                          dtype=ONNX_TO_DTYPE.get(inits[name].data_type, "int8"),
                          axis=attrs.get("axis", 1)).astype(np.float64)
    transposed = _trans_b(graph.node[users[0]])
    w_nk = w if transposed else w.T
    q = quantize_bitmod(w_nk, fmt, group_size, scale_bits)
    values, scales = onnx_block_arrays(q)
    v_name, s_name = _unique(f"{name}.bitmod", taken), _unique(f"{name}.scale", taken)
    graph.initializer.extend([
        numpy_helper.from_array(values.T.copy() if transposed else values, v_name),
        numpy_helper.from_array(scales.T.copy() if transposed else scales, s_name)])
    old = [n for n in dq.input if n]
    del dq.input[:]
    dq.input.extend([v_name, s_name])
    del dq.attribute[:]
    dq.attribute.extend([helper.make_attribute("axis", 1 if transposed else 0),
                         helper.make_attribute("block_size", q.group_size)])
    for i in users:
        node = graph.node[i]
        producers = {o: n for n in graph.node for o in n.output}
        act = producers.get(node.input[0])
        bias = producers.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        if bias is None or bias.op_type != "DequantizeLinear" or act is None \
                or act.op_type != "DequantizeLinear" or const(act.input[1]) is None \
                or const(act.input[1]).size != 1 or const(bias.input[0]) is None:
            continue
        b_zp = const(bias.input[2]) if len(bias.input) > 2 and bias.input[2] else 0
        b_float = ((const(bias.input[0]).astype(np.int64) - b_zp).astype(np.float32)
                   * const(bias.input[1]).astype(np.float32))  # 1-D bias: axis 0 or scalar
        unit = np.float32(const(act.input[1]).reshape(())) * np.float32(2.0 ** -q.shift)
        b_int = np.rint(b_float.astype(np.float64) / np.float64(unit))
        if np.abs(b_int).max(initial=0) >= 2**31:
            continue
        b_name, u_name = _unique(f"{bias.input[0]}.acc", taken), _unique(f"{name}.unit", taken)
        graph.initializer.extend([numpy_helper.from_array(b_int.astype(np.int32), b_name),
                                  numpy_helper.from_array(np.array(unit, np.float32), u_name)])
        old += [n for n in bias.input if n]
        del bias.input[:]
        bias.input.extend([b_name, u_name])
        del bias.attribute[:]
    still_read = {n for node in graph.node for n in node.input}
    for n in dict.fromkeys(old):
        if n in inits and n not in still_read:
            graph.initializer.remove(inits[n])
    return q, w_nk


def _as_matmul(node, weight: str, taken: set[str]) -> list:
    """``node`` reading the (K, N) float weight ``weight``: MatMul as is, Gemm as MatMul
    (+ Add of its bias ``C``)."""
    from onnx import helper

    if node.op_type == "MatMul":
        return [node]
    name = node.name or node.output[0]
    if len(node.input) < 3 or not node.input[2]:
        return [helper.make_node("MatMul", [node.input[0], weight], [node.output[0]],
                                 name=name)]
    product = _unique(f"{name}.matmul", taken)
    return [helper.make_node("MatMul", [node.input[0], weight], [product], name=name),
            helper.make_node("Add", [product, node.input[2]], [node.output[0]],
                             name=_unique(f"{name}.add", taken))]


def _run_onnx(args: argparse.Namespace, fmt: WeightFormat) -> int:
    import onnx
    from rich.console import Console
    from rich.table import Table

    if args.source.suffix != ".onnx" or not args.source.is_file():
        raise ConfigError(f"an .onnx output needs an existing .onnx source, got "
                          f"{str(args.source)!r}")
    if args.all == (args.initializer is not None):
        raise ConfigError("give exactly one of --initializer NAME and --all")
    if args.in_axis is not None or args.columns or args.width:
        raise ConfigError("--in-axis/--columns/--width do not apply to an .onnx output (groups "
                          "run along K of the MatMul)")
    model = onnx.load(str(args.source))
    names = matmul_weights(model) + qdq_matmul_weights(model) if args.all \
        else [args.initializer]
    if not names:
        raise ModelError(f"{args.source} has no 2-D MatMul/Gemm weight (float, or int8 "
                         f"behind a DequantizeLinear)")
    out, results = quantize_model_weights(model, names, fmt, args.group_size, args.scale_bits)
    table = Table(title=f"{args.source.name} -> {args.output.name}: {fmt.name.lower()}, "
                        f"group {args.group_size} along K")
    for col in ("weight", "K x N", "bits/weight", "relative RMS error", "groups per type"):
        table.add_column(col)
    for name, (q, w) in results.items():
        err = np.sqrt(np.mean((q.dequantize() - w) ** 2) / max(np.mean(w ** 2), 1e-300))
        counts = np.bincount(q.type_ids.ravel(), minlength=len(candidate_types(fmt)))
        table.add_row(name, f"{q.k} x {q.codes.shape[0]}", f"{q.bits_per_weight():.4f}",
                      f"{err:.3%}", ", ".join(f"{n}: {int(c)}" for n, c in
                                              zip(candidate_types(fmt), counts, strict=True)))
    Console().print(table)
    onnx.save(out, str(args.output))
    print(f"wrote {args.output}")
    return 0
