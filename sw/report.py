"""Compile report: per node, where it runs, how it is tiled, what it costs.

Rows are plain dicts (for tests and JSON); :func:`render_report` prints them with rich.
Before a run only the estimate is known (cycles per run from the golden model's cycle model,
units overlapped); after a run the session's measured cycles, runs and compute-unit
utilization are filled in.
"""

from __future__ import annotations

from trilobit.isa import Engine, WeightEncoding
from trilobit.sw.program import Program

__all__ = ["report_rows", "render_report", "report_text"]


def report_rows(program: Program, session=None) -> list[dict]:
    """One row per IR node, in execution order."""
    stats = session.stats.nodes if session is not None else {}
    rows = []
    for node in program.graph.nodes:
        row = {"node": node.name, "kind": node.kind, "engine": node.engine,
               "reason": node.reason, "tiles": "", "format": "", "est_cycles": None,
               "runs": None, "cycles": None, "utilization": None}
        kernels = program.kernels.get(node.name, [])
        if kernels:
            k = kernels[0]
            row["tiles"] = (f"{k.tm}x{k.tk}x{k.tn} (MxKxN) x {k.k_tiles}k x {k.n_tiles}n"
                            + (f" x {len(kernels)} blocks" if len(kernels) > 1 else ""))
            row["format"] = f"{Engine(k.engine).name}/{WeightEncoding(k.wfmt).name}"
            row["est_cycles"] = sum(kk.est_cycles_per_run for kk in kernels)
        s = stats.get(node.name)
        if s is not None:
            row.update(runs=s.runs, cycles=s.cycles, utilization=s.utilization)
        rows.append(row)
    return rows


def report_text(program: Program, session=None) -> str:
    """The report as plain text (one line per node)."""
    lines = []
    for r in report_rows(program, session):
        measured = ""
        if r["cycles"] is not None:
            measured = f" runs={r['runs']} cycles={r['cycles']} util={r['utilization']:.1%}"
        est = f" est={r['est_cycles']}cyc/run" if r["est_cycles"] is not None else ""
        lines.append(f"{r['node']:<28} {r['kind']:<16} {r['engine']:<9} {r['format']:<18} "
                     f"{r['tiles']}{est}{measured}  [{r['reason']}]")
    return "\n".join(lines)


def render_report(program: Program, session=None, console=None) -> None:
    """Print the report as a rich table."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    table = Table(title=f"trilobit compile report ({program.config.name}, "
                        f"config {program.config_hash[:12]})")
    for col in ("node", "kind", "engine", "format", "tiles", "est cyc/run", "runs",
                "cycles", "util", "why"):
        table.add_column(col, overflow="fold")
    for r in report_rows(program, session):
        table.add_row(
            r["node"], r["kind"], r["engine"], r["format"], r["tiles"],
            "" if r["est_cycles"] is None else str(r["est_cycles"]),
            "" if r["runs"] is None else str(r["runs"]),
            "" if r["cycles"] is None else str(r["cycles"]),
            "" if r["utilization"] is None else f"{r['utilization']:.1%}",
            r["reason"],
        )
    console.print(table)
