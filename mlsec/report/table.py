"""Human report: findings grouped by severity, then skips and errors, then a summary line."""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from mlsec.model import ScanResult, Severity

if TYPE_CHECKING:
    from mlsec.verdicts import Decision

STYLE = {
    Severity.CRITICAL: "bold white on red",
    Severity.HIGH: "bold red",
    Severity.MEDIUM: "yellow",
    Severity.LOW: "cyan",
    Severity.INFO: "dim",
}

_EVIDENCE_KEYS = ("call", "global", "offset", "error", "problem", "entry", "column", "count", "masked_samples")


def render(
    result: ScanResult, min_severity: Severity, color: bool = False, decision: Decision | None = None
) -> str:
    """Render as a rich table (plain text when ``color`` is False), then the decision if any."""
    buf = io.StringIO()
    console = Console(file=buf, force_terminal=color, no_color=not color, width=160, soft_wrap=False)
    shown = [f for f in result.findings if f.severity >= min_severity]
    if shown:
        table = Table(title="mlsec findings", show_lines=False, expand=False)
        table.add_column("Severity", no_wrap=True)
        table.add_column("File", overflow="fold", max_width=40)
        table.add_column("Rule", no_wrap=True)
        table.add_column("Message", overflow="fold", max_width=60)
        table.add_column("Evidence", overflow="fold", max_width=40)
        for f in shown:
            ev = dict(f.evidence)
            evidence = "; ".join(f"{k}={ev[k]}" for k in _EVIDENCE_KEYS if k in ev)
            where = f.path + (f"\n  {f.location.member}" if f.location.member else "")
            # Text(), not str: names and messages come from artifacts and must not be read as markup.
            table.add_row(Text(f.severity.label.upper(), style=STYLE[f.severity]), Text(_printable(where)),
                          Text(f.rule_id), Text(_printable(f.message)), Text(_printable(evidence)))
        console.print(table)
    else:
        console.print(f"No findings at or above {min_severity.label}.")
    # File names and messages come from the scanned artifacts: never let them be read as markup.
    for s in result.skipped:
        console.print(f"[dim]skipped[/dim] {escape(_printable(s.path))}: {escape(_printable(s.reason))}", highlight=False)
    for e in result.errors:
        console.print(f"[bold red]error[/bold red] {escape(_printable(e.path))} ({e.scanner}): {escape(_printable(e.message))}",
                      highlight=False)
    if result.suppressed:
        console.print(f"{len(result.suppressed)} finding(s) suppressed by waivers or inline ignores "
                      "(listed in --format json).", highlight=False)
    counts = {s: 0 for s in Severity}
    for f in result.findings:
        counts[f.severity] += 1
    parts = [f"{counts[s]} {s.label}" for s in reversed(Severity) if counts[s]]
    console.print(
        f"Scanned {len(result.artifacts)} files: {len(result.findings)} findings"
        + (f" ({', '.join(parts)})" if parts else "")
        + f", {len(result.skipped)} skipped, {len(result.errors)} errors.",
        highlight=False,
    )
    if decision is not None:
        _decision(console, decision)
    return buf.getvalue()


def _printable(text: str) -> str:
    """Control characters (terminal escapes) from artifact names or contents shown as \\xNN."""
    return "".join(ch if ch.isprintable() or ch == "\n" else f"\\x{ord(ch):02x}" for ch in text)


_VERDICT_STYLE = {"pass": "bold green", "warn": "bold yellow", "block": "bold white on red"}


def _decision(console: Console, decision: Decision) -> None:
    """Every reason of the policy decision, violations first."""
    move = f"{decision.from_stage} -> {decision.stage}" if decision.from_stage else decision.stage
    console.print(Text.assemble("\nPolicy decision for ", (move, "bold"), ": ",
                                (decision.decision.upper(), _VERDICT_STYLE[decision.decision])))
    for title, items in (("blocks", decision.violations), ("warns", decision.warnings)):
        for v in items:
            console.print(Text.assemble(f"  {title}  ", _printable(v.reason), "  ", (f"[{v.policy}]", "dim")))
    for w in decision.waived:
        until = f" until {w.expires}" if w.expires else ""
        console.print(Text(_printable(f"  waived  {w.rule_id} in {w.artifact} ({w.count}) by {w.waiver_id}{until}")))
    console.print(Text(f"  policy {decision.policy_digest[:19]}... evaluated at {decision.evaluated_at}", style="dim"))
