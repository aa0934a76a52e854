"""The program file (``.tbp``): everything a backend needs to run a compiled model.

Layout (little endian)::

    offset  size  field
    0       4     magic b"TBP\\x00"
    4       2     format version (:data:`FORMAT_VERSION`)
    6       2     reserved, 0
    8       32    sha256 of the accelerator configuration (AcceleratorConfig.hash())
    40      32    sha256 checksum of everything after byte 104
    72      8     manifest length in bytes (M)
    80      8     instruction bytes (I)
    88      8     constant bytes (C)
    96      8     array-segment bytes (A)
    104     M     manifest: UTF-8 JSON (tensor descriptors, the IR with engines, kernels,
                  memory map, host-op segments as serialized one-node ONNX models)
    ...     I     instruction stream (16 bytes per instruction, all kernels back to back)
    ...     C     constant segment: packed weights and POST parameters, as placed in memory
    ...     A     arrays referenced by the manifest (IR constants for host-side steps)

A program built for another configuration, a corrupted file, an unknown version or a bad
magic raise ProgramError.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from trilobit.config import AcceleratorConfig
from trilobit.errors import ProgramError
from trilobit.sw import ir
from trilobit.sw.compiler import CompiledGraph, Kernel

__all__ = ["Program", "FORMAT_VERSION", "MAGIC"]

MAGIC = b"TBP\x00"
FORMAT_VERSION = 1
_HEADER = struct.Struct("<4sHH32s32sQQQQ")
_NODE_TYPES = {cls.__name__: cls for cls in (
    ir.QMatMul, ir.QConv, ir.QAdd, ir.Quantize, ir.DynamicQuantize, ir.Dequantize,
    ir.WeightOnlyMatMul, ir.HostOp)}


class _ArrayWriter:
    def __init__(self):
        self.chunks: list[bytes] = []
        self.size = 0

    def add(self, arr: np.ndarray) -> dict:
        arr = np.ascontiguousarray(arr)
        if arr.dtype.kind in "iu" and arr.size > 16:
            # Store integer constants in the narrowest type that holds them.
            lo, hi = int(arr.min()), int(arr.max())
            for narrow in (np.int8, np.uint8, np.int16, np.int32):
                info = np.iinfo(narrow)
                if info.min <= lo and hi <= info.max:
                    arr = arr.astype(narrow)
                    break
        data = arr.tobytes()
        ref = {"__array__": [self.size, len(data), arr.dtype.str, list(arr.shape)]}
        self.chunks.append(data)
        self.size += len(data)
        return ref


def _encode(value, arrays: _ArrayWriter):
    if isinstance(value, np.ndarray):
        return arrays.add(value)
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, bytes):
        return {"__bytes__": base64.b64encode(value).decode()}
    if isinstance(value, tuple | list):
        return [_encode(v, arrays) for v in value]
    if isinstance(value, dict):
        return {k: _encode(v, arrays) for k, v in value.items()}
    return value


def _decode(value, blob: memoryview):
    if isinstance(value, dict):
        if "__array__" in value:
            off, size, dtype, shape = value["__array__"]
            flat = np.frombuffer(blob[off : off + size], dtype=np.dtype(dtype))
            return flat.reshape(shape).copy()
        if "__bytes__" in value:
            return base64.b64decode(value["__bytes__"])
        return {k: _decode(v, blob) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode(v, blob) for v in value]
    return value


def _node_to_json(node: ir.Node, arrays: _ArrayWriter) -> dict:
    if node.engine in ("tlmm", "bitserial") and type(node) in (ir.QMatMul, ir.WeightOnlyMatMul):
        # The kernels carry these weights packed in the constant segment; keep only N.
        node = dataclasses.replace(node, b=np.zeros((0, node.b.shape[-1]), np.int8))
    fields = {f.name: _encode(getattr(node, f.name), arrays) for f in dataclasses.fields(node)}
    return {"kind": node.kind, "fields": fields}


def _node_from_json(data: dict, blob: memoryview) -> ir.Node:
    cls = _NODE_TYPES.get(data["kind"])
    if cls is None:
        raise ProgramError(f"program: unknown node kind {data['kind']!r}")
    fields = _decode(data["fields"], blob)
    for f in dataclasses.fields(cls):
        if f.name in fields and isinstance(fields[f.name], list) and f.name in (
                "strides", "pads", "dilations"):
            fields[f.name] = tuple(fields[f.name])
    return cls(**fields)


@dataclass
class Program:
    """A compiled model: IR with engines, kernels, instructions and constants."""

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

    @classmethod
    def from_compiled(cls, c: CompiledGraph) -> Program:
        return cls(c.config, c.graph, c.kernels, c.instructions, c.constants, c.constants_addr,
                   c.scratch_addr, c.memory_bytes, c.compile_seconds, c.weights_packed)

    @property
    def config_hash(self) -> str:
        return self.config.hash()

    def memory_image(self) -> np.ndarray:
        """External memory at load time: instructions at 0, constants after them."""
        mem = np.zeros(self.memory_bytes, np.uint8)
        mem[: len(self.instructions)] = np.frombuffer(self.instructions, np.uint8)
        c0 = self.constants_addr
        mem[c0 : c0 + len(self.constants)] = np.frombuffer(self.constants, np.uint8)
        return mem

    # -- serialization ----------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        arrays = _ArrayWriter()
        g = self.graph
        manifest = {
            "config": self.config.to_dict(),
            "graph": {
                "name": g.name, "inputs": g.inputs, "outputs": g.outputs, "opset": g.opset,
                "tensors": {n: {"shape": list(t.shape), "dtype": t.dtype}
                            for n, t in g.tensors.items()},
                "nodes": [_node_to_json(n, arrays) for n in g.nodes],
            },
            "kernels": {name: [_encode(dataclasses.asdict(k), arrays) for k in ks]
                        for name, ks in self.kernels.items()},
            "memory": {"constants_addr": self.constants_addr,
                       "scratch_addr": self.scratch_addr, "memory_bytes": self.memory_bytes},
            "stats": {"compile_seconds": self.compile_seconds,
                      "weights_packed": self.weights_packed},
        }
        body_manifest = json.dumps(manifest, separators=(",", ":")).encode()
        array_blob = b"".join(arrays.chunks)
        body = body_manifest + self.instructions + self.constants + array_blob
        header = _HEADER.pack(
            MAGIC, FORMAT_VERSION, 0, bytes.fromhex(self.config_hash),
            hashlib.sha256(body).digest(), len(body_manifest), len(self.instructions),
            len(self.constants), len(array_blob),
        )
        return header + body

    def save(self, path: str | Path) -> None:
        Path(path).write_bytes(self.to_bytes())

    @classmethod
    def from_bytes(cls, data: bytes, config: AcceleratorConfig | None = None) -> Program:
        """Parse and verify a program; with ``config``, refuse one built for another."""
        if len(data) < _HEADER.size:
            raise ProgramError(f"program: {len(data)} bytes is shorter than the header")
        magic, version, _, cfg_hash, checksum, m, i, c, a = _HEADER.unpack_from(data)
        if magic != MAGIC:
            raise ProgramError(f"program: bad magic {magic!r} (not a trilobit program)")
        if version != FORMAT_VERSION:
            raise ProgramError(f"program: format version {version}, this trilobit reads "
                               f"{FORMAT_VERSION}")
        body = data[_HEADER.size :]
        if len(body) != m + i + c + a:
            raise ProgramError("program: truncated or padded file (section sizes disagree)")
        if hashlib.sha256(body).digest() != checksum:
            raise ProgramError("program: checksum mismatch (corrupted file)")
        if config is not None and config.hash() != cfg_hash.hex():
            raise ProgramError(
                f"program was compiled for configuration {cfg_hash.hex()[:12]}..., "
                f"not for {config.name!r} ({config.hash()[:12]}...)"
            )
        manifest = json.loads(body[:m])
        instructions = body[m : m + i]
        constants = body[m + i : m + i + c]
        blob = memoryview(body[m + i + c :])
        prog_config = AcceleratorConfig.from_dict(manifest["config"])
        if prog_config.hash() != cfg_hash.hex():
            raise ProgramError("program: the embedded configuration does not match its hash")
        gm = manifest["graph"]
        graph = ir.Graph(
            name=gm["name"], nodes=[_node_from_json(n, blob) for n in gm["nodes"]],
            tensors={n: ir.TensorInfo(n, tuple(t["shape"]), t["dtype"])
                     for n, t in gm["tensors"].items()},
            inputs=gm["inputs"], outputs=gm["outputs"], opset=gm["opset"],
        )
        kernels = {name: [Kernel(**_decode(k, blob)) for k in ks]
                   for name, ks in manifest["kernels"].items()}
        mem = manifest["memory"]
        return cls(prog_config, graph, kernels, instructions, constants, mem["constants_addr"],
                   mem["scratch_addr"], mem["memory_bytes"],
                   manifest["stats"]["compile_seconds"], manifest["stats"]["weights_packed"])

    @classmethod
    def load(cls, path: str | Path, config: AcceleratorConfig | None = None) -> Program:
        path = Path(path)
        if not path.is_file():
            raise ProgramError(f"program file {str(path)!r} does not exist")
        return cls.from_bytes(path.read_bytes(), config)
