"""The bridge system (:class:`trilobit.hw.bridge_soc.BridgeSoC`) as a Verilator executable that
speaks the bridge byte protocol on its standard input and output.

The host driver talks to it exactly as to a board behind a UART: the same request bytes go
in, the same reply bytes come out, produced by the RTL of the bridge, the accelerator and
the on-chip memory. The clock runs while the bridge has work (a request being received or
executed, ``WAIT_IRQ`` included); when the bridge waits for the next request byte the
simulator blocks on its input, so an idle host costs no CPU. Optional arguments
``stall_prob seed`` make the link hold request bytes back and refuse reply bytes at random.

:func:`build_spi_bridge_simulator` builds the same system behind its SPI target
(:class:`SpiBridgeSystem`) with a harness that plays the SPI controller: the host sends
framed transfers on standard input, the harness clocks each one through the RTL's pins (mode
0, chip-select held for the transfer) and answers with the bytes sampled on MISO
(:class:`trilobit.sw.driver.bridge.ProcessSpiBus`).
"""

from __future__ import annotations

from pathlib import Path

from amaranth import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from trilobit.config import AcceleratorConfig

__all__ = ["BRIDGE_HARNESS_CPP", "SPI_HARNESS_CPP", "SpiBridgeSystem", "build_bridge_simulator",
           "build_spi_bridge_simulator", "TOP", "SPI_TOP"]

TOP = "bridge_soc"
SPI_TOP = "spi_bridge_soc"

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


_BUILT: dict[tuple, Path] = {}


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


class SpiBridgeSystem(wiring.Component):
    """:class:`~trilobit.hw.bridge_soc.BridgeSoC` behind an
    :class:`~trilobit.hw.bridge_spi.SpiTarget`, wired as :class:`trilobit.boards.build.BoardTop`
    wires the SPI link on a board (pins at the top, no I/O buffers)."""

    def __init__(self, config: AcceleratorConfig, memory_bytes: int):
        self.config = config
        self.memory_bytes = memory_bytes
        super().__init__({"sck": In(1), "cs_n": In(1, init=1), "mosi": In(1),
                          "miso": Out(1), "irq": Out(1)})

    def elaborate(self, platform):
        from trilobit.hw.bridge_soc import BridgeSoC
        from trilobit.hw.bridge_spi import SpiTarget

        m = Module()
        m.submodules.soc = soc = BridgeSoC(self.config, self.memory_bytes)
        m.submodules.spi = target = SpiTarget()
        m.d.comb += [target.sck.eq(self.sck), target.cs_n.eq(self.cs_n),
                     target.mosi.eq(self.mosi), self.miso.eq(target.miso),
                     soc.frame_start.eq(target.frame_start), self.irq.eq(soc.irq)]
        wiring.connect(m, target.rx, soc.rx)
        wiring.connect(m, soc.tx, target.tx)
        return m


SPI_HARNESS_CPP = r"""
// SPI bridge system driven by a host on stdin/stdout. Request: u32 little-endian length n,
// then n bytes to clock out on MOSI in one chip-select frame (mode 0, MSB first). Reply: the
// n bytes sampled on MISO. Between transfers the clock keeps running (the accelerator works
// on), until IDLE_LIMIT cycles pass without a request; then the harness blocks on stdin.
#include "V@TOP@.h"
#include "verilated.h"
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <poll.h>
#include <unistd.h>
#include <vector>

static bool read_full(uint8_t* data, size_t size) {
    size_t done = 0;
    while (done < size) {
        ssize_t n = read(0, data + done, size - done);
        if (n <= 0) return false;
        done += static_cast<size_t>(n);
    }
    return true;
}

// Usage: V@TOP@ [half_period]: system cycles per half SCK period (at least 4: SCK <= clk/8).
int main(int argc, char** argv) {
    const int half = argc > 1 ? std::atoi(argv[1]) : 4;
    const uint64_t IDLE_LIMIT = 1u << 20;
    Verilated::commandArgs(1, argv);
    std::unique_ptr<V@TOP@> top{new V@TOP@};
    uint64_t cycles = 0;
    auto tick = [&](int n) {
        for (int i = 0; i < n; ++i) {
            top->clk = 1;
            top->eval();
            top->clk = 0;
            top->eval();
            ++cycles;
        }
    };
    top->clk = 0;
    top->rst = 1;
    top->cs_n = 1;
    top->sck = 0;
    top->mosi = 0;
    top->eval();
    tick(2);
    top->rst = 0;
    std::vector<uint8_t> data, back;
    for (;;) {
        uint64_t idle = 0;
        pollfd input{0, POLLIN, 0};
        while (idle < IDLE_LIMIT && poll(&input, 1, 0) == 0) {
            tick(256);
            idle += 256;
        }
        uint8_t header[4];
        if (!read_full(header, 4)) break;  // host closed the link
        const uint32_t size = header[0] | header[1] << 8 | header[2] << 16 |
                              static_cast<uint32_t>(header[3]) << 24;
        data.resize(size);
        back.assign(size, 0);
        if (!read_full(data.data(), size)) break;
        top->cs_n = 0;
        tick(half);
        for (uint32_t i = 0; i < size; ++i) {
            for (int bit = 7; bit >= 0; --bit) {
                top->mosi = (data[i] >> bit) & 1;
                tick(half);
                back[i] = static_cast<uint8_t>(back[i] << 1 | (top->miso & 1));  // at the rise
                top->sck = 1;
                tick(half);
                top->sck = 0;
            }
        }
        tick(half);
        top->cs_n = 1;
        tick(2 * half);
        size_t done = 0;
        while (done < size) {
            ssize_t n = write(1, back.data() + done, size - done);
            if (n <= 0) return 1;
            done += static_cast<size_t>(n);
        }
    }
    std::fprintf(stderr, "cycles %llu\n", static_cast<unsigned long long>(cycles));
    top->final();
    return 0;
}
"""


def build_spi_bridge_simulator(config: AcceleratorConfig, memory_bytes: int) -> Path:
    """Build (or find in the cache) the simulator of ``SpiBridgeSystem(config, memory_bytes)``
    with :data:`SPI_HARNESS_CPP`; returns the executable's path."""
    from trilobit.sim.toolchain import build_cpp_harness, verilog_for

    key = ("spi", config.hash(), memory_bytes)
    if key not in _BUILT or not _BUILT[key].exists():
        verilog = verilog_for(SpiBridgeSystem(config, memory_bytes), SPI_TOP)
        _BUILT[key] = build_cpp_harness(verilog, SPI_TOP,
                                        SPI_HARNESS_CPP.replace("@TOP@", SPI_TOP))
    return _BUILT[key]
