"""Term decomposition of every weight code, checked against trilobit.dtypes; the hardware
term decoder checked exhaustively against it; CLI entry points."""

from __future__ import annotations

import json

import numpy as np
import pytest
from amaranth.sim import Simulator

from trilobit.cli import main
from trilobit.dtypes import get_dtype
from trilobit.errors import ConfigError
from trilobit.hw.bitserial import BitSerialTermDecoder
from trilobit.hw.bitserial_format import (
    WeightFormat,
    booth_digits,
    cycles_per_weight,
    format_dtype,
    max_lane_shift,
    weight_terms,
)

ALL_CODES = [(f, t, c) for f in WeightFormat for t in range(4 if f.is_fp else 1)
             for c in range(1 << f.bits)]


@pytest.mark.parametrize("bits_per_cycle", [1, 2])
def test_terms_sum_to_the_dtype_value_for_every_code(bits_per_cycle):
    for fmt, type_id, code in ALL_CODES:
        want = get_dtype(format_dtype(fmt, type_id)).values[code]
        terms = weight_terms(fmt, type_id, code, bits_per_cycle)
        assert len(terms) == cycles_per_weight(fmt, bits_per_cycle)
        assert sum(t.value for t in terms) == want, (fmt, type_id, code)
        assert all(t.lane_shift <= max_lane_shift() for t in terms)


def test_cycles_per_weight_follow_the_bit_width():
    assert [cycles_per_weight(f) for f in WeightFormat] == [2, 2, 3, 4, 2, 2]
    assert cycles_per_weight("int8", 1) == 8
    with pytest.raises(ConfigError, match="bits_per_cycle"):
        cycles_per_weight("int8", 4)
    with pytest.raises(ConfigError, match="weight format"):
        WeightFormat.parse("fp5")


def test_booth_digits_cover_the_int8_range():
    for v in range(-128, 128):
        d = booth_digits(v, 4)
        assert all(-2 <= x <= 2 for x in d)
        assert sum(x * 4**i for i, x in enumerate(d)) == v


@pytest.mark.parametrize("bits_per_cycle", [1, 2])
def test_hardware_term_decoder_matches_every_code_and_step(bits_per_cycle):
    steps = max(cycles_per_weight(f, bits_per_cycle) for f in WeightFormat)
    dut = BitSerialTermDecoder(bits_per_cycle, max(1, (steps - 1).bit_length()),
                       max_lane_shift().bit_length())
    mismatches = []

    async def bench(ctx):
        for fmt, type_id, code in ALL_CODES:
            ctx.set(dut.fmt, int(fmt))
            ctx.set(dut.type_id, type_id)
            ctx.set(dut.code, code)
            for step, term in enumerate(weight_terms(fmt, type_id, code, bits_per_cycle)):
                ctx.set(dut.step, step)
                got = (ctx.get(dut.nonzero), ctx.get(dut.negative),
                       ctx.get(dut.lane_shift) if ctx.get(dut.nonzero) else 0)
                want = (int(term.sign != 0), int(term.sign < 0) if term.sign else got[1],
                        term.lane_shift if term.sign else 0)
                if got != want:
                    mismatches.append((fmt.name, type_id, code, step, got, want))

    sim = Simulator(dut)
    sim.add_testbench(bench)
    sim.run()
    assert not mismatches, mismatches[:5]


def test_generate_bitserial_writes_verilog_and_manifest(tmp_path, capsys):
    assert main(["generate", "bitserial", "--out", str(tmp_path), "--width", "4", "--rows", "1",
                 "--columns", "2", "--group-size", "16", "--baseline"]) == 0
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["params"]["width"] == 4
    assert manifest["formats"]["int8"]["cycles_per_weight"] == 4
    assert manifest["formats"]["fp4"]["types"][2] == "fp4_ea_pos"
    assert "module bitserial_engine" in (tmp_path / "bitserial_engine.v").read_text()
    assert "module bitparallel_baseline" in (tmp_path / "bitparallel_baseline.v").read_text()


@pytest.mark.parametrize(("args", "message"), [
    (["--group-size", "12"], "group_size"),
    (["--bits-per-cycle", "3"], "bits_per_cycle"),
    (["--act-bits", "12"], "act_bits"),
])
def test_generate_bitserial_rejects_bad_parameters(args, message, tmp_path, capsys):
    assert main(["generate", "bitserial", "--out", str(tmp_path), *args]) == 2
    assert message in capsys.readouterr().err


def test_quantize_weights_cli_on_npy_and_onnx(tmp_path, capsys):
    rng = np.random.default_rng(3)
    w = rng.standard_t(3, size=(8, 64))
    np.save(tmp_path / "w.npy", w)
    out = tmp_path / "q.npz"
    assert main(["quantize-weights", str(tmp_path / "w.npy"), "--format", "fp3",
                 "--group-size", "32", "-o", str(out), "--columns", "4", "--width", "8"]) == 0
    saved = np.load(out)
    assert saved["codes"].shape == (8, 64) and saved["type_ids"].shape == (8, 2)
    assert saved["weight_beats"].shape == (2, 8, 4, 8)

    import onnx
    from onnx import helper, numpy_helper

    graph = helper.make_graph([], "g", [], [], [numpy_helper.from_array(w.T.astype(np.float32),
                                                                        "fc.weight")])
    onnx.save(helper.make_model(graph), tmp_path / "m.onnx")
    assert main(["quantize-weights", str(tmp_path / "m.onnx"), "--initializer", "fc.weight",
                 "--group-size", "32"]) == 0
    assert "fp4 per-group" in capsys.readouterr().out
    assert main(["quantize-weights", str(tmp_path / "m.onnx"), "--initializer", "nope"]) == 2
    assert main(["quantize-weights", str(tmp_path / "w.npy"), "--format", "int5"]) == 2
