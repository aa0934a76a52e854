"""Whole programs on the accelerator RTL in Verilator, memory model inside the simulation.

Python writes the memory image to a file, the C++ harness (``sim/harness/accel_harness.cpp``)
programs the CSRs, starts the run, serves the data bus (Wishbone, or AXI4 with AXI4-Lite
CSRs when ``config.bus == "axi4"``) from the image with random stalls and stops at the
interrupt; no Python runs per clock cycle. The simulated top (``sim/harness/accel_sim.sv``)
holds the core and the bus side of the memory model, which calls the harness through DPI-C
on every rising edge, so that during a run no logic depends on a top-level input. The
result has the same shape as the golden model's (:class:`trilobit.sim.golden.RunResult`), so
the two compare field by field.
"""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from trilobit.config import AcceleratorConfig
from trilobit.errors import BackendError
from trilobit.hw.accel_axi import AcceleratorAxi
from trilobit.hw.accel_compute import exact_log2
from trilobit.hw.accel_core import AcceleratorCore
from trilobit.hw.accel_csr import COUNTERS, REGISTERS
from trilobit.isa import ErrorCode
from trilobit.sim.golden import RunResult
from trilobit.sim.toolchain import build_cpp_harness, verilog_for, waves_format

__all__ = ["SIM_TOP", "TOP", "VerilatorAccelerator", "harness_source", "simulation_verilog"]

TOP = "accel"  # the core's Verilog module
SIM_TOP = "accel_sim"  # the simulated top: the core and the memory's bus side
_HARNESS = Path(__file__).parent / "harness" / "accel_harness.cpp"
_SIM_TOP = Path(__file__).parent / "harness" / "accel_sim.sv"


def simulation_verilog(config: AcceleratorConfig) -> str:
    """The Verilog Verilator builds for ``config``: the core (module :data:`TOP`, Wishbone or
    AXI4) and the simulated top :data:`SIM_TOP` around it."""
    core = AcceleratorAxi(config) if config.bus == "axi4" else AcceleratorCore(config)
    defines = [f"`define LINE_BITS {config.mem_width}",
               f"`define LINE_LOG2 {exact_log2(config.line_bytes)}"]
    if config.bus == "axi4":
        defines.append("`define BUS_AXI")
    top = _SIM_TOP.read_text().replace("@CORE@", TOP).replace("@DEFINES@", "\n".join(defines))
    return verilog_for(core, TOP) + "\n" + top


def harness_source(config: AcceleratorConfig) -> str:
    """The C++ harness text for ``config`` (CSR offsets and line size filled in)."""
    defines = [f"#define LINE_BYTES {config.line_bytes}",
               f"#define BUS_AXI {int(config.bus == 'axi4')}"]
    defines += [f"#define TRILOBIT_CSR_{name} 0x{off:02x}u" for name, off in REGISTERS.items()]
    table = ", ".join(f'{{"{name}", 0x{off:02x}u}}' for name, off in COUNTERS.items())
    defines.append("struct Counter { const char* name; uint32_t offset; };")
    defines.append(f"static const Counter COUNTER_TABLE[] = {{{table}}};")
    return _HARNESS.read_text().replace("@TOP@", SIM_TOP).replace("@DEFINES@",
                                                                  "\n".join(defines))


class VerilatorAccelerator:
    """The RTL of ``config`` compiled into a stand-alone simulator (cached by Verilog hash).

    Args:
        config: the accelerator.
        waves: also build a tracing variant (VCD, or FST when the system has lz4).
        verilator_args: further Verilator arguments, for speed comparisons (e.g.
            ``("--threads", "2")``); each distinct list is a build of its own.
    """

    def __init__(self, config: AcceleratorConfig, waves: bool | str | Path = False,
                 verilator_args: Sequence[str] = ()):
        self.config = config
        # With a path, every run writes its waves there (run n > 0 to stem.n.suffix).
        self.waves_path = Path(waves) if isinstance(waves, str | Path) else None
        self.runs = 0
        args = list(verilator_args)
        self.waves_format = None
        if waves:
            self.waves_format = waves_format()
            args += ["--trace-fst"] if self.waves_format == "fst" else ["--trace"]
        self.executable = build_cpp_harness(simulation_verilog(config), SIM_TOP,
                                            harness_source(config), extra_args=args)

    def run(
        self,
        memory: np.ndarray,
        prog_base: int,
        data_base: int,
        window: tuple[int, int],
        watchdog: int = 0,
        *,
        stall_prob: float = 0.0,
        seed: int = 1,
        max_cycles: int = 50_000_000,
        waves: str | Path | None = None,
    ) -> tuple[RunResult, np.ndarray, dict]:
        """Run one program. Returns (result, final memory image, harness figures).

        Harness figures: ``bus_outside_window`` and ``bus_beyond_memory`` (bus transfers the
        RTL issued outside the window / memory: must be 0), ``sim_cycles`` (cycles from start
        to interrupt), ``seconds`` (wall time of those cycles) and ``cpu_seconds`` (processor
        time the simulation spent on them, the fairer speed figure on a shared machine).
        Raises BackendError if the run did not finish within ``max_cycles``.
        """
        memory = np.ascontiguousarray(memory, dtype=np.uint8)
        with tempfile.TemporaryDirectory(prefix="trilobit-accel-") as tmp:
            image, final = Path(tmp) / "memory.bin", Path(tmp) / "memory_out.bin"
            memory.tofile(image)
            command = [str(self.executable), str(image), str(final), str(prog_base),
                       str(data_base), str(window[0]), str(window[1]), str(watchdog),
                       repr(float(stall_prob)), str(seed), str(max_cycles)]
            if waves is None and self.waves_path is not None:
                path = self.waves_path
                if self.runs:
                    path = path.with_name(f"{path.stem}.{self.runs}{path.suffix}")
                waves = path
            self.runs += 1
            if waves is not None:
                if self.waves_format is None:
                    raise BackendError("waves requested from a build without tracing")
                command.append(str(waves))
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode:
                raise BackendError(f"accelerator harness failed: {done.stderr.strip()}")
            values = {}
            for text_line in done.stdout.splitlines():
                name, value = text_line.split()
                values[name] = float(value) if name.endswith("seconds") else int(value)
            out = np.fromfile(final, dtype=np.uint8)
        status = values.pop("status")
        state = status & 3
        if state == 1:
            raise BackendError(f"accelerator still busy after {max_cycles} cycles")
        counters = {name: values.pop(name) for name in COUNTERS}
        counters["macs"] |= counters.pop("macs_hi") << 32
        result = RunResult(state, ErrorCode((status >> 8) & 0xFF), values.pop("error_pc"),
                           counters)
        return result, out, values
