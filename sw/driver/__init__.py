"""Host driver: run compiled programs on a board from embedded Linux (or a PC), pure Python.

Transports: UIO for the CSRs on Zynq (:mod:`.uio`), u-dma-buf or a ``/dev/mem`` reserved
region for shared memory (:mod:`.dma`), the UART/SPI bridge for iCE40/ECP5 boards and the
Verilator model of that bridge (:mod:`.bridge`). :class:`Device` runs programs over them;
:class:`DeviceBackend` is the runtime's ``device`` backend. See docs/boards.md.
"""

from trilobit.sw.driver.device import DEVICE_ENV, Device, DeviceBackend, DeviceLock, open_device

__all__ = ["DEVICE_ENV", "Device", "DeviceBackend", "DeviceLock", "open_device"]
