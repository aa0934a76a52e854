"""Golden backends vs onnxruntime on the same quantized digits models, side by side.

For each shipped model, on the whole digits test set (360 images), measures wall time of:

* onnxruntime (CPU execution provider, the model as shipped);
* the IR reference executor (numerics core, graph level: ``trilobit.sw.reference``);
* a ``Session`` on the ``golden`` backend (instruction-level model of the accelerator
  executing the compiled program, run by run);

and prints the time ratios, whether outputs are identical, the simulated cycles and the
projected throughput at ``--fmax-mhz``. Ratios are measured in the same run because the
machines are noisy.

    python bench/bench_runtime.py [--config small] [--batch 64] [--repeat 3]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

ROOT = Path(__file__).resolve().parents[1]
MODELS = ["mlp_qdq", "mlp_qdq_perchannel", "mlp_qop", "mlp_qop_matmul", "mlp_dynamic",
          "mlp_ternary", "cnn_qdq", "cnn_qop", "cnn_dynamic", "mlp_matmulnbits",
          "mlp_int4_blocked"]


def _best(fn, repeat: int) -> tuple[float, object]:
    best, result = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t0)
    return best, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="small")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--fmax-mhz", type=float, default=90.0,
                        help="clock for projected throughput (ECP5-class default)")
    args = parser.parse_args()

    sys.path.insert(0, str(ROOT / "tests" / "sw"))
    from sw_models import digits_inputs, model_path

    from trilobit.sw.onnx_import import import_model
    from trilobit.sw.reference import ReferenceExecutor
    from trilobit.sw.runtime import Session

    print(f"config {args.config}, batch {args.batch}, best of {args.repeat}, "
          f"throughput projected at {args.fmax_mhz:g} MHz")
    header = (f"{'model':20s} {'ort ms':>8s} {'ref ms':>8s} {'ref/ort':>8s} {'golden ms':>10s} "
              f"{'gold/ort':>9s} {'==ort':>5s} {'cycles':>10s} {'img/s@fmax':>11s}")
    print(header)
    for name in MODELS:
        feeds, _ = digits_inputs(name)
        images = next(iter(feeds.values())).shape[0]
        ort_session = ort.InferenceSession(str(model_path(name)),
                                           providers=["CPUExecutionProvider"])
        t_ort, theirs = _best(lambda s=ort_session, f=feeds: s.run(None, f), args.repeat)
        executor = ReferenceExecutor(import_model(model_path(name)))
        t_ref, _ = _best(lambda e=executor, f=feeds: e.run(f), args.repeat)
        session = Session(model_path(name), config=args.config, batch=args.batch)
        session.run(feeds)  # warm: host-op sessions created
        session.stats.nodes.clear()
        t_gold, ours = _best(lambda s=session, f=feeds: s.run(f), 1)
        cycles = session.counters()["cycles"]
        same = all(np.array_equal(o, t) for o, t in zip(ours.values(), theirs, strict=True))
        rate = images / (cycles / (args.fmax_mhz * 1e6)) if cycles else float("nan")
        print(f"{name:20s} {t_ort * 1e3:8.2f} {t_ref * 1e3:8.2f} {t_ref / t_ort:8.1f} "
              f"{t_gold * 1e3:10.1f} {t_gold / t_ort:9.0f} {'yes' if same else 'no':>5s} "
              f"{cycles:10d} {rate:11.0f}")


if __name__ == "__main__":
    main()
