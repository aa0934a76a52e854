"""``trilobit generate tlmm``: Verilog, manifest, and clear errors for bad parameters."""

from __future__ import annotations

import json

import pytest

from trilobit.cli import main
from trilobit.hw.tlmm import TlmmParams


def test_generate_writes_verilog_and_manifest(tmp_path, capsys):
    assert main(["generate", "tlmm", "--G", "3", "--rows", "16", "--units", "4",
                 "-o", str(tmp_path)]) == 0
    verilog = (tmp_path / "tlmm.v").read_text()
    assert "module tlmm(" in verilog
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["parameters"]["group_size"] == 3
    assert manifest["derived"]["table_entries"] == 14
    assert manifest["derived"]["ternary_macs_per_cycle"] == 3 * 16 * 4
    ports = {port["name"]: port for port in manifest["ports"]}
    assert ports["weights"]["payload_bits"] == 16 * 4 * (4 + 1)
    assert f"input [{ports['weights']['payload_bits'] - 1}:0] weights__payload" in verilog
    assert f"output [{ports['out']['payload_bits'] - 1}:0] out__payload" in verilog
    # K = N = 8196 (max_k 8192 rounded to whole beats of 12): 683 beats x 513 row blocks + 4
    assert manifest["cycles_per_gemv"]["ternary"] == 683 * 513 + 4
    assert manifest["cycles_per_gemv"]["int4"] == 4 * 683 * 513 + 4


def test_generate_baseline_has_the_same_streams(tmp_path):
    assert main(["generate", "tlmm", "--G", "2", "--rows", "2", "--units", "1", "--baseline",
                 "--out", str(tmp_path)]) == 0
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["engine"] == "tlmm_baseline"
    assert [port["name"] for port in manifest["ports"]] == ["cmd", "act", "weights", "out"]


def test_generate_lutram_engine_counts_row_tiles(tmp_path):
    assert main(["generate", "tlmm", "--G", "3", "--rows", "4", "--units", "4",
                 "--tables", "lutram", "--row-slots", "15", "-o", str(tmp_path)]) == 0
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["engine"] == "tlmm_lutram"
    assert "module tlmm(" in (tmp_path / "tlmm.v").read_text()
    # K = N = 8196 (max_k 8192 in beats of 12): 683 beats x ceil(8196 / 60) tiles x 15 slots
    assert manifest["cycles_per_gemv"]["ternary"] == 683 * 137 * 15


@pytest.mark.parametrize(
    "argv, message",
    [(["--G", "5"], "group_size (G) must be one of (2, 3, 4), got 5"),
     (["--tables", "lutram", "--row-slots", "40"], "row_slots must be in 1..16, got 40"),
     (["--tables", "lutram", "--baseline"], "--baseline and --tables lutram exclude"),
     (["--rows", "0"], "rows must be an integer >= 1, got 0"),
     (["--act-bits", "1"], "act_bits must be in 4..16, got 1"),
     (["--max-planes", "9"], "max_planes must be in 1..4, got 9")],
)
def test_generate_rejects_bad_parameters_naming_them(argv, message, tmp_path, capsys):
    assert main(["generate", "tlmm", *argv, "-o", str(tmp_path)]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "tlmm.v").exists()


def test_params_default_is_the_documented_engine():
    assert TlmmParams().macs_per_cycle == 192
