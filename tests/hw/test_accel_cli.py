"""``trilobit sim PROGRAM.tbp``: a compiled model on the RTL, identical to the golden model."""

from pathlib import Path

import pytest

from trilobit.cli import main

MODELS = Path(__file__).parents[2] / "examples" / "models"


@pytest.mark.verilator
def test_sim_runs_a_compiled_model_with_stalls(tmp_path):
    # --waves needs a separate tracing build (about two minutes), so it is not run here.
    model = MODELS / "digits_mlp_qop.onnx"
    program = tmp_path / "mlp.tbp"
    assert main(["compile", str(model), "--config", "small", "-o", str(program)]) == 0
    assert main(["sim", str(program), "--stall", "0.3", "--seed", "3", "--check"]) == 0


def test_sim_rejects_a_missing_program(tmp_path):
    assert main(["sim", str(tmp_path / "absent.tbp")]) != 0
