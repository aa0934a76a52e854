"""The golden model's fast path against its straightforward reference path.

Both paths run the same program on copies of the same memory; everything observable must be
identical: memory, on-chip buffers, status, error code, faulting index and every counter
(cycle estimates included). Programs come from a generator of random instruction mixes that
reaches what the layer generator of ``sim/progen.py`` does not (ACC write-back, ``no_acc``,
overlapping and zero strides, stores of ACC, jumps, long reductions, random tokens), from
``sim/progen.py`` itself (valid layers and adversarial ones), and from runs repeated after
the host rewrote data or the program, or after the program rewrote itself.
"""

import numpy as np
import pytest

from trilobit.config import preset
from trilobit.gemm import gemm_int
from trilobit.isa import (
    ENGINE_FORMATS,
    INSN_BYTES,
    LOADABLE,
    PARAM_BYTES_PER_CHANNEL,
    STORABLE,
    Buffer,
    Engine,
    Opcode,
    PostMode,
    WeightEncoding,
    encode,
    pack_group_meta,
    pack_weight_rows,
    pad_rows,
)
from trilobit.sim.asm import Assembler
from trilobit.sim.golden import GoldenMachine, meta_row_lines, weight_row_lines, wrap_int32
from trilobit.sim.golden_fast import PreparedWeights
from trilobit.sim.progen import ADVERSARIAL, adversarial_case, random_layer_case

CONFIGS = ["tiny", "small", "large"]
MEMORY = 1 << 17
PROG = 0x100


def _fits(rng, capacity: int, count: int) -> int:
    """A first line/entry so that ``count`` of them fit in ``capacity`` (mostly), or beyond."""
    if rng.random() < 0.03 or count > capacity:
        return int(rng.integers(0, capacity + 1))  # may fail the range check: both must agree
    return int(rng.integers(0, capacity - count + 1))


def random_instruction(rng, cfg, data_bytes: int, big: bool) -> bytes:
    """One instruction of a random kind with (mostly) valid, otherwise random fields."""
    line = cfg.line_bytes
    lines = {b: cfg.buffer_bytes(name) // line for b, name in
             ((Buffer.INP, "inp"), (Buffer.WGT, "wgt"), (Buffer.ACC, "acc"),
              (Buffer.PARAM, "param"), (Buffer.OUT, "out"))}
    acc_entries = cfg.buffer_bytes("acc") // 4
    flags = {}
    if rng.random() < 0.1:  # random tokens: most such programs stop with a token error
        flags = {f: int(rng.integers(2)) for f in ("pop_prev", "pop_next", "push_prev",
                                                   "push_next")}
    kind = rng.choice(["load", "store", "gemm", "post", "sync"], p=[.35, .15, .25, .2, .05])
    if kind in ("load", "store"):
        buf = Buffer(rng.choice(LOADABLE if kind == "load" else STORABLE))
        rows, row_lines = int(rng.integers(1, 5)), int(rng.integers(1, 5))
        row_bytes = row_lines * line
        stride = int(rng.choice([row_bytes, 0, line, row_bytes + line * int(rng.integers(1, 4)),
                                 max(0, row_bytes - line)]))
        span = (rows - 1) * stride + row_bytes
        dram = int(rng.integers(0, max(1, (data_bytes - span) // line))) * line
        flip = int(kind == "load" and buf == Buffer.INP and rng.random() < 0.5)
        op = Opcode.LOAD if kind == "load" else Opcode.STORE
        flags = {f: v for f, v in flags.items()
                 if f in (("pop_next", "push_next") if kind == "load" else ("pop_prev",
                                                                            "push_prev"))}
        return encode(op, buf=int(buf), sram=_fits(rng, lines[buf], rows * row_lines),
                      rows=rows, row_lines=row_lines, dram=dram, stride=stride, flip=flip,
                      **flags)
    if kind == "gemm":
        engines = [e for e in Engine if (cfg.tlmm if e == Engine.TLMM else cfg.bitserial)]
        engine = Engine(rng.choice(engines))
        fmt = WeightEncoding(rng.choice(ENGINE_FORMATS[engine]))
        meta = int(engine == Engine.BITSERIAL and rng.random() < 0.5)
        if big:  # long reductions: chunked and float64 products
            m, n = 1, int(rng.integers(1, 3))
            k = int(rng.integers(1, lines[Buffer.INP] * line // 2))
        else:
            m, n, k = int(rng.integers(1, 9)), int(rng.integers(1, 25)), int(rng.integers(1, 200))
        wl = weight_row_lines(k, fmt, line)
        gs = cfg.bitserial.group_size if cfg.bitserial else 1
        ml = meta_row_lines(k, gs, line) if meta else 0
        while n > 1 and n * (wl + ml) > lines[Buffer.WGT]:
            n -= 1
        return encode(Opcode.GEMM, engine=int(engine), wfmt=int(fmt), meta=meta,
                      accumulate=int(rng.integers(2)), m=m, n=n, k=k,
                      inp=_fits(rng, lines[Buffer.INP], m * -(-k // line)),
                      wgt=_fits(rng, lines[Buffer.WGT], n * wl),
                      meta_line=_fits(rng, lines[Buffer.WGT], n * ml) if meta else 0,
                      acc=_fits(rng, acc_entries, m * n), **flags)
    if kind == "post":
        modes = [PostMode.ACC] + [p for p, name in ((PostMode.ORT, "ort"),
                                                    (PostMode.DYADIC, "dyadic"))
                                  if name in cfg.requant_modes]
        mode = PostMode(rng.choice(modes))
        m, n = int(rng.integers(1, 9)), int(rng.integers(1, 25))
        row_lines = -(-n // line)
        per_line = max(1, PARAM_BYTES_PER_CHANNEL // line)  # param: whole 16-byte channels
        plines = -(-n * PARAM_BYTES_PER_CHANNEL // line)
        param = _fits(rng, lines[Buffer.PARAM] // per_line, plines // per_line + 1) * per_line
        return encode(Opcode.POST, mode=int(mode), out_unsigned=int(rng.integers(2)),
                      bias=int(rng.integers(2)), residual=int(rng.random() < 0.3),
                      no_acc=int(rng.random() < 0.2), m=m, n=n,
                      acc=_fits(rng, acc_entries, m * n), param=param,
                      out=_fits(rng, lines[Buffer.OUT], m * row_lines),
                      res=_fits(rng, lines[Buffer.INP], m * row_lines),
                      res_zp=int(rng.integers(-128, 128)),
                      res_mult=int(rng.integers(-(1 << 15), 1 << 15)), **flags)
    return encode(Opcode.SYNC)


def random_program(rng, cfg, count: int, data_bytes: int) -> bytes:
    """``count`` random instructions, sometimes a forward JUMP over a few, then END."""
    words = [random_instruction(rng, cfg, data_bytes, big=rng.random() < 0.05)
             for _ in range(count)]
    for _ in range(int(rng.integers(0, 3))):
        at = int(rng.integers(0, count))
        words[at] = encode(Opcode.JUMP, target=int(rng.integers(at + 1, count + 1)))
    return b"".join(words) + encode(Opcode.END)


def random_image(rng, cfg, program: bytes) -> tuple[np.ndarray, int]:
    """Random memory with ``program`` at PROG and the data area after it."""
    memory = rng.integers(0, 256, MEMORY, dtype=np.uint8)
    memory[PROG : PROG + len(program)] = np.frombuffer(program, np.uint8)
    line = cfg.line_bytes
    data_base = -(-(PROG + len(program)) // line) * line + line * int(rng.integers(0, 8))
    return memory, data_base


def machines(cfg, memory: np.ndarray) -> tuple[GoldenMachine, GoldenMachine]:
    return (GoldenMachine(cfg, memory.copy()),
            GoldenMachine(cfg, memory.copy(), reference=True))


def run_both(fast: GoldenMachine, ref: GoldenMachine, *args, what: str = ""):
    """Run both machines with the same registers; everything observable must match."""
    a = fast.run(*args)
    b = ref.run(*args)
    assert (a.state, a.error, a.error_pc) == (b.state, b.error, b.error_pc), what
    assert a.counters == b.counters, what
    assert np.array_equal(fast.memory, ref.memory), what
    for buf, data in ref.buffers.items():
        assert np.array_equal(fast.buffers[buf], data), (what, buf)
    return a


@pytest.mark.parametrize("name", CONFIGS)
def test_fast_path_matches_reference_on_random_instruction_mixes(name, rng):
    cfg = preset(name)
    completed = 0
    for i in range(40):
        program = random_program(rng, cfg, int(rng.integers(1, 30)), MEMORY // 2)
        memory, data_base = random_image(rng, cfg, program)
        fast, ref = machines(cfg, memory)
        what = f"program {i}"
        result = run_both(fast, ref, PROG, data_base, (0, MEMORY), 1 << 22, what=what)
        completed += result.ok
        # Again with new data and the same registers (the fast path replays its plan).
        for _ in range(2):
            lo = int(rng.integers(PROG + len(program), MEMORY - 4096))
            blob = rng.integers(0, 256, int(rng.integers(1, 4096)), dtype=np.uint8)
            fast.write(lo, blob)
            ref.write(lo, blob)
            run_both(fast, ref, what=what + " repeated")
        # A smaller window and a watchdog that may stop it: new registers, same program.
        window = (int(rng.integers(0, PROG + 1)), int(rng.integers(MEMORY // 2, MEMORY)))
        run_both(fast, ref, None, None, window, int(rng.integers(10, 2000)),
                 what=what + " window/watchdog")
    assert completed >= 8  # enough programs ran to their END, not only into an error


@pytest.mark.parametrize("name", CONFIGS)
def test_fast_path_matches_reference_on_generated_layers(name, rng):
    cfg = preset(name)
    for _ in range(10):
        case = random_layer_case(rng, cfg)
        fast, ref = machines(cfg, case.memory)
        args = (case.prog_base, case.data_base, case.window, case.watchdog)
        assert run_both(fast, ref, *args, what=case.description).ok
        assert run_both(fast, ref, *args, what=case.description + " replayed").ok
        for check in case.outputs:
            assert np.array_equal(check.read(fast.memory), check.expected), case.description


@pytest.mark.parametrize("kind", ADVERSARIAL)
def test_fast_path_stops_like_reference(kind, rng):
    cfg = preset("small")
    for _ in range(2 if kind == "runaway" else 5):  # a runaway executes until the watchdog
        case = adversarial_case(rng, random_layer_case(rng, cfg), kind)
        fast, ref = machines(cfg, case.memory)
        args = (case.prog_base, case.data_base, case.window, case.watchdog)
        result = run_both(fast, ref, *args, what=case.description)
        assert result.error == case.expect_error
        run_both(fast, ref, *args, what=case.description + " again")


def test_program_rewritten_by_the_host_between_runs_executes_anew(rng):
    cfg = preset("small")
    line = cfg.line_bytes
    first = Assembler()
    first.load(Buffer.ACC, 0, 0, row_lines=2)
    first.store(Buffer.ACC, 0, 0x200, row_lines=2)
    first.end()
    second = Assembler()
    second.load(Buffer.ACC, 0, 0x40, row_lines=1)
    second.store(Buffer.ACC, 0, 0x300, rows=2, row_lines=1, stride=4 * line)
    second.end()
    memory = rng.integers(0, 256, 1 << 14, dtype=np.uint8)
    memory[:INSN_BYTES * 3] = np.frombuffer(first.assemble(), np.uint8)
    fast, ref = machines(cfg, memory)
    run_both(fast, ref, 0, 0x1000, (0, 1 << 14), 0)
    run_both(fast, ref, what="replayed")
    for m in (fast, ref):
        m.write(0, second.assemble())
    assert run_both(fast, ref, what="rewritten").counters["bytes_written"] == 2 * line


def test_program_that_rewrites_itself(rng):
    """A STORE overwrites the instruction after it; each run executes what memory holds."""
    cfg = preset("small")
    line = cfg.line_bytes
    asm = Assembler()
    asm.load(Buffer.ACC, 0, 0x1000, row_lines=INSN_BYTES // line)  # the next word, from data
    asm.store(Buffer.ACC, 0, 3 * INSN_BYTES, row_lines=INSN_BYTES // line)  # over insn 3
    asm.sync()
    asm.load(Buffer.INP, 0, 0x1100, row_lines=1)  # replaced by the stored word
    asm.end()
    memory = np.zeros(1 << 14, dtype=np.uint8)
    memory[: len(asm.assemble())] = np.frombuffer(asm.assemble(), np.uint8)
    words = [encode(Opcode.LOAD, buf=int(Buffer.PARAM), rows=1, row_lines=1, dram=0x1200),
             encode(Opcode.END), encode(Opcode.LOAD, buf=int(Buffer.WGT), rows=2,
                                         row_lines=1, dram=0x1300, stride=line)]
    fast, ref = machines(cfg, memory)
    for word in words:  # the host changes the word the program copies; data stays
        for m in (fast, ref):
            m.write(0x1000, word)
        result = run_both(fast, ref, 0, 0, (0, 1 << 14), 0, what=str(word))
        assert result.ok and result.counters["insns"] == 5 - (word == encode(Opcode.END))


@pytest.mark.parametrize("fmt, w_lo, w_hi, scale", [
    (WeightEncoding.INT8, -128, 127, 1),  # float32 in chunks of 1024, summed in float64
    (WeightEncoding.FP4, -4080, 4080, 255),  # largest scaled FP4 value: float64
    (WeightEncoding.TERNARY, -1, 1, 1),  # float32 in one piece
])
def test_prepared_weights_are_exact_at_extremes(fmt, w_lo, w_hi, scale, rng):
    k, n = 65535, 3  # the longest reduction a GEMM encodes
    a = np.full((2, k), -128, dtype=np.int8)
    a[1, ::2] = 127
    w = np.empty((n, k), dtype=np.int64)
    w[0] = w_lo
    w[1] = w_hi
    w[2] = rng.choice([w_lo, w_hi], k)
    expected = a.astype(np.int64) @ w.T  # plain integer matmul
    got = PreparedWeights(w).matmul(a)
    assert np.array_equal(got, expected)
    assert np.array_equal(got, gemm_int(a, w.T))


def test_fast_path_caches_decoded_words_and_weight_tiles(rng):
    case = random_layer_case(rng, preset("small"))
    fast = GoldenMachine(case.config, case.memory.copy())
    fast.run(case.prog_base, case.data_base, case.window, case.watchdog)
    words = len(case.program) // INSN_BYTES
    assert 0 < len(fast.caches.decoded) <= words
    assert len(fast.caches.plans) == 1
    tiles = len(fast.caches.weights)
    fast.run()  # replay: no new words, no new tiles
    assert len(fast.caches.weights) == tiles and len(fast.caches.plans) == 1


def test_products_beyond_int32_wrap_like_the_accumulators(rng):
    """FP4 weights -16/+16 at group scale 255 against activations -128/127 over k = 8192:
    products reach 4.3e9, beyond int32 and beyond float32's exact range."""
    cfg = preset("large")
    line, gs = cfg.line_bytes, cfg.bitserial.group_size
    m, n, k = 2, 3, 8192
    groups = k // gs
    a = np.full((m, k), -128, dtype=np.int64)
    a[1, rng.random(k) < 0.3] = 127
    type_ids = np.array([[3] * groups, [2] * groups, list(rng.integers(2, 4, groups))])
    codes = np.full((n, k), 8)  # the extra value of FP4-EA: -16 (type 3) or +16 (type 2)
    scales = np.full((n, groups), 255)
    w = np.where(np.repeat(type_ids, gs, axis=1) == 3, -16, 16) * 255
    expected = wrap_int32(a @ w.T)
    assert np.abs(a @ w.T).max() > 1 << 31
    wgt = pack_weight_rows(codes, WeightEncoding.FP4, line)
    meta = pack_group_meta(type_ids, scales, line)
    wl, ml = weight_row_lines(k, WeightEncoding.FP4, line), meta_row_lines(k, gs, line)
    asm = Assembler()
    asm.load(Buffer.INP, 0, 0, rows=m, row_lines=k // line, stride=k)
    asm.load(Buffer.WGT, 0, 0x8000, row_lines=n * wl)
    asm.load(Buffer.WGT, n * wl, 0x8000 + wgt.size, row_lines=n * ml)
    for accumulate, out in ((False, 0x10000), (True, 0x10100)):
        asm.gemm(Engine.BITSERIAL, WeightEncoding.FP4, m, n, k, inp=0, wgt=0, acc=0,
                 accumulate=accumulate, meta_line=n * wl)
        asm.store(Buffer.ACC, 0, out, row_lines=-(-m * n * 4 // line))
    asm.end()
    memory = np.zeros(1 << 17, dtype=np.uint8)
    program = asm.assemble()
    memory[: len(program)] = np.frombuffer(program, np.uint8)
    data = 0x1000
    memory[data : data + m * k] = pad_rows(a.astype(np.int8).view(np.uint8), line)
    memory[data + 0x8000 : data + 0x8000 + wgt.size] = wgt
    memory[data + 0x8000 + wgt.size : data + 0x8000 + wgt.size + meta.size] = meta
    fast, ref = machines(cfg, memory)
    for _ in range(2):  # recorded, then replayed
        assert run_both(fast, ref, 0, data, (0, 1 << 17), 0).ok
        once = fast.memory[data + 0x10000 : data + 0x10000 + m * n * 4].view("<i4")
        twice = fast.memory[data + 0x10100 : data + 0x10100 + m * n * 4].view("<i4")
        assert np.array_equal(once.reshape(m, n), expected)
        assert np.array_equal(twice.reshape(m, n), wrap_int32(2 * expected))


def test_accumulation_onto_extreme_accumulators_wraps(rng):
    """GEMM with accumulate onto ACC entries at the ends of int32: the sums wrap."""
    cfg = preset("small")
    line = cfg.line_bytes
    m, n, k = 3, 8, 64
    a = rng.choice([-128, 127], (m, k))
    w = rng.choice([-128, 127], (n, k))
    acc0 = rng.choice([(1 << 31) - 1, -(1 << 31), (1 << 31) - 1000, -(1 << 31) + 5], (m, n))
    expected = wrap_int32(acc0 + a @ w.T)
    assert not np.array_equal(expected, acc0 + a @ w.T)
    asm = Assembler()
    asm.load(Buffer.INP, 0, 0, rows=m, row_lines=k // line, stride=k)
    asm.load(Buffer.WGT, 0, 0x400, row_lines=n * k // line)
    asm.load(Buffer.ACC, 0, 0x800, row_lines=m * n * 4 // line)
    asm.gemm(Engine.BITSERIAL, WeightEncoding.INT8, m, n, k, inp=0, wgt=0, acc=0,
             accumulate=True)
    asm.store(Buffer.ACC, 0, 0xC00, row_lines=m * n * 4 // line)
    asm.end()
    memory = np.zeros(1 << 14, dtype=np.uint8)
    program = asm.assemble()
    memory[: len(program)] = np.frombuffer(program, np.uint8)
    data = 0x1000
    memory[data : data + m * k] = a.astype(np.int8).view(np.uint8).reshape(-1)
    memory[data + 0x400 : data + 0x400 + n * k] = w.astype(np.int8).view(np.uint8).reshape(-1)
    memory[data + 0x800 : data + 0x800 + m * n * 4] = acc0.astype("<i4").view(np.uint8).ravel()
    fast, ref = machines(cfg, memory)
    for _ in range(2):  # recorded, then replayed
        assert run_both(fast, ref, 0, data, (0, 1 << 14), 0).ok
        got = fast.memory[data + 0xC00 : data + 0xC00 + m * n * 4].view("<i4")
        assert np.array_equal(got.reshape(m, n), expected)


def test_runs_longer_than_a_plan_execute_without_one(rng, monkeypatch):
    from trilobit.sim import golden_fast

    monkeypatch.setattr(golden_fast, "_MAX_PLAN_INSNS", 20)
    cfg = preset("small")
    asm = Assembler()
    for i in range(30):
        asm.load(Buffer.ACC, i % 8, 0x40 * i, row_lines=1)
        asm.store(Buffer.ACC, (i + 3) % 8, 0x2000 + 0x40 * i, row_lines=1)
    asm.end()
    program = asm.assemble()
    memory, data_base = random_image(rng, cfg, program)
    fast, ref = machines(cfg, memory)
    for _ in range(2):
        assert run_both(fast, ref, PROG, data_base, (0, MEMORY), 0).ok
        assert not fast.caches.plans
