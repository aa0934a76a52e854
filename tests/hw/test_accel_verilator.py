"""Whole programs on the accelerator RTL (Verilator, memory model in the C++ harness) against
the golden ISA model: output bytes, status, error code and pc, architectural counters, under
random memory stalls (Wishbone wait states, AXI4 ready/valid stalls)."""

import numpy as np
import pytest

from trilobit.config import preset
from trilobit.sim.golden import ARCH_COUNTERS, GoldenMachine, Status
from trilobit.sim.progen import ADVERSARIAL, adversarial_case, random_layer_case

pytestmark = pytest.mark.verilator


# small: Wishbone, 64-bit lines; tiny with AXI4: 32-bit lines through the AXI4/AXI4-Lite
# adapters. (large, AXI4 with 128-bit lines, also matches but takes minutes to build.)
CONFIGS = {
    "small-wishbone": preset("small"),
    "tiny-axi4": preset("tiny").replace(name="tiny-axi4", bus="axi4"),
}


@pytest.fixture(scope="module", params=list(CONFIGS))
def rtl(request):
    from trilobit.sim.accel_verilator import VerilatorAccelerator

    return VerilatorAccelerator(CONFIGS[request.param])


def run_both(rtl, case, stall_prob, seed):
    gm = GoldenMachine(case.config, case.memory.copy())
    golden = gm.run(case.prog_base, case.data_base, case.window, case.watchdog)
    result, memory, extra = rtl.run(case.memory, case.prog_base, case.data_base, case.window,
                                    case.watchdog, stall_prob=stall_prob, seed=seed)
    assert extra["bus_outside_window"] == 0 and extra["bus_beyond_memory"] == 0
    assert extra["id"] == case.config.hash32()
    return gm, golden, result, memory


def test_random_programs_match_golden_under_memory_stalls(rtl, rng):
    for i in range(20):
        case = random_layer_case(rng, rtl.config, max_n=24, max_k=200)
        gm, golden, result, memory = run_both(rtl, case, stall_prob=0.3 + 0.2 * (i % 2), seed=i)
        assert golden.ok and result.ok, (case.description, result)
        assert np.array_equal(memory, gm.memory), case.description
        for check in case.outputs:
            assert np.array_equal(check.read(memory), check.expected), case.description
        for name in ARCH_COUNTERS:
            assert result.counters[name] == golden.counters[name], (name, case.description)
        assert result.counters["load_stall"] > 0


def test_stalls_change_timing_only(rtl, rng):
    case = random_layer_case(rng, rtl.config, max_n=16, max_k=64)
    runs = [rtl.run(case.memory, case.prog_base, case.data_base, case.window, 0,
                    stall_prob=p, seed=7) for p in (0.0, 0.6)]
    (fast, mem_fast, _), (slow, mem_slow, _) = runs
    assert fast.ok and slow.ok
    assert np.array_equal(mem_fast, mem_slow)
    assert slow.counters["cycles"] > fast.counters["cycles"]
    assert slow.counters["load_stall"] > fast.counters["load_stall"]


@pytest.mark.parametrize("kind", ADVERSARIAL)
def test_adversarial_programs_stop_like_golden(rtl, kind, rng):
    for i in range(3):
        case = adversarial_case(rng, random_layer_case(rng, rtl.config, max_n=16, max_k=96), kind)
        gm, golden, result, memory = run_both(rtl, case, stall_prob=0.3, seed=i)
        assert result.state == golden.state == Status.ERROR, case.description
        assert result.error == golden.error == case.expect_error, (case.description, result)
        if kind != "runaway":
            assert result.error_pc == golden.error_pc, case.description
            # Everything before the faulting instruction happened, nothing after it.
            assert np.array_equal(memory, gm.memory), case.description
            for name in ARCH_COUNTERS:
                assert result.counters[name] == golden.counters[name], name
        else:
            assert result.counters["cycles"] >= case.watchdog - 1
