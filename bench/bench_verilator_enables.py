"""Does a register's load enable spare Verilator the logic that feeds the load?

The question behind "decode the bit-serial weights once, at weight load": the logic in front
of a register that loads only now and then still costs a Verilator model instructions on
every cycle unless the model evaluates it only when the register loads. Two designs, run side
by side: ``columns x lanes`` bit-serial term decoders (:class:`BitSerialTermDecoder`, the
``small`` engine has 8 x 8) fed from a 64-bit LFSR that changes every cycle, their outputs
folded into one register that loads on every cycle, or on one cycle in ``--every``; and the
LFSR and counter alone (no decoders) for the cost around them.
Instructions per simulated cycle come from ``valgrind --tool=callgrind`` (two run lengths,
the difference divided by the extra cycles, so start-up cancels out).

Usage: ``python bench/bench_verilator_enables.py [--decoders 64] [--every 16]``
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess

from amaranth import Cat, Const, Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import Out

from trilobit.hw.bitserial import BitSerialTermDecoder
from trilobit.sim.toolchain import build_cpp_harness, verilog_for

HARNESS = r"""
#include "Venables.h"
#include "verilated.h"
#include <cstdio>
#include <cstdlib>
int main(int argc, char** argv) {
    Venables top;
    const long cycles = std::atol(argv[1]);
    top.clk = 0;
    top.rst = 0;
    for (long i = 0; i < cycles; ++i) { top.clk = 1; top.eval(); top.clk = 0; top.eval(); }
    std::printf("%d\n", top.folded);  // keeps the result observable
}
"""


class Decoders(wiring.Component):
    """``count`` term decoders on pseudo-random inputs, folded into a register that loads
    every ``every`` cycles."""

    def __init__(self, count: int, every: int):
        self.count, self.every = count, every
        super().__init__({"folded": Out(8)})

    def elaborate(self, platform) -> Module:
        m = Module()
        lfsr = Signal(64, init=0xACE1ACE1DEADBEEF)
        m.d.sync += lfsr.eq(Cat(lfsr[1:], lfsr[0] ^ lfsr[1] ^ lfsr[3] ^ lfsr[4]))
        phase = Signal(range(self.every))
        m.d.sync += phase.eq(phase + 1)
        fold = Const(0, 8)
        for i in range(self.count):
            dec = BitSerialTermDecoder(bits_per_cycle=2, step_bits=2, lane_shift_bits=3)
            m.submodules[f"decode_{i}"] = dec
            code, step, fmt, type_id = (i * 7) % 56, i % 62, (i * 3) % 61, (i * 5) % 62
            m.d.comb += [dec.code.eq(lfsr[code:code + 8]), dec.step.eq(lfsr[step:step + 2]),
                         dec.fmt.eq(lfsr[fmt:fmt + 3]), dec.type_id.eq(lfsr[type_id:type_id + 2])]
            fold = fold ^ Cat(dec.nonzero, dec.negative, dec.lane_shift, Const(i % 8, 3))
        with m.If(phase == 0):
            m.d.sync += self.folded.eq(self.folded + fold)
        return m


def instructions_per_cycle(every: int, count: int, cycles: int = 20_000) -> float:
    executable = build_cpp_harness(verilog_for(Decoders(count, every), "enables"), "enables",
                                   HARNESS)
    counts = []
    for n in (cycles, 2 * cycles):
        done = subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
                               str(executable), str(n)], capture_output=True, text=True,
                              check=True)
        counts.append(int(re.search(r"Collected\s*:\s*(\d+)", done.stderr).group(1)))
    return (counts[1] - counts[0]) / cycles


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--decoders", type=int, default=64)
    parser.add_argument("--every", type=int, default=16)
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        raise SystemExit("needs valgrind on PATH")
    none = instructions_per_cycle(1, 0)
    always = instructions_per_cycle(1, args.decoders)
    sometimes = instructions_per_cycle(args.every, args.decoders)
    print(f"{args.decoders} term decoders, instructions per simulated cycle (callgrind):")
    print(f"  no decoders (LFSR and counter alone):          {none:8.0f}")
    print(f"  folded into a register loaded every cycle:     {always:8.0f}")
    print(f"  folded into a register loaded 1 cycle in {args.every:<4d} {sometimes:8.0f}"
          f"  (decoders and fold: {sometimes - none:.0f} vs {always - none:.0f})")


if __name__ == "__main__":
    main()
