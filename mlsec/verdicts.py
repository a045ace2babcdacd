"""Types of the suppression and policy stages: why a finding was suppressed, and the gate's
decision with its reasons. Frozen like the core types in :mod:`mlsec.model`, apart from them
so that a scan that suppresses nothing and decides nothing never builds these classes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlsec.model import Finding


@dataclass(frozen=True, slots=True)
class Suppression:
    """Why a finding was suppressed: a waiver from the waivers file or an inline comment."""

    source: str  # "waiver" | "inline"
    waiver_id: str
    reason: str
    owner: str = ""
    expires: str = ""  # ISO date; "" for inline comments
    stages: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "source": self.source,
            "waiver_id": self.waiver_id,
            "reason": self.reason,
            "owner": self.owner,
            "expires": self.expires,
            "stages": list(self.stages),
        }


@dataclass(frozen=True, slots=True)
class Suppressed:
    """A finding taken out of the gate by a waiver; still reported, and visible to the policy."""

    finding: Finding
    suppression: Suppression

    def to_dict(self) -> dict[str, Any]:
        """JSON form: the finding plus its suppression."""
        return self.finding.to_dict() | {"suppression": self.suppression.to_dict()}


@dataclass(frozen=True, slots=True)
class Verdict:
    """One reason in a policy decision: a violation (blocks) or a warning (does not)."""

    rule_id: str
    artifact: str
    reason: str
    policy: str
    severity: str = ""
    count: int = 1

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "rule_id": self.rule_id,
            "artifact": self.artifact,
            "severity": self.severity,
            "count": self.count,
            "policy": self.policy,
            "reason": self.reason,
        }


@dataclass(frozen=True, slots=True)
class Waived:
    """Findings a waiver or inline ignore took out of the decision, accepted by the policy."""

    rule_id: str
    artifact: str
    waiver_id: str
    source: str
    count: int
    expires: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "rule_id": self.rule_id,
            "artifact": self.artifact,
            "waiver_id": self.waiver_id,
            "source": self.source,
            "count": self.count,
            "expires": self.expires,
        }


@dataclass(frozen=True, slots=True)
class Decision:
    """The policy's answer for one stage: pass, warn or block, and every reason for it."""

    stage: str
    decision: str  # "pass" | "warn" | "block"
    violations: tuple[Verdict, ...]
    warnings: tuple[Verdict, ...]
    waived: tuple[Waived, ...]
    errors: tuple[str, ...]
    policy_digest: str
    policy_files: tuple[str, ...]
    evaluated_at: str
    from_stage: str | None = None
    input_digest: str = ""

    @property
    def allow(self) -> bool:
        """True unless the policy blocked."""
        return self.decision != "block"

    def to_dict(self) -> dict[str, Any]:
        """JSON form (``mlsec.policy-decision/v1``)."""
        return {
            "schema": "mlsec.policy-decision/v1",
            "stage": self.stage,
            "from": self.from_stage,
            "decision": self.decision,
            "allow": self.allow,
            "violations": [v.to_dict() for v in self.violations],
            "warnings": [v.to_dict() for v in self.warnings],
            "waived": [w.to_dict() for w in self.waived],
            "errors": list(self.errors),
            "policy": {"digest": self.policy_digest, "files": list(self.policy_files)},
            "input_digest": self.input_digest,
            "evaluated_at": self.evaluated_at,
        }
