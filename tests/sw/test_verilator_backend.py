"""The same compiled programs on the accelerator RTL (Verilator): bit-exact with onnxruntime.

A representative subset (build once per configuration, cached by the Verilog hash): the
digits models in each quantized form on ``tiny``, onnx's own node tests for the matrix and
convolution operators, and a program with random bus stalls.
"""

from __future__ import annotations

import re
import warnings

import numpy as np
import onnx.backend.test
import pytest
from sw_models import digits_inputs, model_path, ort_outputs

from trilobit.sw.onnx_backend import VerilatorTrilobitBackend
from trilobit.sw.runtime import Session

pytestmark = pytest.mark.verilator

#: Models run on the RTL: QDQ per tensor, QOperator with QLinearMatMul/QLinearAdd, dynamic,
#: ternary (table-lookup engine), QOperator CNN (QLinearConv lowered by im2col), INT4
#: weight-only.
VERILATOR_MODELS = ["mlp_qdq", "mlp_qop_matmul", "mlp_dynamic", "mlp_ternary", "cnn_qop",
                    "mlp_matmulnbits"]


@pytest.mark.parametrize("name", VERILATOR_MODELS)
def test_models_on_the_rtl_equal_onnxruntime(name):
    feeds, labels = digits_inputs(name, 12)
    session = Session(model_path(name), config="tiny", backend="verilator", batch=4)
    ours = next(iter(session.run(feeds).values()))
    theirs = ort_outputs(name, feeds)[0]
    if name == "mlp_matmulnbits":
        golden = Session(model_path(name), config="tiny", batch=4).run(feeds)
        np.testing.assert_array_equal(ours, next(iter(golden.values())))
        np.testing.assert_array_equal(ours.argmax(1), theirs.argmax(1))
    else:
        np.testing.assert_array_equal(ours, theirs)
    counters = session.counters()
    assert counters["cycles"] > 0 and 0 < counters["utilization"] <= 1


@pytest.mark.parametrize("post_mode", ["host", "dyadic"])
def test_other_post_modes_on_the_rtl(post_mode):
    feeds, _ = digits_inputs("mlp_qdq", 6)
    session = Session(model_path("mlp_qdq"), config="tiny", backend="verilator", batch=4,
                      post_mode=post_mode)
    golden = Session(model_path("mlp_qdq"), config="tiny", batch=4, post_mode=post_mode)
    np.testing.assert_array_equal(session.run(feeds)["logits"], golden.run(feeds)["logits"])


def test_rtl_with_random_bus_stalls_gives_the_same_outputs():
    feeds, _ = digits_inputs("mlp_ternary", 6)
    session = Session(model_path("mlp_ternary"), config="tiny", backend="verilator", batch=4)
    session.backend.stall_prob = 0.3
    stalled = session.run(feeds)["logits"]
    np.testing.assert_array_equal(stalled, ort_outputs("mlp_ternary", feeds)[0])


#: onnx node-test cases run on the RTL (the engine operators; Quantize/DequantizeLinear alone
#: have no GEMM and run on golden only).
VERILATOR_CASES = [
    "test_matmulinteger", "test_qlinearconv", "test_convinteger_with_padding",
    "test_convinteger_without_padding", "test_qlinearmatmul_2D_uint8_float32",
    "test_qlinearmatmul_2D_int8_float32", "test_qlinearmatmul_2D_uint8_float16",
    "test_qlinearmatmul_2D_int8_float16", "test_qlinearmatmul_3D_uint8_float32",
    "test_qlinearmatmul_3D_int8_float32",
]

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    _backend_test = onnx.backend.test.BackendTest(VerilatorTrilobitBackend, __name__)
for _case in VERILATOR_CASES:
    _backend_test.include(rf"^{re.escape(_case)}_cpu$")
_WANTED = {f"{c}_cpu" for c in VERILATOR_CASES}
_TEST_CASES = _backend_test.test_cases
for _cls in _TEST_CASES.values():
    for _name in [n for n in vars(_cls) if n.startswith("test_") and n not in _WANTED]:
        delattr(_cls, _name)
    for _name in [n for n in vars(_cls) if n.startswith("test_")]:
        setattr(_cls, _name, pytest.mark.verilator(getattr(_cls, _name)))
globals().update({f"Verilator{k}": c for k, c in _TEST_CASES.items()
                  if any(n.startswith("test_") for n in vars(c))})


def test_verilator_case_list_is_what_runs():
    collected = {n for c in _TEST_CASES.values() for n in vars(c) if n.startswith("test_")}
    assert collected == _WANTED
