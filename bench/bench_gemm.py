"""Reference integer GEMM (trilobit.gemm.gemm_int) vs onnxruntime MatMulInteger, one run.

    python bench/bench_gemm.py [--repeat 5]

Prints, per shape, the median time of each and the ratio (ours / onnxruntime), after
checking that both give identical int32 results.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper
from rich.console import Console
from rich.table import Table

from trilobit.gemm import gemm_int

SHAPES = [(64, 4096, 4096), (1, 4096, 4096)]


def matmulinteger_session(K: int, N: int, b: np.ndarray) -> ort.InferenceSession:
    node = helper.make_node("MatMulInteger", ["a", "b"], ["y"])
    graph = helper.make_graph(
        [node], "mmi",
        [helper.make_tensor_value_info("a", TensorProto.INT8, ["M", K])],
        [helper.make_tensor_value_info("y", TensorProto.INT32, ["M", N])],
        initializer=[helper.make_tensor("b", TensorProto.INT8, b.shape, b.tobytes(), raw=True)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def median_time(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="timed runs per measurement")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    table = Table(title="exact int8 GEMM: trilobit.gemm_int vs onnxruntime MatMulInteger")
    for col in ("M x K x N", "gemm_int (ms)", "onnxruntime (ms)", "ratio ours/ort", "GOP/s ours"):
        table.add_column(col, justify="right")
    for M, K, N in SHAPES:
        a = rng.integers(-128, 128, size=(M, K), dtype=np.int8)
        b = rng.integers(-128, 128, size=(K, N), dtype=np.int8)
        sess = matmulinteger_session(K, N, b)
        ref = sess.run(None, {"a": a})[0]
        ours = gemm_int(a, b)
        if not np.array_equal(ours, ref):
            raise SystemExit(f"MISMATCH at {M}x{K}x{N}")
        t_ours = median_time(lambda a=a, b=b: gemm_int(a, b), args.repeat)
        t_ort = median_time(lambda a=a, s=sess: s.run(None, {"a": a}), args.repeat)
        table.add_row(f"{M}x{K}x{N}", f"{t_ours * 1e3:.1f}", f"{t_ort * 1e3:.1f}",
                      f"{t_ours / t_ort:.2f}", f"{2 * M * K * N / t_ours / 1e9:.1f}")
    Console().print(table)


if __name__ == "__main__":
    main()
