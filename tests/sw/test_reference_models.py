"""The IR reference executor reproduces onnxruntime on every shipped example model."""

from __future__ import annotations

import numpy as np
import pytest
from sw_models import EXACT_MODELS, WEIGHT_ONLY_MODELS, digits_inputs, model_path, ort_outputs
from trilobit.sw.legalise import legalise
from trilobit.sw.onnx_import import import_model
from trilobit.sw.reference import ReferenceExecutor


def _run(name: str):
    feeds, labels = digits_inputs(name)
    graph = import_model(model_path(name))
    ours = ReferenceExecutor(graph).run(feeds)
    theirs = ort_outputs(name, feeds)
    return graph, list(ours.values()), theirs, labels


@pytest.mark.parametrize("name", EXACT_MODELS)
def test_reference_outputs_equal_onnxruntime_exactly(name):
    graph, ours, theirs, labels = _run(name)
    assert [o.shape for o in ours] == [t.shape for t in theirs]
    assert [o.dtype for o in ours] == [t.dtype for t in theirs]
    for o, t in zip(ours, theirs, strict=True):
        np.testing.assert_array_equal(o, t)
    assert (ours[0].argmax(1) == labels).mean() == (theirs[0].argmax(1) == labels).mean()


@pytest.mark.parametrize("name", EXACT_MODELS)
def test_quantized_models_put_their_products_on_an_engine(name):
    graph = legalise(import_model(model_path(name)))
    engines = {n.engine for n in graph.nodes if n.kind in ("QMatMul", "QConv")}
    assert engines and engines <= {"tlmm", "bitserial"}
    if name == "mlp_ternary":
        assert engines == {"tlmm"}


@pytest.mark.parametrize("name", WEIGHT_ONLY_MODELS)
def test_weight_only_models_are_faithful_to_onnxruntime(name):
    graph, ours, theirs, labels = _run(name)
    assert {n.kind for n in graph.nodes} >= {"WeightOnlyMatMul"}
    o, t = ours[0], theirs[0]
    assert o.shape == t.shape and o.dtype == t.dtype
    relative = np.linalg.norm(o - t) / np.linalg.norm(t)
    assert relative <= 0.02, relative
    np.testing.assert_array_equal(o.argmax(1), t.argmax(1))
