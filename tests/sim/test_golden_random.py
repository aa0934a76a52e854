"""Golden model on generated programs: random valid layers against their numpy answers, and
adversarial programs that must stop with a defined error."""

import numpy as np
import pytest

from trilobit.config import preset
from trilobit.sim.golden import GoldenMachine, Status
from trilobit.sim.progen import ADVERSARIAL, adversarial_case, random_layer_case


def run_golden(case):
    gm = GoldenMachine(case.config, case.memory.copy())
    result = gm.run(case.prog_base, case.data_base, case.window, case.watchdog)
    return gm, result


@pytest.mark.parametrize("name", ["tiny", "small", "large"])
def test_random_valid_programs_match_numpy(name, rng):
    cfg = preset(name)
    for _ in range(25):
        case = random_layer_case(rng, cfg)
        gm, result = run_golden(case)
        assert result.ok, (case.description, result)
        for check in case.outputs:
            assert np.array_equal(check.read(gm.memory), check.expected), case.description
        # Only the outputs' rows changed in memory, and only inside the window.
        changed = np.flatnonzero(gm.memory != case.memory)
        if changed.size:
            assert case.window[0] <= changed.min() and changed.max() < case.window[1]


@pytest.mark.parametrize("kind", ADVERSARIAL)
def test_adversarial_programs_stop_with_their_error(kind, rng):
    cfg = preset("small")
    for _ in range(10):
        case = adversarial_case(rng, random_layer_case(rng, cfg), kind)
        gm, result = run_golden(case)
        assert result.state == Status.ERROR, case.description
        assert result.error == case.expect_error, (case.description, result)
        if case.expect_pc is not None:
            assert result.error_pc == case.expect_pc, case.description
        outside = np.ones(case.memory.size, dtype=bool)
        outside[case.window[0] : case.window[1]] = False
        assert np.array_equal(gm.memory[outside], case.memory[outside])
        if kind != "runaway":
            assert result.counters["insns"] == case.expect_pc


def test_generator_covers_engines_formats_and_modes(rng):
    cfg = preset("small")
    seen = set()
    for _ in range(150):
        words = random_layer_case(rng, cfg).description.split()
        seen.update(words[:2])
        seen.add(words[8])
    assert {"TLMM", "BITSERIAL", "ORT", "DYADIC", "TERNARY", "INT8", "FP4", "FP3"} <= seen
