"""The command line: registries, error handling, and the demo's real bit-exact check."""

from __future__ import annotations

import json
import types

import pytest

from trilobit import cli
from trilobit.errors import ConfigError


def fake_engine_module() -> types.ModuleType:
    """An engine module as ``trilobit generate`` expects one."""
    module = types.ModuleType("fake_engine")
    module.__doc__ = "A fake engine that writes one file."

    def add_generate_arguments(parser):
        parser.add_argument("--rows", type=int, required=True)

    def generate_from_args(args):
        if not 1 <= args.rows <= 64:
            raise ConfigError(f"rows must be in 1..64, not {args.rows}\nsecond line")
        (args.out / "fake.v").write_text("module fake; endmodule\n")
        return {"engine": "fake", "rows": args.rows, "files": ["fake.v"]}

    module.add_generate_arguments = add_generate_arguments
    module.generate_from_args = generate_from_args
    return module


@pytest.fixture
def fake_engine(monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "fake_engine", fake_engine_module())
    monkeypatch.setitem(cli.ENGINES, "fake", "fake_engine")


def test_help_lists_every_registered_command(capsys):
    with pytest.raises(SystemExit) as stop:
        cli.main(["--help"])
    assert stop.value.code == 0
    out = capsys.readouterr().out
    for command in cli.COMMANDS:
        assert command in out


def test_generate_dispatches_to_the_engine_and_saves_its_manifest(fake_engine, tmp_path,
                                                                 capsys):
    out_dir = tmp_path / "gen"
    assert cli.main(["generate", "fake", "--rows", "8", "--out", str(out_dir)]) == 0
    manifest = {"engine": "fake", "rows": 8, "files": ["fake.v"]}
    assert json.loads((out_dir / "manifest.json").read_text()) == manifest
    assert json.loads(capsys.readouterr().out) == manifest
    assert (out_dir / "fake.v").is_file()


def test_a_trilobit_error_is_one_red_line_and_exit_code_2(fake_engine, tmp_path, capsys):
    code = cli.main(["generate", "fake", "--rows", "0", "--out", str(tmp_path)])
    assert code == cli.EXIT_ERROR == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines() == ["error: rows must be in 1..64, not 0 (more with "
                                        "--verbose)"]
    assert "Traceback" not in err


def test_unavailable_engine_and_command_explain_instead_of_crashing(monkeypatch, capsys):
    monkeypatch.setitem(cli.ENGINES, "ghost", "trilobit.hw.ghost_generate")
    monkeypatch.setitem(cli.COMMANDS, "haunt", "trilobit.sw.haunt_command")
    assert cli.main(["generate", "ghost"]) == 2
    err = capsys.readouterr().err
    assert "engine 'ghost' is unavailable" in err
    assert "trilobit.hw.ghost_generate does not exist" in err
    assert "Traceback" not in err
    assert cli.main(["haunt"]) == 2
    assert "command 'haunt' is unavailable" in capsys.readouterr().err


def test_demo_rejects_bad_parameters(capsys):
    assert cli.main(["demo", "--vectors", "2"]) == 2
    assert "vectors must be at least 4" in capsys.readouterr().err
    assert cli.main(["demo", "--stall", "1.5"]) == 2
    assert "stall probability" in capsys.readouterr().err


@pytest.mark.verilator
def test_demo_checks_the_engine_against_numpy(capsys):
    assert cli.main(["demo", "--vectors", "40", "--max-length", "300", "--seed", "7"]) == 0
    out = capsys.readouterr().out
    assert "all 40 results equal numpy's, bit for bit" in out
