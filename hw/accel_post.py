"""The post-processing unit of the accelerator: int32 results -> ACC or 8-bit outputs.

One result per cycle, fully pipelined (no back-pressure: the buffers it feeds always accept a
write). For every operand (docs/isa.md, POST), in int32 arithmetic mod 2**32::

    v = (no_acc ? 0 : acc) + (bias ? P.bias : 0) + (residual ? (R - res_zp) * res_mult : 0)
    mode ACC:    value = v
    mode ORT:    y = requantize_ort(v, P.multiplier_f32, P.zp, out type)
    mode DYADIC: y = requantize_dyadic(v, P.M & 0x7fffffff, clamp(P.shift & 63, 1, 62), P.zp, ...)
    value = min(max(y, P.clip_lo), P.clip_hi)

exactly as :mod:`trilobit.requant` computes it. The float32 (ORT) requantizer is built only
when ``"ort"`` is in ``config.requant_modes``, the dyadic one only with ``"dyadic"``; a POST
in an absent mode never reaches the unit (the dispatcher rejects it).

Pipeline (each line one register stage; ECP5 needs short stages for >= 40 MHz):

* operands registered; ``acc + bias`` and the 9 x 16-bit residual product; ``v``;
* dyadic: four 17 x 16-bit partial products of ``v * M`` (DSP tiles), their sum with the
  rounding term ``2**(s-1)`` in two adds, the arithmetic shift by ``s``, a clamp to 11 bits;
* ORT: ``|v|``; its leading one; ``float32(|v|)`` as a 24-bit significand ``k`` (round half
  to even) and the exponent it dropped; the partial products of ``k`` and the multiplier's
  significand, their sum; the product's leading one; its float32 rounding to 24 bits (two
  stages); the binary point applied with round half to even;
* both: add the zero point; saturate to the output type and clip.

The shorter path is delayed to the longer one, so every result takes :attr:`latency` cycles
from ``operands.valid`` to ``result.valid``, whatever its mode.

Compact form (``config.compact``, for the smallest parts at low clocks)
-------------------------------------------------------------------------
One result in flight at a time, :attr:`interval` cycles per result (7 dyadic-only, 10 with
``"ort"``), for a fraction of the registers and two DSP multipliers (iCE40 ``SB_MAC16`` is
16 x 16): the operands' ``v`` (with the residual product on one multiplier) is formed in the
cycle they arrive and held with the channel's multiplier, shift and output fields. The dyadic
product ``|v| * M`` then takes four 16 x 16 partial products on the other multiplier, summed
by a 34-bit accumulator that hands over the product one 16-bit column at a time, low first.
Instead of shifting the 62-bit product right by ``s``, each column is funnel-shifted left by
``f = 16 - b`` (``s = 16 a + b``, ``1 <= b <= 16``): the shifted product's binary point then
falls between columns ``a`` and ``a + 1``, so column ``a + 1`` is the quotient, column ``a``
holds the rounding bit, lower columns only matter as "non-zero" (the sticky bit of a negative
``v``, whose magnitude rounds half down) and higher ones as overflow. The float32 (ORT) path,
when built, is the pipelined one below working on the held operands. Results are the same
as in the pipelined form.

Ports:

* ``mode``, ``out_unsigned``, ``bias``, ``residual``, ``no_acc``, ``res_zp``, ``res_mult``
  (the POST instruction's fields) must stay constant while :attr:`busy` is high.
* ``operands``: stream (always ready) of :data:`PostOperands` layouts: the ACC entry, the
  channel's 16-byte PARAM entry (low 96 bits), the residual byte, and a ``tag`` (e.g. the
  destination address) returned unchanged with the result. ``valid`` may be high at most
  once in any :attr:`interval` consecutive cycles (1 in the pipelined form: every cycle; the
  compact form ignores operands that arrive sooner). The compact form without ``"ort"``
  reads M and the shift from ``param`` until the cycle before ``result.valid``: ``param``
  must hold from ``valid`` until then (the core reads PARAM only when it issues operands).
* ``result``: stream (no ready) of ``value`` (int32: ``v`` in mode ACC, else the clipped
  8-bit output sign- or zero-extended) and ``tag``.
* ``busy``: a result is in flight.
"""

from __future__ import annotations

from amaranth import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from trilobit.config import AcceleratorConfig
from trilobit.isa import PostMode
from trilobit.requant import MAX_SHIFT

__all__ = ["PostUnit", "post_operands_layout", "post_result_layout"]

#: PARAM entry bits the unit reads (bytes 0..11 of the 16-byte channel entry).
PARAM_BITS = 96


def post_operands_layout(tag_bits: int) -> data.StructLayout:
    """One result's inputs: ACC entry, PARAM entry (low 96 bits), residual byte, tag."""
    return data.StructLayout({
        "acc": signed(32),
        "param": unsigned(PARAM_BITS),
        "residual": signed(8),
        "tag": unsigned(tag_bits),
    })


def post_result_layout(tag_bits: int) -> data.StructLayout:
    """One result: int32 ``value`` and the operands' ``tag``."""
    return data.StructLayout({"value": signed(32), "tag": unsigned(tag_bits)})


class _Stages:
    """Registers ``value`` once per call to :meth:`reg`; :meth:`delay` for longer lines."""

    def __init__(self, m: Module, prefix: str):
        self.m = m
        self.prefix = prefix
        self.count = 0

    def reg(self, value, shape=None, name: str = "r"):
        self.count += 1
        r = Signal(shape if shape is not None else value.shape(),
                   name=f"{self.prefix}_{name}_{self.count}")
        self.m.d.sync += r.eq(value)
        return r

    def delay(self, value, cycles: int, name: str = "d"):
        for _ in range(cycles):
            value = self.reg(value, name=name)
        return value


def _leading_one(m: Module, value, width: int, name: str) -> Signal:
    """Index of the most significant 1 of ``value`` (0 when ``value`` is 0)."""
    position = Signal(range(width), name=name)
    for i in range(width):
        with m.If(value[i]):
            m.d.comb += position.eq(i)  # later assignments win: the highest bit
    return position


def _shift_round_parts(m: Module, value, shift, width: int, name: str):
    """``value >> shift`` (unsigned) and whether round half to even adds 1 to it.

    The rounding looks at the bit just below the kept part (half) and whether anything
    below that is set (sticky); a tie goes to the even neighbour. ``shift`` 0 never rounds.
    """
    kept = Signal(width, name=f"{name}_kept")
    m.d.comb += kept.eq(value >> shift)
    below = Signal(width + 1, name=f"{name}_below")  # bits under the half bit: 2**(s-1) - 1
    m.d.comb += below.eq(((Const(1, width + 1) << shift) >> 1) - 1)
    half_bit = Signal(name=f"{name}_half")  # bit shift-1 of value; 0 when shift is 0
    m.d.comb += half_bit.eq(((value << 1) >> shift)[0])
    sticky = Signal(name=f"{name}_sticky")
    m.d.comb += sticky.eq((value & below[:width]).any())
    round_up = Signal(name=f"{name}_up")
    m.d.comb += round_up.eq(half_bit & (sticky | kept[0]))
    return kept, round_up


class PostUnit(wiring.Component):
    """Pipelined post-processing for ``config`` (see module docstring).

    Args:
        config: the accelerator (``requant_modes`` picks the requantizers built).
        tag_bits: width of the tag carried from operands to result.
    """

    def __init__(self, config: AcceleratorConfig, tag_bits: int = 1):
        if not isinstance(tag_bits, int) or tag_bits < 1:
            raise ValueError(f"tag_bits must be a positive integer, got {tag_bits!r}")
        self.config = config
        self.tag_bits = tag_bits
        self.has_ort = "ort" in config.requant_modes
        self.has_dyadic = "dyadic" in config.requant_modes
        self.compact = config.compact
        super().__init__({
            "mode": In(2),
            "out_unsigned": In(1),
            "bias": In(1),
            "residual": In(1),
            "no_acc": In(1),
            "res_zp": In(signed(8)),
            "res_mult": In(signed(16)),
            "operands": In(stream.Signature(post_operands_layout(tag_bits), always_ready=True)),
            "result": Out(stream.Signature(post_result_layout(tag_bits), always_ready=True)),
            "busy": Out(1),
        })

    #: Stages of ``v`` (operand registers, acc + bias with the residual product, their sum).
    V_STAGES = 3
    #: Stages from ``v`` to the requantized, unclamped value of each path.
    DYADIC_STAGES = 5
    ORT_STAGES = 9
    #: Zero point, then saturation and clip.
    OUT_STAGES = 2

    #: Compact form: cycles of the dyadic product after ``v`` is held (four partial products,
    #: then two more columns through the funnel shifter; the value is ready after the last),
    #: and the cycle that forms and holds ``v``.
    COMPACT_DYADIC_STEPS = 6
    COMPACT_V_STAGES = 1

    @property
    def latency(self) -> int:
        """Cycles from ``operands.valid`` to the matching ``result.valid``."""
        if self.compact:
            path = max(self.ORT_STAGES if self.has_ort else 0,
                       self.COMPACT_DYADIC_STEPS if self.has_dyadic else 0)
            return self.COMPACT_V_STAGES + path
        path = max(self.ORT_STAGES if self.has_ort else 0,
                   self.DYADIC_STAGES if self.has_dyadic else 0)
        return self.V_STAGES + path + self.OUT_STAGES

    @property
    def interval(self) -> int:
        """Cycles per result: the least distance between two ``operands.valid`` cycles
        (the compact form holds one result at a time)."""
        return self.latency if self.compact else 1

    def elaborate(self, platform):
        if self.compact:
            return self._elaborate_compact()
        m = Module()
        st = _Stages(m, "post")
        path = self.latency - self.V_STAGES - self.OUT_STAGES

        # -- v ----------------------------------------------------------------------------
        i = self.operands.payload
        acc = st.reg(i.acc, name="acc")
        par = st.reg(i.param, name="param")
        res = st.reg(i.residual, name="res")
        valid = st.reg(self.operands.valid, name="valid")
        tag = st.reg(i.tag, name="tag")
        base = st.reg(Mux(self.no_acc, 0, acc) + Mux(self.bias, par[0:32].as_signed(), 0),
                      signed(32), name="base")
        res_term = st.reg(Mux(self.residual, (res - self.res_zp) * self.res_mult, 0),
                          signed(25), name="res_term")
        v = st.reg((base + res_term)[:32].as_signed(), signed(32), name="v")
        par_v = st.delay(par, 2, name="param")  # aligned with v

        # -- requantizers: each yields (signed value clamped to 11 bits) after its stages ---
        y_paths = {}
        if self.has_dyadic:
            y_paths[PostMode.DYADIC] = st.delay(self._dyadic(m, st, v, par_v),
                                                path - self.DYADIC_STAGES, name="dy")
        if self.has_ort:
            y_paths[PostMode.ORT] = st.delay(self._ort(m, st, v, par_v[32:64]),
                                             path - self.ORT_STAGES, name="ort")
        y_req = Signal(signed(12))
        for mode, y in y_paths.items():
            with m.If(self.mode == mode):
                m.d.comb += y_req.eq(y)
        v_out = st.delay(v, path, name="v_out")
        par_out = st.delay(par_v[72:96], path, name="zp_clip")  # zp, clip_lo, clip_hi

        # -- zero point, saturation, clip -------------------------------------------------
        out_type = self._out_type
        zp, lo, hi = out_type(par_out[0:8]), out_type(par_out[8:16]), out_type(par_out[16:24])
        y = st.reg(y_req + zp, signed(13), name="y")
        lo_r, hi_r = st.reg(lo, signed(10), name="lo"), st.reg(hi, signed(10), name="hi")
        v_fin = st.reg(v_out, name="v_fin")
        clipped = self._saturate_and_clip(m, y, lo_r, hi_r)
        out = Signal(signed(32))
        m.d.sync += out.eq(Mux(self.mode == PostMode.ACC, v_fin, clipped))

        # -- valid and tag travel alongside -------------------------------------------------
        flags = [valid]
        for _ in range(self.latency - 1):
            flags.append(st.reg(flags[-1], name="valid"))
        tag_out = st.delay(tag, self.latency - 1, name="tag")
        m.d.comb += [
            self.result.valid.eq(flags[-1]),
            self.result.payload.value.eq(out),
            self.result.payload.tag.eq(tag_out),
            self.busy.eq(Cat(*flags).any()),
        ]
        return m

    def _out_type(self, byte):
        """A PARAM byte (zero point, clip bound) read in the output type."""
        return Mux(self.out_unsigned, byte.as_unsigned(), byte.as_signed())

    def _saturate_and_clip(self, m: Module, y, lo, hi) -> Signal:
        """``min(max(saturate(y), lo), hi)``: the output type's range, then the clip bounds
        (``hi`` wins over ``lo``)."""
        qmin = Mux(self.out_unsigned, 0, -128)
        qmax = Mux(self.out_unsigned, 255, 127)
        sat = Signal(signed(10))
        m.d.comb += sat.eq(Mux(y < qmin, qmin, Mux(y > qmax, qmax, y)))
        raised = Signal(signed(10))
        m.d.comb += raised.eq(Mux(sat < lo, lo, sat))
        clipped = Signal(signed(10))  # clip_hi wins over clip_lo (min(max(y, lo), hi))
        m.d.comb += clipped.eq(Mux(raised > hi, hi, raised))
        return clipped

    def _elaborate_compact(self) -> Module:
        """The compact form (module docstring): one result every :attr:`interval` cycles."""
        m = Module()
        i = self.operands.payload
        # step 0: idle; 1: v held; then the product's steps; ``latency``: result out.
        step = Signal(range(self.latency + 1))
        last = step == self.latency
        take = self.operands.valid & ((step == 0) | last)

        # -- cycle 0: v (the residual product on a signed 16 x 16 multiplier) ----------------
        base = Mux(self.no_acc, 0, i.acc) + Mux(self.bias, i.param[0:32].as_signed(), 0)
        res_diff = Mux(self.residual, i.residual - self.res_zp, 0)  # 9-bit signed
        v_now = Signal(signed(32))
        m.d.comb += v_now.eq(res_diff * self.res_mult + base)
        shift_raw = i.param[64:70]
        shift_m1 = Signal(6)  # s - 1 with s clamped to 1..MAX_SHIFT
        m.d.comb += shift_m1.eq(Mux(shift_raw == 0, 0, Mux(shift_raw > MAX_SHIFT, MAX_SHIFT - 1,
                                                                 shift_raw - 1)))

        v = Signal(signed(32))
        ones_complement = Signal(32)  # |v| - negative: v with every bit flipped when v < 0
        negative = Signal()
        mult_bits = Signal(32)  # PARAM bits 32..63: M (dyadic, bit 31 ignored) or float32
        column_a = Signal(2)  # s = 16 a + b, 1 <= b <= 16
        funnel = Signal(4)  # f = 16 - b: the left shift that puts s on a column boundary
        zp_lo_hi = Signal(24)
        tag = Signal(self.tag_bits)
        m.d.sync += step.eq(Mux(take, 1, Mux((step == 0) | last, 0, step + 1)))
        with m.If(take):
            m.d.sync += [
                v.eq(v_now), ones_complement.eq(v_now ^ v_now[31].replicate(32)),
                negative.eq(v_now < 0), zp_lo_hi.eq(i.param[72:96]), tag.eq(i.tag),
            ]
        if self.has_ort:
            with m.If(take):
                m.d.sync += [mult_bits.eq(i.param[32:64]), column_a.eq(shift_m1[4:6]),
                             funnel.eq(~shift_m1[0:4])]
        else:
            # Dyadic only: the PARAM entry stays on the port until the result (ports, above),
            # so M and the shift are read from it, not held.
            m.d.comb += [mult_bits.eq(i.param[32:64]), column_a.eq(shift_m1[4:6]),
                         funnel.eq(~shift_m1[0:4])]

        y_paths = {}
        if self.has_dyadic:
            y_paths[PostMode.DYADIC] = self._compact_dyadic(m, step, take, ones_complement,
                                                            negative, v_now < 0, i.param[32:63],
                                                            mult_bits[0:31], column_a, funnel)
        if self.has_ort:
            y_paths[PostMode.ORT] = self._ort(m, _Stages(m, "post"), v, mult_bits)
        y_req = Signal(signed(12))
        for mode, y in y_paths.items():
            with m.If(self.mode == mode):
                m.d.comb += y_req.eq(y)

        # -- the result: zero point, saturation, clip (combinational, from held values) ----
        zp = self._out_type(zp_lo_hi[0:8])
        y_zp = Signal(signed(13))
        m.d.comb += y_zp.eq(y_req + zp)
        # The clip bounds are bytes of the output type, so clipping alone also saturates.
        lo, hi = self._out_type(zp_lo_hi[8:16]), self._out_type(zp_lo_hi[16:24])
        raised = Signal(signed(13))
        m.d.comb += raised.eq(Mux(y_zp < lo, lo, y_zp))
        clipped = Signal(signed(10))  # clip_hi wins over clip_lo (min(max(y, lo), hi))
        m.d.comb += clipped.eq(Mux(raised > hi, hi, raised))
        m.d.comb += [
            self.result.valid.eq(last),
            self.result.payload.value.eq(Mux(self.mode == PostMode.ACC, v, clipped)),
            self.result.payload.tag.eq(tag),
            self.busy.eq(step != 0),
        ]
        return m

    def _compact_dyadic(self, m: Module, step, take, ones_complement, negative, negative_now,
                        mult_now, mult, column_a, funnel) -> Signal:
        """``(v * M + 2**(s-1)) >> s`` clamped to 11 signed bits, from ``|v|`` on one 16 x 16
        multiplier (module docstring, compact form). Steps 1..COMPACT_DYADIC_STEPS after
        ``take``; the value is valid from the step after.

        ``|v| * M = (|v| - negative) * M + negative * M``: the partial products take the
        held ones' complement, and the accumulator starts at ``M`` for a negative ``v``
        (``negative_now``, ``mult_now``: the arriving operand's), so no negation is built."""
        magnitude = ones_complement
        # Partial products |v|_i * M_j, i, j = 16-bit halves, in the order (0,0) (0,1) (1,0)
        # (1,1); the last two steps only move the remaining columns out.
        k = Signal(range(self.COMPACT_DYADIC_STEPS))  # step - 1 while the product runs
        m.d.comb += k.eq(step - 1)
        v_half = Signal(16)
        m_half = Signal(16)
        m.d.comb += [
            v_half.eq(Mux(k[2], 0, Mux(k[1], magnitude[16:32], magnitude[0:16]))),
            m_half.eq(Mux(k[0], mult[16:31], mult[0:16])),
        ]
        partial = Signal(32)
        m.d.comb += partial.eq(v_half * m_half)
        accumulator = Signal(34)  # the product from the current column up
        total = Signal(34)
        m.d.comb += total.eq(accumulator + partial)
        column_done = k != 1  # (0,1) shares its column with (1,0)
        running = (step != 0) & (step <= self.COMPACT_DYADIC_STEPS)
        column = total[0:16]
        previous = Signal(16)  # the column before, for the funnel shifter
        shifted = Signal(16)  # a column of product * 2**f
        m.d.comb += shifted.eq((Cat(previous, column) << funnel)[16:32])
        index = Signal(3)  # which column of the shifted product ``shifted`` is
        m.d.comb += index.eq(Mux(k == 0, 0, k - 1))

        quotient = Signal(10)  # column a + 1: the integer part (below 2**10 unless overflow)
        half = Signal()  # the top bit of column a: 2**(s-1)
        sticky = Signal()  # any bit below it
        overflow = Signal()  # the quotient is 2**10 or more
        with m.If(take):
            m.d.sync += [accumulator.eq(Mux(negative_now, mult_now, 0)), previous.eq(0),
                         sticky.eq(0), overflow.eq(0)]
        with m.Elif(running):
            m.d.sync += accumulator.eq(Mux(column_done, total >> 16, total))
            with m.If(column_done):
                m.d.sync += previous.eq(column)
                with m.If(index < column_a):
                    m.d.sync += sticky.eq(sticky | shifted.any())
                with m.If(index == column_a):
                    m.d.sync += [half.eq(shifted[15]), sticky.eq(sticky | shifted[0:15].any())]
                with m.If(index == column_a + 1):
                    m.d.sync += [quotient.eq(shifted[0:10]),
                                 overflow.eq(overflow | shifted[10:16].any())]
                with m.If(index > column_a + 1):
                    m.d.sync += overflow.eq(overflow | shifted.any())
        # Round half up in v's sign: |v| rounds up at the half only when v >= 0; a negative
        # v's magnitude rounds up past it (floor((-P + 2**(s-1)) / 2**s) = -ceil(...)).
        rounded = Signal(11)
        m.d.comb += rounded.eq(quotient + (half & (~negative | sticky)))
        clamped = Signal(10)
        m.d.comb += clamped.eq(Mux(overflow | rounded[10], 1023, rounded[0:10]))
        y = Signal(signed(12))
        m.d.comb += y.eq(Mux(negative, -clamped, clamped))
        return y

    def _dyadic(self, m: Module, st: _Stages, v, par) -> Signal:
        """``(v * M + 2**(s-1)) >> s`` clamped to 11 signed bits; DYADIC_STAGES registers."""
        mult = par[32:63]  # bit 31 of the word is ignored
        shift_raw = par[64:70]
        shift = Signal(6)
        m.d.comb += shift.eq(Mux(shift_raw == 0, 1, Mux(shift_raw > MAX_SHIFT, MAX_SHIFT,
                                                          shift_raw)))
        # 1: partial products, v = vh * 2**16 + vl and M = mh * 2**16 + ml (each fits a
        # signed 18 x 18 DSP multiplier).
        vl, vh = v[0:16], v[16:32].as_signed()
        ml, mh = mult[0:16], mult[16:31]
        ll = st.reg(vl * ml, unsigned(32), name="dy_ll")
        lh = st.reg(vl * mh, unsigned(31), name="dy_lh")
        hl = st.reg(vh * ml, signed(32), name="dy_hl")
        hh = st.reg(vh * mh, signed(31), name="dy_hh")
        s1 = st.reg(shift, name="dy_s")
        half_at = st.reg(shift - 1, unsigned(6), name="dy_half_at")  # shift >= 1
        # 2: ll + hh * 2**32 is a concatenation; add the rounding term; the middle terms.
        outer = Cat(ll, hh).as_signed()
        half = Signal(62, name="dy_half")
        m.d.comb += half.eq(Const(1, 1) << half_at)
        rounded_outer = st.reg(outer + half, signed(64), name="dy_outer")
        middle = st.reg(lh + hl, signed(33), name="dy_mid")
        s2 = st.reg(s1, name="dy_s")
        # 3: the full product plus the rounding term.
        total = st.reg(rounded_outer + (middle << 16), signed(66), name="dy_total")
        s3 = st.reg(s2, name="dy_s")
        # 4: the arithmetic shift.
        shifted = st.reg(total >> s3, signed(66), name="dy_shifted")
        # 5: clamp to [-1024, 1023]: beyond that every output type saturates anyway.
        return st.reg(Mux(shifted < -1024, -1024, Mux(shifted > 1023, 1023, shifted)),
                      signed(12), name="dy_y")

    def _ort(self, m: Module, st: _Stages, v, bits) -> Signal:
        """onnxruntime's ``rint(float32(float32(v) * multiplier))``, exactly, clamped to
        +-1023 (every output type saturates beyond); ORT_STAGES registers.

        ``bits``: the multiplier's float32 bits (PARAM bits 32..63). It reads as 0 when
        negative, subnormal, infinite or NaN (as
        :func:`trilobit.sim.golden.ort_multiplier_from_bits`). The two float32 roundings are
        done on integers: ``float32(|v|) = k * 2**drop`` with a 24-bit significand ``k``; the
        product ``k * significand`` is rounded to 24 significant bits ``p24 * 2**pdrop``;
        ``|result| = p24 * 2**e2`` with ``e2 = drop + pdrop + exponent - 150`` is then rounded
        to an integer (half to even). Products below 2**-126 would be float32 subnormals, but
        they are below 0.5 and round to 0 either way.
        """
        exponent = bits[23:31]
        usable = ~bits[31] & (exponent != 0) & (exponent != 0xFF)
        # 1: sign and magnitude; a zero product (v = 0 or multiplier read as 0).
        negative = st.reg(v < 0, name="ort_neg")
        magnitude = st.reg(Mux(v < 0, -v, v), unsigned(32), name="ort_mag")
        zero = st.reg(~usable | (v == 0), name="ort_zero")
        exp1 = st.reg(exponent, name="ort_exp")
        sig1 = st.reg(Cat(bits[0:23], Const(1, 1)), name="ort_sig")
        # 2: float32(|v|) keeps 24 significant bits: bits to drop.
        top = _leading_one(m, magnitude, 32, "ort_top")
        drop = st.reg(Mux(top > 23, top - 23, 0), unsigned(4), name="ort_drop")
        mag2 = st.reg(magnitude, name="ort_mag")
        # 3: the 24-bit significand k (round half to even; may carry to 2**24).
        kept, up = _shift_round_parts(m, mag2, drop, 32, "ort_k")
        k = st.reg(kept[:24] + up, unsigned(25), name="ort_k")
        drop3 = st.reg(drop, name="ort_drop")
        # 4: partial products of k (25 bits) and the significand (24 bits), 17-bit halves.
        sig3 = st.delay(sig1, 2, name="ort_sig")
        kl, kh, sl, sh = k[0:17], k[17:25], sig3[0:17], sig3[17:24]
        ll = st.reg(kl * sl, unsigned(34), name="ort_ll")
        lh = st.reg(kl * sh, unsigned(24), name="ort_lh")
        hl = st.reg(kh * sl, unsigned(25), name="ort_hl")
        hh = st.reg(kh * sh, unsigned(15), name="ort_hh")
        # 5: the exact product (< 2**49).
        product = st.reg(Cat(ll, hh) + ((lh + hl) << 17), unsigned(49), name="ort_product")
        # 6: float32 rounding of the product to 24 significant bits: bits to drop.
        ptop = _leading_one(m, product, 49, "ort_ptop")
        pdrop = st.reg(Mux(ptop > 23, ptop - 23, 0), unsigned(5), name="ort_pdrop")
        product6 = st.reg(product, name="ort_product")
        # 7: the kept bits and the rounding decision; the exponent of the result's unit.
        pkept, pup = _shift_round_parts(m, product6, pdrop, 49, "ort_p")
        p_kept = st.reg(pkept[:24], unsigned(24), name="ort_pkept")
        p_up = st.reg(pup, name="ort_pup")
        exp7 = st.delay(exp1, 5, name="ort_exp")
        drop7 = st.delay(drop3, 3, name="ort_drop")
        e2 = st.reg(drop7 + pdrop + exp7 - 150, signed(10), name="ort_e2")
        # 8: p24 <= 2**24; a value of at least 2**9 saturates every output type; otherwise
        # the binary point lies 15..26 bits up (a shift of 26 leaves 0: p24 < 2**25).
        p24 = st.reg(p_kept + p_up, unsigned(25), name="ort_p24")
        large = st.reg(e2 >= -14, name="ort_large")
        right = st.reg(Mux(-e2 > 26, 26, -e2), unsigned(5), name="ort_right")
        # 9: round half to even at the binary point; sign.
        rkept, rup = _shift_round_parts(m, p24, right, 25, "ort_r")
        zero9 = st.delay(zero, 7, name="ort_zero")
        negative9 = st.delay(negative, 7, name="ort_neg")
        magnitude9 = Signal(11)
        with m.If(zero9):
            m.d.comb += magnitude9.eq(0)
        with m.Elif(large):
            m.d.comb += magnitude9.eq(1023)
        with m.Else():
            m.d.comb += magnitude9.eq(rkept[:11] + rup)
        return st.reg(Mux(negative9, -magnitude9, magnitude9), signed(12), name="ort_y")
