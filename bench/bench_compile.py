"""Compile time and weight-packing throughput for a large ternary model.

Builds a BitNet-style QDQ model of ``--layers`` square ternary MatMul layers
(``--dim`` x ``--dim`` int8 initializers with values in {-1, 0, 1}, int8 activations) in
memory, then times each stage: import (onnx checker + shape inference + pattern matching),
compile (legalise, tile, pack, schedule, emit) and serialization to ``.tbp``.

    python bench/bench_compile.py                      # 2048 x 2048 x 24, config small
    python bench/bench_compile.py --dim 512 --layers 4 --config tiny
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from onnx import TensorProto, helper, numpy_helper


def ternary_model(dim: int, layers: int, seed: int = 0):
    """QDQ chain: Q(x) -> [DQ -> MatMul(DQ(W_i ternary)) -> Q] x layers -> DQ."""
    rng = np.random.default_rng(seed)
    f32 = TensorProto.FLOAT
    nodes, inits = [], []
    inits += [numpy_helper.from_array(np.array(0.05, np.float32), "s"),
              numpy_helper.from_array(np.array(0, np.int8), "zp")]
    nodes.append(helper.make_node("QuantizeLinear", ["x", "s", "zp"], ["q0"]))
    for i in range(layers):
        w = rng.integers(-1, 2, (dim, dim), dtype=np.int8)
        inits += [numpy_helper.from_array(w, f"w{i}"),
                  numpy_helper.from_array(np.array(0.02, np.float32), f"ws{i}"),
                  numpy_helper.from_array(np.array(0, np.int8), f"wz{i}")]
        nodes += [
            helper.make_node("DequantizeLinear", [f"q{i}", "s", "zp"], [f"a{i}"]),
            helper.make_node("DequantizeLinear", [f"w{i}", f"ws{i}", f"wz{i}"], [f"wf{i}"]),
            helper.make_node("MatMul", [f"a{i}", f"wf{i}"], [f"y{i}"], name=f"layer{i}"),
            helper.make_node("QuantizeLinear", [f"y{i}", "s", "zp"], [f"q{i + 1}"]),
        ]
    nodes.append(helper.make_node("DequantizeLinear", [f"q{layers}", "s", "zp"], ["y"]))
    graph = helper.make_graph(nodes, "ternary_chain",
                              [helper.make_tensor_value_info("x", f32, [1, dim])],
                              [helper.make_tensor_value_info("y", f32, [1, dim])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    model.ir_version = 10
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--layers", type=int, default=24)
    parser.add_argument("--config", default="small")
    args = parser.parse_args()

    from trilobit.sw.compiler import compile_graph
    from trilobit.sw.onnx_import import import_model
    from trilobit.sw.program import Program

    t0 = time.perf_counter()
    model = ternary_model(args.dim, args.layers)
    t1 = time.perf_counter()
    graph = import_model(model)
    t2 = time.perf_counter()
    compiled = compile_graph(graph, args.config)
    t3 = time.perf_counter()
    data = Program.from_compiled(compiled).to_bytes()
    t4 = time.perf_counter()
    weights = args.dim * args.dim * args.layers
    engines = {n.engine for n in compiled.graph.nodes if n.kind == "QMatMul"}
    insns = len(compiled.instructions) // 16
    print(f"model: {args.layers} ternary layers of {args.dim}x{args.dim} "
          f"({weights / 1e6:.1f} M weights), config {args.config}, engines {sorted(engines)}")
    print(f"build ONNX in memory   {t1 - t0:8.2f} s")
    print(f"import (check, infer, match) {t2 - t1:8.2f} s")
    print(f"compile (legalise..emit)     {t3 - t2:8.2f} s  -> {insns} instructions, "
          f"{len(compiled.constants) / 2**20:.1f} MiB constants")
    print(f"serialize .tbp               {t4 - t3:8.2f} s  -> {len(data) / 2**20:.1f} MiB")
    print(f"packing throughput (compile stage): {weights / (t3 - t2) / 1e6:.1f} M weights/s")
    print(f"end to end (import+compile+serialize): {weights / (t4 - t1) / 1e6:.1f} M weights/s")


if __name__ == "__main__":
    main()
