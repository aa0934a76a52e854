"""``trilobit compile`` and ``trilobit run`` end to end, in process."""

from __future__ import annotations

import numpy as np
from sw_models import digits_inputs, model_path

from trilobit.cli import main


def test_compile_then_run_program_and_compare_with_onnxruntime(tmp_path, capsys):
    program = tmp_path / "mlp.tbp"
    assert main(["compile", str(model_path("mlp_qop")), "--config", "tiny",
                 "-o", str(program)]) == 0
    assert program.stat().st_size > 0
    feeds, _ = digits_inputs("mlp_qop", 5)
    x = tmp_path / "x.npy"
    np.save(x, feeds["pixels"])
    assert main(["run", str(model_path("mlp_qop")), "--input", str(x), "--config", "tiny",
                 "--compare-ort", "--save", str(tmp_path / "y.npz")]) == 0
    out = capsys.readouterr().out
    assert "largest difference from onnxruntime on logits: 0" in out
    assert "utilization" in out and "cycles" in out
    saved = np.load(tmp_path / "y.npz")["logits"]
    assert main(["run", str(program), "--input", str(x), "--config", "tiny",
                 "--save", str(tmp_path / "z.npz")]) == 0
    np.testing.assert_array_equal(np.load(tmp_path / "z.npz")["logits"], saved)


def test_run_refuses_a_program_of_another_config_with_a_clear_error(tmp_path, capsys):
    program = tmp_path / "mlp.tbp"
    assert main(["compile", str(model_path("mlp_qdq")), "--config", "tiny",
                 "-o", str(program)]) == 0
    x = tmp_path / "x.npy"
    np.save(x, digits_inputs("mlp_qdq", 2)[0]["pixels"])
    assert main(["run", str(program), "--input", str(x), "--config", "small"]) == 2
    assert "compiled for" in capsys.readouterr().err


def test_run_with_a_wrong_input_shape_names_the_tensor(tmp_path, capsys):
    x = tmp_path / "x.npy"
    np.save(x, np.zeros((2, 10), np.float32))
    assert main(["run", str(model_path("mlp_qdq")), "--input", str(x), "--config", "tiny"]) == 2
    assert "pixels" in capsys.readouterr().err
