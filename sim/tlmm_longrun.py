"""Long simulations of the table-lookup engine with the stimulus inside the simulation.

:func:`run_gemv_harness` writes every stream beat to a binary file, builds the C++ Verilator
harness ``sim/harness/tlmm_longrun.cpp`` (through :func:`trilobit.sim.toolchain.build_cpp_harness`)
and lets it drive the engine with its own random stalls: no Python runs per cycle. It returns
the output beats, decoded, for comparison with :func:`trilobit.sim.golden_tlmm.tlmm_golden`.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from trilobit.errors import ToolchainError
from trilobit.hw.tlmm import TlmmParams
from trilobit.sim.golden_tlmm import beat_ints, unpack_out
from trilobit.sim.toolchain import build_cpp_harness, verilog_for

__all__ = ["HarnessRun", "run_gemv_harness", "HARNESS_CPP"]

HARNESS_CPP = Path(__file__).parent / "harness" / "tlmm_longrun.cpp"


@dataclass(frozen=True)
class HarnessRun:
    """Result of one harness run.

    Attributes:
        outputs: ``(blocks, rows)`` int64 accumulators in output order.
        cycles: clock cycles simulated from the end of reset to the last output.
        seconds: wall time of the simulation loop (excludes build and file I/O), seconds.
    """

    outputs: np.ndarray
    cycles: int
    seconds: float

    @property
    def cycles_per_second(self) -> float:
        return self.cycles / self.seconds if self.seconds > 0 else float("inf")


def harness_for(design, params: TlmmParams, toplevel: str = "tlmm") -> Path:
    """Build (or find in the cache) the C++ harness executable for ``design``."""
    cpp = HARNESS_CPP.read_text().replace("@TOP@", toplevel)
    return build_cpp_harness(verilog_for(design, toplevel), toplevel, cpp)


def run_gemv_harness(executable: Path, params: TlmmParams, streams: dict, *,
                     stall_prob: float = 0.0, seed: int = 1) -> HarnessRun:
    """Run the stream beats of ``gemv_streams`` through the harness ``executable``."""
    out_words = -(-params.rows * params.acc_bits // 32)
    beats = [streams["cmd"], streams["act"], streams["weights"]]
    header = []
    for array in beats:
        header += [array.shape[0], array.shape[1]]
    header += [streams["blocks"], out_words]
    with tempfile.TemporaryDirectory(prefix="tlmm-longrun-") as folder:
        stimulus = Path(folder) / "stimulus.bin"
        outputs = Path(folder) / "outputs.bin"
        with stimulus.open("wb") as f:
            f.write(np.asarray(header, dtype="<u4").tobytes())
            for array in beats:
                f.write(np.ascontiguousarray(array, dtype="<u4").tobytes())
        done = subprocess.run([str(executable), str(stimulus), str(outputs), str(stall_prob),
                               str(seed)], capture_output=True, text=True)
        if done.returncode:
            raise ToolchainError(f"tlmm harness failed ({done.returncode}): "
                                 f"{done.stdout}{done.stderr}")
        report = json.loads(done.stdout)
        words = np.fromfile(outputs, dtype="<u4").reshape(streams["blocks"], out_words)
    decoded = np.array([unpack_out(v, params) for v in beat_ints(words)], dtype=np.int64)
    return HarnessRun(decoded, int(report["cycles"]), float(report["seconds"]))
