"""What the compact POST unit costs in cycles: random POST-heavy layers (small ``k``, many
outputs) on the iCEBreaker's accelerator built compact and pipelined, in Verilator, same
programs side by side.

Usage: ``python bench/bench_post_compact.py [--layers 8] [--max-k 16]``

Prints per layer the cycles of both builds, their ratio and the part of the difference the
POST unit makes (``m * n`` results at ``PostUnit.interval - 1`` more cycles each; the rest is
the compact core's sequential dispatch checks and the GEMM units' extra cycle per channel
block), then the totals. Outputs and status are checked equal.
"""

from __future__ import annotations

import argparse
import re

import numpy as np
from bench_accel import cycles_side_by_side, supported_layer_case

from trilobit.boards import get_board
from trilobit.hw.accel_post import PostUnit
from trilobit.sim.accel_verilator import VerilatorAccelerator


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--max-k", type=int, default=16)
    parser.add_argument("--max-n", type=int, default=64)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    compact = get_board("icebreaker").config
    builds = {"compact": compact, "pipelined": compact.replace(compact=False)}
    post = PostUnit(compact)
    interval = post.interval
    post._MustUse__silence = True  # only its interval is wanted
    rtl = {name: VerilatorAccelerator(config) for name, config in builds.items()}
    rng = np.random.default_rng(args.seed)
    totals = dict.fromkeys(builds, 0)
    post_total = 0
    print(f"{'layer':40s} {'compact':>9s} {'pipelined':>9s} {'ratio':>6s} {'POST part':>9s}")
    for _ in range(args.layers):
        case = supported_layer_case(rng, compact, max_n=args.max_n, max_k=args.max_k)
        cycles, finals = cycles_side_by_side(rtl, case)
        for name in builds:
            totals[name] += cycles[name]
        assert np.array_equal(finals["compact"], finals["pipelined"]), case.description
        m, n = (int(x) for x in re.search(r"m=(\d+) n=(\d+)", case.description).groups())
        post_extra = m * n * (interval - 1)
        post_total += post_extra
        print(f"{case.description[:40]:40s} {cycles['compact']:9d} {cycles['pipelined']:9d} "
              f"{cycles['compact'] / cycles['pipelined']:6.2f} {post_extra:9d}")
    print(f"{'total':40s} {totals['compact']:9d} {totals['pipelined']:9d} "
          f"{totals['compact'] / totals['pipelined']:6.2f} {post_total:9d}")
    print(f"POST interval {interval} cycles: {post_total} of the "
          f"{totals['compact'] - totals['pipelined']} extra cycles")


if __name__ == "__main__":
    main()
