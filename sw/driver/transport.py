"""What the device layer needs from a transport: a register port and a memory port.

A register port reaches the accelerator's 32-bit CSRs (:mod:`trilobit.hw.accel_csr`) and
waits for its interrupt; a memory port reaches the memory the accelerator reads and writes
(a DMA buffer on Zynq, the on-chip memory behind the bridge on iCE40/ECP5). Implementations:
UIO (:mod:`.uio`), u-dma-buf and ``/dev/mem`` (:mod:`.dma`), the UART/SPI bridge
(:mod:`.bridge`).
"""

from __future__ import annotations

from typing import Protocol

from trilobit.errors import BackendError

__all__ = ["RegisterPort", "MemoryPort", "check_range"]


class RegisterPort(Protocol):
    """32-bit CSRs at byte offsets, and the interrupt."""

    #: A name for messages (device path).
    name: str

    def read32(self, offset: int) -> int: ...

    def write32(self, offset: int, value: int) -> None: ...

    def wait_interrupt(self, timeout_s: float, budget_cycles: int) -> bool:
        """Block until the interrupt line is (or becomes) high: True, or False after
        ``timeout_s`` seconds (wall clock) / ``budget_cycles`` device cycles."""
        ...

    def close(self) -> None: ...


class MemoryPort(Protocol):
    """A memory region shared with the accelerator."""

    name: str
    #: Size of the region, bytes.
    size: int
    #: Address of byte 0 of the region on the accelerator's bus (a physical address).
    bus_address: int

    def read(self, offset: int, size: int) -> bytes: ...

    def write(self, offset: int, data: bytes) -> None: ...

    def close(self) -> None: ...


def check_range(region: str, size: int, offset: int, length: int) -> None:
    """Raise BackendError unless ``[offset, offset + length)`` lies in ``[0, size)``."""
    if offset < 0 or length < 0 or offset + length > size:
        raise BackendError(
            f"{region}: access of {length} bytes at offset {offset:#x} is outside the "
            f"region of {size} bytes (0..{size:#x})")
