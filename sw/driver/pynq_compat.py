"""A small PYNQ-style layer for people used to ``pynq.MMIO`` and ``pynq.allocate``, without
PYNQ: ``MMIO`` over ``/dev/mem`` and ``allocate`` carving numpy arrays with a
``physical_address`` out of one u-dma-buf buffer.

>>> csr = MMIO(0xA000_0000, 0x1000)          # the accelerator's CSR window (root)
>>> buf = allocate((1024,), "int8")           # from /dev/udmabuf0
>>> csr.write(REGISTERS["DATA_BASE"], buf.physical_address)

For running programs use :class:`trilobit.sw.driver.DeviceBackend`; this layer is for
poking at the hardware by hand.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from trilobit.errors import BackendError
from trilobit.sw.driver.dma import UDMABUF_SYSFS, DevMemMemory, UdmabufMemory

__all__ = ["MMIO", "PhysicalArray", "allocate", "Allocator"]


class MMIO:
    """32-bit registers at physical ``base_addr`` (``length`` bytes) through ``/dev/mem``."""

    def __init__(self, base_addr: int, length: int = 0x1000, path: str | Path = "/dev/mem"):
        self.base_addr = base_addr
        self.length = length
        self._region = DevMemMemory(base_addr, length, path=path)

    def read(self, offset: int = 0, length: int = 4) -> int:
        """The little-endian word (``length`` 4) or double word (8) at byte ``offset``."""
        if length not in (4, 8) or offset % 4:
            raise BackendError(f"MMIO reads 4 or 8 bytes at a word offset, got {length} at "
                               f"{offset:#x}")
        return int.from_bytes(self._region.read(offset, length), "little")

    def write(self, offset: int, value: int) -> None:
        """Write the 32-bit ``value`` at byte ``offset``."""
        if offset % 4:
            raise BackendError(f"MMIO writes at a word offset, got {offset:#x}")
        self._region.write(offset, (value & 0xFFFFFFFF).to_bytes(4, "little"))

    def close(self) -> None:
        self._region.close()


class PhysicalArray(np.ndarray):
    """A numpy array in DMA memory; ``physical_address`` is its first byte on the bus."""

    physical_address: int

    def flush(self) -> None:
        """Nothing to do: the buffer is mapped uncached (``O_SYNC``)."""

    def invalidate(self) -> None:
        """Nothing to do: the buffer is mapped uncached (``O_SYNC``)."""

    def freebuffer(self) -> None:
        """Arrays are released with their allocator (:meth:`Allocator.close`)."""


class Allocator:
    """Bump allocator over one u-dma-buf buffer; arrays are aligned to ``alignment`` bytes."""

    def __init__(self, name: str = "udmabuf0", dev: str | Path = "/dev",
                 sysfs=UDMABUF_SYSFS, alignment: int = 64):
        self.memory = UdmabufMemory(name, dev=dev, sysfs=sysfs)
        self.alignment = alignment
        self.used = 0

    def allocate(self, shape, dtype="uint8") -> PhysicalArray:
        dtype = np.dtype(dtype)
        size = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        start = -(-self.used // self.alignment) * self.alignment
        if start + size > self.memory.size:
            raise BackendError(f"allocate: {size} bytes do not fit; {self.memory.size - start} "
                               f"of {self.memory.size} bytes of {self.memory.name} are left")
        self.used = start + size
        array = np.ndarray(shape, dtype, buffer=self.memory._map, offset=start)
        array = array.view(PhysicalArray)
        array.physical_address = self.memory.bus_address + start
        return array

    def close(self) -> None:
        self.memory.close()


_DEFAULT: Allocator | None = None


def allocate(shape, dtype="uint8") -> PhysicalArray:
    """Like ``pynq.allocate``: an array in ``/dev/udmabuf0`` with ``physical_address``."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = Allocator()
    return _DEFAULT.allocate(shape, dtype)
