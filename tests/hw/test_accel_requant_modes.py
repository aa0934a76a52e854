"""A slim accelerator (``requant_modes=("dyadic",)``, ``perf_counters=False``) on the RTL
against the golden model: a POST in the absent ORT mode stops the run with
ILLEGAL_INSTRUCTION at the same pc with the same memory, dyadic layers run to the end, and
the counters that are not built read 0."""

import numpy as np
import pytest

from trilobit.config import preset
from trilobit.isa import ErrorCode
from trilobit.sim.golden import ARCH_COUNTERS, GoldenMachine, Status
from trilobit.sim.progen import random_layer_case

pytestmark = pytest.mark.verilator

SLIM = preset("tiny").replace(name="tiny-dyadic", requant_modes=("dyadic",),
                              perf_counters=False)


def test_slim_core_rejects_ort_post_like_golden(rng):
    from trilobit.sim.accel_verilator import VerilatorAccelerator

    rtl = VerilatorAccelerator(SLIM)
    outcomes = set()
    for i in range(10):
        case = random_layer_case(rng, SLIM, max_n=16, max_k=64)
        gm = GoldenMachine(SLIM, case.memory.copy())
        golden = gm.run(case.prog_base, case.data_base, case.window, case.watchdog)
        result, memory, extra = rtl.run(case.memory, case.prog_base, case.data_base,
                                        case.window, case.watchdog, stall_prob=0.3, seed=i)
        assert extra["bus_outside_window"] == 0
        assert (result.state, result.error, result.error_pc) == (
            golden.state, golden.error, golden.error_pc), case.description
        assert np.array_equal(memory, gm.memory), case.description
        if " ORT " in case.description:
            assert result.state == Status.ERROR
            assert result.error == ErrorCode.ILLEGAL_INSTRUCTION
        else:
            assert result.ok, case.description
            for check in case.outputs:
                assert np.array_equal(check.read(memory), check.expected), case.description
        for name in ARCH_COUNTERS:
            assert result.counters[name] == golden.counters[name] == 0, name
        assert result.counters["cycles"] > 0
        outcomes.add(result.state)
    assert outcomes == {Status.DONE, Status.ERROR}
