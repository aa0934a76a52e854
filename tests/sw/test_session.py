"""Session on the golden backend: compiled programs reproduce onnxruntime bit for bit."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from sw_models import EXACT_MODELS, WEIGHT_ONLY_MODELS, digits_inputs, model_path, ort_outputs

from trilobit.errors import DeviceTimeout, ModelError, ProgramError
from trilobit.sw.onnx_import import import_model
from trilobit.sw.reference import ReferenceExecutor
from trilobit.sw.runtime import Session


@pytest.mark.parametrize("config", ["tiny", "small"])
@pytest.mark.parametrize("name", EXACT_MODELS)
def test_session_equals_onnxruntime_on_example_models(name, config):
    feeds, _ = digits_inputs(name, 24)
    ours = Session(model_path(name), config=config, batch=8).run(feeds)
    theirs = ort_outputs(name, feeds)
    assert list(ours) == [o.name for o in onnx.load(model_path(name)).graph.output]
    for o, t in zip(ours.values(), theirs, strict=True):
        assert o.dtype == t.dtype and o.shape == t.shape
        np.testing.assert_array_equal(o, t)


@pytest.mark.parametrize("name", ["mlp_qdq", "mlp_ternary", "cnn_qop", "mlp_dynamic"])
def test_accuracy_on_the_whole_test_set_equals_onnxruntime(name):
    feeds, labels = digits_inputs(name)
    session = Session(model_path(name), config="small", batch=64)
    ours = next(iter(session.run(feeds).values()))
    theirs = ort_outputs(name, feeds)[0]
    np.testing.assert_array_equal(ours, theirs)
    assert (ours.argmax(1) == labels).mean() == (theirs.argmax(1) == labels).mean() > 0.9
    assert session.counters()["useful_macs"] > 0


@pytest.mark.parametrize("name", WEIGHT_ONLY_MODELS)
def test_weight_only_session_equals_reference_and_tracks_onnxruntime(name):
    feeds, _ = digits_inputs(name, 32)
    ours = next(iter(Session(model_path(name), config="tiny", batch=8).run(feeds).values()))
    reference = next(iter(ReferenceExecutor(import_model(model_path(name))).run(feeds).values()))
    np.testing.assert_array_equal(ours, reference)
    theirs = ort_outputs(name, feeds)[0]
    assert np.linalg.norm(ours - theirs) / np.linalg.norm(theirs) <= 0.02
    np.testing.assert_array_equal(ours.argmax(1), theirs.argmax(1))


# -- one-node QLinearMatMul models with random and extreme operands ---------------------------


def qlinear_matmul_model(w: np.ndarray, a_type: int, w_type: int, a_zp: int, w_zp,
                         y_zp: int, a_scale=0.02, w_scale=0.01, y_scale=0.05) -> onnx.ModelProto:
    k, n = w.shape
    np_a = helper.tensor_dtype_to_np_dtype(a_type)
    np_w = helper.tensor_dtype_to_np_dtype(w_type)
    inits = [
        numpy_helper.from_array(np.array(a_scale, np.float32), "a_scale"),
        numpy_helper.from_array(np.array(a_zp, np_a), "a_zp"),
        numpy_helper.from_array(w.astype(np_w), "w"),
        numpy_helper.from_array(np.asarray(w_scale, np.float32), "w_scale"),
        numpy_helper.from_array(np.asarray(w_zp, np_w), "w_zp"),
        numpy_helper.from_array(np.array(y_scale, np.float32), "y_scale"),
        numpy_helper.from_array(np.array(y_zp, np_a), "y_zp"),
    ]
    node = helper.make_node("QLinearMatMul", ["a", "a_scale", "a_zp", "w", "w_scale", "w_zp",
                                              "y_scale", "y_zp"], ["y"], name="qmm")
    graph = helper.make_graph([node], "qmm", [helper.make_tensor_value_info("a", a_type, ["M", k])],
                              [helper.make_tensor_value_info("y", a_type, ["M", n])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    model.ir_version = 10
    return model


def _compare(model: onnx.ModelProto, a: np.ndarray, config: str = "tiny") -> None:
    theirs = ort.InferenceSession(model.SerializeToString()).run(None, {"a": a})[0]
    ours = Session(model, config=config, batch=4).run({"a": a})["y"]
    np.testing.assert_array_equal(ours, theirs)


@pytest.mark.parametrize("signed", [False, True])
def test_random_qlinear_matmul_with_multi_tile_k_and_n_matches_onnxruntime(rng, signed):
    # K and N larger than one tile of the tiny configuration: several K steps and N tiles.
    k, n, m = 300, 70, 11
    a_type = TensorProto.INT8 if signed else TensorProto.UINT8
    lo, hi = (-128, 127) if signed else (0, 255)
    w = rng.integers(-127, 128, (k, n))
    a = rng.integers(lo, hi + 1, (m, k)).astype(np.int8 if signed else np.uint8)
    model = qlinear_matmul_model(w, a_type, TensorProto.INT8, int(rng.integers(lo, hi + 1)), 0,
                                 int(rng.integers(lo, hi + 1)), 0.02, 0.0005, 0.3)
    _compare(model, a)


def test_extreme_activations_and_all_zero_or_unit_weights_match_onnxruntime(rng):
    k, n = 96, 12
    for w in (np.zeros((k, n), int), np.ones((k, n), int), -np.ones((k, n), int),
              rng.choice([-1, 1], (k, n))):
        for fill in (-128, 127):
            a = np.full((5, k), fill, np.int8)
            a[0] = rng.integers(-128, 128, k)
            model = qlinear_matmul_model(w, TensorProto.INT8, TensorProto.INT8, 0, 0, 3,
                                         0.05, 0.05, 0.9)
            _compare(model, a)


def test_per_channel_weight_scales_and_uint8_weights_with_zero_point(rng):
    k, n = 40, 9
    w = rng.integers(0, 256, (k, n))
    model = qlinear_matmul_model(w, TensorProto.UINT8, TensorProto.UINT8, 120, 128, 7,
                                 0.01, rng.uniform(0.001, 0.01, n).astype(np.float32), 0.2)
    _compare(model, rng.integers(0, 256, (6, k)).astype(np.uint8), config="small")


# -- errors -----------------------------------------------------------------------------------


def test_wrong_input_dtype_shape_and_name_name_the_tensor():
    session = Session(model_path("mlp_qdq"), config="tiny")
    with pytest.raises(ModelError, match="pixels.*dtype"):
        session.run({"pixels": np.zeros((2, 64), np.float64)})
    with pytest.raises(ModelError, match="pixels.*shape"):
        session.run({"pixels": np.zeros((2, 63), np.float32)})
    with pytest.raises(ModelError, match="missing input"):
        session.run({"image": np.zeros((2, 64), np.float32)})


def test_malformed_and_float_models_raise_model_errors(tmp_path):
    with pytest.raises(ModelError, match="cannot parse"):
        Session(b"\x08\x01garbage-not-onnx", config="tiny")
    with pytest.raises(ModelError, match="does not exist"):
        Session(str(tmp_path / "missing.onnx"), config="tiny")
    with pytest.raises(ModelError, match="not quantized.*Gemm.*fc1"):
        Session(model_path("mlp_float"), config="tiny")


def test_unsupported_operator_runs_on_the_host_and_the_report_says_so():
    from trilobit.sw.report import report_rows

    session = Session(model_path("cnn_qdq"), config="small", batch=2)
    feeds, _ = digits_inputs("cnn_qdq", 2)
    session.run(feeds)
    rows = {r["node"]: r for r in report_rows(session.program, session)}
    assert rows["pool"]["engine"] == "host" and "MaxPool" in rows["pool"]["reason"]
    assert rows["conv"]["engine"] == "bitserial" and rows["conv"]["cycles"] > 0
    assert 0 < rows["conv"]["utilization"] <= 1


def test_program_round_trip_and_refusals(tmp_path):
    from trilobit.config import preset
    from trilobit.sw.compiler import compile_model
    from trilobit.sw.program import Program

    program = compile_model(model_path("mlp_ternary"), "tiny", batch=4)
    path = tmp_path / "m.tbp"
    program.save(path)
    feeds, _ = digits_inputs("mlp_ternary", 9)
    direct = Session(program, config="tiny").run(feeds)
    loaded = Session(str(path), config="tiny").run(feeds)
    np.testing.assert_array_equal(direct["logits"], loaded["logits"])
    with pytest.raises(ProgramError, match="compiled for"):
        Session(str(path), config="small")
    data = bytearray(path.read_bytes())
    data[200] ^= 0xFF
    with pytest.raises(ProgramError, match="checksum"):
        Program.from_bytes(bytes(data), preset("tiny"))
    with pytest.raises(ProgramError, match="magic"):
        Program.from_bytes(b"XXXX" + bytes(data[4:]))


def test_a_tiny_cycle_budget_times_out():
    feeds, _ = digits_inputs("mlp_qdq", 2)
    with pytest.raises(DeviceTimeout):
        Session(model_path("mlp_qdq"), config="tiny", timeout_cycles=50).run(feeds)


def test_nine_bit_weights_are_split_into_two_int8_halves_exactly(rng):
    # uint8 weights with zero point 20: W - 20 spans -20..235, beyond int8.
    k, n = 70, 13
    w = rng.integers(0, 256, (k, n))
    w[0, 0], w[1, 1] = 255, 0
    model = qlinear_matmul_model(w, TensorProto.UINT8, TensorProto.UINT8, 99, 20, 5,
                                 0.01, 0.002, 0.4)
    session = Session(model, config="tiny", batch=4)
    assert session.program.kernels["qmm"][0].split_k
    a = rng.integers(0, 256, (7, k)).astype(np.uint8)
    theirs = ort.InferenceSession(model.SerializeToString()).run(None, {"a": a})[0]
    np.testing.assert_array_equal(session.run({"a": a})["y"], theirs)


@pytest.mark.parametrize("post_mode", ["host", "dyadic"])
def test_other_post_modes_on_golden(post_mode):
    feeds, _ = digits_inputs("cnn_qdq", 6)
    session = Session(model_path("cnn_qdq"), config="tiny", batch=4, post_mode=post_mode)
    ours = next(iter(session.run(feeds).values()))
    theirs = ort_outputs("cnn_qdq", feeds)[0]
    if post_mode == "host":
        np.testing.assert_array_equal(ours, theirs)
    else:
        # dyadic rounds half up in integers: at most one output step from onnxruntime.
        step = float(session.graph.nodes[-1].scale)
        assert np.abs(ours - theirs).max() <= step
        np.testing.assert_array_equal(ours.argmax(1), theirs.argmax(1))


def test_fp4_e2m1_blocked_weights_run_on_the_bitserial_fp4_encoding(rng):
    """FLOAT4E2M1 weights in blocks of 32 (a per-group floating-point format) map to the
    bit-serial engine's FP4 encoding; onnxruntime lacks this DequantizeLinear, so onnx's
    reference evaluator is the float reference."""
    import ml_dtypes
    from onnx.reference import ReferenceEvaluator

    from trilobit.isa import WeightEncoding
    from trilobit.quant import choose_qparams, quantize_linear
    from trilobit.sw.compiler import compile_model

    k, n = 96, 12
    w = rng.normal(size=(k, n)).astype(np.float32)
    scale, _ = choose_qparams(w, "fp4_e2m1", axis=0, block_size=32)
    codes = quantize_linear(w, scale, None, dtype="fp4_e2m1", axis=0, block_size=32)
    inits = [numpy_helper.from_array(codes.astype(np.uint8).view(ml_dtypes.float4_e2m1fn), "w"),
             numpy_helper.from_array(scale.astype(np.float32), "s")]
    nodes = [helper.make_node("DequantizeLinear", ["w", "s"], ["wf"], axis=0, block_size=32),
             helper.make_node("MatMul", ["x", "wf"], ["y"], name="fc")]
    graph = helper.make_graph(nodes, "fp4", [helper.make_tensor_value_info("x", 1, ["M", k])],
                              [helper.make_tensor_value_info("y", 1, ["M", n])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 23)])
    model.ir_version = 11
    x = rng.normal(size=(5, k)).astype(np.float32)
    program = compile_model(model, "tiny", batch=4)
    assert {kk.wfmt for kk in program.kernels["fc"]} == {int(WeightEncoding.FP4)}
    ours = Session(program, config="tiny").run({"x": x})["y"]
    np.testing.assert_array_equal(
        ours, ReferenceExecutor(import_model(model)).run({"x": x})["y"])
    theirs = ReferenceEvaluator(model).run(None, {"x": x})[0]
    assert np.linalg.norm(ours - theirs) / np.linalg.norm(theirs) <= 0.02


def test_int2_ternary_initializers_route_to_the_table_lookup_engine(rng):
    """QDQ with INT2 weights in {-1, 0, 1} (opset 25). onnxruntime rejects the fused form,
    so onnx's reference evaluator (float matmul, then QuantizeLinear) is the reference:
    equal up to one output unit at rounding ties."""
    from onnx.reference import ReferenceEvaluator

    k, n = 45, 7
    w = rng.integers(-1, 2, (k, n))
    inits = [
        numpy_helper.from_array(np.array(0.05, np.float32), "xs"),
        numpy_helper.from_array(np.array(0, np.int8), "xz"),
        helper.make_tensor("w", TensorProto.INT2, [k, n], w.reshape(-1).tolist()),
        numpy_helper.from_array(np.array(0.5, np.float32), "ws"),
        numpy_helper.from_array(np.array(0.7, np.float32), "ys"),
        numpy_helper.from_array(np.array(3, np.int8), "yz"),
    ]
    nodes = [
        helper.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["x"]),
        helper.make_node("DequantizeLinear", ["w", "ws"], ["wf"]),
        helper.make_node("MatMul", ["x", "wf"], ["y"], name="fc"),
        helper.make_node("QuantizeLinear", ["y", "ys", "yz"], ["yq"]),
    ]
    graph = helper.make_graph(nodes, "t2", [helper.make_tensor_value_info("xq", 3, ["M", k])],
                              [helper.make_tensor_value_info("yq", 3, ["M", n])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 25)])
    model.ir_version = 11
    session = Session(model, config="tiny", batch=4)
    assert session.graph.node_by_name("fc").engine == "tlmm"
    xq = rng.integers(-128, 128, (6, k)).astype(np.int8)
    xq[0] = 127
    ours = session.run({"xq": xq})["yq"].astype(int)
    theirs = ReferenceEvaluator(model).run(None, {"xq": xq})[0].astype(int)
    assert np.abs(ours - theirs).max() <= 1
    assert (ours == theirs).mean() > 0.9


def qlinear_conv_model(w: np.ndarray, a_type: int, a_zp: int, y_zp: int, w_scale, bias,
                       **attrs) -> onnx.ModelProto:
    np_a = helper.tensor_dtype_to_np_dtype(a_type)
    inits = [
        numpy_helper.from_array(np.array(0.03, np.float32), "xs"),
        numpy_helper.from_array(np.array(a_zp, np_a), "xz"),
        numpy_helper.from_array(w.astype(np.int8), "w"),
        numpy_helper.from_array(np.asarray(w_scale, np.float32), "ws"),
        numpy_helper.from_array(np.zeros(np.shape(w_scale), np.int8), "wz"),
        numpy_helper.from_array(np.array(0.2, np.float32), "ys"),
        numpy_helper.from_array(np.array(y_zp, np_a), "yz"),
        numpy_helper.from_array(bias.astype(np.int32), "b"),
    ]
    node = helper.make_node("QLinearConv", ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz", "b"],
                            ["y"], name="conv", **attrs)
    graph = helper.make_graph([node], "qconv",
                              [helper.make_tensor_value_info("x", a_type, ["N", "C", "H", "W"])],
                              [helper.make_tensor_value_info("y", a_type, ["N", "M", "P", "Q"])],
                              inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    model.ir_version = 10
    return model


@pytest.mark.parametrize("geometry", [
    dict(kernel=(3, 3), strides=[1, 1], pads=[1, 1, 1, 1], dilations=[1, 1]),
    dict(kernel=(3, 2), strides=[2, 1], pads=[0, 1, 2, 0], dilations=[1, 1]),
    dict(kernel=(2, 2), strides=[1, 2], pads=[1, 0, 0, 1], dilations=[2, 2]),
    dict(kernel=(1, 1), strides=[1, 1], pads=[0, 0, 0, 0], dilations=[1, 1]),
])
@pytest.mark.parametrize("signed", [False, True])
def test_random_qlinear_conv_geometries_match_onnxruntime(rng, geometry, signed):
    """im2col lowering: strides, asymmetric padding (filled with the zero point), dilation,
    per-channel weight scales and an int32 bias, on multi-tile buffers."""
    c, m, (kh, kw) = 5, 6, geometry["kernel"]
    a_type = TensorProto.INT8 if signed else TensorProto.UINT8
    lo, hi = (-128, 127) if signed else (0, 255)
    w = rng.integers(-128, 128, (m, c, kh, kw))
    model = qlinear_conv_model(w, a_type, int(rng.integers(lo, hi + 1)),
                               int(rng.integers(lo, hi + 1)),
                               rng.uniform(0.001, 0.01, m), rng.integers(-3000, 3000, m),
                               kernel_shape=list(geometry["kernel"]),
                               strides=geometry["strides"], pads=geometry["pads"],
                               dilations=geometry["dilations"])
    x = rng.integers(lo, hi + 1, (2, c, 7, 9)).astype(np.int8 if signed else np.uint8)
    theirs = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})[0]
    session = Session(model, config="tiny", batch=2)
    assert session.graph.node_by_name("conv").engine == "bitserial"
    np.testing.assert_array_equal(session.run({"x": x})["y"], theirs)


def test_grouped_convolution_runs_on_the_host_and_says_why(rng):
    w = rng.integers(-128, 128, (4, 2, 3, 3))
    model = qlinear_conv_model(w, TensorProto.UINT8, 128, 128, 0.005, np.zeros(4),
                               kernel_shape=[3, 3], group=2)
    x = rng.integers(0, 256, (1, 4, 6, 6)).astype(np.uint8)
    theirs = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})[0]
    ours = ReferenceExecutor(import_model(model)).run({"x": x})["y"]
    np.testing.assert_array_equal(ours, theirs)
    with pytest.raises(ModelError, match="group"):
        Session(model, config="tiny")  # the only product is grouped: nothing for the engines


@pytest.mark.parametrize("w_type", [TensorProto.INT4, TensorProto.INT2])
def test_low_bit_weights_with_quantized_activations_use_narrow_encodings(rng, w_type):
    """QDQ with INT4/INT2 weights (per output channel) and uint8 activations: a QMatMul with
    INT3/INT4 bit-serial codes (or ternary when the values allow), equal to onnx's reference
    evaluator up to one output unit (onnxruntime computes such graphs in float too)."""
    from onnx.reference import ReferenceEvaluator

    from trilobit.isa import WeightEncoding

    k, n = 50, 6
    lo = -8 if w_type == TensorProto.INT4 else -2
    w = rng.integers(lo, -lo, (k, n))
    w[0, 0] = lo
    inits = [
        numpy_helper.from_array(np.array(0.02, np.float32), "xs"),
        numpy_helper.from_array(np.array(128, np.uint8), "xz"),
        helper.make_tensor("w", w_type, [k, n], w.reshape(-1).tolist()),
        numpy_helper.from_array(rng.uniform(0.01, 0.05, n).astype(np.float32), "ws"),
        numpy_helper.from_array(np.array(0.1, np.float32), "ys"),
        numpy_helper.from_array(np.array(120, np.uint8), "yz"),
    ]
    nodes = [
        helper.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["x"]),
        helper.make_node("DequantizeLinear", ["w", "ws"], ["wf"], axis=1),
        helper.make_node("MatMul", ["x", "wf"], ["y"], name="fc"),
        helper.make_node("QuantizeLinear", ["y", "ys", "yz"], ["yq"]),
    ]
    graph = helper.make_graph(nodes, "lowbit", [helper.make_tensor_value_info("xq", 2, ["M", k])],
                              [helper.make_tensor_value_info("yq", 2, ["M", n])], inits)
    opset = 25 if w_type == TensorProto.INT2 else 21
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 11 if opset == 25 else 10
    session = Session(model, config="tiny", batch=4)
    wfmt = WeightEncoding(session.program.kernels["fc"][0].wfmt)
    assert wfmt == (WeightEncoding.INT4 if w_type == TensorProto.INT4 else WeightEncoding.INT3)
    xq = rng.integers(0, 256, (5, k)).astype(np.uint8)
    ours = session.run({"xq": xq})["yq"].astype(int)
    theirs = ReferenceEvaluator(model).run(None, {"xq": xq})[0].astype(int)
    assert np.abs(ours - theirs).max() <= 1 and (ours == theirs).mean() > 0.9
    np.testing.assert_array_equal(
        ours, ReferenceExecutor(import_model(model)).run({"xq": xq})["yq"].astype(int))
