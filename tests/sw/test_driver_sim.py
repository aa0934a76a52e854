"""End to end: the driver's register/memory protocol served by the RTL.

The device backend talks the bridge byte protocol to a Verilator model of the bridge system
(host bridge + accelerator + on-chip memory, :mod:`trilobit.hw.bridge_sim`), exactly as to a
board on a UART; a compiled program must give the golden backend's outputs.
"""

from __future__ import annotations

import numpy as np
import pytest
from sw_models import digits_inputs, model_path, ort_outputs

from trilobit.config import preset
from trilobit.errors import BackendError, DeviceTimeout
from trilobit.hw.accel_csr import REGISTERS
from trilobit.hw.bridge_protocol import Command, Reply, request
from trilobit.sw.driver import DeviceBackend, open_device
from trilobit.sw.runtime import Session

pytestmark = pytest.mark.verilator

MEMORY = 1 << 14


@pytest.fixture(scope="module")
def backend():
    # The backend owns the device it is given and releases it when closed. The link stalls
    # 30 % of the cycles in both directions.
    device = open_device(f"sim=1,memory={MEMORY},stall=0.3,seed=5", preset("tiny"))
    backend = DeviceBackend(preset("tiny"), device)
    yield backend
    backend.close()


@pytest.fixture
def device(backend):
    return backend.device


def test_bridge_memory_round_trip_with_unaligned_edges(device):
    rng = np.random.default_rng(7)
    data = rng.integers(0, 256, 1001, dtype=np.uint8).tobytes()
    device.write(0, bytes(MEMORY))
    device.write(3, data)
    back = device.read(0, 1008)
    assert back[:3] == bytes(3) and back[3:1004] == data and back[1004:] == bytes(4)
    device.write(MEMORY - 4, b"\xde\xad\xbe\xef")
    assert device.read(MEMORY - 4, 4) == b"\xde\xad\xbe\xef"
    with pytest.raises(BackendError, match="outside the region"):
        device.write(MEMORY - 2, b"\x00" * 4)


def test_bridge_reaches_the_csrs_and_refuses_unknown_commands(device):
    assert device.read_register("ID") == preset("tiny").hash32()
    device.registers.write32(REGISTERS["WATCHDOG"], 0xCAFE)
    assert device.read_register("WATCHDOG") == 0xCAFE
    bridge = device.registers.bridge
    bridge.link.send(bytes([0x77]) + bytes(6))
    assert bridge._status(2.0) == Reply.NAK
    # NOP headers are ignored; the link stays in step.
    bridge.link.send(request(Command.NOP, 0))
    assert device.read_register("ID") == preset("tiny").hash32()


@pytest.mark.parametrize("name", ["mlp_ternary", "mlp_qdq", "cnn_qop"])
def test_compiled_program_through_the_driver_on_rtl_equals_golden(backend, name):
    golden = Session(model_path(name), config="tiny", batch=4)
    feeds, _ = digits_inputs(name, 8)
    session = Session(golden.program, config="tiny")
    session.backend = backend
    session.backend.load(session.program)
    ours, expected = session.run(feeds), golden.run(feeds)
    for key in expected:
        np.testing.assert_array_equal(ours[key], expected[key])
    np.testing.assert_array_equal(next(iter(ours.values())), ort_outputs(name, feeds)[0])
    counters = session.counters()
    assert counters["cycles"] > 0 and counters["macs"] >= counters["useful_macs"] > 0


def test_budget_too_small_is_a_device_timeout_from_the_rtl_watchdog(device):
    golden = Session(model_path("mlp_ternary"), config="tiny", batch=4)
    device.write(0, golden.program.memory_image().tobytes())
    kernel = next(iter(golden.program.kernels.values()))[0]
    with pytest.raises(DeviceTimeout, match="exceeded its budget of 50 cycles"):
        device.run(kernel.prog_addr, 50)
    assert device.status()["state"] == "error"


def test_wait_irq_answers_timeout_when_the_budget_passes_first(device):
    assert device.status()["irq_pending"] is False
    assert device.registers.wait_interrupt(2.0, 200) is False


def test_session_backend_device_from_the_environment(monkeypatch):
    # The path a user takes: Session(..., backend="device") with $TRILOBIT_DEVICE.
    monkeypatch.setenv("TRILOBIT_DEVICE", f"sim=1,memory={MEMORY}")
    feeds, _ = digits_inputs("mlp_dynamic", 5)
    session = Session(model_path("mlp_dynamic"), config="tiny", backend="device", batch=4)
    try:
        ours = next(iter(session.run(feeds).values()))
    finally:
        session.backend.close()
    np.testing.assert_array_equal(ours, ort_outputs("mlp_dynamic", feeds)[0])
