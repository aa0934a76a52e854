"""The compiler's plain intermediate representation.

A :class:`Graph` is a list of nodes in execution order over named activation tensors.
Constants (quantized weights, biases, scales) live inside the node that uses them, already
converted to integer values (int32/int64 numpy arrays) or float32 arrays, so a pass never
has to chase initializers.

Node kinds
----------
``QMatMul``     ``y = requant((a - a_zp) @ (b - b_zp) + bias)`` with constant ``b`` (K, N)
                (or batched (..., K, N));
                output int (requantized), int32 (the raw accumulator, MatMulInteger) or
                float32 (dequantized, QGemm without ``y_scale``).
``QConv``       a 2-D convolution with the same arithmetic as ``QMatMul``. It is lowered to
                GEMM by **im2col**: every output pixel's receptive field (C/group × kh × kw
                activations, padded with the activation zero point so padding contributes 0)
                becomes one row of A, the weights reshape to (C/group·kh·kw, M). im2col was
                chosen over direct tiling because it makes a convolution *exactly* a QMatMul
                for the engines, the tiler and the golden model; its cost (kh·kw duplication
                of activations) is paid on the host side of the data path.
``QAdd``        com.microsoft QLinearAdd.
``Quantize``    float32 -> integer (ONNX QuantizeLinear, per tensor / axis / block).
``DynamicQuantize``  ONNX DynamicQuantizeLinear (outputs y, scale, zero point).
``Dequantize``  integer -> float32 (ONNX DequantizeLinear).
``WeightOnlyMatMul``  float activations times blocked low-bit weights (MatMulNBits, blocked
                DequantizeLinear + MatMul). On the accelerator the activations are quantized
                per row to INT8 on the fly (onnxruntime MatMulNBits accuracy_level 4 style).
``HostOp``      any other ONNX node, run on the host through onnxruntime as a one-node model.

Every node has an ``engine`` chosen by legalisation: ``"tlmm"`` (ternary table lookup),
``"bitserial"`` (mixed-datatype bit-serial), ``"post"`` (the post-processing unit:
quantize/dequantize/add) or ``"host"``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "ENGINES",
    "TensorInfo",
    "Node",
    "QMatMul",
    "QConv",
    "QAdd",
    "Quantize",
    "DynamicQuantize",
    "Dequantize",
    "WeightOnlyMatMul",
    "HostOp",
    "Graph",
]

ENGINES = ("tlmm", "bitserial", "post", "host")


@dataclass
class TensorInfo:
    """An activation tensor: name, shape (ints, or str/None for symbolic dims) and ONNX
    element type (a trilobit datatype name such as ``"int8"``/``"int4"``, or numpy's name
    such as ``"float32"``/``"int32"``)."""

    name: str
    shape: tuple
    dtype: str


@dataclass
class Node:
    """Base node: ``name`` is the ONNX node's name (or its first output when unnamed)."""

    name: str
    inputs: list[str]
    outputs: list[str]
    engine: str = "host"
    #: Why legalisation picked ``engine`` (shown in the compile report).
    reason: str = ""

    @property
    def kind(self) -> str:
        return type(self).__name__


@dataclass
class QMatMul(Node):
    """Integer matrix product with constant weights.

    ``b`` holds integer weight values (K, N); ``b_zero_point`` is scalar or (N,);
    ``bias`` int32 (N,) is added to the accumulator; ``multiplier`` float32 scalar or (N,)
    is ``a_scale * b_scale / y_scale`` (onnxruntime's order). ``out`` is ``"requant"``,
    ``"int32"`` or ``"float"`` (then ``out_scale`` = ``a_scale * b_scale`` and the float bias
    ``float_bias`` follow QGemm's float output).
    """

    a_zero_point: int = 0
    a_dtype: str = "uint8"
    b: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.int32), repr=False)
    b_zero_point: np.ndarray = field(default_factory=lambda: np.zeros((), np.int32))
    b_dtype: str = "int8"
    bias: np.ndarray | None = field(default=None, repr=False)
    out: str = "requant"
    multiplier: np.ndarray | None = None
    y_zero_point: int = 0
    y_dtype: str = "uint8"
    out_scale: np.ndarray | None = None
    #: (N, K) weight layout of the ONNX source (QGemm transB) is normalised away: b is (K, N).
    #: BitMoD per-group form (blocked DequantizeLinear with scales ``uint8 * 2**-shift``):
    #: ``b == values * int_block_scale[k // int_block_size]`` exactly, with the model's
    #: integer-form values and unsigned integer block scales (K_blocks, N); ``2**-shift`` is in
    #: ``multiplier``. None for every other form.
    int_block_scale: np.ndarray | None = field(default=None, repr=False)
    int_block_size: int = 0


@dataclass
class QConv(QMatMul):
    """2-D convolution, NCHW. ``weight`` is (M, C/group, kh, kw); ``b`` is its im2col form
    (C/group·kh·kw, M) for ``group == 1`` (grouped convolutions keep ``weight`` only)."""

    weight: np.ndarray = field(default_factory=lambda: np.zeros((0, 0, 0, 0), np.int32), repr=False)
    strides: tuple[int, int] = (1, 1)
    pads: tuple[int, int, int, int] = (0, 0, 0, 0)
    dilations: tuple[int, int] = (1, 1)
    group: int = 1


@dataclass
class QAdd(Node):
    """com.microsoft QLinearAdd: ``y = sat(rint((sa(a - za) + sb(b - zb)) / sy) + zy)``.
    A constant operand is held in ``b_const`` (integer values)."""

    a_scale: float = 1.0
    a_zero_point: int = 0
    b_scale: float = 1.0
    b_zero_point: int = 0
    y_scale: float = 1.0
    y_zero_point: int = 0
    dtype: str = "uint8"
    b_const: np.ndarray | None = field(default=None, repr=False)


@dataclass
class Quantize(Node):
    """ONNX QuantizeLinear with constant parameters; ``dtype`` is a trilobit datatype name."""

    scale: np.ndarray = field(default_factory=lambda: np.ones((), np.float32))
    zero_point: np.ndarray | None = None
    dtype: str = "uint8"
    axis: int = 1
    block_size: int = 0


@dataclass
class DynamicQuantize(Node):
    """ONNX DynamicQuantizeLinear (uint8, scale and zero point from the tensor's range)."""


@dataclass
class Dequantize(Node):
    """ONNX DequantizeLinear with constant parameters."""

    scale: np.ndarray = field(default_factory=lambda: np.ones((), np.float32))
    zero_point: np.ndarray | None = None
    dtype: str = "uint8"
    axis: int = 1
    block_size: int = 0


@dataclass
class WeightOnlyMatMul(Node):
    """float32 ``a @ dequant(b) (+ bias)`` with blocked low-bit weights.

    ``b`` integer values (K, N); ``scale`` float32 (K_blocks, N); ``zero_point`` int
    (K_blocks, N) or None; ``block_size`` along K; ``bias`` float32 (N,) or None.
    """

    b: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.int32), repr=False)
    b_dtype: str = "int4"
    scale: np.ndarray = field(default_factory=lambda: np.ones((1, 1), np.float32), repr=False)
    zero_point: np.ndarray | None = field(default=None, repr=False)
    block_size: int = 32
    bias: np.ndarray | None = field(default=None, repr=False)
    #: BitMoD per-group form, as :attr:`QMatMul.int_block_scale`: ``b`` holds the exact
    #: integer products, ``scale`` is ``2**-shift`` as one block spanning K.
    int_block_scale: np.ndarray | None = field(default=None, repr=False)
    int_block_size: int = 0


@dataclass
class HostOp(Node):
    """An ONNX node run by onnxruntime on the host; ``model`` is a serialized one-node
    ModelProto whose graph inputs are ``inputs`` (constants are its initializers)."""

    op_type: str = ""
    model: bytes = field(default=b"", repr=False)


@dataclass
class Graph:
    """Nodes in execution order, the activation tensors, and the graph's inputs/outputs."""

    name: str
    nodes: list[Node]
    tensors: dict[str, TensorInfo]
    inputs: list[str]
    outputs: list[str]
    opset: int = 21

    def node_by_name(self, name: str) -> Node:
        for node in self.nodes:
            if node.name == name:
                return node
        raise KeyError(name)

    def summary(self) -> list[tuple[str, str, str, str]]:
        """(node, kind, engine, reason) rows, in execution order."""
        return [(n.name, n.kind, n.engine, n.reason) for n in self.nodes]
