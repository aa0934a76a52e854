"""The device driver over fake device files: a file-backed mmap stands in for /dev/uio0 and
/dev/udmabuf0, a fake sysfs tree gives map size and physical address, a pseudo terminal
carries the interrupt, and a thread plays the accelerator with the golden model."""

from __future__ import annotations

import os
import pty
import struct
import threading
import tty
from pathlib import Path

import numpy as np
import pytest
from sw_models import digits_inputs, model_path, ort_outputs

from trilobit.config import preset
from trilobit.errors import BackendError, ConfigError, DeviceTimeout, ProgramError
from trilobit.hw.accel_csr import COUNTERS, REGISTERS
from trilobit.sw.driver import Device, DeviceBackend, open_device
from trilobit.sw.driver.dma import DevMemMemory, UdmabufMemory
from trilobit.sw.driver.uio import UioRegisters, find_uio
from trilobit.sw.runtime import Session

PHYS = 0x3F00_0000  # where the fake u-dma-buf buffer "is" on the bus
CSR_BYTES = 0x1000
DMA_BYTES = 1 << 16


class FakeBoard:
    """Fake /dev and /sys trees and an accelerator thread answering START with the golden
    model, relocated by the physical address the driver must add."""

    def __init__(self, root: Path, config, hang: bool = False):
        self.config = config
        self.hang = hang
        self.dev, self.sys = root / "dev", root / "sys"
        self.dev.mkdir(parents=True)
        (self.dev / "uio0").write_bytes(bytes(CSR_BYTES))
        (self.dev / "udmabuf0").write_bytes(bytes(DMA_BYTES))
        uio = self.sys / "uio" / "uio0"
        (uio / "maps" / "map0").mkdir(parents=True)
        (uio / "name").write_text("trilobit\n")
        (uio / "maps" / "map0" / "size").write_text(f"{CSR_BYTES:#x}\n")
        buf = self.sys / "u-dma-buf" / "udmabuf0"
        buf.mkdir(parents=True)
        (buf / "phys_addr").write_text(f"{PHYS:#x}\n")
        (buf / "size").write_text(f"{DMA_BYTES}\n")
        # The slave end stays open here: a pty master whose slave is closed reads EIO.
        self.irq_master, self.irq_slave = pty.openpty()
        tty.setraw(self.irq_slave)
        self.irq_path = os.ttyname(self.irq_slave)
        self.runs: list[dict] = []
        self.registers = np.memmap(self.dev / "uio0", np.uint32, "r+")
        self.registers[REGISTERS["ID"] // 4] = config.hash32()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        from trilobit.sim.golden import GoldenMachine

        events = 0
        while True:
            try:
                unmask = os.read(self.irq_master, 4)  # the driver unmasks before each wait
            except OSError:
                return
            if len(unmask) < 4:
                return
            assert struct.unpack("=I", unmask)[0] == 1
            regs = self.registers
            if not regs[REGISTERS["CTRL"] // 4] & 1:
                continue
            regs[REGISTERS["CTRL"] // 4] = 0
            setting = {name: int(regs[REGISTERS[name] // 4]) for name in
                       ("PROG_BASE", "DATA_BASE", "WIN_BASE", "WIN_LIMIT", "WATCHDOG")}
            self.runs.append(setting)
            if self.hang:
                regs[REGISTERS["STATUS"] // 4] = 1  # busy forever, no interrupt
                continue
            memory = np.fromfile(self.dev / "udmabuf0", np.uint8)
            machine = GoldenMachine(self.config, memory)
            result = machine.run(prog_base=setting["PROG_BASE"] - PHYS,
                                 data_base=setting["DATA_BASE"] - PHYS,
                                 window=(setting["WIN_BASE"] - PHYS,
                                         setting["WIN_LIMIT"] - PHYS),
                                 watchdog=setting["WATCHDOG"])
            with open(self.dev / "udmabuf0", "r+b") as f:
                f.write(machine.memory.tobytes())
            for name, offset in COUNTERS.items():
                value = result.counters.get(name, 0)
                regs[offset // 4] = value & 0xFFFFFFFF
            regs[COUNTERS["macs_hi"] // 4] = result.counters.get("macs", 0) >> 32
            regs[REGISTERS["ERROR_PC"] // 4] = result.error_pc
            regs[REGISTERS["STATUS"] // 4] = result.state | int(result.error) << 8 | 1 << 16
            regs.flush()
            events += 1
            os.write(self.irq_master, struct.pack("=I", events))

    def open(self) -> Device:
        registers = UioRegisters(self.dev / "uio0", sysfs=self.sys / "uio",
                                 interrupt_device=self.irq_path)
        try:
            memory = UdmabufMemory("udmabuf0", dev=self.dev, sysfs=self.sys / "u-dma-buf")
        except BaseException:
            registers.close()
            raise
        return Device(registers, memory, clock_hz=1e9)

    def close(self) -> None:
        os.close(self.irq_master)
        os.close(self.irq_slave)


@pytest.fixture
def board(tmp_path):
    fake = FakeBoard(tmp_path, preset("tiny"))
    yield fake
    fake.close()


def test_sysfs_gives_map_size_physical_address_and_uio_by_name(board):
    assert find_uio("trilobit", sysfs=board.sys / "uio", dev=board.dev) == board.dev / "uio0"
    with pytest.raises(BackendError, match="no UIO device named 'other'"):
        find_uio("other", sysfs=board.sys / "uio", dev=board.dev)
    memory = UdmabufMemory("udmabuf0", dev=board.dev, sysfs=board.sys / "u-dma-buf")
    assert (memory.size, memory.bus_address) == (DMA_BYTES, PHYS)
    memory.write(10, b"\x01\x02\x03")
    assert (board.dev / "udmabuf0").read_bytes()[10:13] == b"\x01\x02\x03"
    memory.close()
    memory.close()
    with pytest.raises(BackendError, match="no u-dma-buf buffer 'udmabuf7'"):
        UdmabufMemory("udmabuf7", dev=board.dev, sysfs=board.sys / "u-dma-buf")


def test_uio_registers_are_32_bit_words_of_the_mapping(board):
    registers = UioRegisters(board.dev / "uio0", sysfs=board.sys / "uio",
                             interrupt_device=board.irq_path)
    registers.write32(REGISTERS["WATCHDOG"], 0x1234_5678)
    assert board.registers[REGISTERS["WATCHDOG"] // 4] == 0x1234_5678
    assert registers.read32(REGISTERS["ID"]) == preset("tiny").hash32()
    with pytest.raises(BackendError, match="not word aligned"):
        registers.read32(2)
    with pytest.raises(BackendError, match="outside the region"):
        registers.write32(CSR_BYTES, 0)
    registers.close()


def test_compiled_program_on_the_fake_board_equals_golden_and_onnxruntime(board):
    golden = Session(model_path("mlp_qdq"), config="tiny", batch=4)
    feeds, _ = digits_inputs("mlp_qdq", 8)
    backend = DeviceBackend(preset("tiny"), board.open())
    session = Session(golden.program, config="tiny")
    session.backend = backend
    backend.load(session.program)
    expected = golden.run(feeds)
    ours = session.run(feeds)
    for name in expected:
        np.testing.assert_array_equal(ours[name], expected[name])
    np.testing.assert_array_equal(next(iter(ours.values())), ort_outputs("mlp_qdq", feeds)[0])
    # Every run set every base and the window, relocated to the buffer's physical address.
    assert board.runs
    for run in board.runs:
        assert run["DATA_BASE"] == PHYS
        assert run["WIN_BASE"] == PHYS
        assert run["WIN_LIMIT"] == PHYS + session.program.memory_bytes
        assert PHYS <= run["PROG_BASE"] < PHYS + session.program.memory_bytes
    assert session.counters()["cycles"] > 0
    backend.close()


def test_second_process_gets_a_clear_busy_error_and_close_releases(board):
    first = board.open()
    with pytest.raises(BackendError, match=r"is busy: process \d+"):
        board.open()
    first.close()
    first.close()
    board.open().close()  # released: opens again


def test_a_failed_open_releases_what_it_took(board, tmp_path):
    backend_config = preset("small")  # the fake board holds the tiny accelerator
    with pytest.raises(ProgramError, match="holds accelerator"):
        DeviceBackend(backend_config, board.open())
    board.open().close()  # the lock was released by the failed backend


def test_bounds_are_checked_before_anything_is_written(board):
    with board.open() as device:
        before = (board.dev / "udmabuf0").read_bytes()
        with pytest.raises(BackendError, match="outside the region"):
            device.write(DMA_BYTES - 2, b"\xff" * 4)
        with pytest.raises(BackendError, match="outside the region"):
            device.write(-1, b"\xff")
        with pytest.raises(BackendError, match="outside the region"):
            device.read(DMA_BYTES, 1)
        with pytest.raises(BackendError, match="program"):
            device.run(DMA_BYTES, 1000)
        assert (board.dev / "udmabuf0").read_bytes() == before
        assert not board.runs  # nothing started


def test_program_larger_than_the_buffer_is_refused(board):
    class Huge:
        def memory_image(self):
            return np.zeros(DMA_BYTES + 16, np.uint8)

    with DeviceBackend(preset("tiny"), board.open()) as backend, \
            pytest.raises(ProgramError, match=f"needs {DMA_BYTES + 16} bytes"):
        backend.load(Huge())


def test_timeout_reports_the_device_status(tmp_path):
    fake = FakeBoard(tmp_path, preset("tiny"), hang=True)
    try:
        with fake.open() as device, pytest.raises(DeviceTimeout) as caught:
            device.run(0, 1000, timeout_s=0.3)
        assert "'state': 'busy'" in str(caught.value) and "no interrupt" in str(caught.value)
    finally:
        fake.close()


def test_a_run_that_stops_with_an_error_says_which_and_where(board):
    # Zeroed memory is not a valid instruction stream: the run must fail loudly.
    with board.open() as device:
        with pytest.raises(BackendError) as caught:
            device.run(0, 1)
        message = str(caught.value)
        assert "instruction 0" in message
        assert isinstance(caught.value, DeviceTimeout) == ("exceeded its budget" in message)


def test_devmem_region_maps_at_its_physical_offset(tmp_path):
    fake_mem = tmp_path / "mem"
    fake_mem.write_bytes(bytes(3 * 4096))
    region = DevMemMemory(4096, 4096, path=fake_mem)
    region.write(0, b"abcd")
    region.close()
    assert fake_mem.read_bytes()[4096:4100] == b"abcd"
    with pytest.raises(BackendError, match="multiple of the page size"):
        DevMemMemory(100, 4096, path=fake_mem)


def test_device_spec_errors_are_clear():
    with pytest.raises(ConfigError, match="names no transport"):
        open_device("memory=4096")
    with pytest.raises(ConfigError, match="key=value"):
        open_device("uio")
    with pytest.raises(ConfigError, match="board must be one of"):
        open_device("board=nosuch,uart=/dev/null")


def test_uart_link_is_raw_8n1_over_a_serial_device():
    from trilobit.sw.driver.bridge import UartLink

    master, slave = pty.openpty()
    try:
        link = UartLink(os.ttyname(slave), baud=1_000_000)
        every_byte = bytes(range(256))  # raw mode: no CR/LF translation, no XON/XOFF, no echo
        link.send(every_byte)
        got = b""
        while len(got) < 256:
            got += os.read(master, 256)
        assert got == every_byte
        os.write(master, every_byte)
        got = b""
        while len(got) < 256:
            chunk = link.receive(256 - len(got), 2.0)
            assert chunk, "timed out"
            got += chunk
        assert got == every_byte
        assert link.receive(1, 0.05) == b""  # nothing more: a timeout, not a block
        link.close()
    finally:
        os.close(master)
        os.close(slave)


def test_bridge_times_out_with_a_clear_message_when_nothing_answers():
    from trilobit.sw.driver.bridge import Bridge, BridgeRegisters, UartLink

    master, slave = pty.openpty()
    try:
        registers = BridgeRegisters(Bridge(UartLink(os.ttyname(slave)), timeout_s=0.2))
        with pytest.raises(DeviceTimeout, match="no reply from the bridge"):
            registers.read32(REGISTERS["ID"])
        registers.close()
    finally:
        os.close(master)
        os.close(slave)


def test_pynq_style_mmio_and_allocate_over_fake_files(board, tmp_path):
    from trilobit.sw.driver.pynq_compat import MMIO, Allocator

    fake_mem = tmp_path / "mem"
    fake_mem.write_bytes(bytes(2 * 4096))
    csr = MMIO(4096, 4096, path=fake_mem)
    csr.write(REGISTERS["WATCHDOG"], 0x1_2345_6789)  # 32-bit register: high bits dropped
    assert csr.read(REGISTERS["WATCHDOG"]) == 0x2345_6789
    assert fake_mem.read_bytes()[4096 + REGISTERS["WATCHDOG"]:][:4] == b"\x89\x67\x45\x23"
    csr.close()

    allocator = Allocator("udmabuf0", dev=board.dev, sysfs=board.sys / "u-dma-buf")
    first = allocator.allocate((3,), "int8")
    second = allocator.allocate((2, 2), "int32")
    assert first.physical_address == PHYS and second.physical_address == PHYS + 64
    second[:] = [[1, -2], [3, -4]]
    raw = (board.dev / "udmabuf0").read_bytes()[64:80]
    assert np.frombuffer(raw, "<i4").tolist() == [1, -2, 3, -4]
    with pytest.raises(BackendError, match="do not fit"):
        allocator.allocate((DMA_BYTES,), "uint8")
    del first, second
    allocator.close()


def test_device_backend_offers_only_the_post_modes_the_hardware_has(board, tmp_path):
    with DeviceBackend(preset("tiny"), board.open()) as backend:
        assert backend.post_modes == ("ort", "host", "dyadic")
    slim = preset("tiny").replace(requant_modes=("dyadic",))  # no float32 requantizer
    fake = FakeBoard(tmp_path / "slim", slim)
    try:
        with DeviceBackend(slim, fake.open()) as backend:
            assert backend.post_modes == ("host", "dyadic")
    finally:
        fake.close()
