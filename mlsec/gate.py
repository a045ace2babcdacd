"""Wiring for the gate: settings → (policies, stage config, waivers) → suppression → decision.

Everything that can be wrong with the configuration (an unknown stage, a broken waivers file, a
policy that does not compile) is loaded and checked by :func:`prepare` *before* the scan runs,
so a typo fails in a second instead of after a long scan. :func:`decide` is then pure: a scan
result in, the suppressed result and the decision out.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlsec import config
from mlsec.model import ScanResult, Severity

if TYPE_CHECKING:
    from mlsec import policy, suppress
    from mlsec.verdicts import Decision

WAIVERS_FILE = Path(".mlsec") / "waivers.yaml"


@dataclass(frozen=True, slots=True)
class Settings:
    """What the user asked for (from the command line or a library caller)."""

    stage: str | None = None
    from_stage: str | None = None
    policy_dirs: tuple[Path, ...] = ()
    waivers: Path | None = None
    config: Path | None = None
    now: dt.datetime | None = None
    start: Path = Path(".")
    baseline: Path | None = None  # a plain scan only: the gate takes accountable waivers


@dataclass(frozen=True, slots=True)
class Prepared:
    """Validated inputs of the gate."""

    stage: str | None
    from_stage: str | None
    policies: policy.PolicySet | None
    stages: config.StageConfig | None
    waivers: tuple[suppress.Waiver, ...]
    waivers_path: Path | None
    now: dt.datetime
    baseline: suppress.Baseline | None = None


def find_upwards(start: Path, rel: Path) -> Path | None:
    """``rel`` in ``start`` or the nearest parent, stopping at the repository root."""
    here = start.resolve()
    if here.is_file():
        here = here.parent
    for folder in (here, *here.parents):
        candidate = folder / rel
        if candidate.is_file():
            return candidate
        if (folder / ".git").exists():
            break
    return None


def prepare(settings: Settings) -> Prepared:
    """Load and validate everything; ConfigError, WaiverError, BaselineError or PolicyError on problems."""
    now = settings.now or dt.datetime.now(dt.UTC)
    waivers_path = settings.waivers or find_upwards(settings.start, WAIVERS_FILE)
    waivers: tuple[suppress.Waiver, ...] = ()
    if waivers_path is not None:
        from mlsec import suppress

        waivers = suppress.load_waivers(waivers_path)
    baseline = None
    if settings.baseline is not None:
        from mlsec import suppress
        from mlsec.errors import BaselineError

        if settings.stage is not None:
            raise BaselineError("--baseline applies to scans without a stage: a gate decision takes waivers "
                                "(with an owner, a reason and an expiry), not a list of old findings")
        baseline = suppress.load_baseline(settings.baseline)
    if settings.stage is None and not settings.policy_dirs:
        return Prepared(None, None, None, None, waivers, waivers_path, now, baseline)
    from mlsec import policy  # the Rego engine is loaded only when a policy runs

    policies = policy.load(settings.policy_dirs)
    policy.check_compiles(policies)
    stages = config.load(policies.defaults(), settings.start, settings.config)
    if waivers_path is not None:
        from mlsec import suppress

        # A waiver naming an unknown stage is a typo, not a no-op; aliases become stage names.
        waivers = suppress.with_resolved_stages(waivers, stages.resolve, waivers_path)
    if settings.stage is None:
        return Prepared(None, None, None, None, waivers, waivers_path, now, baseline)
    stage = stages.resolve(settings.stage)
    from_stage = stages.resolve(settings.from_stage) if settings.from_stage else None
    return Prepared(stage, from_stage, policies, stages, waivers, waivers_path, now)


@dataclass(frozen=True, slots=True)
class BomRequest:
    """How to build the ML-BOM, when one is wanted (``--bom``, ``mlsec bom``) or needed by the stage."""

    root: Path | None = None
    spec_version: str = "1.6"
    reproducible: bool = False


def needs_bom(prepared: Prepared) -> bool:
    """Does the target stage read BOM facts (model cards, licences)?"""
    if prepared.stage is None or prepared.stages is None:
        return False
    settings = prepared.stages.stages[prepared.stage]
    return bool(settings.get("require_model_card") or settings.get("require_license"))


def decide(
    prepared: Prepared, result: ScanResult, bom_request: BomRequest | None = None
) -> tuple[ScanResult, Decision | None, suppress.Outcome | None, dict[str, Any] | None]:
    """Apply waivers, build the ML-BOM when asked or needed, then (with a stage) evaluate the
    policy on the facts, including the BOM summary.

    The suppression outcome is None when there was nothing to decide: a plain scan with no
    findings and no waivers (the common clean re-run, which then loads no suppression code).
    """
    if not result.findings and not prepared.waivers and prepared.stage is None and bom_request is None:
        return result, None, None, None
    from mlsec import suppress

    base = suppress.waivers_base(prepared.waivers_path) if prepared.waivers_path is not None else None
    outcome = suppress.apply(result, prepared.waivers, stage=prepared.stage, now=prepared.now, base=base,
                             baseline=prepared.baseline)
    doc: dict[str, Any] | None = None
    if bom_request is not None or needs_bom(prepared):
        from mlsec import bom as bom_module

        req = bom_request or BomRequest()
        doc = bom_module.build(
            outcome.result, root=req.root, stage=prepared.stage, spec_version=req.spec_version,
            reproducible=req.reproducible, vex={w.id: dict(w.vex) for w in prepared.waivers if w.vex},
        )
    bom = None
    if doc is not None:
        from mlsec import bom as bom_module

        bom = bom_module.summary(doc)
    if prepared.stage is None or prepared.policies is None or prepared.stages is None:
        return outcome.result, None, outcome, doc
    from mlsec import policy

    pin = policy.build_input(
        outcome.result,
        stage=prepared.stage,
        from_stage=prepared.from_stage,
        now=prepared.now,
        waivers=outcome.waivers,
        notes=outcome.notes,
        bom=bom,
        floor=min(policy.POLICY_FLOOR, _lowest_rank(prepared)),
    )
    return outcome.result, policy.evaluate(prepared.policies, prepared.stages, pin), outcome, doc


def _lowest_rank(prepared: Prepared) -> Severity:
    """The lowest severity the target stage acts on (a stage may block or warn at INFO)."""
    assert prepared.stages is not None and prepared.stage is not None
    settings = prepared.stages.stages[prepared.stage]
    return Severity(max(0, min(int(settings.get("block_rank", 5)), int(settings.get("warn_rank", 5)), 4)))


def requires_completeness(prepared: Prepared) -> bool:
    """Does the target stage treat an incomplete scan as a failure (exit 3)?"""
    if prepared.stage is None or prepared.stages is None:
        return True
    return bool(prepared.stages.stages[prepared.stage].get("fail_on_scanner_error", True))


def parse_now(text: str) -> dt.datetime:
    """``--now``: an ISO date or RFC 3339 time (``Z`` allowed); naive means UTC."""
    value = text.strip().replace("Z", "+00:00").replace("z", "+00:00")
    try:
        when = dt.datetime.fromisoformat(value)
    except ValueError:
        raise config.ConfigError(f"--now {text!r} is not an ISO date or RFC 3339 time") from None
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


def policy_dirs(values: Sequence[str]) -> tuple[Path, ...]:
    """``--policy`` values as paths."""
    return tuple(Path(v) for v in values)
