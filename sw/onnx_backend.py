"""An ``onnx.backend.base.Backend`` over trilobit, for onnx's own conformance node tests.

``prepare(model)`` validates and keeps the model; ``run(inputs)`` binds every graph input
that is not a node's data input (input 0: scales, zero points, weights) as a constant —
on the accelerator those are compile-time constants — imports the graph, legalises it and
executes it: graphs with a matrix product or convolution are compiled for :attr:`config` and
run as a program on the chosen backend (``"golden"``: the instruction-level golden model,
``"verilator"``: the RTL); element-wise graphs (Quantize/DequantizeLinear alone) run on the
numerics core.

With ``strict=True`` a node that would fall back to the host raises BackendError, so a
conformance case cannot pass by silently running through onnxruntime.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx
from onnx import helper, numpy_helper
from onnx.backend.base import Backend, BackendRep

from trilobit.errors import BackendError
from trilobit.sw.legalise import legalise
from trilobit.sw.onnx_import import import_model, load_model
from trilobit.sw.reference import ReferenceExecutor, storage_dtype

__all__ = ["TrilobitBackend", "TrilobitBackendRep", "StrictTrilobitBackend",
           "VerilatorTrilobitBackend"]

def _to_internal(value: np.ndarray) -> np.ndarray:
    """ONNX-side numpy (ml_dtypes for sub-byte types) -> this executor's storage."""
    name = value.dtype.name
    if name in ("int4", "int2"):
        return value.astype(np.int8)
    if name in ("uint4", "uint2"):
        return value.astype(np.uint8)
    if name == "float4_e2m1fn":
        return value.view(np.uint8) & np.uint8(0x0F)
    if name.startswith("float8"):
        return value.view(np.uint8)
    return value


def _to_onnx(value: np.ndarray, elem_type: int) -> np.ndarray:
    """This executor's storage -> the numpy type onnx uses for ``elem_type``."""
    target = np.dtype(helper.tensor_dtype_to_np_dtype(elem_type))
    if target.name == "float4_e2m1fn" or target.name.startswith("float8"):
        return np.asarray(value, dtype=np.uint8).view(target)
    return np.asarray(value).astype(target)


class TrilobitBackendRep(BackendRep):
    """A prepared model; constants are bound at ``run`` time."""

    def __init__(self, model: onnx.ModelProto, backend: str = "golden", strict: bool = False,
                 config: str = "tiny"):
        self.model = model
        self.backend = backend
        self.config = config
        self.strict = strict
        self.last_graph = None

    def _bind_constants(self, feeds: dict[str, np.ndarray]) -> tuple[onnx.ModelProto, dict]:
        data_inputs = {n.input[0] for n in self.model.graph.node if n.input}
        model = onnx.ModelProto()
        model.CopyFrom(self.model)
        graph = model.graph
        keep, runtime = [], {}
        for vi in self.model.graph.input:
            if vi.name in data_inputs or vi.name not in feeds:
                keep.append(vi)
                if vi.name in feeds:
                    runtime[vi.name] = feeds[vi.name]
            else:
                graph.initializer.append(numpy_helper.from_array(feeds[vi.name], vi.name))
        del graph.input[:]
        graph.input.extend(keep)
        return model, runtime

    def run(self, inputs, **kwargs) -> tuple[np.ndarray, ...]:
        names = [vi.name for vi in self.model.graph.input]
        if isinstance(inputs, dict):
            feeds = dict(inputs)
        else:
            feeds = dict(zip(names, inputs, strict=False))
        feeds = {k: numpy_helper.to_array(v) if isinstance(v, onnx.TensorProto) else v
                 for k, v in feeds.items()}
        model, runtime = self._bind_constants(feeds)
        graph = legalise(import_model(model))
        self.last_graph = graph
        host = [n for n in graph.nodes if n.engine == "host"]
        if self.strict and host:
            raise BackendError(
                "nodes would run on the host: "
                + ", ".join(f"{n.name!r} ({n.kind}: {n.reason})" for n in host)
            )
        internal = {}
        for name, value in runtime.items():
            arr = _to_internal(np.asarray(value))
            info = graph.tensors.get(name)
            if info is not None and info.dtype not in ("unknown", "float32"):
                arr = arr.astype(storage_dtype(info.dtype))
            internal[name] = arr
        on_engines = any(n.engine in ("tlmm", "bitserial") for n in graph.nodes)
        if not on_engines:
            # Element-wise graphs (Quantize/DequantizeLinear alone): the numerics core.
            outputs = ReferenceExecutor(graph).run(internal)
        else:
            from trilobit.sw.runtime import Session

            session = Session(model, config=self.config, backend=self.backend, batch=4)
            outputs = session.run(internal)
        types = {o.name: o.type.tensor_type.elem_type for o in self.model.graph.output}
        return tuple(_to_onnx(outputs[n], types[n]) for n in graph.outputs)


class TrilobitBackend(Backend):
    """onnx backend API over trilobit (``device`` is ignored: the accelerator is the device)."""

    strict = False
    #: Backend the compiled program runs on: ``"golden"`` or ``"verilator"``.
    target = "golden"
    config = "tiny"

    @classmethod
    def is_compatible(cls, model, device: str = "CPU", **kwargs) -> bool:
        return True

    @classmethod
    def supports_device(cls, device: str) -> bool:
        return device in ("CPU", "cpu")

    @classmethod
    def prepare(cls, model: onnx.ModelProto, device: str = "CPU", **kwargs) -> TrilobitBackendRep:
        super().prepare(model, device, **kwargs)
        return TrilobitBackendRep(load_model(model), backend=cls.target, strict=cls.strict,
                                  config=cls.config)

    @classmethod
    def run_model(cls, model, inputs, device: str = "CPU", **kwargs):
        return cls.prepare(model, device, **kwargs).run(inputs)

    @classmethod
    def run_node(cls, node: onnx.NodeProto, inputs: Sequence[np.ndarray], device: str = "CPU",
                 outputs_info=None, **kwargs):
        raise BackendError("run_node is not supported: pass a model to prepare()")


class StrictTrilobitBackend(TrilobitBackend):
    """Refuses host fallbacks: every node must map to an accelerator engine."""

    strict = True


class VerilatorTrilobitBackend(StrictTrilobitBackend):
    """Strict, and the graph runs as a compiled program on the RTL in Verilator."""

    target = "verilator"

