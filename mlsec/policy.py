"""The policy gate: Rego policies (evaluated in-process by regopy) decide pass, warn or block.

Python computes facts, Rego decides. Facts are the ``mlsec.policy-input/v1`` document built by
:func:`build_input`: findings aggregated per (rule, artifact) with a severity rank and waiver
facts, scanner errors, skips, artifacts, waiver statuses and an optional BOM summary. Stage
settings are ``data.mlsec.config``; the entry point is ``data.mlsec.gate.decision``.

Why these shapes (measured on regopy 1.5.2): input parsing and partial-set rules are
super-linear, so findings are aggregated before evaluation and policies build arrays; one fresh
interpreter per evaluation is faster than reuse on big inputs; compiler errors go to stdout at
the default log level, so the level is set to NONE and errors are mapped to ``file:line``.
Anything that goes wrong (no policy, a compile error, an undefined decision, a crash of the
engine's output parser) is a :class:`PolicyError` — exit 2, never a silent pass.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import os
import re
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlsec import catalog
from mlsec.config import StageConfig
from mlsec.errors import PolicyError
from mlsec.model import Finding, ScanResult, Severity
from mlsec.suppress import Note, WaiverStatus
from mlsec.verdicts import Decision, Suppressed, Verdict, Waived

INPUT_SCHEMA = "mlsec.policy-input/v1"
ENTRYPOINT = "data.mlsec.gate.decision"
MAX_FINGERPRINTS = 1
MAX_MESSAGE = 160
MAX_INPUT_ENTRIES = 50_000
POLICY_FLOOR = Severity.LOW  # findings below this are counted in the summary, not listed

_REGO_V1 = re.compile(r"^\s*import\s+rego\.v1\s*$", re.M)



@dataclass(frozen=True, slots=True)
class PolicySet:
    """The Rego modules and data documents that make up one gate, with a content digest."""

    modules: tuple[tuple[str, str], ...]  # (display name, source)
    data: tuple[tuple[str, str], ...]  # (display name, JSON text)
    digest: str

    def defaults(self) -> tuple[str, str]:
        """(name, JSON text) of the data document holding the stage defaults."""
        for name, text in reversed(self.data):
            if Path(name).name == "data.json":
                return name, text
        raise PolicyError("no data.json with stage settings among the policies")

    @property
    def files(self) -> tuple[str, ...]:
        """Display names of every file, for the decision record."""
        return tuple(n for n, _ in self.modules) + tuple(n for n, _ in self.data)


def default_dir() -> Path:
    """The shipped policies (``policies/``, installed as ``mlsec/_data/policies``)."""
    return catalog.data_dir("policies")


def load(extra: Sequence[Path] = (), *, include_default: bool = True) -> PolicySet:
    """Collect ``*.rego`` and ``data.json`` from the default dir and each ``extra`` dir or file.

    A team file with the same name as a shipped one (``gate.rego``) replaces it; others are
    added. Test cases (``tests/``) are not policies. Every module must use ``import rego.v1``:
    regopy silently gives v0-style rule bodies object semantics.
    """
    sources: dict[str, tuple[str, Path]] = {}
    dirs = ([default_dir()] if include_default else []) + list(extra)
    for root in dirs:
        if not root.exists():
            raise PolicyError(f"{root}: policy path does not exist")
        if root.is_file() and root.suffix not in (".rego", ".json"):
            raise PolicyError(f"{root}: not a policy (.rego) or data (.json) file")
        files = [root] if root.is_file() else sorted(p for p in root.glob("*") if p.is_file())
        for path in files:
            if path.suffix in (".rego", ".json"):
                sources[path.name] = (_display(path, root), path)
    modules: list[tuple[str, str]] = []
    data: list[tuple[str, str]] = []
    for name in sorted(sources):
        display, path = sources[name]
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise PolicyError(f"{display}: cannot read: {exc}") from None
        if path.suffix == ".rego":
            if not _REGO_V1.search(text):
                raise PolicyError(f"{display}:1: missing `import rego.v1` (required: v0 rule bodies are misread)")
            modules.append((display, text))
        else:
            try:
                doc = json.loads(text)
            except ValueError as exc:
                raise PolicyError(f"{display}:{getattr(exc, 'lineno', 1)}: invalid JSON: {exc}") from None
            if not isinstance(doc, dict):
                raise PolicyError(f"{display}:1: a data document must be a JSON object")
            data.append((display, text))
    if not modules:
        raise PolicyError("no Rego policy found: nothing could decide (refusing to pass silently)")
    h = hashlib.sha256()
    for name, text in modules + data:
        h.update(f"{Path(name).name}\0{len(text)}\0".encode())
        h.update(text.encode())
    return PolicySet(tuple(modules), tuple(data), "sha256:" + h.hexdigest())


def check_compiles(policies: PolicySet) -> None:
    """Compile every module once (before a long scan, and before policy tests run)."""
    from regopy import Interpreter, LogLevel, RegoError

    rego = Interpreter()
    rego.log_level = LogLevel.NONE
    with _stdout_to_stderr():
        for name, source in policies.modules:
            try:
                rego.add_module(name, source)
            except RegoError as exc:
                raise PolicyError(_compile_error(str(exc), dict(policies.modules))) from None


@contextlib.contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    """Point fd 1 at stderr while the engine runs: rego-cpp writes ``print()`` output (and,
    at some log levels, diagnostics) straight to fd 1, which would corrupt JSON or SARIF
    written to stdout."""
    sys.stdout.flush()
    try:
        saved = os.dup(1)
    except OSError:  # no fd 1 (embedded use): nothing to protect
        yield
        return
    try:
        os.dup2(2, 1)
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def _display(path: Path, root: Path) -> str:
    if path == root:
        return str(path)
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


# -- facts ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PolicyInput:
    """The input document plus what stays in Python: each finding entry's message, by id."""

    doc: dict[str, Any]
    messages: dict[str, str]


def aggregate(
    findings: Iterable[Finding], prefix: str = "f", floor: Severity = Severity.LOW
) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """One entry per (rule, artifact): worst severity, count, first fingerprints; and messages.

    Entries get ids (``f1``...) that verdicts refer to. INFO findings stay out (they never
    warn or block, and input size is what makes the engine slow); the summary counts them.
    """
    groups: dict[tuple[str, str], dict[str, Any]] = {}
    messages: dict[tuple[str, str], str] = {}
    for f in findings:
        if f.severity < floor:
            continue
        key = (f.rule_id, f.path)
        entry = groups.get(key)
        if entry is None:
            groups[key] = {
                "rule_id": f.rule_id,
                "artifact": f.path,
                "scanner": f.scanner,
                "severity": f.severity.label,
                "rank": int(f.severity),
                "count": 1,
                "fingerprints": [f.fingerprint],
            }
            messages[key] = f.message[:MAX_MESSAGE]
            continue
        entry["count"] += 1
        if len(entry["fingerprints"]) < MAX_FINGERPRINTS:
            entry["fingerprints"].append(f.fingerprint)
        if int(f.severity) > entry["rank"]:
            entry.update(severity=f.severity.label, rank=int(f.severity))
            messages[key] = f.message[:MAX_MESSAGE]
    entries: list[dict[str, Any]] = []
    texts: dict[str, str] = {}
    for i, key in enumerate(sorted(groups), 1):
        entry = groups[key]
        entry["id"] = f"{prefix}{i}"
        texts[entry["id"]] = messages[key]
        entries.append(entry)
    return entries, texts


def _aggregate_suppressed(
    items: Iterable[Suppressed], floor: Severity
) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Like :func:`aggregate`, per (rule, artifact, waiver), with the waiver's facts."""
    by_claim: dict[tuple[str, str], list[Suppressed]] = {}
    for s in items:
        by_claim.setdefault((s.suppression.source, s.suppression.waiver_id), []).append(s)
    out: list[dict[str, Any]] = []
    texts: dict[str, str] = {}
    for n, ((_source, _wid), group) in enumerate(sorted(by_claim.items()), 1):
        sup = group[0].suppression
        waiver = {
            "id": sup.waiver_id,
            "source": sup.source,
            "owner": sup.owner,
            "reason": sup.reason,
            "expires": sup.expires,
            "stages": list(sup.stages),
        }
        entries, msgs = aggregate((s.finding for s in group), prefix=f"s{n}.", floor=floor)
        texts.update(msgs)
        out.extend(entry | {"waiver": waiver} for entry in entries)
    out.sort(key=lambda e: (e["rule_id"], e["artifact"], e["waiver"]["id"]))
    return out, texts


def build_input(
    result: ScanResult,
    *,
    stage: str,
    now: dt.datetime,
    from_stage: str | None = None,
    waivers: Sequence[WaiverStatus] = (),
    notes: Sequence[Note] = (),
    bom: dict[str, Any] | None = None,
    floor: Severity = POLICY_FLOOR,
) -> PolicyInput:
    """The ``mlsec.policy-input/v1`` document (deterministic for a given result and ``now``).

    Findings below ``floor`` are only counted (see :data:`POLICY_FLOOR`; the gate lowers it
    when a stage warns or blocks below it).
    """
    findings, messages = aggregate(result.findings, floor=floor)
    suppressed, more = _aggregate_suppressed(result.suppressed, floor)
    messages.update(more)
    if len(findings) + len(suppressed) > MAX_INPUT_ENTRIES:
        raise PolicyError(
            f"{len(findings) + len(suppressed)} aggregated findings exceed the policy input cap of "
            f"{MAX_INPUT_ENTRIES}; narrow the scan (--exclude) or split it"
        )
    by_severity = {s.label: 0 for s in Severity}
    for f in result.findings:
        by_severity[f.severity.label] += 1
    doc: dict[str, Any] = {
        "schema": INPUT_SCHEMA,
        "stage": stage,
        "from": from_stage,
        "now": now.astimezone(dt.UTC).isoformat(timespec="seconds"),
        "now_ns": int(now.timestamp()) * 1_000_000_000,
        "tool": {"name": "mlsec", "version": result.tool_version},
        "scanners": [{"name": n, "version": v} for n, v in result.scanners],
        "artifacts": [
            {"path": a.path, "kind": str(a.kind), "format": a.format, "sha256": a.sha256, "size": a.size}
            for a in result.artifacts
        ],
        "findings": findings,
        "suppressed": suppressed,
        "errors": [e.to_dict() for e in result.errors],
        "skipped": [s.to_dict() for s in result.skipped],
        "waivers": [w.to_input() for w in waivers],
        "notes": [n.to_input() for n in notes],
        "summary": {
            "findings": len(result.findings),
            "suppressed": len(result.suppressed),
            "artifacts": len(result.artifacts),
            "by_severity": by_severity,
        },
    }
    if bom is not None:
        doc["bom"] = bom
    return PolicyInput(doc, messages)


# -- evaluation ----------------------------------------------------------------------------------


def evaluate(policies: PolicySet, config: StageConfig, pin: PolicyInput) -> Decision:
    """Run the gate on one input document; PolicyError on any engine or policy problem."""
    with _stdout_to_stderr():
        return _evaluate(policies, config, pin)


def _evaluate(policies: PolicySet, config: StageConfig, pin: PolicyInput) -> Decision:
    from regopy import Interpreter, LogLevel, RegoError

    doc = pin.doc
    text = json.dumps(doc, sort_keys=True, ensure_ascii=False, allow_nan=False)
    rego = Interpreter()
    rego.log_level = LogLevel.NONE  # the default level prints compiler errors to fd 1
    rego.strict_built_in_errors = True  # a failing builtin fails the query instead of hiding a rule
    for name, source in policies.modules:
        try:
            rego.add_module(name, source)
        except RegoError as exc:
            raise PolicyError(_compile_error(str(exc), dict(policies.modules))) from None
    config_json = json.dumps({"mlsec": {"config": config.data()}}, sort_keys=True)
    try:
        rego.add_data_json(config_json)
        for name, data in policies.data:
            parsed = json.loads(data)
            if isinstance(parsed.get("mlsec"), dict):
                parsed["mlsec"].pop("config", None)  # stage settings come merged from config.load
            rego.add_data_json(json.dumps(parsed))
        rego.set_input_term(text)
        out = rego.query(ENTRYPOINT)
    except RegoError as exc:
        raise PolicyError(_compile_error(str(exc), dict(policies.modules))) from None
    except ValueError as exc:  # Output() could not parse the engine's answer (an error term)
        raise PolicyError(
            f"policy evaluation failed: the engine's answer is not JSON ({exc}). Causes: an unknown "
            'function, sprintf("... %s ...") on a builtin\'s result, or upper()/lower() on text with '
            "escapes (rego-cpp 1.5.2 bugs; build strings with concat)"
        ) from None
    if not out.ok():
        raise PolicyError(f"policy evaluation failed: {out} (e.g. conflicting rule values in a policy)")
    if len(out) != 1 or not out[0].expressions:
        raise PolicyError(f"{ENTRYPOINT} is undefined for this input (refusing to pass silently)")
    value = out[0].expressions[0]
    digest = "sha256:" + hashlib.sha256(f"{policies.digest}\0{config_json}".encode()).hexdigest()
    return _decision(value, policies, pin, text, digest)


def _decision(value: Any, policies: PolicySet, pin: PolicyInput, text: str, digest: str) -> Decision:
    doc = pin.doc
    entries = {e["id"]: e for e in doc["findings"] + doc["suppressed"] if "id" in e}
    if not isinstance(value, dict) or value.get("decision") not in ("pass", "warn", "block"):
        raise PolicyError(f"{ENTRYPOINT} must be an object with decision pass|warn|block, got {str(value)[:200]}")
    try:
        violations = tuple(sorted((_verdict(v, entries, pin.messages) for v in value.get("violations", [])), key=_order))
        warnings = tuple(sorted((_verdict(v, entries, pin.messages) for v in value.get("warnings", [])), key=_order))
        waived = tuple(sorted((_waived(w, entries) for w in value.get("waived", [])),
                              key=lambda w: (w.rule_id, w.artifact, w.waiver_id)))
    except (KeyError, TypeError, ValueError) as exc:
        raise PolicyError(f"{ENTRYPOINT} returned a malformed entry: {exc}") from None
    outcome = value["decision"]
    if violations and outcome != "block":
        raise PolicyError(f"{ENTRYPOINT} lists violations but decided {outcome!r}")
    return Decision(
        stage=doc["stage"],
        from_stage=doc.get("from"),
        decision=outcome,
        violations=violations,
        warnings=warnings,
        waived=waived,
        errors=tuple(f"{e['path']}: {e['scanner']}: {e['message']}" for e in doc["errors"]),
        policy_digest=digest,  # the policies and the stage settings they ran with
        policy_files=policies.files,
        evaluated_at=doc["now"],
        input_digest="sha256:" + hashlib.sha256(text.encode()).hexdigest(),
    )


def _waived(w: dict[str, Any], entries: dict[str, dict[str, Any]]) -> Waived:
    if "finding" in w:
        e = entries[w["finding"]]
        waiver = e.get("waiver") or {}
        return Waived(e["rule_id"], e["artifact"], waiver.get("id", ""), waiver.get("source", ""), int(e["count"]),
                      waiver.get("expires", ""))
    return Waived(w["rule_id"], w["artifact"], w["waiver_id"], w["source"], int(w["count"]), w.get("expires", ""))


def _order(v: Verdict) -> tuple[str, str, str, str]:
    return (v.artifact, v.rule_id, v.policy, v.reason)


def _verdict(v: dict[str, Any], entries: dict[str, dict[str, Any]], messages: dict[str, str]) -> Verdict:
    """A verdict from the policy; one that names a finding entry gets its sentence written here."""
    if "finding" in v:
        e = entries[v["finding"]]
        message = messages.get(e["id"]) or e.get("message", "")
        note = f" ({v['note']})" if v.get("note") else ""
        reason = f"{e['rule_id']}: {e['count']} {e['severity']} finding(s) in {e['artifact']}: {message}{note}"
        return Verdict(e["rule_id"], e["artifact"], reason, str(v.get("policy", "")), e["severity"], int(e["count"]))
    return Verdict(
        rule_id=str(v["rule_id"]),
        artifact=str(v.get("artifact", "")),
        reason=str(v["reason"]),
        policy=str(v.get("policy", "")),
        severity=str(v.get("severity", "")),
        count=int(v.get("count", 1)),
    )


_ERROR = re.compile(r"\(error (\d+):")
_MSG = re.compile(r"\(errormsg (\d+):")


def _compile_error(raw: str, sources: dict[str, str]) -> str:
    """Turn rego-cpp's s-expression errors into ``file:line:col: message`` lines."""
    lines: list[str] = []
    pos = 0
    while (m := _ERROR.search(raw, pos)) is not None:
        n = int(m.group(1))
        name = raw[m.end() : m.end() + n]
        rest = raw[m.end() + n :]
        loc = re.match(r"\|(\d+)\|(\d+)", rest)
        msg_m = _MSG.search(raw, m.end() + n)
        message = raw[msg_m.end() : msg_m.end() + int(msg_m.group(1))] if msg_m else "policy error"
        where = name
        if loc and name in sources:
            offset = int(loc.group(1))  # rego-cpp counts bytes of UTF-8
            before = sources[name].encode()[:offset].decode("utf-8", "ignore")
            where = f"{name}:{before.count(chr(10)) + 1}:{len(before) - (before.rfind(chr(10)) + 1) + 1}"
        elif name:
            where = f"{name}:?"
        line = f"{where}: {message}"
        if line not in lines:
            lines.append(line)
        pos = m.end() + n
    if not lines:
        return f"policy error: {raw.strip()[:500]}"
    return "\n".join(lines)
