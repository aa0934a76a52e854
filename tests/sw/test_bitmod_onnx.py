"""BitMoD per-group weights in ONNX: the form, its detection, the compiler's bit-serial path
with per-group type ids and scales, and ``trilobit quantize-weights`` on ONNX models.

The reference is onnxruntime running the written model. Its default session rewrites a
blocked int8 DequantizeLinear + MatMul into MatMulNBits (int8 activations, accuracy level 4),
itself an approximation; the tests compare against the ONNX definition (float
DequantizeLinear then MatMul, onnxruntime at ORT_ENABLE_BASIC) and check the default
session agrees too.
"""

from __future__ import annotations

import zlib

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from sw_models import MODELS

from trilobit.dtypes import BITMOD_CANDIDATES, get_dtype
from trilobit.errors import ConfigError, ModelError, QuantizationError
from trilobit.hw.bitserial_format import WeightFormat
from trilobit.isa import WeightEncoding
from trilobit.sw.bitmod import (
    integer_scales,
    onnx_block_arrays,
    plan_groups,
    quantize_bitmod,
)
from trilobit.sw.compiler import compile_model
from trilobit.sw.quantize_cli import quantize_model_weights
from trilobit.sw.reference import ReferenceExecutor
from trilobit.sw.runtime import Session


@pytest.fixture
def rng(request) -> np.random.Generator:
    return np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))


def _model(nodes, inputs, outputs, inits) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "bitmod", inputs, outputs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    model.ir_version = 10
    onnx.checker.check_model(model, full_check=True)
    return model


def weight_only_model(values: np.ndarray, scales: np.ndarray, block: int) -> onnx.ModelProto:
    """float x @ DequantizeLinear(values int8 (K, N), scales, axis 0, block)."""
    k, n = values.shape
    inits = [numpy_helper.from_array(values.astype(np.int8), "w"),
             numpy_helper.from_array(scales.astype(np.float32), "s")]
    nodes = [helper.make_node("DequantizeLinear", ["w", "s"], ["wf"], axis=0, block_size=block),
             helper.make_node("MatMul", ["x", "wf"], ["y"], name="fc")]
    return _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["M", k])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["M", n])], inits)


def qdq_model(values, scales, block, a_type, a_zp, a_scale, y_scale, y_zp) -> onnx.ModelProto:
    """DQ(x_q) -> MatMul <- DQ(blocked per-group weights), then Q (int8/uint8 activations)."""
    k, n = values.shape
    np_a = helper.tensor_dtype_to_np_dtype(a_type)
    inits = [numpy_helper.from_array(values.astype(np.int8), "w"),
             numpy_helper.from_array(scales.astype(np.float32), "s"),
             numpy_helper.from_array(np.array(a_scale, np.float32), "xs"),
             numpy_helper.from_array(np.array(a_zp, np_a), "xz"),
             numpy_helper.from_array(np.array(y_scale, np.float32), "ys"),
             numpy_helper.from_array(np.array(y_zp, np_a), "yz")]
    nodes = [helper.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["x"]),
             helper.make_node("DequantizeLinear", ["w", "s"], ["wf"], axis=0, block_size=block),
             helper.make_node("MatMul", ["x", "wf"], ["y"], name="fc"),
             helper.make_node("QuantizeLinear", ["y", "ys", "yz"], ["yq"])]
    return _model(nodes, [helper.make_tensor_value_info("xq", a_type, ["M", k])],
                  [helper.make_tensor_value_info("yq", a_type, ["M", n])], inits)


def ort_run(model: onnx.ModelProto, feeds: dict, optimized: bool = False) -> np.ndarray:
    """onnxruntime's output; ``optimized=False`` keeps DequantizeLinear + MatMul in float
    (the ONNX definition), ``True`` is the default session."""
    options = ort.SessionOptions()
    if not optimized:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    session = ort.InferenceSession(model.SerializeToString(), options,
                                   providers=["CPUExecutionProvider"])
    return session.run(None, feeds)[0]


def relative_error(ours: np.ndarray, theirs: np.ndarray) -> float:
    return float(np.linalg.norm(ours - theirs) / np.linalg.norm(theirs))


def bitmod_arrays(rng, k: int, n: int, fmt: str, group: int) -> tuple[np.ndarray, np.ndarray]:
    """ONNX-form (values (K, N), scales) of a heavy-tailed random weight matrix."""
    w = rng.standard_t(4, size=(n, k)) * 0.05
    return onnx_block_arrays(quantize_bitmod(w, fmt, group))


# -- the form and its detection ----------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["fp3", "fp4", "int4", "int8"])
def test_onnxruntime_dequantizes_the_form_exactly(fmt, rng):
    """K = 100 is not a multiple of the group (32): the last block is short, as ONNX allows."""
    w = rng.standard_normal((7, 100))
    q = quantize_bitmod(w, fmt, 32)
    values, scales = onnx_block_arrays(q)
    assert values.dtype == np.int8 and values.shape == (100, 7) and scales.shape == (4, 7)
    model = weight_only_model(values, scales, 32)
    eye = np.eye(100, dtype=np.float32)
    dequantized = ort_run(model, {"x": eye})
    np.testing.assert_array_equal(dequantized, q.dequantize().T.astype(np.float32))
    # the default session (fused into MatMulNBits) runs it too
    x = rng.standard_normal((3, 100)).astype(np.float32)
    assert relative_error(ort_run(model, {"x": x}, optimized=True), ort_run(model, {"x": x})) \
        < 0.02


def test_integer_scales_split_exactly_or_say_why(rng):
    ints = rng.integers(0, 256, (5, 6))
    scale_int, shift = integer_scales(np.ldexp(ints, -13).astype(np.float32))
    # the smallest shift making every scale an integer: odd factors stay, even ones halve
    lowest = min(int(v & -v).bit_length() - 1 for v in ints.ravel() if v)
    assert shift == 13 - lowest
    np.testing.assert_array_equal(scale_int << lowest, ints)
    assert integer_scales(np.float32([512.0, 1024.0]))[1] == -9
    with pytest.raises(QuantizationError, match="mantissa bits"):
        integer_scales(np.float32([0.1, 0.2]))
    with pytest.raises(QuantizationError, match="mantissa bits"):
        integer_scales(np.float32([1.0, 2.0**-8]))  # 256 steps apart: 9 bits
    with pytest.raises(QuantizationError, match="negative"):
        integer_scales(np.float32([0.5, -0.5]))


def test_each_group_takes_the_smallest_type_holding_its_values():
    g = 8
    groups = {
        "int3": [[-4, 3, 0, 1, -1, 2, -2, 0]],
        "fp3": [[4, -4, 2, 1, 0, 0, 0, 0], [-6, 4, 0, 0, 0, 0, 0, 0], [3, -4, 0, 0, 0, 0, 0, 0]],
        "int4": [[7, -8, 0, 0, 0, 0, 0, 0]],
        "fp4": [[12, -16, 0, 0, 0, 0, 0, 0], [10, 8, -12, 0, 0, 0, 0, 0]],
        "int6": [[31, -32, 0, 0, 0, 0, 0, 0]],
        "int8": [[127, -128, 5, 0, 0, 0, 0, 0]],
    }
    for fmt, rows in groups.items():
        values = np.array(rows).reshape(-1, g)  # one channel per row, one group each
        plan = plan_groups(values.T, np.ones((1, len(rows)), np.int64), g, g)
        assert plan.fmt == WeightFormat.parse(fmt), fmt
        for c, row in enumerate(rows):
            name = (BITMOD_CANDIDATES[int(fmt[2])][plan.type_ids[c, 0]]
                    if fmt.startswith("fp") else fmt)
            np.testing.assert_array_equal(get_dtype(name).values[plan.codes[c]], row)
    fp3 = plan_groups(np.array(groups["fp3"]).T, np.ones((1, 3), np.int64), g, g)
    assert fp3.type_ids[:, 0].tolist() == [0, 3, 0]  # {±4, 2, 1}: first candidate; -6: ea_neg


def test_a_group_across_two_blocks_or_an_overflowing_accumulator_is_refused():
    values = np.ones((64, 2), np.int64)
    with pytest.raises(QuantizationError, match="not a multiple of the engine's group size"):
        plan_groups(values, np.ones((4, 2), np.int64), 16, 32)
    assert plan_groups(values, np.ones((1, 2), np.int64), 64, 32).scale_int.shape == (2, 2)
    big = np.full((70000, 1), 127, np.int64)
    with pytest.raises(QuantizationError, match="overflow"):
        plan_groups(big, np.full((1, 1), 255, np.int64), 70000, 128)


# -- compiled and run ---------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["fp3", "fp4", "int4"])
def test_weight_only_runs_on_the_bitserial_engine_with_group_metadata(fmt, rng):
    k, n, group = 300, 20, 32  # K: several K tiles on tiny and a short last group
    values, scales = bitmod_arrays(rng, k, n, fmt, group)
    model = weight_only_model(values, scales, group)
    program = compile_model(model, "tiny", batch=4)
    (kernel,) = program.kernels["fc"]
    assert kernel.group_size == 32 and kernel.k == k and kernel.k_tiles > 1
    assert WeightEncoding(kernel.wfmt).name == fmt.upper()
    node = program.graph.node_by_name("fc")
    assert node.engine == "bitserial" and "BitMoD per-group" in node.reason
    if fmt != "int4":
        for name in BITMOD_CANDIDATES[int(fmt[2])]:  # the heavy tails use every candidate
            assert f"{name} " in node.reason
    x = rng.standard_normal((9, k)).astype(np.float32)
    x[0] = 0.0  # an all-zero row (activation scale falls back to 1)
    ours = Session(program, config="tiny").run({"x": x})["y"]
    np.testing.assert_array_equal(ours, ReferenceExecutor(program.graph).run({"x": x})["y"])
    theirs = ort_run(model, {"x": x})
    assert relative_error(ours, theirs) <= 0.02
    assert not ours[0].any()


@pytest.mark.parametrize("a_type, a_zp", [(TensorProto.INT8, -3), (TensorProto.UINT8, 131)])
def test_qdq_activations_accumulate_exactly_within_one_step_of_onnxruntime(a_type, a_zp, rng):
    k, n, group = 200, 24, 32
    values, scales = bitmod_arrays(rng, k, n, "fp3", group)
    model = qdq_model(values, scales, group, a_type, a_zp, 0.02, 0.01, a_zp)
    info = np.iinfo(helper.tensor_dtype_to_np_dtype(a_type))
    xq = rng.integers(info.min, info.max + 1, (16, k)).astype(info.dtype)
    xq[0], xq[1] = info.min, info.max
    program = compile_model(model, "tiny", batch=4)
    assert program.kernels["fc"][0].group_size == 32
    ours = Session(program, config="tiny").run({"xq": xq})["yq"]
    theirs = ort_run(model, {"xq": xq})
    diff = np.abs(ours.astype(np.int64) - theirs.astype(np.int64))
    assert diff.max() <= 1 and (diff == 0).mean() > 0.95
    # the integer accumulator, independently: sum (x - zp) * value * scale_int, then requant
    scale_int, shift = integer_scales(scales)
    w_int = values.astype(np.int64) * np.repeat(scale_int, group, axis=0)[:k]
    acc = (xq.astype(np.int64) - a_zp) @ w_int
    real = acc * (0.02 * 2.0**-shift / 0.01)
    expect = np.clip(np.rint(real) + a_zp, info.min, info.max)
    assert np.abs(ours - expect).max() <= 1  # float32 multiplier rounding at ties


def test_extreme_values_max_codes_zero_groups_and_extreme_activations(rng):
    """Every group at the largest code of fp4_ea_pos (+16) with scale 255, some groups all
    zero (scale 0), activations at -128/127: the int32 accumulator is exact."""
    k, n, group = 96, 6, 32
    values = np.full((k, n), 16, np.int8)
    scales = np.full((3, n), 255 * 2.0**-12, np.float32)
    values[32:64, 1] = 0
    scales[1, 1] = 0.0  # a zero group with a zero scale
    values[:, 2] = -16  # the other extreme: fp4_ea_neg
    model = qdq_model(values, scales, group, TensorProto.INT8, 0, 1.0, 2.0**-12 * 255 * 16 * 96,
                      0)
    xq = np.array([[127] * k, [-128] * k, [0] * k] + [rng.choice([-128, 127], k)
                                                      for _ in range(3)], np.int8)
    program = compile_model(model, "tiny", batch=4)
    assert "fp4_ea_pos" in program.graph.node_by_name("fc").reason
    ours = Session(program, config="tiny").run({"xq": xq})["yq"]
    acc = xq.astype(np.int64) @ (values.astype(np.int64) * np.repeat(
        (scales * 2**12).astype(np.int64), group, axis=0))
    np.testing.assert_array_equal(ours, np.clip(np.rint(acc / (255 * 16 * 96)), -128, 127))
    np.testing.assert_array_equal(ours, ort_run(model, {"xq": xq}))


def test_blocks_finer_than_the_engine_group_fall_back_per_block_and_say_why(rng):
    """small's engine groups are 128 channels: blocks of 32 cannot carry one scale each."""
    k, n = 256, 16
    values, scales = bitmod_arrays(rng, k, n, "fp4", 32)
    model = weight_only_model(values, scales, 32)
    program = compile_model(model, "small", batch=4)
    node = program.graph.node_by_name("fc")
    assert node.engine == "bitserial" and "not a multiple of the engine's group size" in node.reason
    assert len(program.kernels["fc"]) == k // 32 and program.kernels["fc"][0].group_size == 0
    x = rng.standard_normal((5, k)).astype(np.float32)
    ours = Session(program, config="small").run({"x": x})["y"]
    np.testing.assert_array_equal(ours, ReferenceExecutor(program.graph).run({"x": x})["y"])
    assert relative_error(ours, ort_run(model, {"x": x})) <= 0.02


def test_scales_of_another_form_keep_the_int8_path_and_say_why(rng):
    values, scales = bitmod_arrays(rng, 64, 8, "fp4", 32)
    model = weight_only_model(values, scales * np.float32(1.1), 32)
    program = compile_model(model, "tiny", batch=4)
    node = program.graph.node_by_name("fc")
    assert node.engine == "bitserial" and "not the per-group form" in node.reason
    assert all(kk.group_size == 0 for kk in program.kernels["fc"])
    qdq = qdq_model(values, scales * np.float32(1.1), 32, TensorProto.INT8, 0, 0.02, 0.01, 0)
    from trilobit.sw.onnx_import import import_model

    host = import_model(qdq).node_by_name("fc")
    assert host.engine == "host" and "not in the per-group form" in host.reason


# -- quantize-weights on ONNX models --------------------------------------------------------


def test_cli_rewrites_every_weight_and_keeps_the_rest(tmp_path, capsys):
    from trilobit.cli import main

    out = tmp_path / "mlp_fp4.onnx"
    assert main(["quantize-weights", str(MODELS / "digits_mlp_float.onnx"), "--all",
                 "--format", "fp4", "--group-size", "32", "-o", str(out)]) == 0
    assert "fc1.weight" in capsys.readouterr().out
    model = onnx.load(out)
    onnx.checker.check_model(model, full_check=True)
    ops = [node.op_type for node in model.graph.node]
    assert ops == ["DequantizeLinear"] * 2 + ["MatMul", "Add", "Relu", "MatMul", "Add"]
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    assert inits["fc1.weight.bitmod"].dtype == np.int8
    assert "fc1.bias" in inits and "fc1.weight" not in inits
    meta = {p.key for p in model.metadata_props}
    assert meta == {"trilobit.bitmod.fc1.weight", "trilobit.bitmod.fc2.weight"}


def test_cli_names_an_initializer_that_is_not_a_matmul_weight(tmp_path, capsys):
    from trilobit.cli import main

    src = str(MODELS / "digits_mlp_float.onnx")
    out = str(tmp_path / "x.onnx")
    assert main(["quantize-weights", src, "--initializer", "fc1.bias", "-o", out]) == 2
    assert "'fc1.bias'" in capsys.readouterr().err
    assert main(["quantize-weights", src, "--initializer", "nope", "-o", out]) == 2
    assert "'nope'" in capsys.readouterr().err
    model = onnx.load(src)
    with pytest.raises(ConfigError, match="'fc1.bias'.*not 2-D"):
        quantize_model_weights(model, ["fc1.bias"])
    with pytest.raises(ModelError, match="'nope'"):
        quantize_model_weights(model, ["nope"])


@pytest.fixture(scope="module")
def digits():
    data = np.load(MODELS / "digits_test.npz")
    return (data["pixels"].astype(np.float32) / np.float32(16)).astype(np.float32), data["labels"]


@pytest.mark.parametrize("fmt", ["fp4", "fp3"])
def test_digits_mlp_quantized_by_the_cli_matches_onnxruntime(fmt, digits):
    """The whole digits test set on golden (tiny, engine groups of 32)."""
    x, labels = digits
    model, _ = quantize_model_weights(onnx.load(MODELS / "digits_mlp_float.onnx"),
                                      ["fc1.weight", "fc2.weight"], fmt, 32)
    session = Session(model, config="tiny", batch=64)
    for name in ("fc1", "fc2"):
        assert session.program.kernels[name][0].group_size == 32
    ours = session.run({"pixels": x})["logits"]
    theirs = ort_run(model, {"pixels": x})
    assert relative_error(ours, theirs) <= 0.02
    # Same prediction wherever onnxruntime's top two logits are further apart than twice the
    # largest difference (fp3 has one image of 360 closer than that: 0.057 vs 0.13).
    top2 = np.sort(theirs, axis=1)[:, -2:]
    decided = top2[:, 1] - top2[:, 0] > 2 * np.abs(ours - theirs).max()
    assert decided.mean() > 0.98
    np.testing.assert_array_equal(ours.argmax(1)[decided], theirs.argmax(1)[decided])
    assert (ours.argmax(1) == theirs.argmax(1)).mean() >= 0.99
    assert abs((ours.argmax(1) == labels).mean() - (theirs.argmax(1) == labels).mean()) <= 0.01
    assert (theirs.argmax(1) == labels).mean() > 0.9


@pytest.mark.parametrize("fmt", ["fp4", "fp3"])
def test_qdq_digits_mlp_requantized_by_the_cli_equals_onnxruntime(fmt, digits, tmp_path):
    """quantize_static's per-channel QDQ model (int8 activations): ``--all`` requantizes its
    int8 weights into per-group form and its int32 biases into the accumulator unit; the
    integer path then gives onnxruntime's logits exactly on the whole test set."""
    from trilobit.cli import main

    out = tmp_path / "qdq.onnx"
    assert main(["quantize-weights", str(MODELS / "digits_mlp_qdq_perchannel.onnx"), "--all",
                 "--format", fmt, "--group-size", "32", "-o", str(out)]) == 0
    model = onnx.load(out)
    x, labels = digits
    session = Session(model, config="tiny", batch=64)
    for name in ("fc1", "fc2"):
        node = session.program.graph.node_by_name(name)
        assert node.kind == "QMatMul" and node.engine == "bitserial"
        assert session.program.kernels[name][0].group_size == 32
    ours = session.run({"pixels": x})["logits"]
    np.testing.assert_array_equal(ours, ort_run(model, {"pixels": x}))
    np.testing.assert_array_equal(ours, ort_run(model, {"pixels": x}, optimized=True))
    assert (ours.argmax(1) == labels).mean() > 0.9


@pytest.mark.verilator
@pytest.mark.parametrize("name", ["mlp_bitmod", "mlp_bitmod_qdq"])
def test_digits_bitmod_models_on_the_rtl_equal_golden_and_predict_as_onnxruntime(name, digits):
    """``mlp_bitmod``: weight-only fc1 FP4 / fc2 FP3; ``mlp_bitmod_qdq``: int8 activations."""
    x = digits[0][:8]
    model = onnx.load(MODELS / f"digits_{name}.onnx")
    rtl = Session(model, config="tiny", backend="verilator", batch=4)
    ours = rtl.run({"pixels": x})["logits"]
    np.testing.assert_array_equal(ours, Session(model, config="tiny", batch=4).run(
        {"pixels": x})["logits"])
    theirs = ort_run(model, {"pixels": x})
    np.testing.assert_array_equal(ours.argmax(1), theirs.argmax(1))
    if name == "mlp_bitmod_qdq":
        np.testing.assert_array_equal(ours, theirs)
    assert rtl.counters()["cycles"] > 0


def test_qdq_gemm_with_transposed_weights_and_an_accumulator_unit_bias(rng):
    """Gemm(transB=1): weights (N, K) blocked along axis 1; an int32 bias whose scale is the
    accumulator unit a_scale * 2**-shift adds exactly."""
    k, n, group = 64, 10, 32
    values, scales = bitmod_arrays(rng, k, n, "fp4", group)
    _, shift = integer_scales(scales)
    bias = rng.integers(-5000, 5000, n).astype(np.int32)
    inits = [numpy_helper.from_array(values.T.copy(), "w"),
             numpy_helper.from_array(scales.T.copy(), "s"),
             numpy_helper.from_array(bias, "b"),
             numpy_helper.from_array(np.float32(0.05 * 2.0**-shift), "bs"),
             numpy_helper.from_array(np.array(0.05, np.float32), "xs"),
             numpy_helper.from_array(np.array(2, np.int8), "xz"),
             numpy_helper.from_array(np.array(0.04, np.float32), "ys"),
             numpy_helper.from_array(np.array(-1, np.int8), "yz")]
    nodes = [helper.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["x"]),
             helper.make_node("DequantizeLinear", ["w", "s"], ["wf"], axis=1, block_size=group),
             helper.make_node("DequantizeLinear", ["b", "bs"], ["bf"]),
             helper.make_node("Gemm", ["x", "wf", "bf"], ["y"], name="fc", transB=1),
             helper.make_node("QuantizeLinear", ["y", "ys", "yz"], ["yq"])]
    model = _model(nodes, [helper.make_tensor_value_info("xq", TensorProto.INT8, ["M", k])],
                   [helper.make_tensor_value_info("yq", TensorProto.INT8, ["M", n])], inits)
    xq = rng.integers(-128, 128, (12, k)).astype(np.int8)
    program = compile_model(model, "tiny", batch=4)
    assert program.graph.node_by_name("fc").engine == "bitserial"
    assert program.kernels["fc"][0].group_size == 32
    ours = Session(program, config="tiny").run({"xq": xq})["yq"]
    theirs = ort_run(model, {"xq": xq})
    assert np.abs(ours.astype(np.int64) - theirs).max() <= 1
    assert (ours == theirs).mean() > 0.95


@pytest.mark.parametrize("fmt", ["int3", "fp3", "int4", "fp4", "int6", "int8"])
def test_written_form_is_recovered_exactly_from_the_values(fmt, rng):
    """quantizer -> ONNX arrays -> integer_scales + plan_groups: the same scales, the same
    integer values, and no wider format than the quantizer's."""
    w = rng.standard_t(3, size=(9, 70)) * rng.uniform(0.01, 1.0, size=(9, 1))
    q = quantize_bitmod(w, fmt, 16)
    values, scales = onnx_block_arrays(q)
    scale_int, shift = integer_scales(scales)
    np.testing.assert_array_equal(np.ldexp(scale_int.astype(np.float64), -shift),
                                  np.ldexp(q.scale_int.T.astype(np.float64), -q.shift))
    plan = plan_groups(values, scale_int, 16, 16)
    assert plan.fmt.bits <= WeightFormat.parse(fmt).bits
    names = [BITMOD_CANDIDATES[plan.fmt.bits][t] if plan.fmt.is_fp else f"int{plan.fmt.bits}"
             for t in range(4)]
    full = np.zeros((9, 70))
    for c in range(9):
        for g, t in enumerate(plan.type_ids[c]):
            sl = slice(g * 16, min(70, (g + 1) * 16))
            full[c, sl] = get_dtype(names[t]).values[plan.codes[c, sl]]
    np.testing.assert_array_equal(full, values.T)


def test_program_with_group_metadata_survives_save_and_load(rng, tmp_path):
    from trilobit.sw.program import Program

    values, scales = bitmod_arrays(rng, 80, 12, "fp4", 32)
    model = weight_only_model(values, scales, 32)
    program = compile_model(model, "tiny", batch=4)
    path = tmp_path / "bitmod.tbp"
    program.save(path)
    x = rng.standard_normal((5, 80)).astype(np.float32)
    loaded = Program.load(path, program.config)
    assert loaded.kernels["fc"][0].group_size == 32
    np.testing.assert_array_equal(Session(loaded, config="tiny").run({"x": x})["y"],
                                  Session(program, config="tiny").run({"x": x})["y"])


def test_cli_form_of_a_transposed_gemm_in_an_opset_13_model(rng):
    """Gemm(transB=1) weights (N, K) become MatMul on their (K, N) dequantized transpose plus
    the bias Add; an opset-13 model is converted to opset 21 (blocked DequantizeLinear)."""
    k, n = 48, 6
    w = rng.standard_normal((n, k)).astype(np.float32)
    b = rng.standard_normal(n).astype(np.float32)
    node = helper.make_node("Gemm", ["x", "w", "b"], ["y"], name="fc", transB=1)
    graph = helper.make_graph([node], "gemm", [helper.make_tensor_value_info("x", 1, ["M", k])],
                              [helper.make_tensor_value_info("y", 1, ["M", n])],
                              [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    out, results = quantize_model_weights(model, ["w"], "fp4", 16)
    assert out.opset_import[0].version == 21
    assert [nd.op_type for nd in out.graph.node] == ["DequantizeLinear", "MatMul", "Add"]
    q, quantized = results["w"]
    np.testing.assert_array_equal(quantized, w)  # (N, K): groups along K
    x = rng.standard_normal((4, k)).astype(np.float32)
    theirs = ort_run(out, {"x": x})
    np.testing.assert_allclose(theirs, x @ q.dequantize().T + b, rtol=1e-5, atol=1e-5)
    ours = Session(out, config="tiny", batch=4).run({"x": x})["y"]
    assert relative_error(ours, theirs) <= 0.02
