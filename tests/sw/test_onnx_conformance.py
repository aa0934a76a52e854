"""onnx's own backend node tests for the quantized operators, run through trilobit.

The cases run by ``onnx.backend.test.BackendTest`` are listed in :data:`GOLDEN_CASES`; the
test ``test_conformance_case_list_is_exactly_what_runs`` fails if onnx adds, renames or drops a
case for these operators, so nothing is skipped silently. The backend is strict: a node that
would fall back to onnxruntime on the host raises instead of passing.
"""

from __future__ import annotations

import functools
import re
import warnings

import onnx.backend.test
import pytest

from trilobit.sw.onnx_backend import StrictTrilobitBackend

#: Every onnx node-test case of the quantized operators, and whether trilobit runs it.
GOLDEN_CASES = [
    "test_convinteger_with_padding",
    "test_convinteger_without_padding",
    "test_dequantizelinear",
    "test_dequantizelinear_axis",
    "test_dequantizelinear_blocked",
    "test_dequantizelinear_e4m3fn",
    "test_dequantizelinear_e4m3fn_float16",
    "test_dequantizelinear_e4m3fn_zero_point",
    "test_dequantizelinear_e5m2",
    "test_dequantizelinear_float4e2m1",
    "test_dequantizelinear_int2",
    "test_dequantizelinear_int4",
    "test_dequantizelinear_uint2",
    "test_dequantizelinear_uint4",
    "test_dynamicquantizelinear",
    "test_dynamicquantizelinear_max_adjusted",
    "test_dynamicquantizelinear_min_adjusted",
    "test_matmulinteger",
    "test_qlinearconv",
    "test_qlinearmatmul_2D_int8_float16",
    "test_qlinearmatmul_2D_int8_float32",
    "test_qlinearmatmul_2D_uint8_float16",
    "test_qlinearmatmul_2D_uint8_float32",
    "test_qlinearmatmul_3D_int8_float16",
    "test_qlinearmatmul_3D_int8_float32",
    "test_qlinearmatmul_3D_uint8_float16",
    "test_qlinearmatmul_3D_uint8_float32",
    "test_quantizelinear",
    "test_quantizelinear_axis",
    "test_quantizelinear_blocked_asymmetric",
    "test_quantizelinear_e4m3fn",
    "test_quantizelinear_e5m2",
    "test_quantizelinear_float4e2m1",
    "test_quantizelinear_int2",
    "test_quantizelinear_int4",
    "test_quantizelinear_uint2",
    "test_quantizelinear_uint4",
]

#: Cases of the same operators that do not run, and why.
EXCLUDED_CASES = {
    "test_dequantizelinear_int16": "16-bit integers are not an accelerator format",
    "test_dequantizelinear_uint16": "16-bit integers are not an accelerator format",
    "test_quantizelinear_int16": "16-bit integers are not an accelerator format",
    "test_quantizelinear_uint16": "16-bit integers are not an accelerator format",
    "test_quantizelinear_blocked_symmetric": "int16 output (16-bit is not an accelerator format)",
    "test_dynamicquantizelinear_expanded": "function expansion into ReduceMin/ReduceMax/...: "
    "not the operator itself",
    "test_dynamicquantizelinear_max_adjusted_expanded": "function expansion",
    "test_dynamicquantizelinear_min_adjusted_expanded": "function expansion",
}

_OPS = ("convinteger", "matmulinteger", "qlinearconv", "qlinearmatmul", "quantizelinear",
        "dequantizelinear", "dynamicquantizelinear")

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    _backend_test = onnx.backend.test.BackendTest(StrictTrilobitBackend, __name__)
for _case in GOLDEN_CASES:
    _backend_test.include(rf"^{re.escape(_case)}_cpu$")
# BackendTest generates a skipped method for every other onnx case: keep only ours, so the
# run shows exactly the cases above and no wall of skips.
_WANTED = {f"{c}_cpu" for c in GOLDEN_CASES}
_TEST_CASES = _backend_test.test_cases  # a property that builds new classes on each access
for _cls in _TEST_CASES.values():
    for _name in [n for n in vars(_cls) if n.startswith("test_") and n not in _WANTED]:
        delattr(_cls, _name)
globals().update({k: c for k, c in _TEST_CASES.items()
                  if any(n.startswith("test_") for n in vars(c))})


@functools.cache
def _node_cases() -> dict:
    from onnx.backend.test.loader import load_model_tests

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {case.name: case for case in load_model_tests(kind="node")}


def _onnx_cases_of_our_ops() -> set[str]:
    names = set(_node_cases())
    return {n for n in names if any(re.fullmatch(rf"test_{op}(_.*)?", n) for op in _OPS)}


def test_conformance_case_list_is_exactly_what_runs():
    """Every onnx case of these operators is either run or excluded with a reason."""
    cases = _onnx_cases_of_our_ops()
    assert cases == set(GOLDEN_CASES) | set(EXCLUDED_CASES)
    collected = {
        name for cls in _TEST_CASES.values() for name in vars(cls)
        if name.startswith("test_")
    }
    assert collected == _WANTED
    print("onnx node cases run on golden:", ", ".join(GOLDEN_CASES))


@pytest.mark.parametrize("case", sorted(EXCLUDED_CASES))
def test_excluded_cases_fail_loudly_not_silently(case):
    """An excluded case is refused with a trilobit error (strict backend), never mis-computed."""
    from trilobit.errors import TrilobitError

    found = _node_cases()[case]
    inputs, _ = found.data_sets[0]
    with pytest.raises(TrilobitError):
        StrictTrilobitBackend.prepare(found.model).run(inputs)
