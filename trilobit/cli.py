"""The ``trilobit`` command line.

Subcommands come from :data:`COMMANDS`, a registry mapping each subcommand to the module
that implements it: ``"name": "package.module"`` (the module's ``register(subparsers)``
is called) or ``"package.module:function"``. ``register`` adds one parser to
``subparsers`` and sets its ``handler`` default to a function ``handler(args) -> int``
(the exit code). A module that cannot be imported still shows up in ``--help``, marked
unavailable, and running it prints why instead of a traceback.

``trilobit generate ENGINE`` dispatches the same way through :data:`ENGINES`: an engine
module provides ``add_generate_arguments(parser)`` and ``generate_from_args(args) -> dict``
(a JSON-serialisable manifest of what it generated). The command adds ``--out DIR``
(``args.out``, a :class:`~pathlib.Path`, created before the call) where the engine writes
its files; the manifest is printed and saved as ``DIR/manifest.json``.

Any :class:`~trilobit.errors.TrilobitError` ends the command with a one-line red message
and exit code 2 (``--verbose`` shows the whole message and the traceback).
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import trilobit
from trilobit.errors import ConfigError, TrilobitError

__all__ = ["COMMANDS", "ENGINES", "build_parser", "main"]

#: Subcommand name -> implementing module (``register(subparsers)``) or ``module:function``.
COMMANDS: dict[str, str] = {
    "info": "trilobit.cli:register_info",
    "demo": "trilobit.sw.demo:register",
    "generate": "trilobit.cli:register_generate",
    "compile": "trilobit.sw.cli:register_compile",
    "run": "trilobit.sw.cli:register_run",
    "quantize-weights": "trilobit.sw.quantize_cli",
    "sim": "trilobit.sim.sim_cli",
    "build": "trilobit.boards.cli",
}

#: Engine name -> module providing ``add_generate_arguments`` and ``generate_from_args``.
ENGINES: dict[str, str] = {
    "tlmm": "trilobit.hw.tlmm_generate",
    "bitserial": "trilobit.hw.bitserial_generate",
}

EXIT_ERROR = 2  # a TrilobitError: bad parameters, missing tool, failed check


class _Unavailable(Exception):
    """A registered module could not be imported; the message says which and why."""


def _import_registered(target: str) -> ModuleType:
    module_name = target.partition(":")[0]
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name is not None and (module_name == error.name
                                       or module_name.startswith(error.name + ".")):
            raise _Unavailable(f"module {module_name} does not exist in this installation") \
                from None
        raise _Unavailable(f"module {module_name} needs {error.name}, which is not installed") \
            from None
    except Exception as error:  # a broken module must not take the whole CLI down
        raise _Unavailable(f"module {module_name} failed to import: "
                           f"{type(error).__name__}: {error}") from None


def _resolve(target: str, default_function: str) -> Callable[..., Any]:
    module = _import_registered(target)
    function_name = target.partition(":")[2] or default_function
    function = getattr(module, function_name, None)
    if function is None:
        raise _Unavailable(f"{target.partition(':')[0]} has no {function_name}()")
    return function


def _unavailable_handler(name: str, reason: str) -> Callable[[argparse.Namespace], int]:
    def handler(args: argparse.Namespace) -> int:
        raise ConfigError(f"{name} is unavailable: {reason}")
    return handler


# --------------------------------------------------------------------------------------
# info


def register_info(subparsers: argparse._SubParsersAction) -> None:
    """``trilobit info``: versions of every tool and whether each one runs."""
    parser = subparsers.add_parser(
        "info", help="show the tools trilobit uses, their versions and whether they run",
        description="Run a small job with every tool (Amaranth, Yosys, nextpnr, Verilator, "
                    "cocotb, ONNX, onnxruntime, the C++ compiler) and show a table. The first "
                    "run compiles YoWASP's WebAssembly (about 40 s). Exit code 1 when a tool "
                    "does not work.")
    parser.set_defaults(handler=_run_info)


def _run_info(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from trilobit.sim import toolchain

    console = Console()
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                  console=console, transient=True) as progress:
        task = progress.add_task("probing tools (first YoWASP run compiles, ~40 s)",
                                 total=len(toolchain.TOOL_NAMES))

        def done(status: toolchain.ToolStatus) -> None:
            progress.update(task, advance=1, description=f"{status.name} checked")

        statuses = toolchain.tool_status(on_done=done)
    table = Table(title=f"trilobit {trilobit.__version__}")
    for column in ("tool", "version", "works", "detail"):
        table.add_column(column)
    for status in statuses:
        table.add_row(status.name, status.version or "-",
                      "[green]yes[/]" if status.works else "[red]no[/]", status.detail,
                      style=None if status.works else "red")
    console.print(table)
    console.print(f"Python {sys.version.split()[0]}; build cache {toolchain.cache_root()}; "
                  f"waves as {toolchain.waves_format().upper()}")
    broken = [status.name for status in statuses if not status.works]
    if broken:
        console.print(f"[red]not working: {', '.join(broken)}[/]")
        return 1
    return 0


# --------------------------------------------------------------------------------------
# generate


def register_generate(subparsers: argparse._SubParsersAction) -> None:
    """``trilobit generate ENGINE ...``: Verilog and a manifest for one engine."""
    parser = subparsers.add_parser(
        "generate", help="generate an engine's Verilog and manifest",
        description="Generate one compute engine. Each engine has its own options: "
                    "`trilobit generate ENGINE --help`.")
    engines = parser.add_subparsers(dest="engine", metavar="ENGINE", required=True)
    for name, module_name in ENGINES.items():
        try:
            add_arguments = _resolve(module_name, "add_generate_arguments")
            generate = _resolve(module_name, "generate_from_args")
        except _Unavailable as missing:
            engine_parser = engines.add_parser(name, help=f"(unavailable: {missing})",
                                               description=f"Unavailable: {missing}.")
            engine_parser.set_defaults(
                handler=_unavailable_handler(f"engine {name!r}", str(missing)))
            continue
        module = sys.modules[module_name]
        summary = (module.__doc__ or name).strip().splitlines()[0]
        engine_parser = engines.add_parser(name, help=summary, description=module.__doc__,
                                           formatter_class=argparse.RawDescriptionHelpFormatter)
        engine_parser.add_argument("--out", type=Path, default=Path("out") / name,
                                   help="folder for the generated files (default: out/ENGINE)")
        add_arguments(engine_parser)
        engine_parser.set_defaults(handler=_generate_handler(generate))


def _generate_handler(generate: Callable[[argparse.Namespace], dict]) \
        -> Callable[[argparse.Namespace], int]:
    def handler(args: argparse.Namespace) -> int:
        args.out.mkdir(parents=True, exist_ok=True)
        manifest = generate(args)
        text = json.dumps(manifest, indent=2, sort_keys=True, default=str)
        (args.out / "manifest.json").write_text(text + "\n")
        print(text)
        return 0
    return handler


# --------------------------------------------------------------------------------------
# main


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every registered subcommand."""
    parser = argparse.ArgumentParser(
        prog="trilobit",
        description="Generate low-bit neural-network accelerators for edge FPGAs, prove them "
                    "bit-exact in simulation, compile quantized ONNX models onto them.")
    parser.add_argument("--version", action="version", version=f"trilobit {trilobit.__version__}")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="on error, show the whole message and the traceback")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, target in COMMANDS.items():
        try:
            register = _resolve(target, "register")
        except _Unavailable as missing:
            unavailable = subparsers.add_parser(name, help=f"(unavailable: {missing})")
            unavailable.set_defaults(handler=_unavailable_handler(f"command {name!r}",
                                                                  str(missing)))
            continue
        register(subparsers)
    return parser


def _print_error(message: str) -> None:
    from rich.console import Console
    from rich.text import Text

    Console(stderr=True, highlight=False).print(Text(f"error: {message}", style="bold red"),
                                               soft_wrap=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (``trilobit`` exits with it)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except TrilobitError as error:
        message = str(error)
        if args.verbose:
            traceback.print_exc()
            _print_error(message)
        else:
            first_line = message.splitlines()[0] if message else type(error).__name__
            more = " (more with --verbose)" if "\n" in message else ""
            _print_error(first_line + more)
        return EXIT_ERROR
    except KeyboardInterrupt:
        _print_error("interrupted")
        return 130
