"""The bridge system (:class:`trilobit.hw.bridge_soc.BridgeSoC`) as a Verilator executable that
speaks the bridge byte protocol on its standard input and output.

The host driver talks to it exactly as to a board behind a UART: the same request bytes go
in, the same reply bytes come out, produced by the RTL of the bridge, the accelerator and
the on-chip memory. The clock runs while the bridge has work (a request being received or
executed, ``WAIT_IRQ`` included); when the bridge waits for the next request byte the
simulator blocks on its input, so an idle host costs no CPU. Optional arguments
``stall_prob seed`` make the link hold request bytes back and refuse reply bytes at random.
"""

from __future__ import annotations

from pathlib import Path

from trilobit.config import AcceleratorConfig

__all__ = ["BRIDGE_HARNESS_CPP", "build_bridge_simulator", "TOP"]

TOP = "bridge_soc"

BRIDGE_HARNESS_CPP = r"""
// Bridge system on stdin/stdout: request bytes in, reply bytes out (trilobit bridge protocol).
#include "V@TOP@.h"
#include "verilated.h"
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <memory>
#include <unistd.h>
#include <vector>

struct Random {  // xorshift64*: a stall pattern independent of the C++ library
    uint64_t state;
    double next() {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        const uint64_t bits = (state * 2685821657736338717ULL) >> 11;
        return static_cast<double>(bits) * (1.0 / 9007199254740992.0);
    }
};

// Usage: Vbridge_soc [stall_prob [seed]]: with stall_prob > 0 the link holds bytes back
// (rx valid low) and refuses them (tx ready low) at random, as a slow UART would.
int main(int argc, char** argv) {
    const double stall_prob = argc > 1 ? std::atof(argv[1]) : 0.0;
    Random rng{(argc > 2 ? std::strtoull(argv[2], nullptr, 0) : 1) * 2 + 1};
    Verilated::commandArgs(1, argv);
    std::unique_ptr<V@TOP@> top{new V@TOP@};
    uint64_t cycles = 0;
    auto tick = [&]() {
        top->eval();
        top->clk = 1;
        top->eval();
        top->clk = 0;
        top->eval();
        ++cycles;
    };
    std::deque<uint8_t> input;
    std::vector<uint8_t> output;
    uint8_t chunk[65536];
    top->clk = 0;
    top->rst = 1;
    tick();
    tick();
    top->rst = 0;
    top->frame_start = 0;
    for (;;) {
        top->tx___05Fready = stall_prob == 0.0 || rng.next() >= stall_prob;
        const bool offer = stall_prob == 0.0 || rng.next() >= stall_prob;
        top->rx___05Fvalid = offer && !input.empty();
        top->rx___05Fpayload = input.empty() ? 0 : input.front();
        top->eval();
        if (top->rx___05Fready && input.empty()) {
            // The bridge waits for a byte: hand over what it said, then wait for the host.
            if (!output.empty()) {
                std::size_t done = 0;
                while (done < output.size()) {
                    ssize_t n = write(1, output.data() + done, output.size() - done);
                    if (n <= 0) return 1;
                    done += static_cast<std::size_t>(n);
                }
                output.clear();
            }
            ssize_t n = read(0, chunk, sizeof chunk);
            if (n <= 0) break;  // host closed the link
            input.insert(input.end(), chunk, chunk + n);
            continue;
        }
        if (top->rx___05Fready && top->rx___05Fvalid) input.pop_front();
        if (top->tx___05Fvalid && top->tx___05Fready) output.push_back(top->tx___05Fpayload);
        tick();
    }
    std::fprintf(stderr, "cycles %llu\n", static_cast<unsigned long long>(cycles));
    top->final();
    return 0;
}
"""


_BUILT: dict[tuple[str, int], Path] = {}


def build_bridge_simulator(config: AcceleratorConfig, memory_bytes: int) -> Path:
    """Build (or find in the cache) the simulator of ``BridgeSoC(config, memory_bytes)``.

    Returns the executable's path. Converting the design takes seconds; the Verilator build
    is cached by the Verilog text (:func:`trilobit.sim.toolchain.build_cpp_harness`).
    """
    from trilobit.hw.bridge_soc import BridgeSoC
    from trilobit.sim.toolchain import build_cpp_harness, verilog_for

    key = (config.hash(), memory_bytes)
    if key not in _BUILT or not _BUILT[key].exists():  # converting takes seconds
        verilog = verilog_for(BridgeSoC(config, memory_bytes), TOP)
        _BUILT[key] = build_cpp_harness(verilog, TOP, BRIDGE_HARNESS_CPP.replace("@TOP@", TOP))
    return _BUILT[key]
