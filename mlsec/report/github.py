"""GitHub Actions workflow commands: one ``::error``/``::warning``/``::notice`` line per finding.

Printed to a step's stdout, each line becomes an annotation on the file (and line, for code)
in the pull request's diff and the run summary, with no upload step and no code scanning
licence needed — what ``ruff --output-format github`` does for lint. CRITICAL and HIGH are
errors, MEDIUM warnings, LOW and INFO notices; binary artifacts have no line, so the annotation
sits on the file and the byte offset or member is in the message. With a policy decision, its
violations are errors too (they decide the exit code).

Everything that reaches a command is escaped the way the runner unescapes it (``%``, CR and LF
in the message; also ``:`` and ``,`` in properties), so a hostile file name cannot start a
second command (``::add-mask::``, ``::stop-commands::``) or forge a property.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mlsec.model import Finding, ScanResult, Severity

if TYPE_CHECKING:
    from mlsec.verdicts import Decision

_LEVELS = {Severity.CRITICAL: "error", Severity.HIGH: "error", Severity.MEDIUM: "warning",
           Severity.LOW: "notice", Severity.INFO: "notice"}


def _data(text: str) -> str:
    text = text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
    # Other control characters (ESC from a hostile name) are shown, not sent to the log.
    return "".join(ch if ch >= " " or ch == "\t" else f"\\x{ord(ch):02x}" for ch in text)


def _prop(text: str) -> str:
    return _data(text).replace(":", "%3A").replace(",", "%2C")


def _where(f: Finding) -> str:
    loc = f.location
    parts = [f.location.member and f"member {loc.member}", loc.offset is not None and f"offset {loc.offset}",
             loc.pointer and f"at {loc.pointer}"]
    shown = "; ".join(p for p in parts if p)
    return f" ({shown})" if shown else ""


def _command(f: Finding) -> str:
    props = [f"file={_prop(f.path)}"]
    if f.location.line is not None:
        props.append(f"line={f.location.line}")
        if f.location.end_line is not None:
            props.append(f"endLine={f.location.end_line}")
        if f.location.column is not None:
            props.append(f"col={f.location.column}")
    props.append(f"title={_prop(f'mlsec {f.rule_id} ({f.severity.label})')}")
    return f"::{_LEVELS[f.severity]} {','.join(props)}::{_data(f.message + _where(f))}"


def render(result: ScanResult, min_severity: Severity, color: bool = False, decision: Decision | None = None) -> str:
    """Workflow command lines (findings at or above ``min_severity``, then the decision's violations)."""
    lines = [_command(f) for f in result.findings if f.severity >= min_severity]
    lines += [f"::error file={_prop(e.path)},title={_prop('mlsec: scan incomplete')}::{_data(e.scanner + ': ' + e.message)}"
              for e in result.errors]
    if decision is not None:
        title = f"title={_prop(f'mlsec {decision.stage}: {decision.decision}')}"
        for v in decision.violations:
            props = f"file={_prop(v.artifact)},{title}" if v.artifact else title
            lines.append(f"::error {props}::{_data(v.reason)}")
    return "".join(line + "\n" for line in lines)
