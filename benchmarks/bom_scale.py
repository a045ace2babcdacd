"""ML-BOM at scale: build, render and validate a BOM with 2,000 components and 10,000 vulnerabilities.

The scan result is synthesized (the dependency scanner that will produce advisories does not
exist yet), in the shape the scanners will produce (see the contract in ``mlsec/bom.py``):

* components: ``--libraries`` packages from two manifests, ``--models`` pickle models (half with
  a ``model.license`` fact) and ``--datasets`` CSV datasets with sensitive-data, classification
  and owner facts;
* vulnerabilities: ``--vulns`` entries in all, one per model from four grouped pickle findings
  each, the rest ``MLSEC-DEP-001`` advisories spread over the libraries (with aliases, a CVSS
  vector and fixed versions); every tenth advisory is waived, half of those with a VEX statement.

Prints one markdown row per phase (wall seconds) and the process's peak RSS, checks that the
BOM validates, and writes the numbers to ``benchmarks/out/bom_scale.json``. ``--stock`` also
times the library's unmodified ``JsonStrictValidator`` on the same text, to show the quadratic
``uniqueItems`` path the fast validator avoids; at full size that takes minutes, so use it with
smaller ``--libraries``/``--vulns``.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import time
from pathlib import Path
from typing import Any

from mlsec import bom
from mlsec.model import (
    Artifact,
    ArtifactKind,
    Fact,
    Finding,
    Location,
    Package,
    ScanResult,
    Severity,
    Suppressed,
    Suppression,
)

SHA = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
VECTOR = "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"


def synthesize(libraries: int, models: int, datasets: int, vulns: int) -> tuple[ScanResult, dict[str, dict[str, str]]]:
    """A scan result of the requested size, and VEX statements for half of the waivers."""
    packages = tuple(
        Package(name=f"lib-{i:05d}", version=f"1.{i % 7}.{i % 3}", path=("requirements.txt", "poetry.lock")[i % 2])
        for i in range(libraries)
    )
    artifacts = [Artifact(f"models/model_{i:04d}.pkl", ArtifactKind.MODEL, "pickle", 4096 + i, SHA) for i in range(models)]
    artifacts += [Artifact(f"data/set_{i:04d}.csv", ArtifactKind.DATASET, "text", 10_000 + i, SHA) for i in range(datasets)]
    facts = [Fact(f"models/model_{i:04d}.pkl", "model.license", "apache-2.0", "bench") for i in range(0, models, 2)]
    for i in range(datasets):
        path = f"data/set_{i:04d}.csv"
        facts += [Fact(path, "dataset.sensitive_kinds", "email,phone", "bench"),
                  Fact(path, "dataset.classification", "confidential", "bench"),
                  Fact(path, "dataset.owner", "data-office@example.com", "bench"),
                  Fact(path, "dataset.rows", "100000", "bench")]
    findings: list[Finding] = []
    for i in range(models):
        for j in range(4):
            findings.append(Finding("MLSEC-PICKLE-001", Severity.CRITICAL, f"imports posix.system #{j}",
                                    f"models/model_{i:04d}.pkl", "mlsec-models", Location(offset=10 * j), key=f"g{j}"))
    suppressed: list[Suppressed] = []
    vex: dict[str, dict[str, str]] = {}
    for i in range(max(0, vulns - models)):
        p = packages[i % libraries]
        f = Finding(
            "MLSEC-DEP-001", Severity.HIGH, f"{p.name} {p.version} has a known vulnerability PYSEC-2099-{i}",
            p.path, "deps-bench", key=f"PYSEC-2099-{i}",
            evidence=(("advisory", f"PYSEC-2099-{i}"), ("aliases", f"CVE-2099-{i},GHSA-bench-{i:05d}"),
                      ("cvss", VECTOR), ("fixed", f"9.{i % 5}.0"), ("package", p.name), ("purl", p.purl),
                      ("severity", "HIGH"), ("version", p.version)),
        )
        if i % 10:
            findings.append(f)
            continue
        wid = f"W-{i:05d}"
        suppressed.append(Suppressed(f, Suppression("waiver", wid, "not reachable from our code", "sec@example.com",
                                                    "2099-12-31", ("dev", "staging"))))
        if i % 20 == 0:
            vex[wid] = {"state": "not_affected", "justification": "code_not_reachable"}
    result = ScanResult(
        tool_version="bench",
        artifacts=tuple(sorted(artifacts, key=lambda a: a.path)),
        findings=tuple(sorted(findings, key=Finding.sort_key)),
        scanners=(("deps-bench", "0"), ("mlsec-models", "0")),
        packages=packages,
        facts=tuple(facts),
        suppressed=tuple(suppressed),
    )
    return result, vex


def _timed(fn: Any, *args: Any, **kwargs: Any) -> tuple[Any, float]:
    start = time.perf_counter()
    value = fn(*args, **kwargs)
    return value, time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--libraries", type=int, default=1700)
    parser.add_argument("--models", type=int, default=250)
    parser.add_argument("--datasets", type=int, default=50)
    parser.add_argument("--vulns", type=int, default=10_000)
    parser.add_argument("--spec", default="1.6", choices=sorted(bom.SPEC_VERSIONS))
    parser.add_argument("--stock", action="store_true", help="also time the library's unmodified validator")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "out" / "bom_scale.json")
    args = parser.parse_args()

    result, vex = synthesize(args.libraries, args.models, args.datasets, args.vulns)
    _, t_import = _timed(bom._validator, args.spec)  # one-off: schema + format-checker imports
    doc, t_build = _timed(bom.build, result, spec_version=args.spec, reproducible=True, vex=vex,
                          project_name="bench")
    text, t_render = _timed(bom.render, doc)
    errors, t_validate = _timed(bom.validate, doc, args.spec)
    counts = bom.summary(doc)["counts"]
    rows = [("build (inventory, library objects, serialize, inject)", t_build),
            ("render (sorted JSON text)", t_render),
            ("validate (strict schema, linear uniqueItems, refs)", t_validate)]
    if args.stock:
        from cyclonedx.validation.json import JsonStrictValidator

        stock = JsonStrictValidator(bom.SPEC_VERSIONS[args.spec][0])
        stock_error, t_stock = _timed(stock.validate_str, text)
        rows.append(("library JsonStrictValidator, unmodified (for comparison)", t_stock))
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    print(f"components {counts['components']} (models {counts['models']}, datasets {counts['datasets']}, "
          f"libraries {counts['libraries']}), vulnerabilities {counts['vulnerabilities']} "
          f"({counts['vulnerabilities_with_analysis']} with VEX analysis), {len(text):,} bytes, spec {args.spec}")
    print("\n| phase | seconds |\n|---|---:|")
    for label, seconds in rows:
        print(f"| {label} | {seconds:.2f} |")
    print(f"| **build + render + validate** | **{t_build + t_render + t_validate:.2f}** |")
    print(f"\nfirst validator use (imports, schema load; not in the total): {t_import:.2f} s; "
          f"peak RSS {rss_mb:.0f} MB; validation errors: {len(errors)}")
    for e in errors[:10]:
        print(f"  {e}")

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "schema_version": 1,
        "python": platform.python_version(),
        "counts": counts,
        "bytes": len(text),
        "seconds": {label: round(s, 3) for label, s in rows},
        "first_validator_use_s": round(t_import, 3),
        "peak_rss_mb": round(rss_mb, 1),
        "errors": errors[:50],
    }, indent=2, sort_keys=True) + "\n")
    return 1 if errors or (args.stock and stock_error is not None) else 0


if __name__ == "__main__":
    sys.exit(main())
