"""CSRs through Linux UIO: ``/dev/uioN`` mapped with ``mmap``, interrupt by ``read``.

The device tree gives the accelerator's AXI4-Lite CSR window a ``generic-uio`` node (see
docs/boards.md); the kernel then exposes ``/dev/uioN`` and
``/sys/class/uio/uioN/{name,maps/map0/size}``. Writing ``1`` (a native 32-bit int) to the
device file enables the interrupt; a ``read`` of 4 bytes blocks until it fires and returns
the interrupt count. The generic UIO driver masks the line after each interrupt, so the
driver re-enables it before every wait.
"""

from __future__ import annotations

import mmap
import os
import select
import struct
import time
from pathlib import Path

from trilobit.errors import BackendError
from trilobit.sw.driver.transport import check_range

__all__ = ["UioRegisters", "find_uio"]

UIO_SYSFS = Path("/sys/class/uio")


def find_uio(name: str, sysfs: Path = UIO_SYSFS, dev: Path = Path("/dev")) -> Path:
    """``/dev/uioN`` whose sysfs ``name`` is ``name`` (the device tree node's name)."""
    names = []
    for entry in sorted(Path(sysfs).glob("uio*")):
        try:
            found = (entry / "name").read_text().strip()
        except OSError:
            continue
        names.append(found)
        if found == name:
            return Path(dev) / entry.name
    raise BackendError(f"no UIO device named {name!r} under {sysfs} (found: {names or 'none'});"
                       f" is the device tree overlay loaded? (docs/boards.md)")


def _map_size(sysfs: Path, device: Path, index: int) -> int:
    path = Path(sysfs) / Path(device).name / "maps" / f"map{index}" / "size"
    try:
        return int(path.read_text().strip(), 0)
    except (OSError, ValueError) as exc:
        raise BackendError(f"cannot read the size of UIO map {index} from {path}: {exc}") \
            from None


class UioRegisters:
    """CSR window of a UIO device.

    Args:
        device: ``/dev/uioN``.
        sysfs: the UIO class folder (``/sys/class/uio``; a fake tree in tests).
        interrupt_device: the file to read interrupts from, when it is not ``device``
            itself (tests use a pseudo terminal, which cannot be mapped).
        map_index: which UIO map holds the CSRs.
    """

    def __init__(self, device: str | Path, sysfs: str | Path = UIO_SYSFS,
                 interrupt_device: str | Path | None = None, map_index: int = 0):
        self.name = str(device)
        self.size = _map_size(Path(sysfs), Path(device), map_index)
        self._fd = self._irq_fd = -1
        self._map = self._words = None
        try:
            self._fd = os.open(device, os.O_RDWR | os.O_SYNC)
            # Map n of a UIO device is selected by the offset n * page size.
            self._map = mmap.mmap(self._fd, self.size, mmap.MAP_SHARED,
                                  mmap.PROT_READ | mmap.PROT_WRITE,
                                  offset=map_index * mmap.PAGESIZE)
            self._words = memoryview(self._map).cast("I")
            self._irq_fd = self._fd if interrupt_device is None else os.open(
                interrupt_device, os.O_RDWR)
        except OSError as exc:
            self.close()
            raise BackendError(f"cannot open UIO device {device}: {exc}") from None

    def _index(self, offset: int) -> int:
        if offset % 4:
            raise BackendError(f"{self.name}: CSR offset {offset:#x} is not word aligned")
        check_range(self.name, self.size, offset, 4)
        return offset // 4

    def read32(self, offset: int) -> int:
        # A memoryview of format "I" reads the word with one 32-bit load.
        return int(self._words[self._index(offset)])

    def write32(self, offset: int, value: int) -> None:
        self._words[self._index(offset)] = value & 0xFFFFFFFF

    def wait_interrupt(self, timeout_s: float, budget_cycles: int = 0) -> bool:
        os.write(self._irq_fd, struct.pack("=I", 1))  # unmask the line
        deadline = time.monotonic() + timeout_s
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            ready, _, _ = select.select([self._irq_fd], [], [], left)
            if ready:
                if len(os.read(self._irq_fd, 4)) == 4:
                    return True
                raise BackendError(f"{self.name}: short read from the interrupt device")

    def close(self) -> None:
        """Unmap and close (safe to call twice)."""
        if self._words is not None:
            self._words.release()
            self._words = None
        if self._map is not None:
            self._map.close()
            self._map = None
        if self._irq_fd not in (-1, self._fd):
            os.close(self._irq_fd)
        self._irq_fd = -1
        if self._fd != -1:
            os.close(self._fd)
            self._fd = -1
