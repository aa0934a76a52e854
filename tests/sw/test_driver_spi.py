"""The spidev transport of the bridge driver without a Raspberry Pi.

Over a fake ioctl: the ``spi_ioc_transfer`` messages the driver hands the kernel are decoded
and answered by a byte-level model of the SPI bridge written from the protocol table
(:mod:`trilobit.hw.bridge_protocol`): replies start one byte after the request's last byte,
0xFF while there is nothing to say, a chip-select drops a partly received header.

End to end (Verilator): the same driver, through :class:`SpidevLink`, clocks every transfer
bit by bit into the RTL of the SPI target, the host bridge, the accelerator and the on-chip
memory; a compiled model run there equals the golden model and onnxruntime.
"""

from __future__ import annotations

import ctypes
import errno
import struct
from collections import deque

import numpy as np
import pytest
from sw_models import digits_inputs, model_path, ort_outputs

from trilobit.config import preset
from trilobit.errors import BackendError, ConfigError
from trilobit.hw.accel_csr import REGISTERS
from trilobit.hw.bridge_protocol import HEADER_BYTES, IDLE, Command, Reply, request
from trilobit.sw.driver import Device, DeviceBackend, open_device
from trilobit.sw.driver.bridge import (
    SPI_IOC_MESSAGE_1,
    SPI_IOC_TRANSFER,
    SPI_IOC_WR_MAX_SPEED_HZ,
    SPI_IOC_WR_MODE,
    SPIDEV_MAX_TRANSFER,
    Bridge,
    BridgeMemory,
    BridgeRegisters,
    Spidev,
    SpidevLink,
)
from trilobit.sw.runtime import Session

MEMORY = 1 << 14
ID_VALUE = 0x1234_ABCD


class FakeSpiBridge:
    """The bridge as an SPI host sees it, one chip-select frame per :meth:`frame`."""

    def __init__(self, memory_bytes: int = MEMORY):
        self.memory = bytearray(memory_bytes)
        self.csrs = {REGISTERS["ID"]: ID_VALUE}
        self.request = bytearray()
        self.replies: deque[int] = deque()
        self.frames: list[bytes] = []

    def _expected(self) -> int:
        if len(self.request) < HEADER_BYTES:
            return HEADER_BYTES
        command, _, count = struct.unpack("<BIH", self.request[:HEADER_BYTES])
        writes = command in (Command.CSR_WRITE, Command.MEM_WRITE)
        return HEADER_BYTES + (4 * count if writes else 0)

    def _execute(self) -> list[int]:
        command, address, count = struct.unpack("<BIH", self.request[:HEADER_BYTES])
        payload = bytes(self.request[HEADER_BYTES:])
        address &= ~3
        if command == Command.NOP:
            return []
        if command == Command.CSR_READ:
            words = [self.csrs.get(address + 4 * i, 0) for i in range(count)]
            return [Reply.ACK, *struct.pack(f"<{count}I", *words)]
        if command == Command.CSR_WRITE:
            for i, word in enumerate(struct.unpack(f"<{count}I", payload)):
                self.csrs[address + 4 * i] = word
            return [Reply.ACK]
        if command == Command.MEM_READ:
            return [Reply.ACK, *self.memory[address : address + 4 * count]]
        if command == Command.MEM_WRITE:
            self.memory[address : address + 4 * count] = payload
            return [Reply.ACK]
        if command == Command.WAIT_IRQ:
            return [Reply.TIMEOUT]
        return [Reply.NAK]

    def frame(self, mosi: bytes) -> bytes:
        self.frames.append(bytes(mosi))
        if len(self.request) < HEADER_BYTES:
            self.request.clear()  # chip-select: a partial header is discarded
        miso = bytearray()
        for byte in mosi:
            # The byte going out was chosen when this one started.
            miso.append(self.replies.popleft() if self.replies else IDLE)
            if self.replies:
                continue  # busy answering: the bridge does not take request bytes
            self.request.append(byte)
            if len(self.request) == self._expected():
                reply = self._execute()
                self.request.clear()
                if reply:  # ready one byte after the request's last byte
                    self.replies.extend([IDLE, *reply])
        return bytes(miso)


class FakeSpidevIoctl:
    """Stands in for ``fcntl.ioctl`` on a spidev file: decodes what the driver asks for."""

    def __init__(self, bridge: FakeSpiBridge, fail_with: int | None = None):
        self.bridge = bridge
        self.fail_with = fail_with
        self.mode: int | None = None
        self.speed_hz: int | None = None
        self.transfers: list[dict] = []

    def __call__(self, fd: int, request_code: int, arg: bytes):
        if self.fail_with is not None:
            raise OSError(self.fail_with, "fake spidev failure")
        if request_code == SPI_IOC_WR_MODE:
            (self.mode,) = struct.unpack("=B", arg)
        elif request_code == SPI_IOC_WR_MAX_SPEED_HZ:
            (self.speed_hz,) = struct.unpack("=I", arg)
        elif request_code == SPI_IOC_MESSAGE_1:
            (tx_buf, rx_buf, length, speed, delay, bits, cs_change, tx_nbits, rx_nbits,
             word_delay, pad) = SPI_IOC_TRANSFER.unpack(arg)
            self.transfers.append(dict(length=length, speed=speed, bits=bits,
                                       cs_change=cs_change, tx_nbits=tx_nbits))
            miso = self.bridge.frame(ctypes.string_at(tx_buf, length))
            ctypes.memmove(rx_buf, miso, length)
        else:
            raise OSError(errno.ENOTTY, "not a spidev request")
        return 0


@pytest.fixture
def spi(tmp_path):
    """A fake /dev/spidev0.0 answered by the fake bridge; the device on top of it."""
    path = tmp_path / "spidev0.0"
    path.write_bytes(b"")
    bridge = FakeSpiBridge()
    ioctl = FakeSpidevIoctl(bridge)
    bus = Spidev(path, speed_hz=1_500_000, ioctl=ioctl)
    link = Bridge(SpidevLink(bus), timeout_s=0.5)
    device = Device(BridgeRegisters(link), BridgeMemory(link, MEMORY), clock_hz=12e6, lock=False)
    yield device, bridge, ioctl
    device.close()


def test_spidev_is_set_to_mode_0_and_each_transfer_is_one_8_bit_message(spi):
    device, _, ioctl = spi
    assert (ioctl.mode, ioctl.speed_hz) == (0, 1_500_000)
    assert device.read_register("ID") == ID_VALUE
    assert ioctl.transfers
    for transfer in ioctl.transfers:
        assert transfer["speed"] == 1_500_000 and transfer["bits"] == 8
        assert transfer["cs_change"] == 0 and transfer["tx_nbits"] == 0
        assert 1 <= transfer["length"] <= SPIDEV_MAX_TRANSFER


def test_requests_go_out_as_protocol_bytes_and_reads_clock_zeros(spi):
    device, bridge, _ = spi
    device.registers.write32(REGISTERS["WATCHDOG"], 0xCAFE_F00D)
    assert bridge.csrs[REGISTERS["WATCHDOG"]] == 0xCAFE_F00D
    bridge.frames.clear()
    assert device.registers.read32(REGISTERS["WATCHDOG"]) == 0xCAFE_F00D
    assert bridge.frames[0] == request(Command.CSR_READ, REGISTERS["WATCHDOG"], 1)
    # Everything after the request only clocks the reply out: zeros (NOP bytes).
    assert all(set(frame) <= {0} for frame in bridge.frames[1:])


def test_memory_round_trip_larger_than_one_spidev_transfer(spi, rng):
    device, bridge, ioctl = spi
    data = rng.integers(0, 256, 3 * SPIDEV_MAX_TRANSFER + 5, dtype=np.uint8).tobytes()
    device.write(1, data)  # unaligned both ends: read-merge-write of the edge words
    assert bytes(bridge.memory[1 : 1 + len(data)]) == data
    assert max(t["length"] for t in ioctl.transfers) == SPIDEV_MAX_TRANSFER
    # 0xFF data bytes are data, not idle bytes, once the reply has started.
    device.write(64, b"\xff" * 16)
    assert device.read(64, 16) == b"\xff" * 16
    expected = bytearray(data)
    expected[63:79] = b"\xff" * 16
    assert device.read(0, len(data) + 8)[1 : 1 + len(data)] == expected


def test_a_partial_header_is_dropped_at_the_next_chip_select(spi):
    device, bridge, _ = spi
    bus = device.registers.bridge.link.bus
    bus.transfer(bytes([Command.MEM_WRITE, 0, 0]))  # a torn request, no reply
    assert device.read_register("ID") == ID_VALUE


def test_unknown_command_is_refused_and_the_link_stays_in_step(spi):
    device, _, _ = spi
    bridge = device.registers.bridge
    bridge.link.send(bytes([0x77]) + bytes(6))
    assert bridge._status(0.5) == Reply.NAK
    assert device.read_register("ID") == ID_VALUE


def test_wait_irq_over_spi_reports_the_budget_passing():
    bridge = FakeSpiBridge()

    class Bus:
        name = "fake"

        def transfer(self, data: bytes) -> bytes:
            return bridge.frame(data)

        def close(self) -> None:
            pass

    assert Bridge(SpidevLink(Bus())).wait_irq(100, 0.5) is False


def test_reply_bytes_that_arrive_while_sending_are_kept():
    class EagerBus:
        """A bus whose reply starts inside the request's own frame (a reply left over)."""

        name = "eager"

        def __init__(self):
            self.miso = deque([IDLE] * 6 + [Reply.ACK, *struct.pack("<I", ID_VALUE)])

        def transfer(self, data: bytes) -> bytes:
            return bytes(self.miso.popleft() if self.miso else IDLE for _ in data)

        def close(self) -> None:
            pass

    link = SpidevLink(EagerBus(), max_transfer=16)
    bridge = Bridge(link, timeout_s=0.2)
    value = bridge.read_words(Command.CSR_READ, REGISTERS["ID"], 1)
    assert struct.unpack("<I", value)[0] == ID_VALUE


def test_spidev_open_and_ioctl_failures_are_backend_errors(tmp_path):
    with pytest.raises(BackendError, match="cannot open spidev"):
        Spidev(tmp_path / "missing")
    path = tmp_path / "spidev0.0"
    path.write_bytes(b"")
    with pytest.raises(BackendError, match="cannot configure spidev"):
        Spidev(path, ioctl=FakeSpidevIoctl(FakeSpiBridge(), fail_with=errno.EINVAL))
    # The real ioctl on a plain file: the kernel says it is not a spidev device.
    with pytest.raises(BackendError, match="cannot configure spidev"):
        open_device(f"board=icebreaker,spi={path},lock=0")
    with pytest.raises(ConfigError, match="speed_hz"):
        Spidev(path, speed_hz=0)


# -- end to end on the RTL -----------------------------------------------------------------


@pytest.fixture(scope="module")
def rtl_backend():
    device = open_device(f"sim=spi,memory={MEMORY}", preset("tiny"))
    backend = DeviceBackend(preset("tiny"), device)
    yield backend
    backend.close()


@pytest.mark.verilator
def test_spi_rtl_reaches_csrs_and_memory_through_the_spidev_link(rtl_backend, rng):
    device = rtl_backend.device
    assert isinstance(device.registers.bridge.link, SpidevLink)
    assert device.read_register("ID") == preset("tiny").hash32()
    data = rng.integers(0, 256, 2 * SPIDEV_MAX_TRANSFER + 3, dtype=np.uint8).tobytes()
    device.write(5, data)
    assert device.read(5, len(data)) == data
    device.write(MEMORY - 4, b"\xff\xff\xff\xff")  # data bytes equal to the idle byte
    assert device.read(MEMORY - 4, 4) == b"\xff\xff\xff\xff"
    bridge = device.registers.bridge
    bridge.link.send(bytes([0x77]) + bytes(6))
    assert bridge._status(2.0) == Reply.NAK
    assert device.read_register("ID") == preset("tiny").hash32()


@pytest.mark.verilator
def test_compiled_model_over_spi_on_the_rtl_equals_golden_and_onnxruntime(rtl_backend):
    golden = Session(model_path("mlp_ternary"), config="tiny", batch=4)
    feeds, _ = digits_inputs("mlp_ternary", 4)
    session = Session(golden.program, config="tiny")
    session.backend = rtl_backend
    rtl_backend.load(session.program)
    ours, expected = session.run(feeds), golden.run(feeds)
    for key in expected:
        np.testing.assert_array_equal(ours[key], expected[key])
    np.testing.assert_array_equal(next(iter(ours.values())),
                                  ort_outputs("mlp_ternary", feeds)[0])
    assert session.counters()["cycles"] > 0
