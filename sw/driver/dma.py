"""Memory shared with the accelerator on Zynq: a u-dma-buf buffer or a reserved region.

* :class:`UdmabufMemory`: the `u-dma-buf <https://github.com/ikwzm/udmabuf>`_ kernel module
  allocates a physically contiguous buffer and exposes ``/dev/udmabufN`` (mapped here) and
  ``/sys/class/u-dma-buf/udmabufN/{phys_addr,size}`` (older releases:
  ``/sys/class/udmabuf``). The device file is opened with ``O_SYNC``, which makes
  u-dma-buf map the buffer uncached: the accelerator's HP-port accesses and the CPU's see
  the same bytes without cache maintenance.
* :class:`DevMemMemory`: a region kept from Linux by a ``reserved-memory`` node (or
  ``mem=``), mapped from ``/dev/mem`` at its physical address (needs root).
"""

from __future__ import annotations

import mmap
import os
from pathlib import Path

from trilobit.errors import BackendError
from trilobit.sw.driver.transport import check_range

__all__ = ["UdmabufMemory", "DevMemMemory", "UDMABUF_SYSFS"]

#: Class folders of u-dma-buf (current name first).
UDMABUF_SYSFS = (Path("/sys/class/u-dma-buf"), Path("/sys/class/udmabuf"))


class _MappedMemory:
    """A shared mapping of ``size`` bytes of a device file at ``file_offset``."""

    def __init__(self, name: str, path: str | Path, size: int, bus_address: int,
                 file_offset: int = 0):
        self.name = name
        self.size = size
        self.bus_address = bus_address
        self._fd = -1
        self._map = None
        try:
            self._fd = os.open(path, os.O_RDWR | os.O_SYNC)
            self._map = mmap.mmap(self._fd, size, mmap.MAP_SHARED,
                                  mmap.PROT_READ | mmap.PROT_WRITE, offset=file_offset)
        except OSError as exc:
            self.close()
            raise BackendError(f"cannot map {size} bytes of {path}: {exc}") from None

    def read(self, offset: int, size: int) -> bytes:
        check_range(self.name, self.size, offset, size)
        return self._map[offset : offset + size]

    def write(self, offset: int, data: bytes) -> None:
        check_range(self.name, self.size, offset, len(data))
        self._map[offset : offset + len(data)] = data

    def close(self) -> None:
        """Unmap and close (safe to call twice)."""
        if self._map is not None:
            self._map.close()
            self._map = None
        if self._fd != -1:
            os.close(self._fd)
            self._fd = -1


def _read_sysfs_int(path: Path) -> int:
    try:
        return int(path.read_text().strip(), 0)
    except (OSError, ValueError) as exc:
        raise BackendError(f"cannot read {path}: {exc}") from None


class UdmabufMemory(_MappedMemory):
    """A u-dma-buf buffer.

    Args:
        name: ``udmabufN`` (the buffer's device name).
        dev: folder of the device file (``/dev``).
        sysfs: class folder(s) to look for ``name`` in (fake trees in tests).
    """

    def __init__(self, name: str = "udmabuf0", dev: str | Path = "/dev",
                 sysfs: Path | tuple[Path, ...] = UDMABUF_SYSFS):
        roots = (Path(sysfs),) if isinstance(sysfs, str | Path) else tuple(sysfs)
        folder = next((r / name for r in roots if (r / name).is_dir()), None)
        if folder is None:
            raise BackendError(f"no u-dma-buf buffer {name!r} under "
                               f"{', '.join(map(str, roots))}; is the u-dma-buf module loaded "
                               f"with a buffer of that name? (docs/boards.md)")
        size = _read_sysfs_int(folder / "size")
        phys = _read_sysfs_int(folder / "phys_addr")
        super().__init__(str(Path(dev) / name), Path(dev) / name, size, phys)


class DevMemMemory(_MappedMemory):
    """``size`` bytes of physical memory at ``phys_address`` through ``/dev/mem``."""

    def __init__(self, phys_address: int, size: int, path: str | Path = "/dev/mem"):
        if phys_address % mmap.PAGESIZE:
            raise BackendError(f"reserved region address {phys_address:#x} must be a multiple of "
                               f"the page size ({mmap.PAGESIZE} bytes)")
        if size <= 0:
            raise BackendError(f"reserved region size must be positive, got {size}")
        super().__init__(f"{path}@{phys_address:#x}", path, size, phys_address,
                         file_offset=phys_address)
