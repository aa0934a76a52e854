"""Cycles of random layers on the iCEBreaker's accelerator and on variants of it, in
Verilator, the same programs side by side: what a change to the preset costs in time.

Usage: ``python bench/bench_icebreaker.py [--layers 8] [--max-k 512] [--max-n 40]
[--variant NAME='{"tlmm": {"group_size": 2, "rows": 2, "units": 1}}' ...]``

Every variant is the preset with the given config fields changed (JSON). Prints per layer
the cycles of the preset and of each variant and their ratio, then the totals; outputs and
status are checked equal to the preset's.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
from bench_accel import cycles_side_by_side, supported_layer_case

from trilobit.boards import get_board
from trilobit.config import AcceleratorConfig
from trilobit.sim.accel_verilator import VerilatorAccelerator

ROWS_2 = '{"tlmm": {"group_size": 2, "rows": 2, "units": 1}}'


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--max-k", type=int, default=512)
    parser.add_argument("--max-n", type=int, default=40)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--variant", action="append", default=[],
                        help=f"NAME=JSON config changes (default: rows2={ROWS_2})")
    args = parser.parse_args()
    preset = get_board("icebreaker").config
    builds = {"icebreaker": preset}
    for item in args.variant or [f"rows2={ROWS_2}"]:
        name, _, changes = item.partition("=")
        builds[name] = AcceleratorConfig.from_dict({**preset.to_dict(), **json.loads(changes)})
    rtl = {name: VerilatorAccelerator(config) for name, config in builds.items()}
    rng = np.random.default_rng(args.seed)
    totals = dict.fromkeys(builds, 0)
    others = [name for name in builds if name != "icebreaker"]
    print(f"{'layer':44s} " + " ".join(f"{name:>11s}" for name in builds)
          + "".join(f" {'ratio':>6s}" for _ in others))
    for _ in range(args.layers):
        case = supported_layer_case(rng, preset, max_n=args.max_n, max_k=args.max_k)
        cycles, finals = cycles_side_by_side(rtl, case)
        for name in builds:
            totals[name] += cycles[name]
            assert np.array_equal(finals[name], finals["icebreaker"]), (name, case.description)
        print(f"{case.description[:44]:44s} " + " ".join(f"{cycles[n]:11d}" for n in builds)
              + "".join(f" {cycles['icebreaker'] / cycles[n]:6.2f}" for n in others))
    print(f"{'total':44s} " + " ".join(f"{totals[n]:11d}" for n in builds)
          + "".join(f" {totals['icebreaker'] / totals[n]:6.2f}" for n in others))


if __name__ == "__main__":
    main()
