"""Bit-parallel INT8 x INT8 MAC array: the baseline of the bit-serial engine.

Same ports, payload layouts and result as :class:`trilobit.hw.bitserial.BitSerialEngine`
(:func:`~trilobit.hw.bitserial.engine_signature`), but every weight is multiplied in one
cycle by a full multiplier: one chunk per cycle whatever the format. Weights are read as
two's-complement integers of the group's format width (INT3/INT4/INT6/INT8); FP formats are
not supported by the baseline (their results are unspecified). The group partial sum is
multiplied by the group scale in one cycle.

Pipeline: chunk register -> partial-sum MAC (1 cycle) -> scale-and-accumulate (1 cycle) ->
output register. Correct under any stall of any stream.
"""

from __future__ import annotations

from amaranth.hdl import Module, Signal, signed
from amaranth.lib import wiring

from trilobit.hw.bitserial import BitSerialParams, accept_chunks, adder_tree, engine_signature
from trilobit.hw.bitserial_format import WeightFormat

__all__ = ["BitParallelMacArray"]


class BitParallelMacArray(wiring.Component):
    """``rows x columns`` PEs, each a ``width``-lane INT8 x INT8 dot product per cycle."""

    def __init__(self, params: BitSerialParams | None = None):
        self.params = params or BitSerialParams()
        super().__init__(engine_signature(self.params))

    def elaborate(self, platform) -> Module:
        m = Module()
        p = self.params
        R, C, D = p.rows, p.columns, p.width

        x_valid = Signal()
        x_meta = Signal(p.meta_layout())
        x_group_end = Signal()
        x_act = Signal(p.act_layout())
        x_code = Signal(p.weight_layout())
        psum = [[Signal(signed(p.psum_bits), name=f"psum_{r}_{c}") for c in range(C)]
                for r in range(R)]

        q_valid = Signal()
        q_last = Signal()
        q_scale = [Signal(p.scale_bits, name=f"q_scale_{c}") for c in range(C)]
        q_psum = [[Signal(signed(p.psum_bits), name=f"q_psum_{r}_{c}") for c in range(C)]
                  for r in range(R)]
        acc = [[Signal(signed(p.acc_bits), name=f"acc_{r}_{c}") for c in range(C)]
               for r in range(R)]
        o_valid = Signal()
        o_data = Signal(p.out_layout())

        q_advance = Signal()
        q_can_load = Signal()
        x_advance = Signal()
        x_free = Signal()
        m.d.comb += [
            q_advance.eq(q_valid & ~(q_last & o_valid & ~self.out.ready)),
            q_can_load.eq(~q_valid | q_advance),
            x_advance.eq(x_valid & ~(x_group_end & ~q_can_load)),
            x_free.eq(~x_valid | x_advance),
        ]

        front = accept_chunks(m, p, self, x_free)
        with m.If(front.take):
            m.d.sync += [
                x_valid.eq(1),
                x_meta.eq(front.meta),
                x_group_end.eq(front.group_end),
                x_act.eq(self.act.payload),
                x_code.eq(self.weights.payload),
            ]
        with m.Elif(x_advance):
            m.d.sync += x_valid.eq(0)

        # weights as two's complement of the group's INT width
        weight = [[Signal(signed(8), name=f"w_{c}_{d}") for d in range(D)] for c in range(C)]
        for c in range(C):
            for d in range(D):
                code = x_code[c][d]
                with m.Switch(x_meta.fmt):
                    for fmt in (WeightFormat.INT3, WeightFormat.INT4, WeightFormat.INT6):
                        with m.Case(fmt):
                            m.d.comb += weight[c][d].eq(code[:fmt.bits].as_signed())
                    with m.Default():
                        m.d.comb += weight[c][d].eq(code.as_signed())

        q_load = x_advance & x_group_end
        for r in range(R):
            for c in range(C):
                dot = adder_tree(m, [x_act[r][d] * weight[c][d] for d in range(D)], f"dot_{r}_{c}")
                psum_next = Signal(signed(p.psum_bits), name=f"psum_next_{r}_{c}")
                m.d.comb += psum_next.eq(psum[r][c] + dot)
                with m.If(x_advance):
                    with m.If(x_group_end):
                        m.d.sync += [psum[r][c].eq(0), q_psum[r][c].eq(psum_next)]
                    with m.Else():
                        m.d.sync += psum[r][c].eq(psum_next)
        with m.If(q_load):
            m.d.sync += [q_valid.eq(1), q_last.eq(x_meta.last)]
            m.d.sync += [q_scale[c].eq(x_meta.cols[c].scale) for c in range(C)]
        with m.Elif(q_advance):
            m.d.sync += q_valid.eq(0)

        with m.If(self.out.valid & self.out.ready):
            m.d.sync += o_valid.eq(0)
        for r in range(R):
            for c in range(C):
                acc_next = Signal(signed(p.acc_bits), name=f"acc_next_{r}_{c}")
                m.d.comb += acc_next.eq(acc[r][c] + q_psum[r][c] * q_scale[c])
                with m.If(q_advance):
                    with m.If(q_last):
                        m.d.sync += [o_data[r][c].eq(acc_next), acc[r][c].eq(0)]
                    with m.Else():
                        m.d.sync += acc[r][c].eq(acc_next)
        with m.If(q_advance & q_last):
            m.d.sync += o_valid.eq(1)
        m.d.comb += [self.out.valid.eq(o_valid), self.out.payload.eq(o_data)]
        return m
