"""Markdown summary for ``$GITHUB_STEP_SUMMARY``, merge-request comments and job logs.

GitHub aborts a step summary over 1 MiB, so the text is cut at :data:`LIMIT` bytes on a line
boundary with a notice. File names and messages come from scanned artifacts: every cell is
escaped (pipes, backticks, HTML) so a hostile file name cannot rewrite the summary.
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING

from mlsec.model import Finding, ScanResult, Severity

if TYPE_CHECKING:
    from mlsec.verdicts import Decision

LIMIT = 900 * 1024
TOP = 50
_ICON = {"pass": "✅", "warn": "⚠️", "block": "❌"}


def _cell(text: str, width: int = 300) -> str:
    text = "".join(ch if ch.isprintable() else " " for ch in text)  # no terminal escapes in logs
    text = " ".join(text.split())
    if len(text) > width:
        text = text[: width - 1] + "…"
    return html.escape(text, quote=False).replace("|", "\\|").replace("`", "\\`")


def _row(f: Finding) -> str:
    where = f.path + (f":{f.location.line}" if f.location.line is not None else "")
    if f.location.member:
        where += f" ({f.location.member})"
    return f"| {f.severity.label} | `{_cell(f.rule_id)}` | {_cell(where, 120)} | {_cell(f.message)} |"


def render(result: ScanResult, min_severity: Severity, color: bool = False, decision: Decision | None = None) -> str:
    """Decision header, severity counts, the top findings, the rest folded."""
    lines: list[str] = []
    if decision is not None:
        lines.append(f"## {_ICON[decision.decision]} mlsec: {decision.decision.upper()} for `{_cell(decision.stage)}`")
    else:
        worst = result.max_severity()
        lines.append(f"## mlsec scan: {len(result.findings)} findings" + (f" (worst: {worst.label})" if worst else ""))
    lines.append("")
    counts = {s: 0 for s in Severity}
    for f in result.findings:
        counts[f.severity] += 1
    lines.append("| " + " | ".join(s.label for s in reversed(Severity)) + " | suppressed | skipped | errors |")
    lines.append("|" + "---:|" * (len(Severity) + 3))
    lines.append("| " + " | ".join(str(counts[s]) for s in reversed(Severity))
                 + f" | {len(result.suppressed)} | {len(result.skipped)} | {len(result.errors)} |")
    lines.append("")
    if decision is not None and (decision.violations or decision.warnings):
        lines.append("### Policy")
        lines.append("")
        for title, items in (("blocks", decision.violations), ("warns", decision.warnings)):
            lines.extend(f"- **{title}** {_cell(v.reason, 400)}" for v in items[:TOP])
            if len(items) > TOP:
                lines.append(f"- … and {len(items) - TOP} more that {title[:-1]}")
        lines.append("")
    shown = [f for f in result.findings if f.severity >= min_severity]
    shown.sort(key=lambda f: (-int(f.severity), f.path, f.rule_id))
    if shown:
        header = ["| severity | rule | where | message |", "|---|---|---|---|"]
        lines.append(f"### Findings ({len(shown)})")
        lines.append("")
        lines.extend(header)
        lines.extend(_row(f) for f in shown[:TOP])
        if len(shown) > TOP:
            lines.append("")
            lines.append(f"<details><summary>{len(shown) - TOP} more findings</summary>")
            lines.append("")
            lines.extend(header)
            lines.extend(_row(f) for f in shown[TOP:])
            lines.append("")
            lines.append("</details>")
        lines.append("")
    for e in result.errors:
        lines.append(f"- error: {_cell(e.path, 200)} ({_cell(e.scanner)}): {_cell(e.message)}")
    for s in result.skipped:
        lines.append(f"- skipped: {_cell(s.path, 200)}: {_cell(s.reason)}")
    return _truncate("\n".join(lines).rstrip() + "\n")


def _truncate(text: str) -> str:
    data = text.encode()
    if len(data) <= LIMIT:
        return text
    cut = data[:LIMIT].decode("utf-8", "ignore")
    cut = cut[: cut.rfind("\n") + 1]
    return cut + f"\n_Output truncated at {LIMIT // 1024} KiB; see the JSON or SARIF report for everything._\n"
