"""Golden backends vs onnxruntime on the same quantized models, side by side.

For each shipped digits model on the whole digits test set (360 images), and for larger
one-layer QLinearMatMul models on random rows, measures the wall time of:

* onnxruntime (CPU execution provider, the model as shipped);
* the IR reference executor (numerics core, graph level: ``trilobit.sw.reference``);
* a ``Session`` on the ``golden`` backend (instruction-level model of the accelerator
  executing the compiled program, run by run) on its straightforward reference path
  (``GoldenMachine(reference=True)``: every instruction decoded, checked and executed
  afresh), the behaviour before the fast path existed;
* the same session on the golden model's fast path (``trilobit.sim.golden_fast``);

and prints the time ratios to onnxruntime, the fast path's speed-up over the reference
path, whether outputs are identical to onnxruntime (``==ort``; the weight-only models
quantize activations per row and are faithful, not identical) and to each other
(``fast==ref``), the simulated cycles and the projected throughput at ``--fmax-mhz``.
Every time is the best of ``--repeat`` runs (of more for calls shorter than 0.5 s in all)
after a warm-up run, measured in the same process, because the machines are noisy. Times
are processor time of this process (``--clock cpu``, default; ``wall`` for wall time), and
BLAS and onnxruntime run on ``--threads`` threads (default 1): on a shared machine wall time
and thread pools waiting for descheduled workers measure the other processes (OpenBLAS on 2
threads made the reference executor's best time 10x worse than on one under load).

    python bench/bench_runtime.py [--config small] [--batch 64] [--repeat 3] [--no-large]
                                  [--threads 1] [--clock cpu|wall]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parents[1]
MODELS = ["mlp_qdq", "mlp_qdq_perchannel", "mlp_qop", "mlp_qop_matmul", "mlp_dynamic",
          "mlp_ternary", "cnn_qdq", "cnn_qop", "cnn_dynamic", "mlp_matmulnbits",
          "mlp_int4_blocked"]
#: Larger one-layer models: (K, N) of an int8 QLinearMatMul, and the rows fed through it.
LARGE = [(512, 512, 256), (1024, 1024, 64)]


#: Clock of the measurements (``--clock``): processor time of this process or wall time.
CLOCKS = {"cpu": time.process_time, "wall": time.perf_counter}
clock = CLOCKS["cpu"]


def _best(fn, repeat: int, min_seconds: float = 0.0) -> tuple[float, object]:
    """Shortest of at least ``repeat`` calls (more, up to 200, until ``min_seconds`` passed:
    short calls need many samples to see one undisturbed by other processes)."""
    best, result, spent, calls = float("inf"), None, 0.0, 0
    while calls < repeat or (spent < min_seconds and calls < 200):
        t0 = clock()
        result = fn()
        elapsed = clock() - t0
        best, spent, calls = min(best, elapsed), spent + elapsed, calls + 1
    return best, result


def qlinear_matmul(k: int, n: int, seed: int = 0) -> onnx.ModelProto:
    """``y = QLinearMatMul(a, w)`` with int8 activations and random int8 weights ``(k, n)``."""
    rng = np.random.default_rng(seed)
    inits = [
        numpy_helper.from_array(np.array(0.02, np.float32), "a_scale"),
        numpy_helper.from_array(np.array(3, np.int8), "a_zp"),
        numpy_helper.from_array(rng.integers(-127, 128, (k, n)).astype(np.int8), "w"),
        numpy_helper.from_array(np.array(0.01, np.float32), "w_scale"),
        numpy_helper.from_array(np.array(0, np.int8), "w_zp"),
        numpy_helper.from_array(np.array(0.02 * 0.01 * 8 * np.sqrt(k), np.float32), "y_scale"),
        numpy_helper.from_array(np.array(-2, np.int8), "y_zp"),
    ]
    node = helper.make_node("QLinearMatMul", ["a", "a_scale", "a_zp", "w", "w_scale", "w_zp",
                                              "y_scale", "y_zp"], ["y"], name="qmm")
    graph = helper.make_graph(
        [node], "qmm", [helper.make_tensor_value_info("a", TensorProto.INT8, ["M", k])],
        [helper.make_tensor_value_info("y", TensorProto.INT8, ["M", n])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    model.ir_version = 10
    return model


def workloads(with_large: bool):
    """(name, model path or bytes, feeds) of every measured model."""
    sys.path.insert(0, str(ROOT / "tests" / "sw"))
    from sw_models import digits_inputs, model_path

    for name in MODELS:
        feeds, _ = digits_inputs(name)
        yield name, str(model_path(name)), feeds
    if with_large:
        rng = np.random.default_rng(1)
        for k, n, rows in LARGE:
            a = rng.integers(-128, 128, (rows, k)).astype(np.int8)
            yield f"qlinear_{k}x{n} m={rows}", qlinear_matmul(k, n).SerializeToString(), {"a": a}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="small")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-large", action="store_true", help="digits models only")
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="cpu",
                        help="processor time of this process (default) or wall time")
    parser.add_argument("--threads", type=int, default=1,
                        help="BLAS and onnxruntime threads (0: their defaults)")
    parser.add_argument("--fmax-mhz", type=float, default=90.0,
                        help="clock for projected throughput (ECP5-class default)")
    args = parser.parse_args()
    global clock
    clock = CLOCKS[args.clock]
    if args.threads:
        from threadpoolctl import threadpool_limits  # installed with scikit-learn (dev)

        threadpool_limits(limits=args.threads)
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads

    from trilobit.sw.onnx_import import import_model
    from trilobit.sw.reference import ReferenceExecutor
    from trilobit.sw.runtime import Session

    print(f"config {args.config}, batch {args.batch}, best of {args.repeat}+ after a warm-up "
          f"run, {args.clock} time, {args.threads or 'default'} thread(s), throughput projected at "
          f"{args.fmax_mhz:g} MHz")
    print(f"{'model':24s} {'ort ms':>8s} {'ref ms':>8s} {'ref/ort':>8s} {'gold-ref ms':>11s} "
          f"{'/ort':>6s} {'gold ms':>8s} {'/ort':>6s} {'speedup':>7s} {'==ort':>5s} "
          f"{'fast==ref':>9s} {'cycles':>10s} {'rows/s@fmax':>11s}")
    for name, model, feeds in workloads(not args.no_large):
        rows = next(iter(feeds.values())).shape[0]
        ort_session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        ort_session.run(None, feeds)
        t_ort, theirs = _best(lambda s=ort_session, f=feeds: s.run(None, f), args.repeat, 0.5)
        executor = ReferenceExecutor(import_model(model))
        executor.run(feeds)
        t_ref, _ = _best(lambda e=executor, f=feeds: e.run(f), args.repeat, 0.5)

        # The larger layers take more than the default cycle budget per run.
        session = Session(model, config=args.config, batch=args.batch,
                          timeout_cycles=(1 << 32) - 1)
        machine = session.backend.machine
        machine.reference = True
        session.run(feeds)  # warm: host-op sessions created
        t_slow, slow = _best(lambda s=session, f=feeds: s.run(f), args.repeat, 1.0)
        machine.reference = False
        session.run(feeds)  # warm: decoded words, run plans and weight tiles cached
        session.stats.nodes.clear()
        session.run(feeds)
        cycles = session.counters()["cycles"]
        t_fast, fast = _best(lambda s=session, f=feeds: s.run(f), args.repeat, 0.5)

        same_ort = all(np.array_equal(o, t) for o, t in zip(fast.values(), theirs, strict=True))
        same_ref = all(np.array_equal(fast[k], slow[k]) for k in fast)
        rate = rows / (cycles / (args.fmax_mhz * 1e6)) if cycles else float("nan")
        print(f"{name:24s} {t_ort * 1e3:8.2f} {t_ref * 1e3:8.2f} {t_ref / t_ort:8.1f} "
              f"{t_slow * 1e3:11.1f} {t_slow / t_ort:6.0f} {t_fast * 1e3:8.2f} "
              f"{t_fast / t_ort:6.1f} {t_slow / t_fast:7.1f} {'yes' if same_ort else 'no':>5s} "
              f"{'yes' if same_ref else 'NO':>9s} {cycles:10d} {rate:11.0f}")


if __name__ == "__main__":
    main()
