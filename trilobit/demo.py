"""Verilator smoke check: a small int8 dot-product engine, simulated and checked bit for bit.

Run by ``trilobit demo --rtl-check`` (or ``trilobit demo --vectors N ...`` for this check
alone); it proves that Amaranth, Verilator and the C++ compiler work together on a machine.

What runs, for real: an Amaranth design (:class:`Int8DotProduct`) is converted to Verilog,
compiled by Verilator into a C++ harness (cached after the first run), fed random int8
vectors plus extreme ones (all -128 x -128 at the longest length, all zeros, single
elements) with random valid/ready stalls on both streams, and every dot product it returns
is compared with numpy's. Any mismatch fails the command.
"""

from __future__ import annotations

import argparse
import dataclasses
import subprocess
import time

import numpy as np
from amaranth.hdl import Module, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from trilobit.errors import BackendError, ConfigError

__all__ = ["DemoResult", "Int8DotProduct", "demo_vectors", "run_demo"]

#: Longest vector the demo sends (elements). 4096 x 128**2 = 2**26 fits the 32-bit
#: accumulator with room to spare.
MAX_LENGTH = 4096

_HARNESS = r"""
#include "Vdot.h"
#include "verilated.h"
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <iterator>
#include <vector>

// stdin: uint32 vector count, then per vector a uint32 length and length (a, b) int8 pairs.
// argv[1]: stall probability in 1/65536 units, argv[2]: seed.
// stdout: one dot product per line, then "cycles <n> seconds <s>".
static uint64_t state;
static uint32_t next_random() {  // xorshift64
    state ^= state << 13; state ^= state >> 7; state ^= state << 17;
    return static_cast<uint32_t>(state >> 32);
}

int main(int argc, char **argv) {
    const uint32_t stall = argc > 1 ? std::strtoul(argv[1], nullptr, 10) : 0;
    state = argc > 2 ? std::strtoull(argv[2], nullptr, 10) * 2654435761ull + 1 : 1;
    std::vector<unsigned char> in((std::istreambuf_iterator<char>(std::cin)),
                                  std::istreambuf_iterator<char>());
    auto word = [&in](size_t at) {
        return in[at] | in[at + 1] << 8 | in[at + 2] << 16 | uint32_t(in[at + 3]) << 24;
    };
    std::vector<uint32_t> beats;  // payload: a in bits 0-7, b in 8-15, last in 16
    size_t at = 4;
    const uint32_t vectors = word(0);
    for (uint32_t v = 0; v < vectors; ++v) {
        const uint32_t length = word(at); at += 4;
        for (uint32_t k = 0; k < length; ++k, at += 2)
            beats.push_back(in[at] | in[at + 1] << 8 | (k + 1 == length) << 16);
    }
    Vdot top;
    auto edge = [&top]() { top.clk = 1; top.eval(); top.clk = 0; top.eval(); };
    top.rst = 1; edge(); top.rst = 0;
    size_t sent = 0, received = 0;
    uint64_t cycles = 0;
    bool valid = false;
    const uint64_t limit = 20 * uint64_t(beats.size()) + 10000;
    auto start = std::chrono::steady_clock::now();
    while (received < vectors) {
        if (!valid && sent < beats.size() && (next_random() & 0xffff) >= stall) valid = true;
        const bool ready = (next_random() & 0xffff) >= stall;
        top.i___05Fvalid = valid;
        top.i___05Fpayload = valid ? beats[sent] : 0;
        top.o___05Fready = ready;
        top.eval();
        const bool accepted = valid && top.i___05Fready;
        const bool delivered = ready && top.o___05Fvalid;
        const int32_t result = static_cast<int32_t>(top.o___05Fpayload);
        edge();
        ++cycles;
        if (accepted) { ++sent; valid = false; }
        if (delivered) { std::printf("%d\n", result); ++received; }
        if (cycles > limit) { std::fprintf(stderr, "timeout after %llu cycles\n",
                                           (unsigned long long)cycles); return 3; }
    }
    const double seconds = std::chrono::duration<double>(
        std::chrono::steady_clock::now() - start).count();
    std::printf("cycles %llu seconds %.6f\n", (unsigned long long)cycles, seconds);
    top.final();
    return 0;
}
"""


class Int8DotProduct(wiring.Component):
    """Dot product of int8 vectors streamed as (a, b) pairs.

    ``i``: one pair per transfer, ``last`` marks a vector's final pair.
    ``o``: the 32-bit dot product of each vector, one transfer per vector.

    Takes one pair per cycle. A result waits in the output register until taken; ``i``
    stalls only while a result is waiting and not being taken, because the register is
    then still needed.
    """

    def __init__(self) -> None:
        pair = data.StructLayout({"a": signed(8), "b": signed(8), "last": unsigned(1)})
        super().__init__({"i": In(stream.Signature(pair)),
                          "o": Out(stream.Signature(signed(32)))})

    def elaborate(self, platform):
        m = Module()
        acc = Signal(signed(32))
        total = acc + self.i.payload.a * self.i.payload.b
        m.d.comb += self.i.ready.eq(~self.o.valid | self.o.ready)
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        with m.If(self.i.valid & self.i.ready):
            with m.If(self.i.payload.last):
                m.d.sync += [self.o.payload.eq(total), self.o.valid.eq(1), acc.eq(0)]
            with m.Else():
                m.d.sync += acc.eq(total)
        return m


def demo_vectors(rng: np.random.Generator, count: int,
                 max_length: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """``count`` (a, b) int8 vector pairs: the extremes first (longest all -128 x -128,
    longest 127 x -128, all zeros, one element), then random lengths 1..``max_length``."""
    if not 1 <= max_length <= MAX_LENGTH:
        raise ConfigError(f"max_length must be in 1..{MAX_LENGTH}, not {max_length}")
    if count < 4:
        raise ConfigError(f"vectors must be at least 4 (the extreme cases), not {count}")
    full = np.full(max_length, -128, np.int8)
    vectors = [(full, full), (np.full(max_length, 127, np.int8), full),
               (np.zeros(max_length, np.int8), rng.integers(-128, 128, max_length, np.int8)),
               (np.array([-128], np.int8), np.array([127], np.int8))]
    for length in rng.integers(1, max_length + 1, size=count - len(vectors)):
        vectors.append((rng.integers(-128, 128, length, np.int8),
                        rng.integers(-128, 128, length, np.int8)))
    return vectors


@dataclasses.dataclass(frozen=True)
class DemoResult:
    """What the demo measured. Times in seconds, rates in cycles per second."""

    vectors: int
    macs: int
    cycles: int
    mismatches: int
    first_mismatch: str | None
    built_now: bool
    build_seconds: float
    simulate_seconds: float


def run_demo(vectors: int = 200, max_length: int = 256, stall_prob: float = 0.25,
             seed: int = 0, progress=None) -> DemoResult:
    """Build, simulate and check the dot-product engine; see the module docstring.

    ``progress(step: str)`` is called before each of the four steps (for a display).
    """
    from trilobit.sim.toolchain import build_cpp_harness, verilog_for

    if not 0.0 <= stall_prob < 1.0:
        raise ConfigError(f"stall probability must be in [0, 1), not {stall_prob}")
    report = progress or (lambda step: None)
    rng = np.random.default_rng(seed)
    pairs = demo_vectors(rng, vectors, max_length)

    report("elaborating the Amaranth design to Verilog")
    verilog = verilog_for(Int8DotProduct(), "dot")

    report("compiling with Verilator (cached after the first run)")
    start = time.perf_counter()
    executable = build_cpp_harness(verilog, "dot", _HARNESS)
    build_seconds = time.perf_counter() - start

    report(f"simulating {len(pairs)} dot products with random stalls")
    stimulus = [np.array([len(pairs)], "<u4").tobytes()]
    for a, b in pairs:
        stimulus.append(np.array([len(a)], "<u4").tobytes())
        stimulus.append(np.stack([a, b], axis=1).tobytes())
    start = time.perf_counter()
    run = subprocess.run([str(executable), str(int(stall_prob * 65536)), str(seed)],
                         input=b"".join(stimulus), capture_output=True, timeout=600)
    simulate_seconds = time.perf_counter() - start
    if run.returncode != 0:
        raise BackendError(f"the simulation failed (exit code {run.returncode}): "
                           f"{run.stderr.decode(errors='replace').strip()}")
    lines = run.stdout.decode().split("\n")
    results = [int(line) for line in lines[:len(pairs)]]
    cycles = int(lines[len(pairs)].split()[1])

    report("comparing with numpy")
    expected = [int(np.dot(a.astype(np.int64), b.astype(np.int64))) for a, b in pairs]
    wrong = [i for i, (got, want) in enumerate(zip(results, expected, strict=True))
             if got != want]
    first = None
    if wrong:
        i = wrong[0]
        first = f"vector {i} (length {len(pairs[i][0])}): got {results[i]}, numpy {expected[i]}"
    return DemoResult(vectors=len(pairs), macs=sum(len(a) for a, _ in pairs), cycles=cycles,
                      mismatches=len(wrong), first_mismatch=first,
                      built_now=build_seconds > 1.0, build_seconds=build_seconds,
                      simulate_seconds=simulate_seconds)


def _run_demo_command(args: argparse.Namespace) -> int:
    """Run the check with a progress bar and print a summary; ``args`` has ``vectors``,
    ``max_length``, ``stall`` and ``seed``. Returns 0; raises BackendError on a mismatch."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console()
    with Progress(TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(),
                  console=console) as progress:
        task = progress.add_task("starting", total=4)
        steps = 0

        def step(description: str) -> None:
            nonlocal steps
            if steps:
                progress.advance(task)
            steps += 1
            progress.update(task, description=description)

        result = run_demo(args.vectors, args.max_length, args.stall, args.seed, progress=step)
        progress.update(task, completed=4, description="done")
    build = (f"built in {result.build_seconds:.1f} s" if result.built_now
             else "found in the build cache")
    console.print(f"Int8DotProduct, Verilator model {build}")
    console.print(f"{result.vectors} dot products, {result.macs} int8 MACs, "
                  f"{result.cycles} cycles with stall probability {args.stall} "
                  f"({result.macs / result.cycles:.2f} MACs/cycle), simulated at "
                  f"{result.cycles / max(result.simulate_seconds, 1e-9) / 1e6:.1f} M cycles/s "
                  "including process start")
    if result.mismatches:
        raise BackendError(f"{result.mismatches} of {result.vectors} dot products differ from "
                           f"numpy; first: {result.first_mismatch}")
    console.print(f"[green]all {result.vectors} results equal numpy's, bit for bit[/]")
    return 0
