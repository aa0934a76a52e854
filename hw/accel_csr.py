"""Register map of the accelerator's CSR block (32-bit registers, byte offsets).

One table, read by the RTL (``trilobit.hw.accel_core``), the simulation harness (which gets
a generated C header) and the host driver.

======  ================  ======  ===========================================================
offset  name              access  meaning
======  ================  ======  ===========================================================
0x00    CTRL              W       bit 0: START (write 1 while not busy), bit 1: IRQ_ENABLE
0x04    STATUS            R/W1C   bits 1..0 state (0 idle, 1 busy, 2 done, 3 error),
                                  bits 15..8 error code, bit 16 IRQ pending (write 1 clears)
0x08    ERROR_PC          R       index of the faulting instruction
0x0C    PROG_BASE         RW      byte address of instruction 0 (low 4 bits ignored)
0x10    DATA_BASE         RW      byte address LOAD/STORE offsets are relative to
0x14    WIN_BASE          RW      first byte of the memory window
0x18    WIN_LIMIT         RW      first byte past the memory window
0x1C    WATCHDOG          RW      cycle budget of a run (0: no watchdog)
0x20    ID                R       first 32 bits of the configuration hash
0x40..  counters          R       see :data:`COUNTERS` (reset by START)
======  ================  ======  ===========================================================
"""

from __future__ import annotations

__all__ = ["REGISTERS", "COUNTERS", "CSR_WORDS", "c_header"]

REGISTERS: dict[str, int] = {
    "CTRL": 0x00,
    "STATUS": 0x04,
    "ERROR_PC": 0x08,
    "PROG_BASE": 0x0C,
    "DATA_BASE": 0x10,
    "WIN_BASE": 0x14,
    "WIN_LIMIT": 0x18,
    "WATCHDOG": 0x1C,
    "ID": 0x20,
}

#: Counter name (as in ``trilobit.sim.golden`` results) -> byte offset. ``macs`` is 64-bit:
#: low word at its offset, high word at ``macs_hi``.
COUNTERS: dict[str, int] = {
    "cycles": 0x40,
    "insns": 0x44,
    "load_insns": 0x48,
    "compute_insns": 0x4C,
    "store_insns": 0x50,
    "bytes_read": 0x54,
    "bytes_written": 0x58,
    "macs": 0x5C,
    "macs_hi": 0x60,
    "load_busy": 0x64,
    "load_stall": 0x68,
    "compute_busy": 0x6C,
    "compute_stall": 0x70,
    "store_busy": 0x74,
    "store_stall": 0x78,
}

#: 32-bit words the CSR address space spans (word address width = 5 bits).
CSR_WORDS = 32


def c_header() -> str:
    """``#define`` lines for C/C++ code (harness, driver)."""
    lines = [f"#define TRILOBIT_CSR_{name} 0x{off:02x}u" for name, off in REGISTERS.items()]
    lines += [f"#define TRILOBIT_CNT_{name.upper()} 0x{off:02x}u" for name, off in COUNTERS.items()]
    return "\n".join(lines) + "\n"
