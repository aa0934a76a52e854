"""Compact cores (``AcceleratorConfig.compact``) against the golden ISA model, whole programs in
Verilator: the dispatch checks' products come from a shift-and-add multiplier and the
instruction queues wait in block RAM, so only cycle timing may differ from a full core.
Outputs, status, error code and pc and the architectural counters must equal the golden
model's, under random memory stalls.

Two builds: the iCEBreaker's core (TLMM only, dyadic only, no performance counters) and
``tiny`` made compact (both engines, both requantizers, every counter).
"""

import numpy as np
import pytest

from trilobit.boards import get_board
from trilobit.config import preset
from trilobit.isa import Buffer, Engine, ErrorCode, PostMode, WeightEncoding
from trilobit.sim.asm import Assembler
from trilobit.sim.golden import ARCH_COUNTERS, GoldenMachine, Status
from trilobit.sim.progen import ADVERSARIAL, adversarial_case, random_layer_case

pytestmark = pytest.mark.verilator

CONFIGS = {
    "icebreaker": get_board("icebreaker").config,
    "tiny-compact": preset("tiny").replace(name="tiny-compact", compact=True),
}


def test_icebreaker_preset_is_compact():
    assert CONFIGS["icebreaker"].compact


@pytest.fixture(scope="module", params=list(CONFIGS))
def rtl(request):
    from trilobit.sim.accel_verilator import VerilatorAccelerator

    return VerilatorAccelerator(CONFIGS[request.param])


def layer_case(rng, config, **limits):
    """A random valid layer whose POST mode the config builds (progen draws ORT and DYADIC
    alike; an absent mode is ILLEGAL_INSTRUCTION, tested in test_accel_requant_modes.py)."""
    while True:
        case = random_layer_case(rng, config, **limits)
        if " ORT " not in case.description or "ort" in config.requant_modes:
            return case


def run_both(rtl, memory, prog_base, data_base, window, watchdog, stall_prob, seed):
    """Golden and RTL on the same image; checks the bus stayed in the window."""
    gm = GoldenMachine(rtl.config, memory.copy())
    golden = gm.run(prog_base, data_base, window, watchdog)
    result, final, extra = rtl.run(memory, prog_base, data_base, window, watchdog,
                                   stall_prob=stall_prob, seed=seed)
    assert extra["bus_outside_window"] == 0 and extra["bus_beyond_memory"] == 0
    assert extra["id"] == rtl.config.hash32()
    return gm, golden, result, final


def assert_same(gm, golden, result, final, what=""):
    assert (result.state, result.error, result.error_pc) == (
        golden.state, golden.error, golden.error_pc), (what, result, golden)
    assert np.array_equal(final, gm.memory), what
    for name in ARCH_COUNTERS:
        assert result.counters[name] == golden.counters[name], (name, what)


def test_random_programs_match_golden_under_memory_stalls(rtl, rng):
    for i in range(10):
        case = layer_case(rng, rtl.config, max_n=24, max_k=200)
        gm, golden, result, final = run_both(rtl, case.memory, case.prog_base, case.data_base,
                                             case.window, case.watchdog, 0.3, i)
        assert golden.ok and result.ok, (case.description, result)
        assert_same(gm, golden, result, final, case.description)
        for check in case.outputs:
            assert np.array_equal(check.read(final), check.expected), case.description


@pytest.mark.parametrize("kind", ADVERSARIAL)
def test_adversarial_programs_stop_like_golden(rtl, kind, rng):
    for i in range(2):
        case = adversarial_case(rng, layer_case(rng, rtl.config, max_n=16, max_k=96), kind)
        gm, golden, result, final = run_both(rtl, case.memory, case.prog_base, case.data_base,
                                             case.window, case.watchdog, 0.3, i)
        assert result.state == golden.state == Status.ERROR, case.description
        assert result.error == golden.error == case.expect_error, (case.description, result)
        if kind == "runaway":
            assert result.counters["cycles"] >= case.watchdog - 1
        else:
            assert_same(gm, golden, result, final, case.description)


def _boundary_program(config, over: str | None) -> tuple[bytes, int]:
    """Transfers and a GEMM/POST whose ends sit exactly at the buffer and window limits (the
    products of the range checks at their largest); ``over`` pushes one of them a line (or
    a byte of window) past its limit. Returns (program, window limit)."""
    line = config.line_bytes
    lines = {b: config.buffer_bytes(b.name.lower()) // line for b in Buffer}
    window_limit = 1 << 15
    asm = Assembler()
    # INP filled to its last line by rows x row_lines, rows strided over the data area.
    rows = 4
    row_lines = lines[Buffer.INP] // rows
    stride = (window_limit - 0x2000 - row_lines * line) // (rows - 1) // line * line
    asm.load(Buffer.INP, 0, 0x2000, rows=rows, row_lines=row_lines + (over == "inp"),
             stride=stride)
    # The last row ends exactly at the window limit (or one line past it).
    last = window_limit - line * (over != "window")
    asm.load(Buffer.WGT, lines[Buffer.WGT] - 3, last - 2 * stride, rows=3, stride=stride)
    asm.load(Buffer.WGT, 0, 0x2000, rows=lines[Buffer.WGT] - 3)
    asm.sync()  # no tokens here: barriers order the units
    # GEMM reading every INP line: m rows of k/line lines each.
    k = line * lines[Buffer.INP] // 2
    m = 2 + (over == "gemm")
    n = min(8, config.acc_bytes // 4 // m)
    asm.gemm(Engine.TLMM, WeightEncoding.INT2, m=m, n=n, k=k, inp=0, wgt=0, acc=0)
    asm.post(PostMode.ACC, m=2, n=n, acc=0)
    asm.sync()
    asm.store(Buffer.ACC, 0, 0x1000, rows=2, row_lines=n * 4 // line)
    asm.end()
    return asm.assemble(), window_limit


@pytest.mark.parametrize("over", [None, "inp", "window", "gemm"])
def test_hand_written_limits_match_golden(rtl, over, rng):
    program, limit = _boundary_program(rtl.config, over)
    memory = rng.integers(0, 256, 1 << 16, dtype=np.uint8)
    memory[: len(program)] = np.frombuffer(program, np.uint8)
    gm, golden, result, final = run_both(rtl, memory, 0, 0, (0, limit), 0, 0.3, 5)
    expected = {None: ErrorCode.NONE, "inp": ErrorCode.BUFFER_RANGE,
                "window": ErrorCode.WINDOW, "gemm": ErrorCode.BUFFER_RANGE}[over]
    assert golden.error == expected, golden
    assert_same(gm, golden, result, final, str(over))


@pytest.mark.parametrize("case", ["at_limit", "past_limit", "acc_mode_without_bias"])
def test_post_parameter_span_at_its_limit_matches_golden(rtl, case, rng):
    """POST reads n 16-byte channels of PARAM from line ``param``: ending at the buffer's
    last line is fine, a line further is BUFFER_RANGE, and an ACC-mode POST without bias
    reads none (its ``param`` is not checked). Random PARAM and ACC contents are loaded
    first, and OUT / ACC stored, so the results are compared too."""
    config = rtl.config
    line = config.line_bytes
    param_lines = config.param_bytes // line
    n = 8
    span = n * 16 // line
    param = {"at_limit": param_lines - span, "past_limit": param_lines - span + 16 // line,
             "acc_mode_without_bias": 0xFFFF & ~(16 // line - 1)}[case]
    asm = Assembler()
    asm.load(Buffer.PARAM, 0, 0x2000, rows=1, row_lines=param_lines)
    asm.load(Buffer.ACC, 0, 0x3000, rows=1, row_lines=n * 4 // line)
    asm.sync()
    if case == "acc_mode_without_bias":
        asm.post(PostMode.ACC, m=1, n=n, acc=0, param=param)
        asm.sync()
        asm.store(Buffer.ACC, 0, 0x4000, rows=1, row_lines=n * 4 // line)
    else:
        asm.post(PostMode.DYADIC, m=1, n=n, acc=0, param=param, out=0, bias=True)
        asm.sync()
        asm.store(Buffer.OUT, 0, 0x4000, rows=1, row_lines=n // line)
    asm.end()
    program = asm.assemble()
    memory = rng.integers(0, 256, 1 << 15, dtype=np.uint8)
    memory[: len(program)] = np.frombuffer(program, np.uint8)
    gm, golden, result, final = run_both(rtl, memory, 0, 0, (0, 1 << 15), 0, 0.3, 9)
    assert golden.error == (ErrorCode.BUFFER_RANGE if case == "past_limit"
                            else ErrorCode.NONE), golden
    assert_same(gm, golden, result, final, case)


def test_queue_back_pressure_and_tokens_match_golden(rtl, rng):
    """More loads than the load queue holds, each handing a token to the compute unit,
    which hands them on to the store unit: every unit waits on the shared queue RAM."""
    line = rtl.config.line_bytes
    asm = Assembler()
    for i in range(6):
        asm.load(Buffer.ACC, i, 0x2000 + i * line, push_next=True)
        asm.post(PostMode.ACC, m=1, n=line // 4, acc=i * line // 4, pop_prev=True,
                 push_next=True)
        asm.store(Buffer.ACC, i, 0x3000 + i * line, pop_prev=True)
    asm.end()
    memory = rng.integers(0, 256, 1 << 15, dtype=np.uint8)
    program = asm.assemble()
    memory[: len(program)] = np.frombuffer(program, np.uint8)
    for seed, stall in enumerate((0.0, 0.3, 0.6)):
        gm, golden, result, final = run_both(rtl, memory, 0, 0, (0, 1 << 15), 0, stall, seed)
        assert golden.ok, golden
        assert_same(gm, golden, result, final, f"stall {stall}")


# -- a narrow address space (AcceleratorConfig.addr_bits): the iCEBreaker's 17 bits ----------

@pytest.fixture(scope="module")
def narrow_rtl():
    from trilobit.sim.accel_verilator import VerilatorAccelerator

    config = CONFIGS["icebreaker"]
    assert config.addr_bits < 32
    return VerilatorAccelerator(config)


def _top_of_address_space_program(config, case: str) -> tuple[bytes, int]:
    """A LOAD into ACC and a STORE of it back, placed by ``case`` against the top of the
    address space (``2**addr_bits``); returns (program, DATA_BASE). The DATA_BASE sits 4 KiB
    below the top, so offsets are small unless a case sets their high bits."""
    line, top = config.line_bytes, 1 << config.addr_bits
    data_base = top - 0x1000
    rows, row_lines, stride = 2, 2, 64
    dram = 0x1000 - stride - row_lines * line  # the last row ends exactly at the top
    store_dram = 0x400
    if case == "past_top":  # the last row's last line is the first past the top
        row_lines += 1
    elif case == "offset_wraps_addr_bits":  # the offset's low addr_bits bits are inside
        dram += top
    elif case == "offset_wraps_32_bits":  # DATA_BASE + dram carries out of 32 bits
        dram = (dram - data_base) % (1 << 32)
    elif case == "stride_wraps":  # the stride's low addr_bits bits are the same 64
        stride += top
    elif case == "single_row_ignores_stride":  # one row: the stride is never added
        rows, stride, dram = 1, top + 64, 0x1000 - row_lines * line
    elif case == "rows_times_stride_wraps":  # (rows - 1) * stride is 2**(addr_bits + 2)
        rows, stride, dram = 9, top >> 1, 0x1000 - row_lines * line
    elif case == "store_past_top":
        store_dram = 0x1000 - line
    asm = Assembler()
    asm.load(Buffer.ACC, 0, dram, rows=rows, row_lines=row_lines, stride=stride)
    asm.sync()
    asm.store(Buffer.ACC, 0, store_dram, rows=1, row_lines=2)
    asm.end()
    return asm.assemble(), data_base


TOP_CASES = {"at_top": ErrorCode.NONE, "past_top": ErrorCode.WINDOW,
             "offset_wraps_addr_bits": ErrorCode.WINDOW,
             "offset_wraps_32_bits": ErrorCode.WINDOW, "stride_wraps": ErrorCode.WINDOW,
             "single_row_ignores_stride": ErrorCode.NONE,
             "rows_times_stride_wraps": ErrorCode.WINDOW, "store_past_top": ErrorCode.WINDOW}


@pytest.mark.parametrize("case", list(TOP_CASES))
def test_transfers_at_the_top_of_a_narrow_address_space_match_golden(narrow_rtl, case, rng):
    """Window checks of transfers whose exact byte addresses reach 2**addr_bits, or whose
    offsets and strides have bits above addr_bits: outside, and no bus transfer (the
    harness counts any outside the window), whatever their low bits."""
    config = narrow_rtl.config
    top = 1 << config.addr_bits
    program, data_base = _top_of_address_space_program(config, case)
    memory = rng.integers(0, 256, top, dtype=np.uint8)
    memory[: len(program)] = np.frombuffer(program, np.uint8)
    # The window reaches the top of the address space.
    gm, golden, result, final = run_both(narrow_rtl, memory, 0, data_base, (0, top), 0,
                                         0.3, 7)
    assert golden.error == TOP_CASES[case], golden
    assert_same(gm, golden, result, final, case)
    if case == "at_top":  # the bytes ending at the top were moved
        assert np.array_equal(final[data_base + 0x400: data_base + 0x408],
                              memory[top - 0x48: top - 0x40])


@pytest.mark.parametrize("case", ["runs_off_the_top", "jump_beyond_addr_bits"])
def test_fetch_at_the_top_of_a_narrow_address_space_matches_golden(narrow_rtl, case, rng):
    """The instruction after the last one below 2**addr_bits, and a JUMP whose target
    wraps to a valid instruction in addr_bits bits, are outside the window (ERROR_PC is
    the whole pc)."""
    config = narrow_rtl.config
    top = 1 << config.addr_bits
    asm = Assembler()
    asm.sync()
    if case == "jump_beyond_addr_bits":
        asm.jump((top >> 4) + 3)  # low bits: the END at pc 3
        asm.sync()
        asm.end()
        prog_base = 0x100
    else:
        asm.sync()  # then pc 2 starts at the top
        prog_base = top - 32
    program = asm.assemble()
    memory = rng.integers(0, 256, top, dtype=np.uint8)
    memory[prog_base: prog_base + len(program)] = np.frombuffer(program, np.uint8)
    gm, golden, result, final = run_both(narrow_rtl, memory, prog_base, 0, (0, top), 0, 0.3, 3)
    assert golden.error == ErrorCode.WINDOW, golden
    assert golden.error_pc == (2 if case == "runs_off_the_top" else (top >> 4) + 3)
    assert_same(gm, golden, result, final, case)


def test_address_csrs_keep_addr_bits_and_the_window_saturates(narrow_rtl, rng):
    """PROG_BASE and DATA_BASE written with bits above addr_bits run the program from their
    low bits; WIN_BASE/WIN_LIMIT beyond the top read as the top. The golden model run with
    the reduced values gives the same results as RTL and golden with the raw ones."""
    config = narrow_rtl.config
    top = 1 << config.addr_bits
    case = layer_case(rng, config, max_n=16, max_k=64)
    raw = dict(prog_base=case.prog_base + 3 * top, data_base=case.data_base + top)
    reduced = GoldenMachine(config, case.memory.copy()).run(
        case.prog_base, case.data_base, (case.window[0], top), 0)
    memory = np.zeros(top, dtype=np.uint8)
    memory[: case.memory.size] = case.memory
    gm, golden, result, final = run_both(narrow_rtl, memory, raw["prog_base"],
                                         raw["data_base"], (case.window[0], 0xFFFFFFFF), 0,
                                         0.3, 11)
    assert golden.ok and reduced.ok, (golden, reduced)
    assert_same(gm, golden, result, final, case.description)
    assert {k: golden.counters[k] for k in ARCH_COUNTERS} == {
        k: reduced.counters[k] for k in ARCH_COUNTERS}
    for check in case.outputs:
        assert np.array_equal(check.read(final), check.expected), case.description
    # and a window base past the top is an empty window: the first fetch is outside
    gm, golden, result, final = run_both(narrow_rtl, memory, case.prog_base, case.data_base,
                                         (top + 16, 0xFFFFFFFF), 0, 0.0, 1)
    assert golden.error == result.error == ErrorCode.WINDOW and result.error_pc == 0
