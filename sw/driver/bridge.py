"""The host side of the bridge protocol (:mod:`trilobit.hw.bridge_protocol`) for iCE40/ECP5
boards, over a UART (``/dev/ttyUSB0``), spidev (``/dev/spidev0.0``, e.g. a Raspberry Pi) or
the Verilator simulation of the bridge system (a child process on pipes).

:class:`Bridge` turns register and memory accesses into requests; :class:`BridgeRegisters`
and :class:`BridgeMemory` are the register and memory ports the device layer uses. The
interrupt is waited for with ``WAIT_IRQ`` on the device, so no extra wire is needed.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import select
import struct
import subprocess
import termios
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from trilobit.errors import BackendError, ConfigError, DeviceTimeout
from trilobit.hw.bridge_protocol import IDLE, MAX_WORDS, Command, Reply, request
from trilobit.sw.driver.transport import check_range

__all__ = ["ByteLink", "UartLink", "SpiBus", "Spidev", "SpidevLink", "ProcessSpiBus", "ProcessLink",
           "Bridge",
           "BridgeRegisters", "BridgeMemory"]


class ByteLink(Protocol):
    """A byte pipe to the bridge."""

    name: str

    def send(self, data: bytes) -> None: ...

    def receive(self, size: int, timeout_s: float) -> bytes:
        """Up to ``size`` bytes (at least one) within ``timeout_s``; b"" on timeout."""
        ...

    def close(self) -> None: ...


class _FdLink:
    """A link over a pair of file descriptors (read side may equal the write side)."""

    name = "link"

    def __init__(self, read_fd: int, write_fd: int):
        self._read_fd, self._write_fd = read_fd, write_fd

    def send(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self._write_fd, view):]

    def receive(self, size: int, timeout_s: float) -> bytes:
        ready, _, _ = select.select([self._read_fd], [], [], max(0.0, timeout_s))
        if not ready:
            return b""
        data = os.read(self._read_fd, size)
        if not data:
            raise BackendError(f"{self.name}: the link was closed by the device")
        return data


class UartLink(_FdLink):
    """A serial port in raw mode, 8N1, at ``baud`` bits per second."""

    def __init__(self, path: str | Path, baud: int = 1_000_000):
        self.name = str(path)
        speed = getattr(termios, f"B{baud}", None)
        if speed is None:
            raise BackendError(f"UART speed {baud} baud is not a standard termios speed")
        try:
            fd = os.open(path, os.O_RDWR | os.O_NOCTTY)
        except OSError as exc:
            raise BackendError(f"cannot open UART {path}: {exc}") from None
        try:
            attrs = termios.tcgetattr(fd)
            attrs[0] = 0  # iflag: no translation, no flow control
            attrs[1] = 0  # oflag: raw output
            attrs[2] = termios.CS8 | termios.CREAD | termios.CLOCAL
            attrs[3] = 0  # lflag: no echo, no canonical mode
            attrs[4] = attrs[5] = speed
            attrs[6][termios.VMIN] = 0
            attrs[6][termios.VTIME] = 0
            termios.tcsetattr(fd, termios.TCSANOW, attrs)
            termios.tcflush(fd, termios.TCIOFLUSH)
        except termios.error as exc:
            os.close(fd)
            raise BackendError(f"cannot configure UART {path}: {exc}") from None
        super().__init__(fd, fd)
        self._fd = fd

    def close(self) -> None:
        if self._fd != -1:
            os.close(self._fd)
            self._fd = -1


#: ``SPI_IOC_MESSAGE(1)``: _IOW('k', 0, struct spi_ioc_transfer[1]) (32 bytes).
SPI_IOC_MESSAGE_1 = 0x40206B00
#: ``SPI_IOC_WR_MAX_SPEED_HZ`` and ``SPI_IOC_WR_MODE``.
SPI_IOC_WR_MAX_SPEED_HZ = 0x40046B04
SPI_IOC_WR_MODE = 0x40016B01
#: ``struct spi_ioc_transfer`` (linux/spi/spidev.h): tx_buf, rx_buf (u64 user addresses),
#: len, speed_hz (u32), delay_usecs (u16), bits_per_word, cs_change, tx_nbits, rx_nbits,
#: word_delay_usecs, pad (u8).
SPI_IOC_TRANSFER = struct.Struct("=QQIIHBBBBBB")
#: Largest transfer of the spidev driver with its default ``bufsiz`` module parameter, bytes.
SPIDEV_MAX_TRANSFER = 4096


class SpiBus(Protocol):
    """A full-duplex SPI controller: every byte sent clocks one byte back."""

    name: str

    def transfer(self, data: bytes) -> bytes:
        """Send ``data`` in one chip-select frame; the bytes clocked in meanwhile."""
        ...

    def close(self) -> None: ...


class Spidev:
    """Linux spidev (``/dev/spidevB.C``): SPI mode 0, 8-bit words, ``speed_hz`` SCK.

    Each :meth:`transfer` is one ``SPI_IOC_MESSAGE(1)`` ioctl: chip-select is asserted for
    the transfer and released after it. ``ioctl`` is :func:`fcntl.ioctl` (replaceable to
    test the encoding without a kernel driver).
    """

    def __init__(self, path: str | Path = "/dev/spidev0.0", speed_hz: int = 1_000_000,
                 ioctl: Callable = fcntl.ioctl):
        if not 1 <= speed_hz <= 100_000_000:
            raise ConfigError(f"spidev speed_hz must be in 1..100000000, got {speed_hz}")
        self.name = str(path)
        self.speed_hz = speed_hz
        self._ioctl = ioctl
        try:
            self._fd = os.open(path, os.O_RDWR)
        except OSError as exc:
            raise BackendError(f"cannot open spidev {path}: {exc}") from None
        try:
            ioctl(self._fd, SPI_IOC_WR_MODE, struct.pack("=B", 0))
            ioctl(self._fd, SPI_IOC_WR_MAX_SPEED_HZ, struct.pack("=I", speed_hz))
        except OSError as exc:
            os.close(self._fd)
            self._fd = -1
            raise BackendError(f"cannot configure spidev {path}: {exc}") from None

    def transfer(self, data: bytes) -> bytes:
        if not 0 < len(data) <= SPIDEV_MAX_TRANSFER:
            raise ValueError(f"one spidev transfer is 1..{SPIDEV_MAX_TRANSFER} bytes, got "
                             f"{len(data)}")
        tx = ctypes.create_string_buffer(bytes(data), len(data))
        rx = ctypes.create_string_buffer(len(data))
        message = SPI_IOC_TRANSFER.pack(ctypes.addressof(tx), ctypes.addressof(rx), len(data),
                                        self.speed_hz, 0, 8, 0, 0, 0, 0, 0)
        try:
            self._ioctl(self._fd, SPI_IOC_MESSAGE_1, message)
        except OSError as exc:
            raise BackendError(f"spidev {self.name}: transfer failed: {exc}") from None
        return rx.raw

    def close(self) -> None:
        if self._fd != -1:
            os.close(self._fd)
            self._fd = -1


class SpidevLink:
    """The bridge's byte link over an SPI controller (:class:`Spidev`, or any :class:`SpiBus`).

    SCK must be at most 1/8 of the board's clock (:mod:`trilobit.hw.bridge_spi`).

    SPI is full duplex: while the host sends a request the bridge shifts out idle bytes
    (0xFF), and while the host reads a reply it sends zeros, which the bridge takes as
    ``NOP`` header bytes and drops (a partial one is discarded at the next chip-select).
    Bytes other than idle that arrive while a request is sent are kept for the next
    :meth:`receive` (they can only be the start of a reply).
    """

    def __init__(self, bus: SpiBus, max_transfer: int = SPIDEV_MAX_TRANSFER):
        self.bus = bus
        self.name = bus.name
        self.max_transfer = max_transfer
        self._early = b""

    def send(self, data: bytes) -> None:
        for start in range(0, len(data), self.max_transfer):
            back = self.bus.transfer(data[start : start + self.max_transfer])
            # Idle bytes before a reply carry nothing; from its first byte on, all count.
            self._early += back if self._early else back.lstrip(bytes([IDLE]))

    def receive(self, size: int, timeout_s: float) -> bytes:
        if self._early:
            data, self._early = self._early[:size], self._early[size:]
            return data
        return self.bus.transfer(bytes(min(size, self.max_transfer)))

    def close(self) -> None:
        self.bus.close()


def _stop_child(process: subprocess.Popen) -> None:
    """End a simulator child: close its input (it exits at end of input), wait up to 10 s,
    then kill it; its pipes are closed on every path."""
    process.stdin.close()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    process.stdout.close()
    process.stderr.close()


class ProcessSpiBus:
    """An SPI controller played by a child process (the Verilator model of the SPI bridge
    system, :func:`trilobit.hw.bridge_sim.build_spi_bridge_simulator`): each transfer goes to
    its standard input as a little-endian u32 length and the bytes; the same number of bytes
    sampled on MISO comes back on its standard output."""

    def __init__(self, command: list[str]):
        self.name = Path(command[0]).name
        self._process = subprocess.Popen(command, stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                         bufsize=0)

    def transfer(self, data: bytes) -> bytes:
        if self._process is None:
            raise BackendError(f"{self.name}: the SPI bus is closed")
        self._process.stdin.write(struct.pack("<I", len(data)) + data)
        back = b""
        while len(back) < len(data):
            chunk = self._process.stdout.read(len(data) - len(back))
            if not chunk:
                raise BackendError(f"{self.name}: the simulator exited")
            back += chunk
        return back

    def close(self) -> None:
        if self._process is not None:
            _stop_child(self._process)
            self._process = None


class ProcessLink(_FdLink):
    """A child process whose standard input and output carry the link (the simulator)."""

    def __init__(self, command: list[str]):
        self.name = Path(command[0]).name
        self._process = subprocess.Popen(command, stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                         bufsize=0)
        super().__init__(self._process.stdout.fileno(), self._process.stdin.fileno())

    def close(self) -> None:
        if self._process is not None:
            _stop_child(self._process)
            self._process = None


class Bridge:
    """Requests and replies over ``link``; every call waits for its reply.

    Args:
        link: the byte link.
        timeout_s: longest wait for one reply byte, seconds (WAIT_IRQ adds its own).
    """

    def __init__(self, link: ByteLink, timeout_s: float = 2.0):
        self.link = link
        self.name = link.name
        self.timeout_s = timeout_s
        self._pending = b""

    def _receive_exact(self, size: int, timeout_s: float) -> bytes:
        deadline = time.monotonic() + timeout_s
        data = self._pending
        while len(data) < size:
            left = deadline - time.monotonic()
            if left <= 0:
                raise DeviceTimeout(f"{self.name}: no reply from the bridge within "
                                    f"{timeout_s:.1f} s ({len(data)} of {size} bytes); is the "
                                    f"board configured and the link wired? (docs/boards.md)")
            data += self.link.receive(size - len(data), left)
        self._pending = data[size:]
        return data[:size]

    def _status(self, timeout_s: float) -> int:
        while True:
            byte = self._receive_exact(1, timeout_s)[0]
            if byte != IDLE:  # SPI: idle bytes until the bridge answers
                return byte

    def _transact(self, command: Command, address: int, count: int, payload: bytes = b"",
                  reply_words: int = 0, timeout_s: float | None = None) -> tuple[int, bytes]:
        self.link.send(request(command, address, count, payload))
        status = self._status(self.timeout_s if timeout_s is None else timeout_s)
        if status == Reply.NAK:
            raise BackendError(f"{self.name}: the bridge refused command {command.name}")
        if status not in (Reply.ACK, Reply.TIMEOUT):
            raise BackendError(f"{self.name}: bad reply byte {status:#04x} to {command.name}; "
                               f"the link is out of step (reset the board)")
        return status, self._receive_exact(4 * reply_words, self.timeout_s)

    def read_words(self, command: Command, address: int, count: int) -> bytes:
        """``count`` words from ``address`` (CSR_READ or MEM_READ), in chunks of MAX_WORDS."""
        out = bytearray()
        while count:
            n = min(count, MAX_WORDS)
            out += self._transact(command, address, n, reply_words=n)[1]
            address, count = address + 4 * n, count - n
        return bytes(out)

    def write_words(self, command: Command, address: int, data: bytes) -> None:
        """Write ``data`` (a multiple of 4 bytes) from ``address`` (CSR_WRITE, MEM_WRITE)."""
        for start in range(0, len(data), 4 * MAX_WORDS):
            chunk = data[start : start + 4 * MAX_WORDS]
            self._transact(command, address + start, len(chunk) // 4, chunk)

    def wait_irq(self, budget_cycles: int, timeout_s: float) -> bool:
        """True when the interrupt is high within ``budget_cycles`` device cycles."""
        budget = min(max(budget_cycles, 1), 0xFFFFFFFF)
        status, _ = self._transact(Command.WAIT_IRQ, budget, 0, timeout_s=timeout_s)
        return status == Reply.ACK

    def close(self) -> None:
        self.link.close()


class BridgeRegisters:
    """The CSRs behind a :class:`Bridge` (a register port)."""

    def __init__(self, bridge: Bridge):
        self.bridge = bridge
        self.name = bridge.name

    def read32(self, offset: int) -> int:
        return struct.unpack("<I", self.bridge.read_words(Command.CSR_READ, offset, 1))[0]

    def write32(self, offset: int, value: int) -> None:
        self.bridge.write_words(Command.CSR_WRITE, offset, struct.pack("<I", value & 0xFFFFFFFF))

    def wait_interrupt(self, timeout_s: float, budget_cycles: int) -> bool:
        return self.bridge.wait_irq(budget_cycles, timeout_s)

    def close(self) -> None:
        self.bridge.close()


class BridgeMemory:
    """The on-chip memory behind a :class:`Bridge` (a memory port at bus address 0).

    Accesses of any alignment are widened to whole words: a partial first or last word is
    read, merged and written back.
    """

    def __init__(self, bridge: Bridge, size: int):
        self.bridge = bridge
        self.name = f"{bridge.name} memory"
        self.size = size
        self.bus_address = 0

    def read(self, offset: int, size: int) -> bytes:
        check_range(self.name, self.size, offset, size)
        start, end = offset & ~3, (offset + size + 3) & ~3
        data = self.bridge.read_words(Command.MEM_READ, start, (end - start) // 4)
        return data[offset - start : offset - start + size]

    def write(self, offset: int, data: bytes) -> None:
        check_range(self.name, self.size, offset, len(data))
        if not data:
            return
        start, end = offset & ~3, (offset + len(data) + 3) & ~3
        if start != offset or end != offset + len(data):
            merged = bytearray(self.read(start, end - start))
            merged[offset - start : offset - start + len(data)] = data
            data = bytes(merged)
        self.bridge.write_words(Command.MEM_WRITE, start, data)

    def close(self) -> None:  # the bridge is closed with the register port
        pass
