"""Byte protocol of the host bridge: a Linux computer reaches the CSRs and the on-chip memory
of a CPU-less board (iCE40, ECP5) over UART or SPI.

One table, read by the bridge RTL (:mod:`trilobit.hw.bridge_host`) and the host driver
(:mod:`trilobit.sw.driver.bridge`).

Request (host to device), 7 header bytes then the payload::

    command:u8  address:u32 little-endian  count:u16 little-endian  [count * 4 data bytes]

=========  =====  ======================================================================
command    code   meaning
=========  =====  ======================================================================
NOP        0x00   ignored (a host clocking SPI sends it while it waits for a reply)
CSR_READ   0x01   read ``count`` CSR words from byte offset ``address``
CSR_WRITE  0x02   write ``count`` CSR words (payload) from byte offset ``address``
MEM_READ   0x03   read ``count`` 32-bit words of memory from byte ``address``
MEM_WRITE  0x04   write ``count`` 32-bit words (payload) to memory from byte ``address``
WAIT_IRQ   0x05   wait until the interrupt line is high or ``address`` cycles passed
=========  =====  ======================================================================

A request header is always 7 bytes (``NOP`` included: its last 6 bytes are ignored, so a
host that sends zeros while reading never desynchronises the parser: 7 zero bytes are one
``NOP``). Addresses are word aligned (the low 2 bits are ignored); words are little-endian.

Reply (device to host): one status byte, then for reads ``count * 4`` data bytes::

    ACK 0xA5 | TIMEOUT 0x5A (WAIT_IRQ only: the budget passed first) | NAK 0xE1 (unknown command)

A read replies ACK first and then streams the data; a write replies ACK after the last word
is written; NAK is followed by nothing and the parser is ready for the next header. On SPI
the device shifts out :data:`IDLE` (0xFF) while it has nothing to say; no status byte is
0xFF, so the host skips idle bytes until the status byte.
"""

from __future__ import annotations

import enum
import struct

__all__ = ["Command", "Reply", "IDLE", "HEADER_BYTES", "MAX_WORDS", "request"]


class Command(enum.IntEnum):
    """Request command byte."""

    NOP = 0x00
    CSR_READ = 0x01
    CSR_WRITE = 0x02
    MEM_READ = 0x03
    MEM_WRITE = 0x04
    WAIT_IRQ = 0x05


class Reply(enum.IntEnum):
    """Reply status byte."""

    ACK = 0xA5
    TIMEOUT = 0x5A
    NAK = 0xE1


#: Byte the SPI target shifts out when it has no reply byte ready.
IDLE = 0xFF
#: Bytes of a request header (command, address, count).
HEADER_BYTES = 7
#: Largest ``count`` of one request (32-bit words).
MAX_WORDS = 0xFFFF


def request(command: Command, address: int, count: int = 0, payload: bytes = b"") -> bytes:
    """The bytes of one request. ``payload`` must be ``4 * count`` bytes for writes."""
    if not 0 <= address < 1 << 32:
        raise ValueError(f"address must be in 0..2**32-1, got {address}")
    if not 0 <= count <= MAX_WORDS:
        raise ValueError(f"count must be in 0..{MAX_WORDS} words, got {count}")
    if command in (Command.CSR_WRITE, Command.MEM_WRITE) and len(payload) != 4 * count:
        raise ValueError(f"payload must be {4 * count} bytes, got {len(payload)}")
    return struct.pack("<BIH", command, address, count) + payload
