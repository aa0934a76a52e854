"""Plain ternary matmul baseline: same streams, MACs per cycle and pipeline as
:class:`trilobit.hw.tlmm.TlmmEngine`, built the direct way (a 3-way mux per weight selecting
``-a``, ``0`` or ``+a``, and an adder tree per row), with no tables.

The only interface difference is the weight element: decoding a group index back into its
digits would charge the baseline for the engine's format, so each weight group arrives as its
``G`` plain two's-complement 2-bit codes (:func:`trilobit.packing.pack_ternary_plain2` codes:
``01`` = +1, ``11`` = -1, ``00`` = 0), weight 0 of the group in the low bits. Everything else
(``cmd``, ``act``, ``out``, planes, timing) is as documented in :mod:`trilobit.hw.tlmm`;
``trilobit.sim.golden_tlmm.gemv_streams(..., weight_format="plain2")`` makes its beats.
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, unsigned
from amaranth.lib import data, wiring

from trilobit.hw.tlmm import GroupPipeline, TlmmParams, adder_tree, engine_streams

__all__ = ["TlmmBaseline"]

#: Width of one plain2 ternary code, bits.
PLAIN2_BITS = 2


class TlmmBaseline(wiring.Component):
    """Mux + adder-tree ternary matmul with the engine's interface (see module docstring)."""

    def __init__(self, params: TlmmParams):
        self.params = params
        group_codes = data.ArrayLayout(unsigned(PLAIN2_BITS), params.group_size)
        super().__init__(engine_streams(params, group_codes))

    def elaborate(self, platform):
        p = self.params
        m = Module()
        held_layout = self.act.payload.shape()

        def row_sums_of(acts):
            sums = []
            for r in range(p.rows):
                terms = []
                for u in range(p.units):
                    codes = self.weights.payload[r * p.units + u]
                    for i in range(p.group_size):
                        a = acts[u * p.group_size + i]
                        code = codes[i]
                        # code bit 1 is the sign of a two's-complement 2-bit value, bit 0 its
                        # odd part: 01 -> +a, 11 -> -a, 00 (and the unused 10) -> 0.
                        terms.append(Mux(code[0], Mux(code[1], -a, a), 0))
                sums.append(adder_tree(terms))
            return sums

        held = Signal(held_layout)
        m.d.comb += held.eq(self.act.payload)
        GroupPipeline(p, held_layout).elaborate_into(m, self, held, row_sums_of)
        return m
