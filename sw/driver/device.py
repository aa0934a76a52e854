"""The accelerator on a board: CSR protocol of a run, exclusive access, the runtime backend.

:class:`Device` owns a register port and a memory port (:mod:`.transport`) and performs one
run the way the hardware defines it (:mod:`trilobit.hw.accel_csr`): every run sets the
program and data bases, the memory window and the watchdog, clears a stale interrupt,
starts, waits for the interrupt, then reads the status and the counters. Failures carry the
device's status: a run past its time says how far it got.

:class:`DeviceBackend` is the runtime's ``device`` backend (:class:`trilobit.sw.runtime.Backend`):
the same ``load``/``write``/``read``/``run`` as ``golden`` and ``verilator``.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import tempfile
from pathlib import Path

import numpy as np

from trilobit.config import AcceleratorConfig
from trilobit.errors import BackendError, ConfigError, DeviceTimeout, ProgramError
from trilobit.hw.accel_csr import COUNTERS, REGISTERS
from trilobit.isa import ErrorCode
from trilobit.sw.driver.transport import MemoryPort, RegisterPort, check_range

__all__ = ["Device", "DeviceBackend", "DeviceLock", "open_device", "DEVICE_ENV"]

#: Environment variable with the device spec used when none is given (see :func:`open_device`).
DEVICE_ENV = "TRILOBIT_DEVICE"

STATE_NAMES = ("idle", "busy", "done", "error")
CTRL_START, CTRL_IRQ_ENABLE = 1 << 0, 1 << 1
STATUS_IRQ_PENDING = 1 << 16


def _lock_folder() -> Path:
    run_lock = Path("/run/lock")
    return run_lock if os.access(run_lock, os.W_OK) else Path(tempfile.gettempdir())


class DeviceLock:
    """An exclusive ``fcntl`` lock naming one device; a second holder gets a "busy" error.

    The lock file (``/run/lock/trilobit-<device>.lock``, or in the temporary folder) holds
    the owner's process id so the error can name it. The kernel drops the lock when the
    process dies, so a crashed owner never leaves the device locked.
    """

    def __init__(self, device_name: str, folder: Path | None = None):
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", device_name.strip("/"))
        self.path = (folder or _lock_folder()) / f"trilobit-{safe}.lock"
        self.device_name = device_name
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            owner = os.pread(self._fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(self._fd)
            self._fd = -1
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise BackendError(f"device {device_name} is busy: process {owner} is using it "
                                   f"(lock {self.path})") from None
            raise BackendError(f"cannot lock device {device_name}: {exc}") from None
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, f"{os.getpid()}\n".encode(), 0)

    def release(self) -> None:
        """Drop the lock (safe to call twice)."""
        if self._fd != -1:
            os.ftruncate(self._fd, 0)
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = -1


class Device:
    """An accelerator reached through ``registers`` and ``memory``.

    Args:
        registers: the CSR port.
        memory: the shared memory port.
        clock_hz: the accelerator clock, Hz; turns cycle budgets into wall-clock timeouts.
        lock: take the exclusive lock on ``registers.name`` (a second Device on the same
            registers raises BackendError "busy").

    Closing (or leaving the ``with`` block, or a failed construction) releases the ports and
    the lock on every path.
    """

    def __init__(self, registers: RegisterPort, memory: MemoryPort, clock_hz: float = 10e6,
                 lock: bool = True):
        self.registers = registers
        self.memory = memory
        self.clock_hz = clock_hz
        self._lock = None
        try:
            if lock:
                self._lock = DeviceLock(registers.name)
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> Device:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Release the ports and the lock (safe to call twice)."""
        for port in ("registers", "memory"):
            resource = getattr(self, port, None)
            if resource is not None:
                try:
                    resource.close()
                finally:
                    setattr(self, port, None)
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def _ports(self) -> tuple[RegisterPort, MemoryPort]:
        if self.registers is None:
            raise BackendError("the device is closed")
        return self.registers, self.memory

    @property
    def memory_size(self) -> int:
        """Bytes of shared memory."""
        return self._ports()[1].size

    def read_register(self, name: str) -> int:
        """CSR or counter ``name`` (:data:`REGISTERS`, :data:`COUNTERS`)."""
        offset = REGISTERS.get(name, COUNTERS.get(name))
        if offset is None:
            raise BackendError(f"unknown register {name!r}")
        return self._ports()[0].read32(offset)

    def status(self) -> dict:
        """STATUS decoded: ``state`` name, ``error`` name, ``irq_pending``, ``error_pc``,
        ``cycles`` of the current or last run."""
        status = self.read_register("STATUS")
        code = (status >> 8) & 0xFF
        try:
            error = ErrorCode(code).name
        except ValueError:
            error = f"code {code}"
        return {"state": STATE_NAMES[status & 3], "error": error,
                "irq_pending": bool(status & STATUS_IRQ_PENDING),
                "error_pc": self.read_register("ERROR_PC"),
                "cycles": self.read_register("cycles")}

    def write(self, offset: int, data: bytes) -> None:
        """Write ``data`` at byte ``offset`` of the shared memory (bounds checked first)."""
        memory = self._ports()[1]
        check_range(memory.name, memory.size, offset, len(data))
        memory.write(offset, data)

    def read(self, offset: int, size: int) -> bytes:
        """``size`` bytes at byte ``offset`` of the shared memory (bounds checked first)."""
        memory = self._ports()[1]
        check_range(memory.name, memory.size, offset, size)
        return memory.read(offset, size)

    def run(self, prog_offset: int, watchdog_cycles: int, data_offset: int = 0,
            window: tuple[int, int] | None = None, timeout_s: float | None = None) -> dict:
        """One run: instructions at byte ``prog_offset`` of the shared memory.

        Args:
            prog_offset: offset of instruction 0 in the shared memory, bytes.
            watchdog_cycles: the device's cycle budget (the WATCHDOG register).
            data_offset: what LOAD/STORE offsets are relative to, bytes.
            window: (first, past-the-end) offsets the accelerator may touch; default the
                whole shared memory.
            timeout_s: wall-clock limit, seconds; default from the budget and ``clock_hz``.

        Returns the counters (``macs`` as one 64-bit value).

        Raises:
            DeviceTimeout: the watchdog stopped the run, or no interrupt in time (the message
                has the device's state, error, instruction index and cycles).
            BackendError: the run stopped with an error, or the device was already busy.
        """
        registers, memory = self._ports()
        first, limit = window if window is not None else (0, memory.size)
        check_range(f"{memory.name} window", memory.size, first, limit - first)
        check_range(f"{memory.name} program", memory.size, prog_offset, 16)
        check_range(f"{memory.name} data base", memory.size, data_offset, 0)
        if not 1 <= watchdog_cycles <= 0xFFFFFFFF:
            raise ConfigError(f"watchdog_cycles must be in 1..{0xFFFFFFFF}, got "
                              f"{watchdog_cycles}")
        state = registers.read32(REGISTERS["STATUS"]) & 3
        if state == 1:
            raise BackendError(f"device {registers.name} is already running a program "
                               f"(status {self.status()})")
        base = memory.bus_address
        # Every run sets every base and the window: nothing is inherited from a previous run.
        registers.write32(REGISTERS["PROG_BASE"], base + prog_offset)
        registers.write32(REGISTERS["DATA_BASE"], base + data_offset)
        registers.write32(REGISTERS["WIN_BASE"], base + first)
        registers.write32(REGISTERS["WIN_LIMIT"], base + limit)
        registers.write32(REGISTERS["WATCHDOG"], watchdog_cycles)
        registers.write32(REGISTERS["STATUS"], STATUS_IRQ_PENDING)  # clear a stale interrupt
        registers.write32(REGISTERS["CTRL"], CTRL_START | CTRL_IRQ_ENABLE)
        if timeout_s is None:
            timeout_s = 1.0 + 4 * watchdog_cycles / self.clock_hz
        # The device's watchdog ends the run first; the extra cycles let it report.
        fired = registers.wait_interrupt(timeout_s, watchdog_cycles + 1024)
        if not fired:
            raise DeviceTimeout(f"device {registers.name}: no interrupt within {timeout_s:.2f} s"
                                f" / {watchdog_cycles} cycles; device status {self.status()}")
        status = registers.read32(REGISTERS["STATUS"])
        registers.write32(REGISTERS["STATUS"], STATUS_IRQ_PENDING)
        state, code = status & 3, (status >> 8) & 0xFF
        if state == 3:
            error = ErrorCode(code) if code in ErrorCode._value2member_map_ else code
            pc = registers.read32(REGISTERS["ERROR_PC"])
            cycles = registers.read32(COUNTERS["cycles"])
            name = getattr(error, "name", f"code {code}")
            if error == ErrorCode.WATCHDOG:
                raise DeviceTimeout(f"device {registers.name}: run at {prog_offset:#x} exceeded "
                                    f"its budget of {watchdog_cycles} cycles (instruction {pc}, "
                                    f"{cycles} cycles)")
            raise BackendError(f"device {registers.name}: run at {prog_offset:#x} stopped with "
                               f"{name} at instruction {pc} after {cycles} cycles")
        if state != 2:
            raise BackendError(f"device {registers.name}: interrupt without a finished run "
                               f"(status {self.status()})")
        counters = {name: registers.read32(offset) for name, offset in COUNTERS.items()}
        counters["macs"] |= counters.pop("macs_hi") << 32
        return counters


class DeviceBackend:
    """The runtime's ``device`` backend: a compiled program on a board.

    Args:
        config: the accelerator the program is compiled for; the device's ID register must
            match it.
        device: an open :class:`Device`, or None to open ``spec``.
        spec: a device spec for :func:`open_device` (default: ``$TRILOBIT_DEVICE``).

    The program's memory image sits at offset 0 of the shared memory; its kernels run with
    the data base at offset 0 and the window over the whole image.
    """

    name = "device"

    def __init__(self, config: AcceleratorConfig, device: Device | None = None,
                 spec: str | None = None):
        self.config = config
        # POST modes the hardware was built with, plus requantization on the host.
        self.post_modes = tuple(mode for mode in ("ort", "host", "dyadic")
                                if mode == "host" or mode in config.requant_modes)
        if device is None:
            spec = spec or os.environ.get(DEVICE_ENV)
            if not spec:
                raise BackendError(f"backend 'device' needs a device: set {DEVICE_ENV} (e.g. "
                                   f"'uio=trilobit,udmabuf=udmabuf0' on Zynq, "
                                   f"'board=icebreaker,spi=/dev/spidev0.0'); docs/boards.md")
            device = open_device(spec, config)
        self.device = device
        self.image_bytes = 0
        try:
            found = device.read_register("ID")
            if found != config.hash32():
                raise ProgramError(
                    f"device {device.registers.name} holds accelerator {found:08x}, not "
                    f"{config.name!r} ({config.hash32():08x}); build and load its bitstream")
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> DeviceBackend:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()

    def close(self) -> None:
        """Release the device (ports, buffers, lock)."""
        device = getattr(self, "device", None)
        if device is not None:
            self.device = None
            device.close()

    def _device(self) -> Device:
        if self.device is None:
            raise BackendError("backend 'device' is closed")
        return self.device

    def load(self, program) -> None:
        image = program.memory_image()
        device = self._device()
        if image.size > device.memory_size:
            raise ProgramError(f"program needs {image.size} bytes of memory, the device has "
                               f"{device.memory_size}")
        device.write(0, image.tobytes())
        self.image_bytes = image.size

    def write(self, address: int, data: np.ndarray) -> None:
        raw = np.ascontiguousarray(data).view(np.uint8).reshape(-1).tobytes()
        self._device().write(address, raw)

    def read(self, address: int, size: int) -> np.ndarray:
        return np.frombuffer(self._device().read(address, size), np.uint8).copy()

    def run(self, prog_addr: int, timeout_cycles: int | None = None) -> dict:
        device = self._device()
        limit = self.image_bytes or device.memory_size
        return device.run(prog_addr, timeout_cycles or self.config.watchdog_cycles,
                          window=(0, limit))


def _parse_spec(spec: str) -> dict[str, str]:
    fields = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        key, sep, value = part.partition("=")
        if not sep:
            raise ConfigError(f"device spec: expected key=value, got {part!r} in {spec!r}")
        fields[key.strip()] = value.strip()
    return fields


def open_device(spec: str, config: AcceleratorConfig | None = None) -> Device:
    """Open the device a spec names (comma-separated ``key=value``).

    Zynq (UIO registers + a DMA buffer)::

        uio=trilobit,udmabuf=udmabuf0          # UIO found by its device tree name
        uio=/dev/uio0,devmem=0x70000000:0x1000000

    Bridge boards (``memory`` bytes, or taken from ``board=``)::

        board=icebreaker,spi=/dev/spidev0.0[,speed=1000000]
        board=ulx3s,uart=/dev/ttyUSB0[,baud=1000000]
        sim=1,memory=16384[,stall=0.3,seed=1]  # the Verilator model of the bridge system
        sim=spi,memory=16384[,half_period=4]   # the same behind its SPI target, via spidev

    ``clock=HZ`` sets the clock used for wall-clock timeouts (default: the board's, else
    10 MHz); ``lock=0`` skips the exclusive lock.
    """
    fields = _parse_spec(spec)
    memory_bytes = int(fields.pop("memory", "0"), 0)
    clock_hz = float(fields.pop("clock", "0"))
    lock = fields.pop("lock", "1") != "0"
    board = fields.pop("board", None)
    if board is not None:
        from trilobit.boards import get_board

        preset = get_board(board)
        memory_bytes = memory_bytes or preset.memory_bytes
        clock_hz = clock_hz or preset.clock_hz
    clock_hz = clock_hz or 10e6
    if "uio" in fields:
        from trilobit.sw.driver.dma import DevMemMemory, UdmabufMemory
        from trilobit.sw.driver.uio import UioRegisters, find_uio

        uio = fields.pop("uio")
        path = Path(uio) if uio.startswith("/") else find_uio(uio)
        registers = UioRegisters(path)
        try:
            if "udmabuf" in fields:
                memory = UdmabufMemory(fields.pop("udmabuf"))
            elif "devmem" in fields:
                address, _, size = fields.pop("devmem").partition(":")
                memory = DevMemMemory(int(address, 0), int(size, 0))
            else:
                raise ConfigError("device spec: uio= needs udmabuf=NAME or devmem=ADDR:SIZE")
        except BaseException:
            registers.close()
            raise
    else:
        from trilobit.sw.driver.bridge import (
            Bridge,
            BridgeMemory,
            BridgeRegisters,
            ProcessLink,
            ProcessSpiBus,
            Spidev,
            SpidevLink,
            UartLink,
        )

        if "spi" in fields:
            link = SpidevLink(Spidev(fields.pop("spi"), int(fields.pop("speed", "1000000"))))
        elif "uart" in fields:
            link = UartLink(fields.pop("uart"), int(fields.pop("baud", "1000000")))
        elif "sim" in fields:
            sim = fields.pop("sim")
            if config is None:
                raise ConfigError("device spec: sim= needs the accelerator config")
            from trilobit.hw import bridge_sim

            memory_bytes = memory_bytes or 1 << 16
            if sim == "spi":  # the SPI target's RTL too, clocked bit by bit
                executable = bridge_sim.build_spi_bridge_simulator(config, memory_bytes)
                link = SpidevLink(ProcessSpiBus([str(executable),
                                                 fields.pop("half_period", "4")]))
            elif sim == "1":
                stall = fields.pop("stall", "0")
                executable = bridge_sim.build_bridge_simulator(config, memory_bytes)
                link = ProcessLink([str(executable), stall, fields.pop("seed", "1")])
            else:
                raise ConfigError(f"device spec: sim must be 1 (byte link) or spi, got {sim!r}")
            lock = False  # a private simulator process per device
        else:
            raise ConfigError(f"device spec {spec!r} names no transport: use uio=, spi=, "
                              f"uart= or sim=")
        if memory_bytes <= 0:
            link.close()
            raise ConfigError("device spec: a bridge board needs memory=BYTES or board=NAME")
        bridge = Bridge(link)
        registers, memory = BridgeRegisters(bridge), BridgeMemory(bridge, memory_bytes)
    if fields:
        registers.close()
        memory.close()
        raise ConfigError(f"device spec: unknown keys {sorted(fields)} in {spec!r}")
    return Device(registers, memory, clock_hz=clock_hz, lock=lock)
