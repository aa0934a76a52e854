"""The pipelined post-processing unit (hw/accel_post.py) against trilobit.requant, in the
Amaranth simulator (no C++ build): float32 (ORT) and dyadic requantization, ACC mode, bias,
residual, saturation and clip, with random gaps in the operand stream."""

import numpy as np
import pytest
from amaranth.sim import Simulator

from trilobit.config import preset
from trilobit.hw.accel_post import PostUnit
from trilobit.isa import PostMode
from trilobit.requant import MAX_SHIFT, requantize_dyadic, requantize_ort
from trilobit.sim.golden import ort_multiplier_from_bits, wrap_int32

TAG_BITS = 12


def ort_cases(rng, n):
    v = np.concatenate([
        rng.integers(-(1 << 31), 1 << 31, n // 2),
        rng.integers(-100000, 100000, n // 4),
        np.array([0, 1, -1, (1 << 31) - 1, -(1 << 31), (1 << 24) + 1, -(1 << 24) - 3]),
    ]).astype(np.int64)
    v = np.concatenate([v, rng.integers(-(1 << 26), 1 << 26, n - v.size)])
    # Multipliers around the scales that matter (|v*m| near 0.5 .. 512) plus special values.
    mags = rng.uniform(-40, 5, v.size)
    mult = (2.0 ** mags * np.abs(rng.standard_normal(v.size)) + 1e-30).astype(np.float32)
    # Half of them land |v * m| in 0..300, where both roundings decide the result.
    aimed = rng.uniform(0, 300, v.size) / np.maximum(np.abs(v), 1)
    mult = np.where(np.arange(v.size) % 2 == 1, aimed, mult).astype(np.float32)
    bits = mult.view(np.uint32).copy()
    bits[:8] = [0, 0x7F800000, 0x7FC00000, 0x80000001, 0x00000001, 0x3F000000, 0x3F800000,
                0xBF800000]
    # Ties: v * m exactly at .5 after float32 rounding.
    v[8:16] = [1, 3, 5, -5, 7, 2049, -2049, 6]
    bits[8:16] = np.float32(0.5).view(np.uint32)
    return v, bits


def param_words(bias, mult_bits, shift, zp, lo, hi) -> list[int]:
    """PARAM entries (low 96 bits) as docs/isa.md lays them out."""
    words = []
    for b, mb, s, z, lo_, hi_ in zip(bias, mult_bits, shift, zp, lo, hi, strict=True):
        words.append((int(b) & 0xFFFFFFFF) | (int(mb) & 0xFFFFFFFF) << 32 | (int(s) & 0xFF) << 64
                     | (int(z) & 0xFF) << 72 | (int(lo_) & 0xFF) << 80 | (int(hi_) & 0xFF) << 88)
    return words


def expected_results(settings, acc, bias, residual, mult_bits, shift, zp, lo, hi):
    """docs/isa.md's POST, from trilobit.requant (the unit's contract)."""
    v = np.zeros(acc.size, np.int64) if settings["no_acc"] else acc.astype(np.int64)
    if settings["bias"]:
        v = v + bias
    if settings["residual"]:
        v = v + (residual.astype(np.int64) - settings["res_zp"]) * settings["res_mult"]
    v = wrap_int32(v)
    mode = settings["mode"]
    if mode == PostMode.ACC:
        return v
    out = "uint8" if settings["out_unsigned"] else "int8"
    if mode == PostMode.ORT:
        y = requantize_ort(v, ort_multiplier_from_bits(mult_bits.astype(np.uint32)), zp, out)
    else:
        s = np.clip(shift.astype(np.int64) & 63, 1, MAX_SHIFT)
        y = requantize_dyadic(v, mult_bits.astype(np.int64) & 0x7FFFFFFF, s, zp, out)
    return np.minimum(np.maximum(y, lo), hi).astype(np.int64)


def run_unit(config, batches, gap_prob, rng):
    """Feed every batch (settings, operand arrays) with random gaps (and at least the unit's
    interval between operands); return per batch the results in order and check the latency
    and tags."""
    unit = PostUnit(config, tag_bits=TAG_BITS)
    got = [[] for _ in batches]
    latency = unit.latency

    async def bench(ctx):
        cycle = 0
        fed = []  # (cycle, batch, index)
        seen = 0
        for b, (settings, ops) in enumerate(batches):
            for name in ("mode", "out_unsigned", "bias", "residual", "no_acc", "res_zp",
                         "res_mult"):
                ctx.set(getattr(unit, name), int(settings[name]))
            n = len(ops["acc"])
            index = 0
            while index < n or ctx.get(unit.busy):
                allowed = not fed or cycle - fed[-1][0] >= unit.interval
                feed = index < n and allowed and rng.random() >= gap_prob
                ctx.set(unit.operands.valid, feed)
                if feed:
                    ctx.set(unit.operands.payload.acc, int(ops["acc"][index]))
                    ctx.set(unit.operands.payload.param, ops["param"][index])
                    ctx.set(unit.operands.payload.residual, int(ops["residual"][index]))
                    ctx.set(unit.operands.payload.tag, index % (1 << TAG_BITS))
                    fed.append((cycle, b, index))
                    index += 1
                else:
                    # Garbage on an idle cycle must not leak into results.
                    ctx.set(unit.operands.payload.acc, int(rng.integers(-(1 << 31), 1 << 31)))
                await ctx.tick()
                cycle += 1
                if ctx.get(unit.result.valid):
                    at, bb, ii = fed[seen]
                    seen += 1
                    assert cycle - at == latency, (cycle, at, latency)
                    assert ctx.get(unit.result.payload.tag) == ii % (1 << TAG_BITS)
                    got[bb].append(ctx.get(unit.result.payload.value))
            ctx.set(unit.operands.valid, 0)
        assert seen == len(fed)

    sim = Simulator(unit)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return got


def operands(rng, n, v=None, mult_bits=None, shift=None, out_unsigned=False):
    lo_t, hi_t = (0, 256) if out_unsigned else (-128, 128)
    acc = v if v is not None else rng.integers(-(1 << 31), 1 << 31, n)
    bias = rng.integers(-(1 << 31), 1 << 31, n)
    residual = rng.integers(-128, 128, n)
    mult_bits = mult_bits if mult_bits is not None else rng.integers(0, 1 << 32, n)
    shift = shift if shift is not None else rng.integers(0, 256, n)
    zp = rng.integers(lo_t, hi_t, n)
    lo = rng.integers(lo_t, hi_t, n)
    hi = rng.integers(lo_t, hi_t, n)
    # Half the channels clip to the whole type (saturation alone decides).
    lo[::2], hi[::2] = lo_t, hi_t - 1
    arrays = dict(acc=acc, bias=bias, residual=residual, mult_bits=mult_bits, shift=shift,
                  zp=zp, lo=lo, hi=hi)
    arrays["param"] = param_words(bias, mult_bits, shift, zp, lo, hi)
    return arrays


def settings(mode, out_unsigned=False, bias=False, residual=False, no_acc=False, res_zp=0,
             res_mult=0):
    return dict(mode=int(mode), out_unsigned=out_unsigned, bias=bias, residual=residual,
                no_acc=no_acc, res_zp=res_zp, res_mult=res_mult)


def check(config, batches, rng, gap_prob=0.3):
    got = run_unit(config, batches, gap_prob, rng)
    for (s, ops), values in zip(batches, got, strict=True):
        want = expected_results(s, ops["acc"], ops["bias"], ops["residual"], ops["mult_bits"],
                                ops["shift"], ops["zp"], ops["lo"], ops["hi"])
        values = np.array(values, dtype=np.int64)
        if s["mode"] != PostMode.ACC:
            values = values & 0xFF if s["out_unsigned"] else values
        bad = np.flatnonzero(values != want)
        assert bad.size == 0, (s, [(int(ops["acc"][i]), hex(int(ops["mult_bits"][i])),
                                    int(values[i]), int(want[i])) for i in bad[:5]])


def test_ort_requantization_matches_onnxruntime_under_stalls(rng):
    """Random and aimed float32 multipliers, ties, special multipliers, extreme v."""
    v, bits = ort_cases(rng, 1200)
    batches = [
        (settings(PostMode.ORT), operands(rng, v.size, v=v, mult_bits=bits)),
        (settings(PostMode.ORT, out_unsigned=True),
         operands(rng, 400, v=v[:400], mult_bits=bits[:400], out_unsigned=True)),
    ]
    check(preset("small"), batches, rng)


def test_dyadic_bias_residual_and_acc_mode_under_stalls(rng):
    n = 300
    extremes = np.array([0, 1, -1, (1 << 31) - 1, -(1 << 31)] * 4)
    v = np.concatenate([extremes, rng.integers(-(1 << 31), 1 << 31, n - extremes.size)])
    # Dyadic pairs from real scales (M in [2**30, 2**31)) and raw fields (bit 31 set,
    # shift 0 or above 62: clamped), so the product spans the whole range.
    shift = rng.integers(1, 63, n)
    shift[:20] = [0, 63, 64 + 5, 255, 1, 62] + [31] * 14
    mult = rng.integers(1 << 30, 1 << 31, n)
    mult[:40:3] = rng.integers(0, 1 << 32, 14)
    batches = [
        (settings(PostMode.DYADIC), operands(rng, n, v=v, mult_bits=mult, shift=shift)),
        (settings(PostMode.DYADIC, out_unsigned=True, bias=True),
         operands(rng, n, v=v, mult_bits=mult, shift=shift, out_unsigned=True)),
        (settings(PostMode.DYADIC, bias=True, residual=True, res_zp=-128, res_mult=-32768),
         operands(rng, n, mult_bits=mult, shift=shift)),
        (settings(PostMode.ACC, bias=True, residual=True, res_zp=127, res_mult=32767),
         operands(rng, n, v=v)),
        (settings(PostMode.ACC, no_acc=True, bias=True), operands(rng, 50)),
        (settings(PostMode.ORT, no_acc=True, residual=True, res_zp=3, res_mult=-7),
         operands(rng, 100, mult_bits=np.full(100, np.float32(0.37).view(np.uint32)))),
    ]
    check(preset("small"), batches, rng)


def test_dyadic_only_unit_is_shorter_and_exact(rng):
    slim = preset("tiny").replace(requant_modes=("dyadic",))
    assert PostUnit(slim).latency < PostUnit(preset("tiny")).latency
    n = 200
    batches = [
        (settings(PostMode.DYADIC, bias=True, residual=True, res_zp=5, res_mult=300),
         operands(rng, n, mult_bits=rng.integers(1 << 30, 1 << 31, n),
                  shift=rng.integers(20, 40, n))),
        (settings(PostMode.ACC, residual=True, res_zp=-1, res_mult=2), operands(rng, 50)),
    ]
    check(slim, batches, rng, gap_prob=0.5)


def test_ort_only_unit_is_exact(rng):
    v, bits = ort_cases(rng, 300)
    cfg = preset("tiny").replace(requant_modes=("ort",))
    check(cfg, [(settings(PostMode.ORT, bias=True), operands(rng, v.size, v=v, mult_bits=bits))],
          rng, gap_prob=0.0)


def test_tag_width_is_validated():
    with pytest.raises(ValueError, match="tag_bits"):
        PostUnit(preset("tiny"), tag_bits=0)


# -- the compact form (config.compact): one result every ``interval`` cycles ------------------

def dyadic_boundary_cases(rng, n):
    """v, M bits and shift fields aimed at |v*M / 2**s| in 0..1100 for every shift (so the
    quotient, the rounding bit and the sticky bits all decide), exact ties of both signs,
    extreme v, and raw fields the unit clamps (shift 0 or above 62, bit 31 of M set)."""
    shift = rng.integers(1, 63, n)
    mult = rng.integers(1, 1 << 31, n)
    target = rng.uniform(-1100, 1100, n)
    v = np.clip(np.round(target * 2.0 ** shift / mult), -(1 << 31), (1 << 31) - 1)
    v = v.astype(np.int64)
    # ties: M = odd * 2**(s-1) makes v * M / 2**s = odd * v / 2, a .5 for odd v
    ties = np.arange(0, n // 4)
    shift[ties] = rng.integers(1, 32, ties.size)
    mult[ties] = rng.choice([1, 3, 5, 255], ties.size) << (shift[ties] - 1)
    v[ties] = rng.integers(-2000, 2000, ties.size) | 1
    v[n // 4: n // 4 + 10] = [0, 1, -1, (1 << 31) - 1, -(1 << 31)] * 2
    shift[n // 4: n // 4 + 10] = [1, 62, 31, 62, 62, 30, 33, 1, 40, 2]
    raw = np.arange(n // 4 + 10, n // 4 + 30)
    shift[raw] = rng.choice([0, 63, 64 + 7, 255, 128], raw.size)
    mult[raw] = rng.integers(0, 1 << 32, raw.size)
    return v, mult, shift


@pytest.mark.parametrize("out_unsigned", [False, True], ids=["int8", "uint8"])
def test_compact_dyadic_matches_requant_near_rounding_boundaries(rng, out_unsigned):
    slim = preset("tiny").replace(requant_modes=("dyadic",), compact=True)
    unit = PostUnit(slim)
    assert unit.interval == unit.latency < PostUnit(slim.replace(compact=False)).latency
    n = 600
    v, mult, shift = dyadic_boundary_cases(rng, n)
    batches = [
        (settings(PostMode.DYADIC, out_unsigned=out_unsigned),
         operands(rng, n, v=v, mult_bits=mult, shift=shift, out_unsigned=out_unsigned)),
        (settings(PostMode.DYADIC, out_unsigned=out_unsigned, bias=True, residual=True,
                  res_zp=-128, res_mult=-32768),
         operands(rng, 100, mult_bits=rng.integers(1 << 30, 1 << 31, 100),
                  shift=rng.integers(25, 45, 100), out_unsigned=out_unsigned)),
        (settings(PostMode.ACC, bias=True, residual=True, res_zp=127, res_mult=32767),
         operands(rng, 60, v=v[:60])),
        (settings(PostMode.ACC, no_acc=True, bias=True), operands(rng, 20)),
    ]
    check(slim, batches, rng, gap_prob=0.3)


def test_compact_unit_at_full_rate_and_with_ort(rng):
    """Operands back to back at the interval (no extra gaps), both requantizers built."""
    config = preset("tiny").replace(compact=True)
    v, bits = ort_cases(rng, 400)
    dv, dmult, dshift = dyadic_boundary_cases(rng, 200)
    batches = [
        (settings(PostMode.ORT, bias=True), operands(rng, v.size, v=v, mult_bits=bits)),
        (settings(PostMode.DYADIC, residual=True, res_zp=3, res_mult=-7),
         operands(rng, dv.size, v=dv, mult_bits=dmult, shift=dshift)),
        (settings(PostMode.ORT, out_unsigned=True),
         operands(rng, 200, v=v[:200], mult_bits=bits[:200], out_unsigned=True)),
    ]
    check(config, batches, rng, gap_prob=0.0)
