"""Import quantized ONNX models into the plain IR (:mod:`trilobit.sw.ir`).

Recognised forms (what onnxruntime's quantizer and BitNet-style exporters write):

* **QDQ**: ``DequantizeLinear(x_q)`` and ``DequantizeLinear(w_q)`` feeding MatMul / Gemm / Conv
  (+ a DequantizeLinear'd int32 bias) whose only consumer is a QuantizeLinear -> one
  QMatMul/QConv with a requantized output; ``DQ -> Add <- DQ -> Q`` -> QAdd;
  ``DQ -> {MaxPool, Flatten, Reshape, ...} -> Q`` with identical parameters -> a HostOp
  on the integer tensor (exactly what onnxruntime's QDQ transformer does).
* **QOperator**: QLinearMatMul, QLinearConv, com.microsoft QGemm and QLinearAdd.
* **Dynamic**: DynamicQuantizeLinear, MatMulInteger, ConvInteger (runtime zero points).
* **Weight-only low-bit**: blocked INT4/UINT4/INT2/UINT2 ``DequantizeLinear(block_size)``
  + float MatMul, and com.microsoft MatMulNBits -> WeightOnlyMatMul.
* Standalone QuantizeLinear / DequantizeLinear with constant parameters.

Everything else becomes a HostOp (a one-node ONNX model run by onnxruntime). The model is
validated with ``onnx.checker`` and shape inference first; any defect raises ModelError
naming the node or tensor.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from trilobit.errors import ModelError
from trilobit.sw import ir

__all__ = ["load_model", "import_model", "ONNX_TO_DTYPE", "dtype_of_onnx"]

#: ONNX element type -> trilobit datatype name (integer and low-bit float formats).
ONNX_TO_DTYPE: dict[int, str] = {
    TensorProto.INT8: "int8",
    TensorProto.UINT8: "uint8",
    TensorProto.INT4: "int4",
    TensorProto.UINT4: "uint4",
    TensorProto.INT2: "int2",
    TensorProto.UINT2: "uint2",
    TensorProto.FLOAT4E2M1: "fp4_e2m1",
    TensorProto.FLOAT8E4M3FN: "fp8_e4m3",
    TensorProto.FLOAT8E5M2: "fp8_e5m2",
}

#: Ops that move or select integer values without arithmetic: in a ``DQ -> op -> Q`` chain
#: with identical quantization they run directly on the integer tensor.
_INTEGER_PASSTHROUGH = {
    "MaxPool", "Flatten", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Identity",
    "Slice", "Concat", "Gather", "Split",
}
_MS = "com.microsoft"


def dtype_of_onnx(elem_type: int) -> str:
    """trilobit datatype name of an ONNX element type, or numpy's name for other types."""
    if elem_type in ONNX_TO_DTYPE:
        return ONNX_TO_DTYPE[elem_type]
    return np.dtype(helper.tensor_dtype_to_np_dtype(elem_type)).name


def load_model(model: onnx.ModelProto | str | Path | bytes) -> onnx.ModelProto:
    """Load, check and shape-infer a model. Raises ModelError on malformed input."""
    try:
        if isinstance(model, onnx.ModelProto):
            proto = model
        elif isinstance(model, bytes):
            proto = onnx.ModelProto.FromString(model)
        else:
            path = Path(model)
            if not path.is_file():
                raise ModelError(f"model file {str(path)!r} does not exist")
            proto = onnx.load(str(path))
    except ModelError:
        raise
    except Exception as exc:  # protobuf DecodeError and friends
        raise ModelError(f"cannot parse the ONNX model: {exc}") from exc
    if not proto.graph.node:
        raise ModelError("the ONNX model has an empty graph")
    try:
        onnx.checker.check_model(proto)
    except onnx.checker.ValidationError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "invalid model"
        raise ModelError(f"onnx.checker rejected the model: {first}") from exc
    try:
        proto = onnx.shape_inference.infer_shapes(proto, strict_mode=False, data_prop=True)
    except Exception as exc:
        raise ModelError(f"shape inference failed: {exc}") from exc
    return proto


def _attr(node: onnx.NodeProto, name: str, default=None):
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _node_name(node: onnx.NodeProto) -> str:
    return node.name or (node.output[0] if node.output else node.op_type)


class _Importer:
    """One import: lookup tables over the ONNX graph plus the pattern matchers."""

    def __init__(self, model: onnx.ModelProto):
        self.model = model
        g = model.graph
        self.graph = g
        self.opsets = {o.domain or "": o.version for o in model.opset_import}
        self.inits: dict[str, TensorProto] = {t.name: t for t in g.initializer}
        self.producer: dict[str, onnx.NodeProto] = {}
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        for node in g.node:
            for o in node.output:
                if o:
                    self.producer[o] = node
            for i in node.input:
                if i:
                    self.consumers.setdefault(i, []).append(node)
        self.types: dict[str, onnx.TypeProto] = {}
        for vi in list(g.input) + list(g.value_info) + list(g.output):
            self.types[vi.name] = vi.type
        self.graph_outputs = {o.name for o in g.output}
        self.absorbed: set[int] = set()  # id() of ONNX nodes folded into a fused IR node
        #: Element types learnt while importing (outputs of contrib ops, fused nodes).
        self.learnt_types: dict[str, int] = {}

    # -- constants --------------------------------------------------------------------
    def const(self, name: str) -> np.ndarray | None:
        """Value of an initializer or Constant output, else None: integers in their own numpy
        type, floats as float32, other formats as their raw numpy/ml_dtypes arrays."""
        if not name:
            return None
        if name in self.inits:
            arr = numpy_helper.to_array(self.inits[name])
        else:
            prod = self.producer.get(name)
            if prod is None or prod.op_type != "Constant":
                return None
            value = _attr(prod, "value")
            if value is None:
                return None
            arr = numpy_helper.to_array(value)
        return _normalise(arr)

    def elem_type(self, name: str) -> int:
        if name in self.inits:
            return self.inits[name].data_type
        prod = self.producer.get(name)
        if prod is not None and prod.op_type == "Constant":
            return _attr(prod, "value").data_type
        t = self.types.get(name)
        if t is not None and t.HasField("tensor_type") and t.tensor_type.elem_type:
            return t.tensor_type.elem_type
        return self.learnt_types.get(name, TensorProto.UNDEFINED)

    def learn_types(self, node: ir.Node) -> None:
        """Record the element types of an IR node's outputs (for later host-op models)."""
        for name, elem in zip(node.outputs, _output_types(self, node), strict=False):
            if elem and name not in self.learnt_types:
                self.learnt_types[name] = elem

    def shape(self, name: str) -> tuple:
        if name in self.inits:
            return tuple(self.inits[name].dims)
        t = self.types.get(name)
        if t is None or not t.HasField("tensor_type") or not t.tensor_type.HasField("shape"):
            return ()
        dims = []
        for d in t.tensor_type.shape.dim:
            dims.append(d.dim_value if d.HasField("dim_value") else (d.dim_param or None))
        return tuple(dims)

    def require_const(self, node: onnx.NodeProto, index: int, what: str) -> np.ndarray:
        name = node.input[index] if index < len(node.input) else ""
        value = self.const(name)
        if value is None:
            raise _NotConstant(
                f"{node.op_type} {_node_name(node)!r}: {what} {name!r} is not a constant")
        return value

    def is_dynamic(self, name: str) -> bool:
        return bool(name) and self.const(name) is None

    def sole_consumer(self, name: str) -> onnx.NodeProto | None:
        users = self.consumers.get(name, [])
        if len(users) != 1 or name in self.graph_outputs:
            return None
        return users[0]

    # -- Q/DQ parameters ----------------------------------------------------------------
    def qparams(self, node: onnx.NodeProto) -> dict:
        """Constant parameters of a QuantizeLinear / DequantizeLinear node."""
        scale = self.require_const(node, 1, "scale").astype(np.float32)
        zp_name = node.input[2] if len(node.input) > 2 else ""
        zp = self.const(zp_name) if zp_name else None
        if zp_name and zp is None:
            raise _NotConstant(f"{node.op_type} {_node_name(node)!r}: zero point is not a constant")
        if zp_name:
            elem = self.elem_type(zp_name)
        elif node.op_type == "QuantizeLinear":
            elem = _attr(node, "output_dtype", 0) or TensorProto.UINT8
        else:
            elem = self.elem_type(node.input[0])
        if elem not in ONNX_TO_DTYPE:
            raise _Unsupported(
                f"{node.op_type} {_node_name(node)!r}: element type "
                f"{TensorProto.DataType.Name(elem)} is not a supported quantized type"
            )
        return {
            "scale": scale,
            "zero_point": None if zp is None else zp,
            "dtype": ONNX_TO_DTYPE[elem],
            "axis": int(_attr(node, "axis", 1)),
            "block_size": int(_attr(node, "block_size", 0)),
        }

    def dq_producer(self, name: str) -> onnx.NodeProto | None:
        prod = self.producer.get(name)
        return prod if prod is not None and prod.op_type == "DequantizeLinear" else None


class _NotConstant(ModelError):
    """A pattern needs a constant that is a runtime tensor: the node falls back to the host."""


def _normalise(arr: np.ndarray) -> np.ndarray:
    """Integers keep their (at most 64-bit) numpy type, so large weight tensors stay compact;
    sub-byte ml_dtypes become int8/uint8. Arithmetic widens explicitly where it happens."""
    kind = np.dtype(arr.dtype).kind
    if kind == "b":
        return arr.astype(np.int8)
    if kind in "iu":
        return arr
    if arr.dtype.name in ("int4", "int2"):
        return arr.astype(np.int8)
    if arr.dtype.name in ("uint4", "uint2"):
        return arr.astype(np.uint8)
    if arr.dtype in (np.float32, np.float64, np.float16):
        return arr.astype(np.float32)
    return arr


def _scalar_int(value: np.ndarray | None, default: int = 0) -> int:
    if value is None:
        return default
    flat = np.asarray(value).reshape(-1)
    if flat.size != 1:
        raise _NotScalar()
    return int(flat[0])


class _NotScalar(ModelError):
    """A per-channel parameter where the pattern needs a per-tensor one."""


# ------------------------------------------------------------------------------------------
# Pattern matchers: each returns an IR node (and marks the ONNX nodes it absorbed) or None.
# ------------------------------------------------------------------------------------------


def _qdq_compute(imp: _Importer, node: onnx.NodeProto) -> ir.Node | None:
    """DQ(x) / DQ(W) [/ DQ(bias)] -> MatMul|Gemm|Conv -> Q."""
    if len(node.input) < 2:
        return None
    dq_a, dq_b = imp.dq_producer(node.input[0]), imp.dq_producer(node.input[1])
    q = imp.sole_consumer(node.output[0])
    if dq_a is None or dq_b is None or q is None or q.op_type != "QuantizeLinear":
        return None
    if not imp.is_dynamic(dq_a.input[0]) or imp.const(dq_b.input[0]) is None:
        return None
    if node.op_type == "Gemm" and (
        _attr(node, "alpha", 1.0) != 1.0
        or _attr(node, "beta", 1.0) != 1.0
        or _attr(node, "transA", 0)
    ):
        return None
    pa, pb, py = imp.qparams(dq_a), imp.qparams(dq_b), imp.qparams(q)
    if pa["scale"].size != 1 or py["scale"].size != 1:
        return None
    w = imp.const(dq_b.input[0])
    blocked = None
    if pb["block_size"]:
        # Only the BitMoD per-group form of blocked weights maps to an engine.
        transposed = node.op_type == "Gemm" and bool(_attr(node, "transB", 0))
        if node.op_type == "Conv" or w.ndim != 2 or pb["axis"] % 2 != int(transposed):
            return None
        blocked = _integer_block_form(w.T if transposed else w,
                                      dict(pb, scale=pb["scale"].T) if transposed else pb)
        if isinstance(blocked, str):
            raise _Unsupported(f"{node.op_type} {_node_name(node)!r}: blocked weights not in "
                               f"the per-group form: {blocked}")
    bias_int = None
    absorbed = [node, dq_b, q]
    if len(node.input) > 2 and node.input[2]:
        dq_c = imp.dq_producer(node.input[2])
        if dq_c is None or imp.const(dq_c.input[0]) is None:
            return None
        bias_int = imp.const(dq_c.input[0])
        bias_zp = imp.const(dq_c.input[2]) if len(dq_c.input) > 2 and dq_c.input[2] else None
        if bias_zp is not None and np.any(bias_zp):
            return None
        if blocked is not None:
            # The bias adds to the accumulator only in its units, a_scale * 2**-shift.
            unit = np.float32(pa["scale"].reshape(())) * np.float32(2.0 ** -blocked[2])
            if not np.all(imp.const(dq_c.input[1]) == unit):
                return None
        absorbed.append(dq_c)
    wzp = pb["zero_point"] if pb["zero_point"] is not None else np.zeros((), np.int64)
    common = dict(
        name=_node_name(node), inputs=[dq_a.input[0]], outputs=[q.output[0]],
        a_zero_point=_scalar_int(pa["zero_point"]), a_dtype=pa["dtype"],
        b_dtype=pb["dtype"], out="requant",
        multiplier=_multiplier(pa["scale"], pb["scale"], py["scale"]),
        y_zero_point=_scalar_int(py["zero_point"]), y_dtype=py["dtype"],
        bias=None if bias_int is None else bias_int.astype(np.int64),
    )
    if blocked is not None:
        b, scale_int, shift = blocked
        common["multiplier"] = _multiplier(pa["scale"], np.float32(2.0 ** -shift), py["scale"])
        out = ir.QMatMul(b=b, b_zero_point=np.zeros((), np.int64), int_block_scale=scale_int,
                         int_block_size=pb["block_size"], **common)
    elif node.op_type == "Conv":
        out = _make_conv(node, w, wzp, common)
    else:
        if node.op_type == "Gemm" and _attr(node, "transB", 0):
            w = w.T
            # a per-output-channel weight parameter sits on axis 0 of the (N, K) source.
        elif w.ndim != 2:
            return None
        out = ir.QMatMul(b=w, b_zero_point=np.asarray(wzp).reshape(-1) if np.ndim(wzp) else wzp,
                         **common)
    imp.absorbed.update(id(n) for n in absorbed)
    return out


def _multiplier(a_scale, b_scale, y_scale) -> np.ndarray:
    from trilobit.requant import ort_multiplier

    m = ort_multiplier(np.asarray(a_scale).reshape(()), np.asarray(b_scale).reshape(-1),
                       np.asarray(y_scale).reshape(()))
    return m.reshape(()) if m.size == 1 else m


def _integer_block_form(w: np.ndarray, p: dict) -> tuple[np.ndarray, np.ndarray, int] | str:
    """The BitMoD per-group ONNX form of blocked weights ``w`` (K, N) along K: signed integer
    values, no (or a zero) zero point, block scales that split exactly into
    ``uint8 * 2**-shift``. Returns (exact integer products (K, N) int64, integer block scales
    (K_blocks, N), shift), or for any other blocked weight why it is not the form."""
    from trilobit.errors import QuantizationError
    from trilobit.sw.bitmod import integer_scales

    if p["dtype"] not in ("int8", "int4", "int2", "fp4"):
        return f"{p['dtype']} weights (the form has signed integer values)"
    if p["zero_point"] is not None and np.any(p["zero_point"]):
        return "nonzero weight zero points"
    scale = np.asarray(p["scale"], np.float32)
    if scale.ndim != 2 or scale.shape != (-(-w.shape[0] // p["block_size"]), w.shape[1]):
        return f"block scales of shape {scale.shape} are not blocked along K"
    try:
        scale_int, shift = integer_scales(scale)
    except QuantizationError as exc:
        return str(exc)
    if not -127 <= shift <= 126:
        return f"scale exponent 2**{-shift} is not a normal float32"
    b = w.astype(np.int64) * np.repeat(scale_int, p["block_size"], axis=0)[: w.shape[0]]
    return b, scale_int, shift


def _make_conv(node: onnx.NodeProto, w: np.ndarray, wzp, common: dict) -> ir.QConv:
    if w.ndim != 4:
        raise _Unsupported(f"Conv {_node_name(node)!r}: only 2-D convolutions map to the engines")
    kh, kw = w.shape[2:]
    group = int(_attr(node, "group", 1))
    pads = tuple(_attr(node, "pads", [0, 0, 0, 0]))
    auto_pad = _attr(node, "auto_pad", b"NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
    if auto_pad not in ("NOTSET", "VALID"):
        raise _Unsupported(f"Conv {_node_name(node)!r}: auto_pad={auto_pad} is not supported")
    if auto_pad == "VALID":
        pads = (0, 0, 0, 0)
    ks = tuple(_attr(node, "kernel_shape", [kh, kw]))
    if ks != (kh, kw):
        raise ModelError(f"Conv {_node_name(node)!r}: kernel_shape {ks} != weight shape {w.shape}")
    m = w.shape[0]
    zp = np.asarray(wzp).reshape(-1)
    zp = zp.reshape(()) if zp.size == 1 else zp
    b = w.reshape(m, -1).T if group == 1 else np.zeros((0, 0), np.int64)
    return ir.QConv(
        weight=w, b=b, b_zero_point=zp,
        strides=tuple(_attr(node, "strides", [1, 1])),
        pads=pads, dilations=tuple(_attr(node, "dilations", [1, 1])), group=group,
        **common,
    )


class _Unsupported(ModelError):
    """A recognised op with parameters the engines do not take: it runs on the host."""


def _qdq_add(imp: _Importer, node: onnx.NodeProto) -> ir.Node | None:
    dq_a, dq_b = imp.dq_producer(node.input[0]), imp.dq_producer(node.input[1])
    q = imp.sole_consumer(node.output[0])
    if dq_a is None or dq_b is None or q is None or q.op_type != "QuantizeLinear":
        return None
    pa, pb, py = imp.qparams(dq_a), imp.qparams(dq_b), imp.qparams(q)
    if any(p["scale"].size != 1 for p in (pa, pb, py)):
        return None
    if pa["dtype"] not in ("int8", "uint8") or {pa["dtype"], pb["dtype"]} != {py["dtype"]}:
        return None
    b_const = imp.const(dq_b.input[0])
    inputs = [dq_a.input[0]] + ([] if b_const is not None else [dq_b.input[0]])
    out = ir.QAdd(
        name=_node_name(node), inputs=inputs, outputs=[q.output[0]],
        a_scale=float(pa["scale"].reshape(())), a_zero_point=_scalar_int(pa["zero_point"]),
        b_scale=float(pb["scale"].reshape(())), b_zero_point=_scalar_int(pb["zero_point"]),
        y_scale=float(py["scale"].reshape(())), y_zero_point=_scalar_int(py["zero_point"]),
        dtype=py["dtype"], b_const=b_const,
    )
    imp.absorbed.update(id(n) for n in (node, q) + ((dq_b,) if b_const is not None else ()))
    return out


def _qdq_passthrough(imp: _Importer, node: onnx.NodeProto) -> ir.Node | None:
    """DQ -> MaxPool/Flatten/... -> Q with identical parameters: the op runs on integers."""
    dq = imp.dq_producer(node.input[0])
    q = imp.sole_consumer(node.output[0]) if len(node.output) == 1 else None
    if dq is None or q is None or q.op_type != "QuantizeLinear":
        return None
    if any(imp.dq_producer(i) for i in node.input[1:]):
        return None
    pd, pq = imp.qparams(dq), imp.qparams(q)
    same = (
        pd["dtype"] == pq["dtype"] and pd["scale"].size == 1 and pq["scale"].size == 1
        and float(pd["scale"].reshape(())) == float(pq["scale"].reshape(()))
        and _scalar_int(pd["zero_point"]) == _scalar_int(pq["zero_point"])
    )
    if not same:
        return None
    int_node = helper.make_node(node.op_type, [dq.input[0], *node.input[1:]], [q.output[0]],
                                name=_node_name(node), domain=node.domain)
    int_node.attribute.extend(node.attribute)
    host = _host_op(imp, int_node, reason=f"{node.op_type} on integers (no arithmetic)")
    imp.absorbed.update((id(node), id(q)))
    return host


def _qlinear_matmul(imp: _Importer, node: onnx.NodeProto) -> ir.Node:
    a_zp = imp.require_const(node, 2, "a_zero_point")
    b = imp.require_const(node, 3, "b (weights)")
    if b.ndim < 2:
        raise _Unsupported(
            f"QLinearMatMul {_node_name(node)!r}: weights must be at least 2-D, got {b.shape}")
    b_scale = imp.require_const(node, 4, "b_scale")
    b_zp = imp.require_const(node, 5, "b_zero_point")
    return ir.QMatMul(
        name=_node_name(node), inputs=[node.input[0]], outputs=[node.output[0]],
        a_zero_point=_scalar_int(a_zp), a_dtype=dtype_of_onnx(imp.elem_type(node.input[2])),
        b=b, b_zero_point=b_zp.reshape(-1) if b_zp.size > 1 else b_zp.reshape(()),
        b_dtype=dtype_of_onnx(imp.elem_type(node.input[3])), out="requant",
        multiplier=_multiplier(imp.require_const(node, 1, "a_scale"), b_scale,
                               imp.require_const(node, 6, "y_scale")),
        y_zero_point=_scalar_int(imp.require_const(node, 7, "y_zero_point")),
        y_dtype=dtype_of_onnx(imp.elem_type(node.input[7])),
    )


def _qlinear_conv(imp: _Importer, node: onnx.NodeProto) -> ir.Node:
    w = imp.require_const(node, 3, "w (weights)")
    wzp = imp.require_const(node, 5, "w_zero_point")
    bias = imp.const(node.input[8]) if len(node.input) > 8 and node.input[8] else None
    common = dict(
        name=_node_name(node), inputs=[node.input[0]], outputs=[node.output[0]],
        a_zero_point=_scalar_int(imp.require_const(node, 2, "x_zero_point")),
        a_dtype=dtype_of_onnx(imp.elem_type(node.input[2])),
        b_dtype=dtype_of_onnx(imp.elem_type(node.input[3])), out="requant",
        multiplier=_multiplier(imp.require_const(node, 1, "x_scale"),
                               imp.require_const(node, 4, "w_scale"),
                               imp.require_const(node, 6, "y_scale")),
        y_zero_point=_scalar_int(imp.require_const(node, 7, "y_zero_point")),
        y_dtype=dtype_of_onnx(imp.elem_type(node.input[7])), bias=bias,
    )
    return _make_conv(node, w, wzp, common)


def _qgemm(imp: _Importer, node: onnx.NodeProto) -> ir.Node:
    if _attr(node, "transA", 0):
        raise _Unsupported(f"QGemm {_node_name(node)!r}: transA=1 is not supported")
    alpha = float(_attr(node, "alpha", 1.0))
    b = imp.require_const(node, 3, "B (weights)")
    if _attr(node, "transB", 0):
        b = b.T
    b_scale = imp.require_const(node, 4, "b_scale")
    b_zp = imp.require_const(node, 5, "b_zero_point")
    a_scale = imp.require_const(node, 1, "a_scale")
    bias = imp.const(node.input[6]) if len(node.input) > 6 and node.input[6] else None
    has_y = len(node.input) > 7 and node.input[7]
    common = dict(
        name=_node_name(node), inputs=[node.input[0]], outputs=[node.output[0]],
        a_zero_point=_scalar_int(imp.require_const(node, 2, "a_zero_point")),
        a_dtype=dtype_of_onnx(imp.elem_type(node.input[2])),
        b=b, b_zero_point=b_zp.reshape(-1) if b_zp.size > 1 else b_zp.reshape(()),
        b_dtype=dtype_of_onnx(imp.elem_type(node.input[5])),
    )
    if alpha != 1.0:
        raise _Unsupported(f"QGemm {_node_name(node)!r}: alpha={alpha} is not supported")
    if has_y:
        y_zp_name = node.input[8] if len(node.input) > 8 else ""
        return ir.QMatMul(
            out="requant", bias=bias,
            multiplier=_multiplier(a_scale, b_scale, imp.require_const(node, 7, "y_scale")),
            y_zero_point=_scalar_int(imp.const(y_zp_name)),
            y_dtype=dtype_of_onnx(imp.elem_type(y_zp_name)) if y_zp_name else "uint8",
            **common,
        )
    if bias is not None and np.asarray(bias).dtype.kind == "i":
        raise _Unsupported(f"QGemm {_node_name(node)!r}: float output with an integer bias")
    out_scale = (np.asarray(a_scale, np.float32).reshape(()) *
                 np.asarray(b_scale, np.float32).reshape(-1)).astype(np.float32)
    return ir.QMatMul(out="float", out_scale=out_scale, bias=None, y_dtype="float32",
                      multiplier=None, **common)


def _qlinear_add(imp: _Importer, node: onnx.NodeProto) -> ir.Node:
    b_const = imp.const(node.input[3])
    scalars = [imp.require_const(node, i, n) for i, n in
               ((1, "A_scale"), (4, "B_scale"), (6, "C_scale"))]
    zps = [imp.const(node.input[i]) if len(node.input) > i and node.input[i] else None
           for i in (2, 5, 7)]
    if any(s.size != 1 for s in scalars):
        raise _Unsupported(f"QLinearAdd {_node_name(node)!r}: per-channel scales")
    dtype = dtype_of_onnx(imp.elem_type(node.input[7] if len(node.input) > 7 else node.input[0]))
    return ir.QAdd(
        name=_node_name(node),
        inputs=[node.input[0]] + ([] if b_const is not None else [node.input[3]]),
        outputs=[node.output[0]],
        a_scale=float(scalars[0].reshape(())), a_zero_point=_scalar_int(zps[0]),
        b_scale=float(scalars[1].reshape(())), b_zero_point=_scalar_int(zps[1]),
        y_scale=float(scalars[2].reshape(())), y_zero_point=_scalar_int(zps[2]),
        dtype=dtype, b_const=b_const,
    )


def _integer_op(imp: _Importer, node: onnx.NodeProto) -> ir.Node:
    """MatMulInteger / ConvInteger: int32 accumulator; the activation zero point may be a
    runtime tensor (DynamicQuantizeLinear's output) and then becomes a second input."""
    w = imp.require_const(node, 1, "B (weights)")
    zp_name = node.input[2] if len(node.input) > 2 else ""
    inputs = [node.input[0]]
    a_zp = 0
    if zp_name:
        value = imp.const(zp_name)
        if value is None:
            inputs.append(zp_name)
        else:
            a_zp = _scalar_int(value)
    wzp = imp.const(node.input[3]) if len(node.input) > 3 and node.input[3] else None
    if len(node.input) > 3 and node.input[3] and wzp is None:
        raise _NotConstant(
            f"{node.op_type} {_node_name(node)!r}: weight zero point is not constant")
    wzp = np.zeros((), np.int64) if wzp is None else wzp
    common = dict(
        name=_node_name(node), inputs=inputs, outputs=[node.output[0]],
        a_zero_point=a_zp, a_dtype=dtype_of_onnx(imp.elem_type(node.input[0])),
        b_dtype=dtype_of_onnx(imp.elem_type(node.input[1])), out="int32", y_dtype="int32",
    )
    if node.op_type == "ConvInteger":
        return _make_conv(node, w, wzp, common)
    if w.ndim < 2:
        raise _Unsupported(f"MatMulInteger {_node_name(node)!r}: weights must be at least 2-D")
    zp = np.asarray(wzp).reshape(-1)
    return ir.QMatMul(b=w, b_zero_point=zp.reshape(()) if zp.size == 1 else zp, **common)


def _weight_only_dq_matmul(imp: _Importer, node: onnx.NodeProto) -> ir.Node | None:
    """float x @ DequantizeLinear(W_lowbit, blocked along K) -> WeightOnlyMatMul."""
    dq_b = imp.dq_producer(node.input[1])
    if dq_b is None or imp.dq_producer(node.input[0]) is not None:
        return None
    w = imp.const(dq_b.input[0])
    if w is None or w.ndim != 2:
        return None
    p = imp.qparams(dq_b)
    if p["dtype"] not in ("int4", "uint4", "int2", "uint2", "int8", "uint8", "fp4_e2m1"):
        return None
    if p["dtype"] == "fp4_e2m1":
        # FLOAT4E2M1 values times 2 are the integers of BitMoD's fp4 value set
        # {0, ±1, ±2, ±3, ±4, ±6, ±8, ±12}; halving the scale is exact in float32.
        w = (w.astype(np.float32) * 2).astype(np.int8)
        p = dict(p, scale=(p["scale"] / np.float32(2)).astype(np.float32), dtype="fp4")
    k, n = w.shape
    blocked, why = None, ""
    if p["block_size"] and p["axis"] % 2 == 0:
        blocked = _integer_block_form(w, p)
        if isinstance(blocked, str):
            blocked, why = None, f"not the per-group form: {blocked}"
    if blocked is not None:
        # BitMoD per-group form: exact integer products, one block of scale 2**-shift.
        w, scale_int, shift = blocked
        block, zp = k, None
        scale = np.full((1, n), 2.0 ** -shift, np.float32)
    elif p["block_size"]:
        if p["axis"] % 2 != 0:
            return None
        block = p["block_size"]
        scale = p["scale"]
        zp = p["zero_point"]
    elif p["scale"].size == 1 or (p["axis"] % 2 == 1 and p["scale"].size == n):
        block = k  # per tensor / per output channel = one block spanning K
        scale = np.broadcast_to(p["scale"].reshape(1, -1), (1, n)).astype(np.float32)
        zp = None if p["zero_point"] is None else np.broadcast_to(
            np.asarray(p["zero_point"]).reshape(1, -1), (1, n))
    else:
        return None
    out = ir.WeightOnlyMatMul(
        name=_node_name(node), inputs=[node.input[0]], outputs=[node.output[0]],
        b=w, b_dtype=p["dtype"], scale=np.asarray(scale, np.float32),
        zero_point=None if zp is None else np.asarray(zp, np.int64), block_size=block,
        int_block_scale=None if blocked is None else scale_int,
        int_block_size=p["block_size"] if blocked is not None else 0, reason=why,
    )
    if all(id(c) == id(node) for c in imp.consumers.get(dq_b.output[0], [])):
        imp.absorbed.add(id(dq_b))
    return out


def _matmul_nbits(imp: _Importer, node: onnx.NodeProto) -> ir.Node:
    """com.microsoft MatMulNBits: B uint8 (N, k_blocks, block*bits/8), low bits = even k."""
    from trilobit.packing import unpack_bits

    k, n = int(_attr(node, "K")), int(_attr(node, "N"))
    bits, block = int(_attr(node, "bits", 4)), int(_attr(node, "block_size"))
    if bits not in (2, 4, 8):
        raise _Unsupported(f"MatMulNBits {_node_name(node)!r}: bits={bits}")
    packed = imp.require_const(node, 1, "B (packed weights)").astype(np.uint8)
    scales = imp.require_const(node, 2, "scales").astype(np.float32).reshape(n, -1)
    k_blocks = scales.shape[1]
    codes = unpack_bits(packed.reshape(n, -1), bits, packed.size * 8 // bits)
    codes = codes.reshape(n, k_blocks * block)[:, :k].astype(np.uint8)
    if len(node.input) > 4 and node.input[4]:
        raise _Unsupported(f"MatMulNBits {_node_name(node)!r}: g_idx is not supported")
    zp_in = node.input[3] if len(node.input) > 3 else ""
    if zp_in:
        zp_raw = imp.require_const(node, 3, "zero_points")
        if imp.elem_type(zp_in) != TensorProto.UINT8:
            raise _Unsupported(f"MatMulNBits {_node_name(node)!r}: float zero points")
        zp = unpack_bits(zp_raw.astype(np.uint8).reshape(n, -1), bits,
                         zp_raw.size * 8 // bits).reshape(n, -1)[:, :k_blocks].astype(np.int64)
    else:
        zp = np.full((n, k_blocks), 1 << (bits - 1), np.int64)
    bias = None
    if len(node.input) > 5 and node.input[5]:
        bias = imp.require_const(node, 5, "bias").astype(np.float32)
    return ir.WeightOnlyMatMul(
        name=_node_name(node), inputs=[node.input[0]], outputs=[node.output[0]],
        b=codes.T.copy(), b_dtype=f"uint{bits}", scale=scales.T.copy(), zero_point=zp.T.copy(),
        block_size=block, bias=bias,
    )


def _quantize(imp: _Importer, node: onnx.NodeProto, cls) -> ir.Node:
    p = imp.qparams(node)
    if _attr(node, "saturate", 1) != 1:
        raise _Unsupported(f"{node.op_type} {_node_name(node)!r}: saturate=0 is not supported")
    if node.op_type == "QuantizeLinear" and _attr(node, "precision", 0):
        raise _Unsupported(f"{node.op_type} {_node_name(node)!r}: precision attribute")
    return cls(name=_node_name(node), inputs=[node.input[0]], outputs=[node.output[0]], **p)


def _host_op(imp: _Importer, node: onnx.NodeProto, reason: str) -> ir.HostOp:
    """Wrap ``node`` as a one-node model; constants become its initializers."""
    inputs, inits = [], []
    for name in node.input:
        if not name:
            continue
        if name in imp.inits:
            inits.append(imp.inits[name])
        elif imp.producer.get(name) is not None and imp.producer[name].op_type == "Constant":
            inits.append(numpy_helper.from_array(
                numpy_helper.to_array(_attr(imp.producer[name], "value")), name))
        elif name not in inputs:
            inputs.append(name)
    host = ir.HostOp(
        name=_node_name(node), inputs=inputs, outputs=[o for o in node.output if o],
        op_type=node.op_type, engine="host", reason=reason,
        model=_one_node_model(imp, node, inputs, inits),
    )
    imp.learn_types(host)
    return host


_DTYPE_TO_ONNX = {v: k for k, v in ONNX_TO_DTYPE.items()}


def _onnx_type(dtype: str) -> int:
    if dtype in _DTYPE_TO_ONNX:
        return _DTYPE_TO_ONNX[dtype]
    return helper.np_dtype_to_tensor_dtype(np.dtype(dtype))


def _output_types(imp: _Importer, node: ir.Node) -> list[int]:
    """ONNX element types of an IR node's outputs (0 where unknown)."""
    if isinstance(node, ir.QMatMul):
        return [_onnx_type({"int32": "int32", "float": "float32"}.get(node.out, node.y_dtype))]
    if isinstance(node, ir.QAdd):
        return [_onnx_type(node.dtype)]
    if isinstance(node, ir.Quantize):
        return [_onnx_type(node.dtype)]
    if isinstance(node, (ir.Dequantize, ir.WeightOnlyMatMul)):
        return [TensorProto.FLOAT]
    if isinstance(node, ir.DynamicQuantize):
        return [TensorProto.UINT8, TensorProto.FLOAT, TensorProto.UINT8]
    if isinstance(node, ir.HostOp):
        try:
            inferred = onnx.shape_inference.infer_shapes(onnx.ModelProto.FromString(node.model))
        except Exception:
            return []
        types = {vi.name: vi.type.tensor_type.elem_type for vi in inferred.graph.output}
        return [types.get(o, 0) for o in node.outputs]
    return []


def _value_info(imp: _Importer, name: str) -> onnx.ValueInfoProto:
    elem = imp.elem_type(name)
    if elem == TensorProto.UNDEFINED:
        return helper.make_empty_tensor_value_info(name)
    return helper.make_tensor_value_info(name, elem, None)


def _one_node_model(imp: _Importer, node: onnx.NodeProto, inputs, inits) -> bytes:
    graph = helper.make_graph(
        [node], f"host_{_node_name(node)}", [_value_info(imp, n) for n in inputs],
        [_value_info(imp, o) for o in node.output if o], initializer=inits,
    )
    opsets = [helper.make_opsetid(d, v) for d, v in imp.opsets.items()]
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = imp.model.ir_version
    return model.SerializeToString()


_QOPERATOR = {
    ("", "QLinearMatMul"): _qlinear_matmul,
    ("", "QLinearConv"): _qlinear_conv,
    ("", "MatMulInteger"): _integer_op,
    ("", "ConvInteger"): _integer_op,
    (_MS, "QGemm"): _qgemm,
    (_MS, "QLinearAdd"): _qlinear_add,
    (_MS, "MatMulNBits"): _matmul_nbits,
}


def _match(imp: _Importer, node: onnx.NodeProto) -> ir.Node | None:
    """The fused IR node for ``node`` or None (then it may still be absorbed or host)."""
    key = (node.domain if node.domain != "ai.onnx" else "", node.op_type)
    if key in _QOPERATOR:
        return _QOPERATOR[key](imp, node)
    if key[0] != "":
        return None
    if node.op_type in ("MatMul", "Gemm", "Conv"):
        fused = _qdq_compute(imp, node)
        if fused is None and node.op_type == "MatMul":
            fused = _weight_only_dq_matmul(imp, node)
        return fused
    if node.op_type == "Add":
        return _qdq_add(imp, node)
    if node.op_type in _INTEGER_PASSTHROUGH:
        return _qdq_passthrough(imp, node)
    if node.op_type == "DynamicQuantizeLinear":
        return ir.DynamicQuantize(name=_node_name(node), inputs=[node.input[0]],
                                  outputs=list(node.output))
    return None


def import_model(model: onnx.ModelProto | str | Path | bytes) -> ir.Graph:
    """Import a quantized ONNX model into the IR (engines are assigned by legalisation)."""
    proto = load_model(model)
    imp = _Importer(proto)
    matched: dict[int, ir.Node] = {}
    host_reasons: dict[int, str] = {}
    for node in proto.graph.node:
        if id(node) in imp.absorbed or node.op_type == "Constant":
            continue
        try:
            fused = _match(imp, node)
        except (_NotConstant, _NotScalar, _Unsupported) as exc:
            host_reasons[id(node)] = str(exc) or "per-channel activation parameters"
            continue
        if fused is not None:
            matched[id(node)] = fused
            imp.learn_types(fused)
    nodes: list[ir.Node] = []
    live_dq = _live_dequantize(imp, matched)
    for node in proto.graph.node:
        nid = id(node)
        if node.op_type == "Constant":
            continue
        if nid in matched:
            nodes.append(matched[nid])
            continue
        if nid in imp.absorbed:
            continue
        if node.op_type == "DequantizeLinear" and nid not in live_dq:
            continue
        if node.op_type in ("QuantizeLinear", "DequantizeLinear") and nid not in host_reasons:
            try:
                cls = ir.Quantize if node.op_type == "QuantizeLinear" else ir.Dequantize
                nodes.append(_quantize(imp, node, cls))
                imp.learn_types(nodes[-1])
                continue
            except (_NotConstant, _Unsupported) as exc:
                host_reasons[nid] = str(exc)
        reason = host_reasons.get(nid, f"{node.op_type} has no accelerator mapping")
        nodes.append(_host_op(imp, node, reason))
    tensors = _tensor_infos(imp, nodes)
    opset = imp.opsets.get("", 21)
    return ir.Graph(
        name=proto.graph.name or "model", nodes=nodes, tensors=tensors,
        inputs=[i.name for i in proto.graph.input if i.name not in imp.inits],
        outputs=[o.name for o in proto.graph.output], opset=opset,
    )


def _live_dequantize(imp: _Importer, matched: dict[int, ir.Node]) -> set[int]:
    """DequantizeLinear nodes whose float output something unfused still reads."""
    fused_inputs: dict[str, int] = {}
    for node in imp.graph.node:
        if id(node) in matched:
            for name in node.input:
                fused_inputs[name] = fused_inputs.get(name, 0) + 1
    live = set()
    for node in imp.graph.node:
        if node.op_type != "DequantizeLinear" or id(node) in imp.absorbed:
            continue
        out = node.output[0]
        users = imp.consumers.get(out, [])
        unfused = [u for u in users if id(u) not in matched and id(u) not in imp.absorbed]
        if out in imp.graph_outputs or unfused or not users:
            live.add(id(node))
    return live


def _tensor_infos(imp: _Importer, nodes: list[ir.Node]) -> dict[str, ir.TensorInfo]:
    names: list[str] = [i.name for i in imp.graph.input if i.name not in imp.inits]
    for node in nodes:
        names += node.inputs + node.outputs
    infos = {}
    for name in dict.fromkeys(names):
        elem = imp.elem_type(name)
        dtype = dtype_of_onnx(elem) if elem != TensorProto.UNDEFINED else "unknown"
        infos[name] = ir.TensorInfo(name, imp.shape(name), dtype)
    return infos
