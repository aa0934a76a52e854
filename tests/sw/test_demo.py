"""``trilobit demo`` on a slice of the test set: every model matches onnxruntime."""

from __future__ import annotations

from trilobit.cli import main
from trilobit.sw.demo import DEMO_MODELS, run_models_demo


def test_models_demo_rows_match_onnxruntime():
    rows = run_models_demo("tiny", images=12, batch=4)
    assert [r.model for r in rows] == [m for m, _ in DEMO_MODELS]
    for r in rows:
        assert r.ok, r
        assert r.cycles > 0 and 0 < r.utilization <= 1
        if r.kind == "exact":
            assert r.accuracy == r.ort_accuracy


def test_demo_command_exits_zero(capsys):
    assert main(["demo", "--config", "tiny", "--images", "8", "--batch", "4",
                 "--backend", "golden"]) == 0
    assert "bit-identical" in capsys.readouterr().out
