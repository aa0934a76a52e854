"""Build and run one-node ONNX models with onnx's reference evaluator and onnxruntime."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator


def single_node_model(
    op: str,
    inputs: dict[str, np.ndarray],
    initializers: dict[str, onnx.TensorProto],
    output_type: int,
    output_shape,
    opset: int = 21,
    domain: str = "",
    **attrs,
) -> onnx.ModelProto:
    """A model with one node; graph inputs are float/int numpy arrays, the rest initializers."""
    names = list(inputs) + list(initializers)
    node = helper.make_node(op, names, ["y"], domain=domain, **attrs)
    graph_inputs = [
        helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
        for n, v in inputs.items()
    ]
    graph = helper.make_graph(
        [node], op, graph_inputs,
        [helper.make_tensor_value_info("y", output_type, output_shape)],
        initializer=list(initializers.values()),
    )
    opsets = [helper.make_opsetid("", opset)]
    if domain:
        opsets.append(helper.make_opsetid(domain, 1))
    return helper.make_model(graph, opset_imports=opsets)


def append_dequantize(model: onnx.ModelProto, elem_type: int, shape) -> onnx.ModelProto:
    """y -> DequantizeLinear(y, 1.0, 0) -> float output ``y_float`` (onnxruntime cannot hand
    int4/int2 tensors to numpy, so integer results are read back exactly as floats)."""
    g = model.graph
    g.initializer.append(helper.make_tensor("one", TensorProto.FLOAT, [], [1.0]))
    g.initializer.append(helper.make_tensor("zero_q", elem_type, [], [0]))
    g.node.append(helper.make_node("DequantizeLinear", ["y", "one", "zero_q"], ["y_float"]))
    del g.output[:]
    g.output.append(helper.make_tensor_value_info("y_float", TensorProto.FLOAT, shape))
    return model


def run_reference(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> np.ndarray:
    return ReferenceEvaluator(model).run(None, feeds)[0]


def run_ort(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> np.ndarray:
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(
        model.SerializeToString(), opts, providers=["CPUExecutionProvider"]
    )
    return sess.run(None, feeds)[0]


def tensor(name: str, elem_type: int, values: np.ndarray) -> onnx.TensorProto:
    values = np.asarray(values)
    return helper.make_tensor(name, elem_type, values.shape, values.reshape(-1).tolist())


def to_numpy(t: onnx.TensorProto) -> np.ndarray:
    return numpy_helper.to_array(t)
