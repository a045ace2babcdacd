"""Decision time for 100,000 raw findings over 2,000 artifacts (issue target: under 2 s).

Builds a synthetic ScanResult (each artifact gets its findings from ``--rules-per-artifact``
rules drawn from a pool of real rule ids of every severity; one finding in forty is a critical
import), 50 path waivers, and times the
gate end to end as the CLI runs it after a scan: suppression, aggregation into the policy
input, and the regopy evaluation of the shipped policies. Run from the repository root:

    .venv/bin/python benchmarks/policy_scale.py [--findings N] [--artifacts N]
        [--rules-per-artifact K] [--stage S] [--runs N]

What drives the time is the number of (rule, artifact) pairs after aggregation, not the number
of raw findings: the engine's input parsing and iteration cost grows a little faster than
linearly with it (see policies/README.md).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import random
import resource
import time
from pathlib import Path

from mlsec import config, gate, model, policy, suppress

RULES = [
    ("MLSEC-PICKLE-003", model.Severity.MEDIUM),
    ("MLSEC-PICKLE-007", model.Severity.LOW),
    ("MLSEC-PICKLE-010", model.Severity.INFO),
    ("MLSEC-TORCH-002", model.Severity.LOW),
    ("MLSEC-ARCHIVE-005", model.Severity.MEDIUM),
    ("MLSEC-PICKLE-002", model.Severity.HIGH),
    ("MLSEC-PICKLE-005", model.Severity.MEDIUM),
    ("MLSEC-ARCHIVE-002", model.Severity.MEDIUM),
    ("MLSEC-NUMPY-001", model.Severity.MEDIUM),
    ("MLSEC-PICKLE-009", model.Severity.MEDIUM),
    ("MLSEC-SCAN-001", model.Severity.MEDIUM),
    ("MLSEC-PICKLE-006", model.Severity.HIGH),
]


def synth(findings: int, artifacts: int, rules_per_artifact: int = 3, seed: int = 7) -> model.ScanResult:
    rnd = random.Random(seed)
    arts = [
        model.Artifact(f"models/m{i:05d}.pkl", model.ArtifactKind.MODEL, "pickle", 1000 + i, f"{i:064x}")
        for i in range(artifacts)
    ]
    pools = [rnd.sample(RULES, rules_per_artifact) for _ in arts]
    out: list[model.Finding] = []
    for n in range(findings):
        art = arts[n % artifacts]
        pool = pools[n % artifacts]
        rule, sev = pool[rnd.randrange(len(pool))] if n % 40 else ("MLSEC-PICKLE-001", model.Severity.CRITICAL)
        out.append(model.Finding(rule, sev, f"synthetic finding {n}", art.path, "mlsec-models",
                                 model.Location(offset=n), key=f"k{n}"))
    return model.ScanResult("bench", tuple(arts), tuple(sorted(out, key=model.Finding.sort_key)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--findings", type=int, default=100_000)
    ap.add_argument("--artifacts", type=int, default=2_000)
    ap.add_argument("--rules-per-artifact", type=int, default=3)
    ap.add_argument("--stage", default="production")
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    result = synth(args.findings, args.artifacts, args.rules_per_artifact)
    waivers = tuple(
        suppress.Waiver(f"W-{i}", ("MLSEC-PICKLE-002",), (f"models/m{i:05d}.pkl",), (), (), 
                        dt.datetime(2030, 1, 1, tzinfo=dt.UTC), "2029-12-31", "benchmark", "owner", i)
        for i in range(50)
    )
    policies = policy.load()
    stages = config.load(policies.defaults())
    prepared = gate.Prepared(args.stage, None, policies, stages, waivers, None, dt.datetime(2026, 11, 29, tzinfo=dt.UTC))
    times = []
    for _ in range(args.runs):
        t0 = time.perf_counter()
        outcome = suppress.apply(result, waivers, stage=args.stage, now=prepared.now)
        t1 = time.perf_counter()
        pin = policy.build_input(outcome.result, stage=args.stage, now=prepared.now, waivers=outcome.waivers)
        t2 = time.perf_counter()
        decision = policy.evaluate(policies, stages, pin)
        doc = pin.doc
        t3 = time.perf_counter()
        times.append((t3 - t0, t1 - t0, t2 - t1, t3 - t2))
    best = min(times)
    entries = len(doc["findings"]) + len(doc["suppressed"])
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({
        "findings": args.findings, "artifacts": args.artifacts, "stage": args.stage,
        "rules_per_artifact": args.rules_per_artifact,
        "aggregated_entries": entries, "input_bytes": len(json.dumps(doc)),
        "decision": decision.decision, "violations": len(decision.violations), "warnings": len(decision.warnings),
        "waived": len(decision.waived),
        "total_s": round(best[0], 3), "suppress_s": round(best[1], 3), "aggregate_s": round(best[2], 3),
        "evaluate_s": round(best[3], 3), "peak_rss_mb": round(rss, 1),
    }, indent=2))


if __name__ == "__main__":
    main()
