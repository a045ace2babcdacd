"""ML-BOM: real scans and hand-built scan results, checked with the real CycloneDX validator.

The dependency and dataset scanners do not exist yet, so their part of the BOM is tested with
ScanResults built here in the shape the contract in ``mlsec/bom.py`` fixes for them.
"""

from __future__ import annotations

import copy
import itertools
import json
import struct
from pathlib import Path
from typing import Any

import pytest

from mlsec import bom, modelcard
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
from tests.conftest import FIXTURES, SHARED, scan_path

DEMO = FIXTURES / "demo"
HF = FIXTURES / "hf_model"
CONFORMANCE = SHARED / "data" / "cyclonedx"  # Path(repo)/../shared/data/cyclonedx
SHA = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
VECTOR = "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"


# -- helpers -----------------------------------------------------------------------------------


def components(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Top-level components by bom-ref."""
    return {c["bom-ref"]: c for c in doc.get("components", [])}


def props(node: dict[str, Any], name: str) -> list[str]:
    return [p["value"] for p in node.get("properties", []) if p["name"] == name]


def depends_on(doc: dict[str, Any], ref: str) -> list[str]:
    return next(d.get("dependsOn", []) for d in doc["dependencies"] if d["ref"] == ref)


def result(**fields: Any) -> ScanResult:
    base: dict[str, Any] = {"tool_version": "0.1.0", "artifacts": (), "findings": (), "scanners": (("deps-test", "1"),)}
    return ScanResult(**(base | {k: tuple(v) for k, v in fields.items()}))


def advisory(pkg: Package, adv: str = "PYSEC-2024-1", **extra: str) -> Finding:
    evidence = {
        "advisory": adv, "aliases": "CVE-2024-1234,GHSA-abcd-efgh-ijkl", "package": pkg.name,
        "version": pkg.version, "purl": pkg.purl, "fixed": "2.2.0,2.1.9", "cvss": VECTOR, "severity": "HIGH",
    } | extra
    return Finding("MLSEC-DEP-001", Severity.HIGH, f"{pkg.name} {pkg.version} is affected by {adv}", pkg.path,
                   "deps-test", key=adv, evidence=tuple(sorted(evidence.items())))


TORCH = Package("torch", "2.1.0", "requirements.txt")
NUMPY = Package("numpy", "1.26.4", "requirements.txt")


def valid(doc: dict[str, Any], spec: str = "1.6") -> dict[str, Any]:
    """Assert that ``doc`` passes the strict validator and the reference check; return it."""
    assert bom.validate(doc, spec) == []
    return doc


# -- the demo project, scanned for real --------------------------------------------------------


def test_demo_bom_validates_and_has_each_model_with_its_hash() -> None:
    scan = scan_path(DEMO)
    doc = valid(bom.build(scan, root=DEMO))
    comps = components(doc)
    models = {a.path: a for a in scan.artifacts if a.kind == ArtifactKind.MODEL}
    assert len(models) == 3
    for path, artifact in models.items():
        comp = comps[f"model:{path}"]
        assert comp["type"] == "machine-learning-model"
        assert comp["hashes"] == [{"alg": "SHA-256", "content": artifact.sha256}]
        assert props(comp, "mlsec:path") == [path] and props(comp, "mlsec:format") == [artifact.format]
        assert "modelCard" not in comp  # nothing is known about these pickles: no empty card
    assert doc["metadata"]["component"] == {"bom-ref": "project:demo", "name": "demo", "type": "application"}
    # The project depends on its models and on the libraries its requirements.txt declares.
    libraries = sorted(c["bom-ref"] for c in comps.values() if c["type"] == "library")
    assert libraries == ["pkg:pypi/joblib", "pkg:pypi/scikit-learn@1.5.0", "pkg:pypi/torch@2.13.0"]
    assert all(comps[ref]["purl"] == ref for ref in libraries)
    assert sorted(depends_on(doc, "project:demo")) == sorted([*(f"model:{p}" for p in models), *libraries])


def test_demo_pickle_finding_is_a_vulnerability_on_its_model() -> None:
    doc = bom.build(scan_path(DEMO))
    (vuln,) = [v for v in doc["vulnerabilities"] if v["affects"][0]["ref"].startswith("model:")]
    assert vuln["id"] == "MLSEC-PICKLE-001" and vuln["source"] == {"name": "mlsec"}
    assert vuln["affects"] == [{"ref": "model:models/churn_model.pkl"}]  # paths are relative to the scan root
    assert vuln["ratings"][0]["severity"] == "critical" and vuln["cwes"] == [502]
    assert "posix.system" in vuln["detail"] and props(vuln, "mlsec:occurrences") == ["1"]
    assert "analysis" not in vuln


def test_demo_summary_names_models_without_licence_or_card() -> None:
    doc = bom.build(scan_path(DEMO))
    s = bom.summary(doc)
    # The pickle finding, plus the requirements file's supply-chain findings (unpinned joblib, no hashes).
    assert s["counts"]["models"] == 3 and s["counts"]["vulnerabilities"] == len(doc["vulnerabilities"]) >= 2
    assert s["models_without_sha256"] == []
    assert len(s["models_without_license"]) == 3 and s["models_without_license"] == s["models_without_model_card"]
    assert all(m["has_sha256"] and not m["has_license"] for m in s["models"])


# -- Hugging Face-style model directory --------------------------------------------------------


def test_hf_directory_is_one_model_with_card_pedigree_and_dataset_refs() -> None:
    doc = valid(bom.build(scan_path(HF)))
    comps = components(doc)
    models = [c for c in comps.values() if c["type"] == "machine-learning-model"]
    (model,) = models
    assert model["bom-ref"] == "model:." and props(model, "mlsec:path") == ["."]  # the scan root itself
    assert model["name"] == "tiny-bert-imdb"
    assert model["licenses"] == [{"license": {"id": "Apache-2.0"}}]
    params = model["modelCard"]["modelParameters"]
    assert params["modelArchitecture"] == "BertForSequenceClassification"
    assert params["architectureFamily"] == "bert" and params["task"] == "text-classification"
    assert params["datasets"] == [{"ref": "dataset:imdb"}]
    # config.json is "data" to discovery, but inside a model directory it is one of the model's files
    assert [r for r, c in comps.items() if c["type"] == "data"] == ["dataset:imdb"]
    assert comps["dataset:imdb"]["data"] == [{"type": "dataset", "name": "imdb"}]
    assert depends_on(doc, model["bom-ref"]) == ["dataset:imdb"]
    (ancestor,) = model["pedigree"]["ancestors"]
    assert ancestor["name"] == "google-bert/bert-base-uncased"
    assert ancestor["purl"] == "pkg:huggingface/google-bert/bert-base-uncased"
    metrics = model["modelCard"]["quantitativeAnalysis"]["performanceMetrics"]
    assert {"type": "accuracy", "value": "0.5", "slice": "imdb (test)"} in metrics
    assert sorted(model["tags"]) == ["sentiment-analysis", "test-fixture"]
    assert props(model, "mlsec:layout") == ["huggingface-directory"] and props(model, "mlsec:format") == ["safetensors"]


def test_hf_directory_files_are_nested_with_their_own_hashes() -> None:
    scan = scan_path(HF)
    doc = bom.build(scan)
    model = next(c for c in doc["components"] if c["type"] == "machine-learning-model")
    nested = {c["name"]: c for c in model["components"]}
    assert set(nested) == {"config.json", "README.md", "model.safetensors"}
    for a in scan.artifacts:
        comp = nested[Path(a.path).name]
        assert comp["type"] == "file" and comp["bom-ref"] == f"file:{a.path}"
        assert comp["hashes"] == [{"alg": "SHA-256", "content": a.sha256}]
    summary = bom.summary(doc)["models"][0]
    assert summary["has_sha256"] and summary["has_license"] and summary["has_model_card"]
    assert summary["datasets"] == ["dataset:imdb"] and summary["base_models"] == ["google-bert/bert-base-uncased"]
    # The weights format has no scanner yet: the model says so instead of looking clean.
    assert props(model, "mlsec:skipped") == []  # the safetensors weights are read now


def test_hf_fixture_scans_clean_and_is_a_well_formed_safetensors_file() -> None:
    scan = scan_path(HF)
    assert not [f for f in scan.findings if f.severity >= Severity.MEDIUM] and not scan.errors
    data = (HF / "model.safetensors").read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    spans = sorted(tuple(v["data_offsets"]) for k, v in header.items() if k != "__metadata__")
    assert spans[0][0] == 0 and spans[-1][1] == len(data) - 8 - n
    assert all(a[1] == b[0] for a, b in itertools.pairwise(spans))  # contiguous, no gaps or overlaps
    assert len(data) < 4096


def test_broken_model_card_gives_warnings_and_a_valid_bom(tmp_path: Path) -> None:
    model_dir = tmp_path / "hub" / "m"
    model_dir.mkdir(parents=True)
    (model_dir / "config.json").write_text("{not json")
    (model_dir / "README.md").write_text("---\nlicense: !!python/object/apply:os.system ['echo hi']\n---\n# m\n")
    (model_dir / "weights.bin").write_bytes(b"\x00" * 64)
    doc = valid(bom.build(scan_path(tmp_path / "hub")))
    (model,) = [c for c in doc["components"] if c["type"] == "machine-learning-model"]
    warnings = props(model, "mlsec:warning")
    assert any("config.json: invalid JSON" in w for w in warnings)
    assert any("README.md: invalid YAML" in w for w in warnings)
    assert "modelCard" not in model and "licenses" not in model
    assert all(str(tmp_path) not in w for w in warnings)  # no machine paths in the BOM


def test_weights_without_config_or_front_matter_stay_single_file_models(tmp_path: Path) -> None:
    (tmp_path / "README.md").write_text("# just a readme\n")
    (tmp_path / "a.pkl").write_bytes(b"\x80\x04K\x01.")
    (tmp_path / "b.pkl").write_bytes(b"\x80\x04K\x02.")
    doc = valid(bom.build(scan_path(tmp_path)))
    layouts = [props(c, "mlsec:layout") for c in doc["components"] if c["type"] == "machine-learning-model"]
    assert layouts == [["file"], ["file"]]


# -- the shared CycloneDX conformance examples -------------------------------------------------


def _conformance_cases() -> list[Any]:
    files = sorted(CONFORMANCE.glob("*.json")) if CONFORMANCE.is_dir() else []
    if not files:
        return [pytest.param(None, marks=pytest.mark.skip(reason=f"{CONFORMANCE} is absent (shared test data)"))]
    return [pytest.param(f, id=f.name) for f in files]


@pytest.mark.parametrize("path", _conformance_cases())
def test_conformance_example(path: Path) -> None:
    doc = json.loads(path.read_text())
    errors = bom.validate(doc, doc["specVersion"])
    if path.name.startswith("valid-"):
        assert errors == []
    else:
        assert path.name.startswith("invalid-") and errors
    bom.summary(doc)  # plain JSON in, never a crash


def test_conformance_set_has_both_kinds() -> None:
    if not CONFORMANCE.is_dir():
        pytest.skip(f"{CONFORMANCE} is absent (shared test data)")
    names = [p.name for p in CONFORMANCE.glob("*.json")]
    assert any(n.startswith("valid-") for n in names) and any(n.startswith("invalid-") for n in names)
    ml = json.loads((CONFORMANCE / "valid-machine-learning-1.6.json").read_text())
    assert bom.summary(ml)["models"][0]["has_model_card"]


# -- dependencies and their vulnerabilities ----------------------------------------------------


def test_libraries_and_advisories_with_aliases_rating_and_fix() -> None:
    scan = result(packages=[NUMPY, TORCH], findings=[advisory(TORCH)])
    doc = valid(bom.build(scan, project_name="svc"))
    comps = components(doc)
    torch = comps["pkg:pypi/torch@2.1.0"]
    assert torch["type"] == "library" and torch["purl"] == "pkg:pypi/torch@2.1.0" and torch["version"] == "2.1.0"
    assert props(torch, "mlsec:manifest") == ["requirements.txt"]
    assert sorted(depends_on(doc, "project:svc")) == ["pkg:pypi/numpy@1.26.4", "pkg:pypi/torch@2.1.0"]
    (vuln,) = doc["vulnerabilities"]
    assert vuln["id"] == "PYSEC-2024-1" and vuln["source"]["name"] == "OSV"
    assert vuln["affects"] == [{"ref": "pkg:pypi/torch@2.1.0"}]
    assert [(r["id"], r["source"]["name"]) for r in vuln["references"]] == [
        ("CVE-2024-1234", "NVD"), ("GHSA-abcd-efgh-ijkl", "GitHub"),
    ]
    (rating,) = vuln["ratings"]
    assert rating["method"] == "CVSSv31" and rating["severity"] == "high" and "AV:N" in rating["vector"]
    assert vuln["recommendation"] == "Upgrade torch to 2.1.9 or 2.2.0"
    assert props(vuln, "mlsec:fixed") == ["2.1.9, 2.2.0"]
    assert bom.summary(doc)["libraries"] == ["pkg:pypi/numpy@1.26.4", "pkg:pypi/torch@2.1.0"]


def test_advisory_for_an_unlisted_package_still_resolves() -> None:
    ghost = Package("pyyaml", "5.3", "poetry.lock")
    doc = valid(bom.build(result(findings=[advisory(ghost, "GHSA-8q59-q68h-6hv4")])))
    (vuln,) = doc["vulnerabilities"]
    assert vuln["affects"] == [{"ref": "pkg:pypi/pyyaml@5.3"}] and "pkg:pypi/pyyaml@5.3" in components(doc)
    assert vuln["source"] == {"name": "GitHub", "url": "https://github.com/advisories/GHSA-8q59-q68h-6hv4"}


def test_waived_advisory_carries_the_waivers_vex_statement() -> None:
    waiver = Suppression("waiver", "W-7", "torch.load is never called", "ml-platform@example.com",
                         "2027-01-31", ("dev", "staging"))
    scan = result(packages=[TORCH], suppressed=[Suppressed(advisory(TORCH), waiver)])
    vex = {"W-7": {"state": "not_affected", "justification": "code_not_reachable", "response": "will_not_fix, update"}}
    doc = valid(bom.build(scan, vex=vex))
    (vuln,) = doc["vulnerabilities"]
    analysis = vuln["analysis"]
    assert analysis["state"] == "not_affected" and analysis["justification"] == "code_not_reachable"
    assert sorted(analysis["response"]) == ["update", "will_not_fix"]
    assert analysis["detail"].startswith("torch.load is never called (waiver W-7")
    assert "ml-platform@example.com" in analysis["detail"] and "2027-01-31" in analysis["detail"]
    assert props(vuln, "mlsec:waiver") == ["W-7"]
    assert bom.summary(doc)["counts"]["vulnerabilities_with_analysis"] == 1


def test_waiver_without_vex_reads_as_accepted_risk_and_bad_vex_values_are_flagged() -> None:
    model = Artifact("m.pkl", ArtifactKind.MODEL, "pickle", 10, SHA)
    finding = Finding("MLSEC-PICKLE-002", Severity.HIGH, "imports mypkg.Thing", "m.pkl", "mlsec-models", key="g")
    inline = Suppression("inline", "", "reviewed: our own class")
    waiver = Suppression("waiver", "W-1", "legacy model", expires="2027-01-31")
    scan = result(artifacts=[model], packages=[TORCH],
                  suppressed=[Suppressed(finding, inline), Suppressed(advisory(TORCH), waiver)])
    doc = valid(bom.build(scan, vex={"W-1": {"state": "mostly_fine"}}))
    by_id = {v["id"]: v for v in doc["vulnerabilities"]}
    for vuln in by_id.values():
        assert vuln["analysis"]["state"] == "exploitable" and vuln["analysis"]["response"] == ["will_not_fix"]
    assert by_id["MLSEC-PICKLE-002"]["analysis"]["detail"] == "reviewed: our own class (inline)"
    assert any("mostly_fine" in w for w in props(by_id["PYSEC-2024-1"], "mlsec:warning"))


# -- datasets ----------------------------------------------------------------------------------


def test_dataset_with_sensitive_kinds_classification_and_owners() -> None:
    path = "data/customers.csv"
    scan = result(
        artifacts=[Artifact(path, ArtifactKind.DATASET, "text", 2048, SHA)],
        facts=[Fact(path, "dataset.sensitive_kinds", "phone, email", "data"),
               Fact(path, "dataset.sensitive_kinds", "email", "data"),
               Fact(path, "dataset.classification", "confidential", "data"),
               Fact(path, "dataset.owner", "Risk Data Office", "data"),
               Fact(path, "dataset.owner", "dpo@example.com", "data"),
               Fact(path, "dataset.rows", "1200", "data")],
    )
    doc = valid(bom.build(scan, project_name="p"))
    comp = components(doc)[f"data:{path}"]
    assert comp["type"] == "data" and comp["hashes"] == [{"alg": "SHA-256", "content": SHA}]
    (entry,) = comp["data"]
    assert entry["type"] == "dataset" and entry["classification"] == "confidential"
    assert entry["sensitiveData"] == ["email", "phone"]
    assert entry["governance"]["owners"] == [
        {"organization": {"name": "Risk Data Office"}}, {"contact": {"email": "dpo@example.com"}},
    ]
    assert props(comp, "mlsec:dataset:rows") == ["1200"]
    assert depends_on(doc, "project:p") == [f"data:{path}"]
    (summary,) = bom.summary(doc)["datasets"]
    assert summary["has_owner"] and summary["sensitive_data"] == ["email", "phone"] and summary["source"] == "file"


def test_model_facts_fill_licence_and_card_of_a_single_file_model() -> None:
    scan = result(
        artifacts=[Artifact("m.onnx", ArtifactKind.MODEL, "onnx", 10, SHA)],
        facts=[Fact("m.onnx", "model.license", "mit", "x"), Fact("m.onnx", "model.architecture", "ResNet50", "x"),
               Fact("m.onnx", "model.task", "image-classification", "x")],
    )
    doc = valid(bom.build(scan))
    model = components(doc)["model:m.onnx"]
    assert model["licenses"] == [{"license": {"id": "MIT"}}]
    assert model["modelCard"] == {"modelParameters": {"modelArchitecture": "ResNet50", "task": "image-classification"}}
    assert bom.summary(doc)["models_without_model_card"] == []


# -- findings ----------------------------------------------------------------------------------


def test_findings_are_grouped_per_rule_and_component() -> None:
    arts = [Artifact(p, ArtifactKind.MODEL, "pickle", 10, SHA) for p in ("a.pkl", "b.pkl")]
    findings = [Finding("MLSEC-PICKLE-001", Severity.CRITICAL, f"posix.system #{i}", "a.pkl", "mlsec-models",
                        Location(offset=i), key=f"k{i}") for i in range(3)]
    findings += [Finding("MLSEC-PICKLE-002", Severity.MEDIUM, "imports x.y", "a.pkl", "mlsec-models", key="x"),
                 Finding("MLSEC-PICKLE-001", Severity.HIGH, "os.system", "b.pkl", "mlsec-models", key="o"),
                 Finding("MLSEC-PICKLE-002", Severity.LOW, "code issue", "train.py", "code", key="c")]
    doc = valid(bom.build(result(artifacts=arts, findings=findings), project_name="p"))
    got = {(v["id"], v["affects"][0]["ref"]): v for v in doc["vulnerabilities"]}
    assert set(got) == {("MLSEC-PICKLE-001", "model:a.pkl"), ("MLSEC-PICKLE-002", "model:a.pkl"),
                        ("MLSEC-PICKLE-001", "model:b.pkl"), ("MLSEC-PICKLE-002", "project:p")}
    grouped = got[("MLSEC-PICKLE-001", "model:a.pkl")]
    assert props(grouped, "mlsec:occurrences") == ["3"] and len(props(grouped, "mlsec:location")) == 3
    assert got[("MLSEC-PICKLE-001", "model:b.pkl")]["ratings"][0]["severity"] == "high"


# -- validation --------------------------------------------------------------------------------


def test_reference_check_catches_dangling_refs_duplicates_and_misplaced_cards() -> None:
    doc = bom.build(scan_path(HF))
    broken = copy.deepcopy(doc)
    broken["dependencies"][0].setdefault("dependsOn", []).append("model:nowhere")
    broken["components"].append({"type": "library", "name": "dup", "bom-ref": "dataset:imdb",
                                 "modelCard": {"modelParameters": {"task": "x"}}})
    errors = bom.validate(broken, "1.6")
    assert any("'model:nowhere' does not resolve" in e for e in errors)
    assert any("'dataset:imdb' is defined 2 times" in e for e in errors)
    assert any("modelCard on a 'library' component" in e for e in errors)
    model = next(c for c in doc["components"] if c["type"] == "machine-learning-model")
    model["modelCard"]["modelParameters"]["datasets"] = [{"ref": "dataset:gone"}]
    assert any("datasets/0/ref: ref 'dataset:gone' does not resolve" in e for e in bom.validate(doc, "1.6"))


def test_schema_errors_name_their_place() -> None:
    doc = bom.build(scan_path(HF))
    model = next(c for c in doc["components"] if c["type"] == "machine-learning-model")
    model["modelCard"]["modelParameters"]["approach"] = {"type": "deep"}
    model["modelCard"]["colour"] = "blue"
    errors = bom.validate(doc, "1.6")
    assert any("modelCard/modelParameters/approach/type: 'deep' is not one of" in e for e in errors)
    assert any("'colour' was unexpected" in e for e in errors)


def test_unique_items_is_hash_based_and_keeps_json_schema_equality() -> None:
    doc = valid(bom.build(result(packages=[TORCH], findings=[advisory(TORCH)])))
    twin = copy.deepcopy(doc["vulnerabilities"][0])
    doc["vulnerabilities"][0]["ratings"][0]["score"] = 5
    twin["ratings"][0]["score"] = 5.0  # equal numbers in JSON Schema, different JSON text
    twin["bom-ref"] = doc["vulnerabilities"][0]["bom-ref"]
    doc["vulnerabilities"].append(twin)
    errors = bom.validate(doc, "1.6")
    # Our keyword ran (jsonschema's own says "has non-unique elements") and saw 5 == 5.0.
    assert any(e.startswith("vulnerabilities: item 1 repeats an earlier item") for e in errors)
    validator = bom._validator("1.6")
    assert list(bom._unique_items(validator, True, [{"a": True}, {"a": 1}], {})) == []
    assert len(list(bom._unique_items(validator, True, [{"a": [1, {"b": "x"}]}, {"a": [1, {"b": "x"}]}], {}))) == 1


# -- reproducibility, spec versions, metadata --------------------------------------------------


def test_reproducible_builds_are_byte_identical(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    scan = scan_path(DEMO)
    first = bom.render(bom.build(scan, reproducible=True))
    assert first == bom.render(bom.build(scan_path(DEMO), reproducible=True))
    doc = json.loads(first)
    assert doc["metadata"]["timestamp"] == "1970-01-01T00:00:00+00:00"
    assert doc["serialNumber"].startswith("urn:uuid:") and first.endswith("}\n")
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    stamped = bom.build(scan, reproducible=True)
    assert stamped["metadata"]["timestamp"] == "2023-11-14T22:13:20+00:00"
    assert stamped["serialNumber"] != doc["serialNumber"]  # a different document, a different serial
    assert bom.build(scan, reproducible=True, stage="production")["serialNumber"] != stamped["serialNumber"]
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "yesterday")
    with pytest.raises(ValueError, match="SOURCE_DATE_EPOCH"):
        bom.build(scan, reproducible=True)


def test_ordinary_builds_get_a_fresh_serial_and_the_current_time() -> None:
    scan = scan_path(DEMO)
    a, b = bom.build(scan), bom.build(scan)
    assert a["serialNumber"] != b["serialNumber"]
    assert a["metadata"]["timestamp"][:4] >= "2025"


def test_spec_1_7_option() -> None:
    doc = bom.build(scan_path(HF), spec_version="1.7")
    assert doc["specVersion"] == "1.7" and doc["$schema"].endswith("bom-1.7.schema.json")
    assert bom.validate(doc, "1.7") == []
    assert bom.validate(doc, "1.6")  # a 1.7 document is not a 1.6 document
    with pytest.raises(ValueError, match="unsupported CycloneDX spec version"):
        bom.build(scan_path(HF), spec_version="1.5")


def test_metadata_tools_lifecycle_and_stage() -> None:
    scan = scan_path(DEMO)
    meta = bom.build(scan, stage="production")["metadata"]
    tools = {(t["name"], t.get("version")) for t in meta["tools"]["components"]}
    assert ("mlsec", scan.tool_version) in tools and set(scan.scanners) <= tools
    assert meta["lifecycles"] == [{"phase": "post-build"}]
    assert props(meta, "mlsec:stage") == ["production"] and props(meta, "mlsec:scan:complete") == ["true"]
    assert bom.build(scan, stage="dev")["metadata"]["lifecycles"] == [{"phase": "pre-build"}]
    custom = valid(bom.build(scan, stage="canary"))
    assert custom["metadata"]["lifecycles"] == [{"name": "canary", "description": "mlsec stage"}]
    assert "lifecycles" not in bom.build(scan)["metadata"]


def test_empty_scan_gives_a_valid_bom() -> None:
    doc = valid(bom.build(result(), project_name="nothing"))
    assert doc.get("components", []) == [] and "vulnerabilities" not in doc
    assert bom.summary(doc)["counts"]["components"] == 0


# -- the model card reader on its own ----------------------------------------------------------


def test_model_card_reader_takes_plain_values_and_reports_problems(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(
        "---\nlicense: other\nlicense_name: llama2\nbase_model: [org/a, org/b, org/a]\ndatasets: imdb\n"
        "metrics: [accuracy, {nested: dict}]\ntags: [1, true, x]\nmodel-index: nonsense\n---\nbody\n"
    )
    card = modelcard.read(None, (str(readme), "m/README.md"))
    assert card.licenses == ("llama2",) and card.base_models == ("org/a", "org/b") and card.datasets == ("imdb",)
    assert card.metrics == (modelcard.Metric("accuracy"),) and card.tags == ("1", "x") and not card.warnings
    big = tmp_path / "config.json"
    big.write_bytes(b"{" + b" " * modelcard.MAX_FILE + b"}")
    assert modelcard.read((str(big), "m/config.json"), None).warnings == (
        f"m/config.json: larger than {modelcard.MAX_FILE} bytes, not read",
    )
    readme.write_text("---\n- just\n- a list\n---\n")
    assert modelcard.read(None, (str(readme), "m/README.md")).warnings == ("m/README.md: front matter is not a mapping",)
    readme.write_text("---\nlicense: mit\n")
    unterminated = modelcard.read(None, (str(readme), "m/README.md"))
    assert unterminated.has_front_matter and not unterminated.licenses and unterminated.warnings
    assert modelcard.read(None, ("", "m/README.md")).warnings == ("m/README.md: no local path to read it from",)
