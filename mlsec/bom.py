"""ScanResult -> CycloneDX ML-BOM (JSON), its validation, and the summary the policy reads.

An auditor or a model registry keeps this document next to the model: what was scanned, with
which hashes, licences and declared lineage, and what mlsec found. Public functions:
:func:`build` (the document as a dict), :func:`render` (stable JSON text), :func:`validate`
(schema + references) and :func:`summary` (facts for the policy input).

Shape (spec 1.6 by default, 1.7 on request; their ML fields are the same)
--------------------------------------------------------------------------
* ``metadata``: ``timestamp``; ``tools.components`` = mlsec and every scanner that ran, with
  versions; ``component`` = the scanned project (bom-ref ``project:<name>``); ``lifecycles``
  from the stage (dev -> ``pre-build``; staging and production, and their aliases, ->
  ``post-build``, since models are promoted after they are built and before they run; any
  other name -> a named lifecycle);
  properties ``mlsec:stage``, ``mlsec:scan:complete``, ``mlsec:scan:skipped``, ``mlsec:scan:errors``.
* ``components`` (bom-refs are readable and stable across runs and machines):

  - ``model:<path>`` (machine-learning-model): a model file, or a Hugging Face-style directory
    (``config.json`` and/or a ``README.md`` with YAML front matter next to weight files; its
    direct children, of any kind, are the model's files, subdirectories are not searched). A
    file carries its SHA-256 in ``hashes``; a directory carries each of its files as a nested
    ``file:<path>`` component with its own SHA-256 (one ``hashes`` list with
    several SHA-256 values would read as alternatives for one file). Properties
    ``mlsec:path``, ``mlsec:format``, ``mlsec:size``, ``mlsec:layout`` (``file`` or
    ``huggingface-directory``); licences, tags and ``pedigree.ancestors`` (``base_model``)
    from the card; a ``modelCard`` holding only what was read (no empty objects); skips,
    scanner errors and card-reading problems as ``mlsec:skipped``/``mlsec:error``/``mlsec:warning``.
  - ``data:<path>`` (data): a dataset file with its hash and one ``data[]`` entry (type
    ``dataset``; ``classification``, ``sensitiveData``, ``governance.owners`` when known).
  - ``dataset:<name>`` (data): a dataset a model card names; not a local file, so no hash.
  - ``file:<path>`` (file): an archive that may carry models.
  - ``pkg:<ecosystem>/<name>@<version>`` (library): every package from manifests and
    lockfiles; the bom-ref is the purl.
* ``dependencies``: project -> models, local datasets, libraries, archives; model -> the
  datasets its card names. Every component has an entry.
* ``vulnerabilities``: see "Findings" below.

cyclonedx-python-lib (11.12) builds and serializes everything it models. It has no
``modelCard`` and no ``data`` fields, so those are added to the serialized JSON by bom-ref
(never by name), and the document is never read back through the library (that drops them).

Contract for the scanners that feed the BOM (dependency and dataset scanners come later)
----------------------------------------------------------------------------------------
* Known vulnerability in a dependency: a Finding with ``rule_id`` ``MLSEC-DEP-001`` on the
  manifest path, evidence ``advisory`` (PYSEC-.../GHSA-...), ``aliases`` (comma-separated
  CVE/GHSA ids), ``package``, ``version``, ``purl``, ``fixed`` (comma-separated versions),
  ``cvss`` (vector, optional), ``severity`` (the advisory's own word; the rating uses the
  Finding's severity, which is what the gate uses). Packages come as ``ScanResult.packages``;
  a finding whose package is not among them still gets its library component.
* Dataset facts (``ScanResult.facts`` on the dataset's path): ``dataset.sensitive_kinds``
  (comma-separated, e.g. ``email,phone``), ``dataset.classification``, ``dataset.owner`` (one
  Fact per owner; a value containing ``@`` is a contact e-mail, anything else an
  organization), ``dataset.rows``, ``dataset.columns``.
* Model facts (on the model file or directory path): ``model.license``,
  ``model.architecture``, ``model.task``. The model card wins where both speak.

Findings: vulnerabilities, not properties
-----------------------------------------
Every finding becomes part of a ``vulnerabilities[]`` entry, grouped per (rule or advisory,
component, suppression), so a pickle with 40 bad globals is one entry with
``mlsec:occurrences`` = 40 and the first 20 locations. Chosen over ``mlsec:`` properties on
the component because a vulnerability has a severity rating, CWEs, a recommendation, an
``affects`` ref and a VEX ``analysis``, all of which BOM consumers already understand; a
property would be an opaque string. mlsec's own rules use source ``mlsec`` and the rule id as
``id``; dependency advisories use the advisory id with OSV/GitHub/NVD sources and aliases as
``references``. Findings on files that are not components (code, notebooks, manifests
without a package) affect the project component.

Suppressed findings carry a VEX ``analysis``. A waiver may state its VEX assessment (``vex``
argument of :func:`build`, keyed by waiver id: ``state``, ``justification``, ``response``
(comma-separated), ``detail``); otherwise a waiver or inline ignore reads as accepted risk:
state ``exploitable``, response ``will_not_fix``, with the reason, owner, expiry and stages in
``detail``. A waiver does not prove a finding wrong, so mlsec never claims ``not_affected`` or
``false_positive`` on its own.

Reproducible BOMs
-----------------
``reproducible=True``: the timestamp is ``SOURCE_DATE_EPOCH`` when set, else the Unix epoch
(1970-01-01T00:00:00Z): a date computed from a hash would look like a real scan time and lie.
The serial number is ``urn:uuid:`` + UUIDv5 (mlsec namespace) of the SHA-256 of the
document's canonical JSON (sorted keys, compact) without its serial number, so equal content
(timestamp included) gives an equal serial and any change gives a new one. Without it: a
random UUID and the current time.

Validation, and why it is fast
------------------------------
:func:`validate` runs the library's strict JSON schema for the spec version (its
``JsonStrictValidator`` schema, registry and format checker) and mlsec's reference check.
jsonschema's ``uniqueItems`` compares array items pairwise, which is quadratic for arrays of
objects (2,000 components + 10,000 vulnerabilities took over 500 s in the research), so the
validator class is the library's Draft-7 validator extended with a hash-based ``uniqueItems``:
items are keyed by their canonical JSON text. Numbers are parsed with integral floats turned
into ints first, so ``1`` and ``1.0`` compare equal and ``true`` and ``1`` do not, as JSON
Schema requires. Every other keyword is the library's. Building avoids the library's quadratic
paths where it can: dependencies are handed over as one graph (not a ``register_dependency``
call per edge, each a linear search), and vulnerabilities are built as library objects but
serialized one by one with the same schema view, outside ``Bom`` (whose sorted set and
bom-ref uniqueness pass are O(n log n) and O(n^2)); mlsec makes their bom-refs unique itself
and the reference check proves it. What remains: the library's serializer re-registers every
component by a linear search, quadratic in components (about 0.5 s at 2,000; see
``benchmarks/bom_scale.py``).
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
import os
import posixpath
import re
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from cyclonedx.contrib.license.exceptions import InvalidSpdxLicenseException
from cyclonedx.contrib.license.factories import LicenseFactory
from cyclonedx.model import HashAlgorithm, HashType, Property, XsUri
from cyclonedx.model.bom import Bom, BomMetaData
from cyclonedx.model.component import Component, ComponentType, Pedigree
from cyclonedx.model.dependency import Dependency
from cyclonedx.model.impact_analysis import (
    ImpactAnalysisJustification,
    ImpactAnalysisResponse,
    ImpactAnalysisState,
)
from cyclonedx.model.license import License
from cyclonedx.model.lifecycle import Lifecycle, LifecyclePhase, NamedLifecycle, PredefinedLifecycle
from cyclonedx.model.tool import ToolRepository
from cyclonedx.model.vulnerability import (
    BomTarget,
    Vulnerability,
    VulnerabilityAnalysis,
    VulnerabilityRating,
    VulnerabilityReference,
    VulnerabilityScoreSource,
    VulnerabilitySeverity,
    VulnerabilitySource,
)
from cyclonedx.output.json import Json, JsonV1Dot6, JsonV1Dot7
from cyclonedx.schema import SchemaVersion
from cyclonedx.schema.schema import SCHEMA_VERSIONS
from packageurl import PackageURL

from mlsec import modelcard
from mlsec.model import Artifact, ArtifactKind, Fact, Finding, Package, ScanResult, Severity
from mlsec.verdicts import Suppression

SPEC_VERSIONS: Mapping[str, tuple[SchemaVersion, type[Json]]] = {
    "1.6": (SchemaVersion.V1_6, JsonV1Dot6),
    "1.7": (SchemaVersion.V1_7, JsonV1Dot7),
}
DEP_RULE = "MLSEC-DEP-001"
MAX_LOCATIONS = 20
MAX_ERRORS = 200
_MAX_MESSAGE = 300
_HUB_ID = re.compile(r"(?:[A-Za-z0-9._-]+/)?[A-Za-z0-9._-]+")
_SERIAL_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:mlsec:cyclonedx:serial")
_STAGE_PHASES = {
    "dev": LifecyclePhase.PRE_BUILD,
    "development": LifecyclePhase.PRE_BUILD,
    "test": LifecyclePhase.PRE_BUILD,
    "staging": LifecyclePhase.POST_BUILD,
    "stage": LifecyclePhase.POST_BUILD,
    "challenger": LifecyclePhase.POST_BUILD,
    "production": LifecyclePhase.POST_BUILD,
    "prod": LifecyclePhase.POST_BUILD,
    "champion": LifecyclePhase.POST_BUILD,
}
_SEVERITY = {
    Severity.INFO: VulnerabilitySeverity.INFO,
    Severity.LOW: VulnerabilitySeverity.LOW,
    Severity.MEDIUM: VulnerabilitySeverity.MEDIUM,
    Severity.HIGH: VulnerabilitySeverity.HIGH,
    Severity.CRITICAL: VulnerabilitySeverity.CRITICAL,
}
_CVSS_METHODS = (
    ("CVSS:4.0/", VulnerabilityScoreSource.CVSS_V4),
    ("CVSS:3.1/", VulnerabilityScoreSource.CVSS_V3_1),
    ("CVSS:3.0/", VulnerabilityScoreSource.CVSS_V3),
)


def _schema_version(spec_version: str) -> tuple[SchemaVersion, type[Json]]:
    try:
        return SPEC_VERSIONS[spec_version]
    except KeyError:
        raise ValueError(
            f"unsupported CycloneDX spec version {spec_version!r} (choose from {', '.join(SPEC_VERSIONS)})"
        ) from None


# -- inventory: what the scan says, as plain frozen data ---------------------------------------


@dataclass(frozen=True, slots=True)
class _Model:
    ref: str
    path: str
    name: str
    files: tuple[Artifact, ...]
    directory: bool
    card: modelcard.ModelCard
    licenses: tuple[str, ...]
    architecture: str
    task: str
    dataset_refs: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class _Dataset:
    ref: str
    name: str
    artifact: Artifact | None = None
    classification: str = ""
    sensitive: tuple[str, ...] = ()
    owners: tuple[str, ...] = ()
    rows: str = ""
    columns: str = ""
    declared_by: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class _Library:
    ref: str
    purl: PackageURL
    manifests: tuple[str, ...]
    specifiers: tuple[str, ...]
    direct: bool


@dataclass(frozen=True, slots=True)
class _Inventory:
    project_ref: str
    project_name: str
    models: tuple[_Model, ...]
    datasets: tuple[_Dataset, ...]
    libraries: tuple[_Library, ...]
    archives: tuple[Artifact, ...]
    owner_of: Mapping[str, str]  # artifact path -> bom-ref of the component holding it
    notes: Mapping[str, tuple[tuple[str, str], ...]] = field(default_factory=dict)  # ref -> properties

    def owner(self, path: str) -> str:
        """The component a finding on ``path`` affects (the project when no component holds it)."""
        return self.owner_of.get(path, self.project_ref)


def _facts_by_path(facts: Iterable[Fact]) -> dict[str, dict[str, list[str]]]:
    out: dict[str, dict[str, list[str]]] = {}
    for f in facts:
        out.setdefault(f.path, {}).setdefault(f.name, []).append(f.value)
    return out


def _first(facts: Mapping[str, Sequence[str]], name: str) -> str:
    return next((v.strip() for v in facts.get(name, ()) if v.strip()), "")


def _split(values: Iterable[str]) -> tuple[str, ...]:
    """Comma-separated values, stripped, distinct, sorted."""
    return tuple(sorted({part.strip() for v in values for part in v.split(",") if part.strip()}))


def _where(artifact: Artifact | None) -> tuple[str, str] | None:
    return (artifact.fs_path, artifact.path) if artifact else None


def _is_weight(artifact: Artifact) -> bool:
    return artifact.kind == ArtifactKind.MODEL or modelcard.is_weight_name(artifact.path)


def _model_directories(artifacts: Sequence[Artifact]) -> list[tuple[str, tuple[Artifact, ...], modelcard.ModelCard]]:
    """Hugging Face-style directories: weights plus config.json and/or a card with front matter.

    Every file directly in such a directory belongs to the model, whatever its kind: its JSON
    configs and tokenizer files are classified as data by discovery, but they are not datasets.
    """
    by_dir: dict[str, list[Artifact]] = {}
    for a in artifacts:
        by_dir.setdefault(posixpath.dirname(a.path), []).append(a)
    found = []
    for directory, members in sorted(by_dir.items()):
        if not any(_is_weight(a) for a in members):
            continue
        named = {posixpath.basename(a.path): a for a in members}
        config, readme = named.get(modelcard.CONFIG_NAME), named.get(modelcard.CARD_NAME)
        if config is None and readme is None:
            continue
        card = modelcard.read(_where(config), _where(readme))
        if config is None and not card.has_front_matter:
            continue
        found.append((directory, tuple(members), card))
    return found


def _model(ref: str, path: str, name: str, files: tuple[Artifact, ...], directory: bool,
           card: modelcard.ModelCard, facts: Mapping[str, Sequence[str]]) -> _Model:
    return _Model(
        ref=ref,
        path=path,
        name=card.name or name,
        files=files,
        directory=directory,
        card=card,
        licenses=card.licenses or _split(facts.get("model.license", ())),
        architecture=card.architecture or _first(facts, "model.architecture"),
        task=card.task or _first(facts, "model.task"),
        dataset_refs=tuple(f"dataset:{d}" for d in card.datasets),
    )


def _models(result: ScanResult, facts: Mapping[str, Mapping[str, list[str]]],
            project_name: str) -> tuple[list[_Model], set[str]]:
    """Model components, and the paths they absorbed."""
    models: list[_Model] = []
    claimed: set[str] = set()
    for directory, files, card in _model_directories(result.artifacts):
        merged: dict[str, list[str]] = {}
        for p in (directory, *(a.path for a in files)):
            for name, values in facts.get(p, {}).items():
                merged.setdefault(name, []).extend(values)
        shown = directory or "."
        label = posixpath.basename(directory) or project_name
        models.append(_model(f"model:{shown}", shown, label, files, True, card, merged))
        claimed.update(a.path for a in files)
    for a in result.artifacts:
        if a.kind == ArtifactKind.MODEL and a.path not in claimed:
            name = posixpath.basename(a.path)
            models.append(_model(f"model:{a.path}", a.path, name, (a,), False, modelcard.ModelCard(),
                                 facts.get(a.path, {})))
            claimed.add(a.path)
    models.sort(key=lambda m: m.ref)
    return models, claimed


def _datasets(result: ScanResult, facts: Mapping[str, Mapping[str, list[str]]],
              models: Sequence[_Model], claimed: set[str]) -> list[_Dataset]:
    """Dataset files (not those inside a model directory), then the datasets model cards name."""
    out = []
    for a in result.artifacts:
        if a.kind != ArtifactKind.DATASET or a.path in claimed:
            continue
        f = facts.get(a.path, {})
        out.append(_Dataset(
            ref=f"data:{a.path}",
            name=posixpath.basename(a.path),
            artifact=a,
            classification=_first(f, "dataset.classification"),
            sensitive=_split(f.get("dataset.sensitive_kinds", ())),
            owners=tuple(sorted({v.strip() for v in f.get("dataset.owner", ()) if v.strip()})),
            rows=_first(f, "dataset.rows"),
            columns=_first(f, "dataset.columns"),
        ))
    declared: dict[str, list[str]] = {}
    for m in models:
        for name in m.card.datasets:
            declared.setdefault(name, []).append(m.ref)
    out.extend(_Dataset(ref=f"dataset:{n}", name=n, declared_by=tuple(by)) for n, by in sorted(declared.items()))
    return sorted(out, key=lambda d: d.ref)


def _purl(ecosystem: str, name: str, version: str) -> PackageURL:
    return PackageURL(type=ecosystem or "pypi", name=name, version=version or None)


def _finding_purl(finding: Finding) -> PackageURL:
    """The package a dependency finding is about: its ``purl`` evidence, else package/version."""
    ev = dict(finding.evidence)
    return _parse_purl(ev.get("purl", ""), ev.get("package") or "unknown", ev.get("version", ""))


@functools.lru_cache(maxsize=4096)
def _parse_purl(text: str, package: str, version: str) -> PackageURL:
    """Parsing a purl costs ~40 us and every advisory of a package repeats it: cache it."""
    try:
        return PackageURL.from_string(text)
    except ValueError:
        return _purl("pypi", package, version)


def _libraries(packages: Iterable[Package], dep_findings: Iterable[Finding]) -> list[_Library]:
    acc: dict[str, dict[str, Any]] = {}

    def add(purl: PackageURL, manifest: str, specifier: str, direct: bool) -> None:
        entry = acc.setdefault(purl.to_string(), {"purl": purl, "manifests": set(), "specifiers": set(), "direct": False})
        entry["manifests"].add(manifest)
        if specifier:
            entry["specifiers"].add(specifier)
        entry["direct"] = entry["direct"] or direct

    for p in packages:
        add(_purl(p.ecosystem, p.name, p.version), p.path, p.specifier, p.direct)
    for f in dep_findings:
        purl = _finding_purl(f)
        if purl.to_string() not in acc:
            add(purl, f.path, "", False)
    return [
        _Library(ref, e["purl"], tuple(sorted(e["manifests"])), tuple(sorted(e["specifiers"])), e["direct"])
        for ref, e in sorted(acc.items())
    ]


def _notes(result: ScanResult, owner: Mapping[str, str]) -> dict[str, tuple[tuple[str, str], ...]]:
    """Skips and scanner errors as properties of the component that holds the file."""
    notes: dict[str, list[tuple[str, str]]] = {}
    for s in result.skipped:
        if s.path in owner:
            notes.setdefault(owner[s.path], []).append(("mlsec:skipped", f"{s.path}: {s.code}: {s.reason}"))
    for e in result.errors:
        if e.path in owner:
            notes.setdefault(owner[e.path], []).append(("mlsec:error", f"{e.path}: {e.scanner}: {e.message}"))
    return {ref: tuple(items) for ref, items in notes.items()}


def _inventory(result: ScanResult, project_name: str) -> _Inventory:
    facts = _facts_by_path(result.facts)
    models, claimed = _models(result, facts, project_name)
    datasets = _datasets(result, facts, models, claimed)
    archives = tuple(a for a in result.artifacts if a.kind == ArtifactKind.ARCHIVE and a.path not in claimed)
    dep_findings = [f for f in _all_findings(result) if f.rule_id == DEP_RULE]
    owner: dict[str, str] = {}
    for m in models:
        owner.update((a.path, m.ref) for a in m.files)
    owner.update((d.artifact.path, d.ref) for d in datasets if d.artifact)
    owner.update((a.path, f"file:{a.path}") for a in archives)
    return _Inventory(
        project_ref=f"project:{project_name}",
        project_name=project_name,
        models=tuple(models),
        datasets=tuple(datasets),
        libraries=tuple(_libraries(result.packages, dep_findings)),
        archives=archives,
        owner_of=owner,
        notes=_notes(result, owner),
    )


def _all_findings(result: ScanResult) -> Iterator[Finding]:
    yield from result.findings
    yield from (s.finding for s in result.suppressed)


# -- library components ------------------------------------------------------------------------


def _props(pairs: Iterable[tuple[str, str]]) -> list[Property]:
    return [Property(name=n, value=v) for n, v in pairs if v != ""]


def _hashes(artifact: Artifact) -> list[HashType]:
    return [HashType(alg=HashAlgorithm.SHA_256, content=artifact.sha256)] if artifact.sha256 else []


def _artifact_props(a: Artifact) -> list[tuple[str, str]]:
    return [("mlsec:path", a.path), ("mlsec:format", a.format), ("mlsec:size", str(a.size))]


def _licenses(names: Sequence[str]) -> list[License]:
    """SPDX ids where they are ids (``apache-2.0`` -> ``Apache-2.0``), names otherwise.

    A single value may be an SPDX expression; several values are each one licence, because the
    schema forbids an expression next to other licences.
    """
    factory = LicenseFactory()
    if len(names) == 1:
        return [factory.make_from_string(names[0])]
    out: list[License] = []
    for n in names:
        try:
            out.append(factory.make_with_id(n))
        except InvalidSpdxLicenseException:
            out.append(factory.make_with_name(n))
    return out


def _ancestor(base: str) -> Component:
    """A base model named by the card; a Hub id ``org/name`` also gets a huggingface purl."""
    org, _, name = base.rpartition("/")
    purl = PackageURL(type="huggingface", namespace=org or None, name=name) if _HUB_ID.fullmatch(base) else None
    return Component(type=ComponentType.MACHINE_LEARNING_MODEL, name=base, purl=purl)


def _file_component(a: Artifact, notes: Sequence[tuple[str, str]] = ()) -> Component:
    """A file of a model directory, or an archive that may carry models."""
    return Component(type=ComponentType.FILE, name=posixpath.basename(a.path), bom_ref=f"file:{a.path}",
                     hashes=_hashes(a), properties=_props([*_artifact_props(a), *notes]))


def _model_component(m: _Model, notes: Sequence[tuple[str, str]]) -> Component:
    card = m.card
    if m.directory:
        formats = sorted({a.format for a in m.files if _is_weight(a)})
        pairs = [("mlsec:path", m.path), ("mlsec:format", ",".join(formats)),
                 ("mlsec:size", str(sum(a.size for a in m.files))), ("mlsec:layout", "huggingface-directory")]
    else:
        pairs = [*_artifact_props(m.files[0]), ("mlsec:layout", "file")]
    pairs += [("mlsec:library", card.library), *(("mlsec:warning", w) for w in card.warnings), *notes]
    return Component(
        type=ComponentType.MACHINE_LEARNING_MODEL,
        name=m.name,
        bom_ref=m.ref,
        hashes=[] if m.directory else _hashes(m.files[0]),
        licenses=_licenses(m.licenses) if m.licenses else [],
        properties=_props(pairs),
        tags=card.tags,
        components=[_file_component(a) for a in m.files] if m.directory else [],
        pedigree=Pedigree(ancestors=[_ancestor(b) for b in card.base_models]) if card.base_models else None,
    )


def _dataset_component(d: _Dataset, notes: Sequence[tuple[str, str]]) -> Component:
    pairs = _artifact_props(d.artifact) if d.artifact else []
    pairs += [("mlsec:dataset:rows", d.rows), ("mlsec:dataset:columns", d.columns)]
    pairs += [("mlsec:declared-by", ref) for ref in d.declared_by]
    return Component(type=ComponentType.DATA, name=d.name, bom_ref=d.ref,
                     hashes=_hashes(d.artifact) if d.artifact else [], properties=_props([*pairs, *notes]))


def _library_component(lib: _Library) -> Component:
    pairs = [("mlsec:manifest", p) for p in lib.manifests] + [("mlsec:specifier", s) for s in lib.specifiers]
    pairs.append(("mlsec:direct", "true" if lib.direct else "false"))
    return Component(type=ComponentType.LIBRARY, name=lib.purl.name, version=lib.purl.version, bom_ref=lib.ref,
                     purl=lib.purl, properties=_props(pairs))


def _lifecycles(stage: str | None) -> list[Lifecycle]:
    if not stage:
        return []
    phase = _STAGE_PHASES.get(stage.lower())
    return [PredefinedLifecycle(phase)] if phase else [NamedLifecycle(name=stage, description="mlsec stage")]


def _metadata(result: ScanResult, inv: _Inventory, stage: str | None, timestamp: dt.datetime) -> BomMetaData:
    tools = [Component(type=ComponentType.APPLICATION, name="mlsec", version=result.tool_version)]
    tools += [Component(type=ComponentType.APPLICATION, name=n, version=v) for n, v in result.scanners]
    props = [("mlsec:stage", stage or ""), ("mlsec:scan:complete", "true" if result.complete else "false"),
             ("mlsec:scan:skipped", str(len(result.skipped))), ("mlsec:scan:errors", str(len(result.errors)))]
    return BomMetaData(
        tools=ToolRepository(components=tools),
        component=Component(type=ComponentType.APPLICATION, name=inv.project_name, bom_ref=inv.project_ref),
        lifecycles=_lifecycles(stage),
        properties=_props(props),
        timestamp=timestamp,
    )


def _library_bom(result: ScanResult, inv: _Inventory, stage: str | None, timestamp: dt.datetime) -> Bom:
    """Metadata, components and the dependency graph, as cyclonedx-python-lib models them."""
    notes = inv.notes
    models = [_model_component(m, notes.get(m.ref, ())) for m in inv.models]
    datasets = {d.ref: _dataset_component(d, notes.get(d.ref, ())) for d in inv.datasets}
    libraries = [_library_component(lib) for lib in inv.libraries]
    archives = [_file_component(a, notes.get(f"file:{a.path}", ())) for a in inv.archives]
    metadata = _metadata(result, inv, stage, timestamp)
    project = metadata.component
    assert project is not None
    local_data = [c for ref, c in datasets.items() if ref.startswith("data:")]
    graph = [Dependency(ref=project.bom_ref,
                        dependencies=[Dependency(ref=c.bom_ref) for c in (*models, *local_data, *libraries, *archives)])]
    graph += [Dependency(ref=c.bom_ref, dependencies=[Dependency(ref=datasets[r].bom_ref) for r in m.dataset_refs])
              for c, m in zip(models, inv.models)]
    graph += [Dependency(ref=c.bom_ref) for c in (*datasets.values(), *libraries, *archives)]
    return Bom(components=[*models, *datasets.values(), *libraries, *archives], dependencies=graph, metadata=metadata)


# -- injected fields (not modelled by the library) ---------------------------------------------


def _model_card(m: _Model) -> dict[str, Any]:
    """The ``modelCard`` object with only what is known; empty when nothing is."""
    params: dict[str, Any] = {}
    if m.task:
        params["task"] = m.task
    if m.card.model_type:
        params["architectureFamily"] = m.card.model_type
    if m.architecture:
        params["modelArchitecture"] = m.architecture
    if m.dataset_refs:
        params["datasets"] = [{"ref": r} for r in m.dataset_refs]
    card: dict[str, Any] = {"modelParameters": params} if params else {}
    metrics = [{k: v for k, v in (("type", x.type), ("value", x.value), ("slice", x.slice)) if v} for x in m.card.metrics]
    if metrics:
        card["quantitativeAnalysis"] = {"performanceMetrics": metrics}
    return card


def _owner_entry(owner: str) -> dict[str, Any]:
    return {"contact": {"email": owner}} if "@" in owner else {"organization": {"name": owner}}


def _data_entry(d: _Dataset) -> dict[str, Any]:
    entry: dict[str, Any] = {"type": "dataset", "name": d.artifact.path if d.artifact else d.name}
    if d.classification:
        entry["classification"] = d.classification
    if d.sensitive:
        entry["sensitiveData"] = list(d.sensitive)
    if d.owners:
        entry["governance"] = {"owners": [_owner_entry(o) for o in d.owners]}
    return entry


def _inject(doc: dict[str, Any], inv: _Inventory) -> None:
    """Add ``modelCard`` and ``data`` to the serialized components, joined by bom-ref."""
    by_ref = {c.get("bom-ref"): c for c in doc.get("components", [])}
    for m in inv.models:
        card = _model_card(m)
        if card:
            by_ref[m.ref]["modelCard"] = card
    for d in inv.datasets:
        by_ref[d.ref]["data"] = [_data_entry(d)]


# -- vulnerabilities ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Group:
    """Findings of one rule or advisory on one component under one suppression (or none)."""

    vuln_id: str
    ref: str
    suppression: Suppression | None
    findings: tuple[Finding, ...]

    @property
    def dependency(self) -> bool:
        return self.findings[0].rule_id == DEP_RULE


def _groups(result: ScanResult, inv: _Inventory) -> list[_Group]:
    acc: dict[tuple[str, str, str, str], tuple[Suppression | None, list[Finding]]] = {}
    pairs = [(f, None) for f in result.findings] + [(s.finding, s.suppression) for s in result.suppressed]
    for f, sup in pairs:
        if f.rule_id == DEP_RULE:
            vuln_id, ref = dict(f.evidence).get("advisory") or DEP_RULE, _finding_purl(f).to_string()
        else:
            vuln_id, ref = f.rule_id, inv.owner(f.path)
        key = (vuln_id, ref, sup.source if sup else "", sup.waiver_id if sup else "")
        acc.setdefault(key, (sup, []))[1].append(f)
    return [_Group(k[0], k[1], sup, tuple(sorted(fs, key=Finding.sort_key))) for k, (sup, fs) in sorted(acc.items())]


def _advisory_source(vuln_id: str) -> VulnerabilitySource:
    """Where an advisory id is published: NVD for CVEs, GitHub for GHSA, OSV otherwise."""
    quoted = quote(vuln_id, safe="")
    if vuln_id.startswith("CVE-"):
        return VulnerabilitySource(name="NVD", url=XsUri(f"https://nvd.nist.gov/vuln/detail/{quoted}"))
    if vuln_id.startswith("GHSA-"):
        return VulnerabilitySource(name="GitHub", url=XsUri(f"https://github.com/advisories/{quoted}"))
    return VulnerabilitySource(name="OSV", url=XsUri(f"https://osv.dev/vulnerability/{quoted}"))


def _cvss_method(vector: str) -> VulnerabilityScoreSource:
    return next((m for prefix, m in _CVSS_METHODS if vector.startswith(prefix)), VulnerabilityScoreSource.OTHER)


def _enum(kind: type[Any], value: str, label: str, warnings: list[str]) -> Any:
    try:
        return kind(value.strip())
    except ValueError:
        warnings.append(f"{label} {value!r} is not a CycloneDX value, ignored")
        return None


def _analysis(sup: Suppression, vex: Mapping[str, str], warnings: list[str]) -> VulnerabilityAnalysis:
    """VEX analysis from the waiver's own statement, else "accepted risk" (see module docstring)."""
    facts = [f"{sup.source} {sup.waiver_id}".strip()]
    facts += [f"owner {sup.owner}"] if sup.owner else []
    facts += [f"expires {sup.expires}"] if sup.expires else []
    facts += [f"stages {', '.join(sup.stages)}"] if sup.stages else []
    reason = vex.get("detail", "").strip() or sup.reason.strip() or "no reason given"
    state = _enum(ImpactAnalysisState, vex["state"], "vex state", warnings) if vex.get("state") else None
    justification = (_enum(ImpactAnalysisJustification, vex["justification"], "vex justification", warnings)
                     if vex.get("justification") else None)
    responses = [r for r in (_enum(ImpactAnalysisResponse, x, "vex response", warnings)
                             for x in vex.get("response", "").split(",") if x.strip()) if r]
    if state is None:
        state, responses = ImpactAnalysisState.EXPLOITABLE, responses or [ImpactAnalysisResponse.WILL_NOT_FIX]
    return VulnerabilityAnalysis(state=state, justification=justification, responses=responses,
                                 detail=f"{reason} ({'; '.join(facts)})")


def _locations(findings: Sequence[Finding]) -> list[tuple[str, str]]:
    seen = dict.fromkeys(
        f"{f.path} ({f.location.describe()})" if f.location.describe() else f.path for f in findings
    )
    return [("mlsec:location", text) for text in list(seen)[:MAX_LOCATIONS]]


def _short(text: str) -> str:
    return text if len(text) <= _MAX_MESSAGE else text[: _MAX_MESSAGE - 1] + "…"


def _advisory_fields(g: _Group, severity: VulnerabilitySeverity) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """A dependency advisory: sources, aliases, CVSS rating, the fix. The purl names the version."""
    first = g.findings[0]
    ev = dict(first.evidence)
    vector = ev.get("cvss", "").strip()
    aliases = sorted(set(_split([ev.get("aliases", "")])) - {g.vuln_id})
    fixed = _split([ev.get("fixed", "")])
    package = ev.get("package") or _finding_purl(first).name
    fields = {
        "source": _advisory_source(g.vuln_id),
        "references": [VulnerabilityReference(id=a, source=_advisory_source(a)) for a in aliases],
        "ratings": [VulnerabilityRating(severity=severity, method=_cvss_method(vector), vector=vector or None)],
        "description": _short(first.message),
        "recommendation": f"Upgrade {package} to {' or '.join(fixed)}" if fixed else None,
    }
    return fields, [("mlsec:fixed", ", ".join(fixed))]


def _rule_fields(g: _Group, severity: VulnerabilitySeverity) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """One of mlsec's rules: title, CWEs and remediation from the catalog; how often, and by whom."""
    from mlsec.catalog import rules

    first = g.findings[0]
    rule = rules().get(first.rule_id)
    mlsec = VulnerabilitySource(name="mlsec")
    fields = {
        "source": mlsec,
        "ratings": [VulnerabilityRating(severity=severity, method=VulnerabilityScoreSource.OTHER, source=mlsec)],
        "cwes": list(rule.cwe) if rule else [],
        "description": _short(rule.title if rule else first.message),
        "detail": _short(first.message) if rule else None,
        "recommendation": _short(rule.remediation) if rule else None,
    }
    pairs = [("mlsec:occurrences", str(len(g.findings)))]
    pairs += [("mlsec:scanner", s) for s in sorted({f.scanner for f in g.findings})]
    return fields, pairs


def _vulnerability(g: _Group, bom_ref: str, vex: Mapping[str, Mapping[str, str]]) -> Vulnerability:
    severity = _SEVERITY[max(f.severity for f in g.findings)]
    fields, pairs = (_advisory_fields if g.dependency else _rule_fields)(g, severity)
    pairs += _locations(g.findings)
    warnings: list[str] = []
    analysis = None
    if g.suppression is not None:
        statement = vex.get(g.suppression.waiver_id, {}) if g.suppression.source == "waiver" else {}
        analysis = _analysis(g.suppression, statement, warnings)
        pairs.append(("mlsec:waiver", g.suppression.waiver_id))
    pairs += [("mlsec:warning", w) for w in warnings]
    return Vulnerability(bom_ref=bom_ref, id=g.vuln_id, analysis=analysis, affects=[BomTarget(ref=g.ref)],
                         properties=_props(pairs), **fields)


def _vulnerability_ref(g: _Group, taken: set[str]) -> str:
    """Readable, unique bom-ref: ``vuln:<advisory>:<purl>`` or ``finding:<rule>:<component>``.

    A path containing ``:waiver:`` could make two groups spell the same ref; a counter keeps
    them apart (groups come sorted, so the result is still deterministic).
    """
    base = f"{'vuln' if g.dependency else 'finding'}:{g.vuln_id}:{g.ref}"
    if g.suppression is not None:
        base += f":{g.suppression.source}:{g.suppression.waiver_id}"
    ref, n = base, 1
    while ref in taken:
        n += 1
        ref = f"{base}#{n}"
    taken.add(ref)
    return ref


def _vulnerabilities(result: ScanResult, inv: _Inventory, schema: SchemaVersion,
                     vex: Mapping[str, Mapping[str, str]]) -> list[dict[str, Any]]:
    """Serialized one by one with the library's schema view (see "Validation" above for why)."""
    view = SCHEMA_VERSIONS[schema]
    taken: set[str] = set()  # component refs never start with "vuln:" or "finding:"
    out = []
    for g in _groups(result, inv):
        v = _vulnerability(g, _vulnerability_ref(g, taken), vex)
        out.append(json.loads(v.as_json(view_=view)))  # type: ignore[attr-defined]
    return out


# -- the document ------------------------------------------------------------------------------


def _timestamp(reproducible: bool) -> dt.datetime:
    if not reproducible:
        return dt.datetime.now(dt.UTC).replace(microsecond=0)
    raw = os.environ.get("SOURCE_DATE_EPOCH", "").strip()
    if not raw:
        return dt.datetime.fromtimestamp(0, dt.UTC)
    try:
        return dt.datetime.fromtimestamp(int(raw), dt.UTC)
    except (ValueError, OverflowError, OSError):
        raise ValueError(f"SOURCE_DATE_EPOCH must be an integer number of seconds, got {raw!r}") from None


def _content_serial(doc: dict[str, Any]) -> str:
    body = {k: v for k, v in doc.items() if k != "serialNumber"}
    digest = hashlib.sha256(_compact(body).encode("ascii")).hexdigest()
    return f"urn:uuid:{uuid.uuid5(_SERIAL_NAMESPACE, digest)}"


def build(
    result: ScanResult,
    *,
    root: Path | None = None,
    stage: str | None = None,
    spec_version: str = "1.6",
    reproducible: bool = False,
    project_name: str | None = None,
    vex: Mapping[str, Mapping[str, str]] | None = None,
) -> dict[str, Any]:
    """The ML-BOM of ``result`` as a JSON-ready dict (see the module docstring for its shape).

    ``root`` names the project when ``project_name`` is not given (its directory name).
    ``vex`` holds VEX statements from waivers, keyed by waiver id. Model cards are read from
    the artifacts' local paths; nothing else touches the file system. Raises ValueError for an
    unsupported ``spec_version`` or a malformed ``SOURCE_DATE_EPOCH``.
    """
    schema, outputter = _schema_version(spec_version)
    name = project_name or (root.resolve().name if root is not None else "") or "project"
    inv = _inventory(result, name)
    bom = _library_bom(result, inv, stage, _timestamp(reproducible))
    doc: dict[str, Any] = json.loads(outputter(bom).output_as_string())
    _inject(doc, inv)
    vulnerabilities = _vulnerabilities(result, inv, schema, vex or {})
    if vulnerabilities:
        doc["vulnerabilities"] = vulnerabilities
    if reproducible:
        doc["serialNumber"] = _content_serial(doc)
    return doc


def _compact(doc: Mapping[str, Any]) -> str:
    """Canonical one-line JSON (C encoder: ten times faster than the indented form)."""
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def render(doc: Mapping[str, Any]) -> str:
    """Stable JSON text: sorted keys, two-space indent, ASCII only, trailing newline."""
    return json.dumps(doc, sort_keys=True, indent=2, ensure_ascii=True, allow_nan=False) + "\n"


# -- validation --------------------------------------------------------------------------------


def _canonical_number(text: str) -> int | float:
    """JSON numbers as JSON Schema compares them: ``1.0`` is the integer 1."""
    value = float(text)
    return int(value) if value.is_integer() else value


def _unique_items(validator: Any, unique: Any, instance: Any, schema: Any) -> Iterator[Any]:
    """``uniqueItems`` in linear time: items keyed by canonical JSON text."""
    from jsonschema.exceptions import ValidationError

    if not unique or not validator.is_type(instance, "array"):
        return
    seen: set[str] = set()
    for index, item in enumerate(instance):
        key = json.dumps(item, sort_keys=True)
        if key in seen:
            yield ValidationError(f"item {index} repeats an earlier item (uniqueItems)")
            return
        seen.add(key)


@functools.cache
def _validator(spec_version: str) -> Any:
    """The library's strict Draft-7 validator for this spec, with the linear ``uniqueItems``.

    Uses the library's private ``_validator`` (schema, reference registry, format checker), so
    the pinned cyclonedx-python-lib version matters.
    """
    from cyclonedx.validation.json import JsonStrictValidator
    from jsonschema import validators

    stock = JsonStrictValidator(_schema_version(spec_version)[0])._validator
    fast = validators.extend(type(stock), {"uniqueItems": _unique_items})
    return fast(stock.schema, registry=stock._registry, format_checker=stock.format_checker)


def _describe(error: Any) -> str:
    where = "/".join(str(p) for p in error.absolute_path) or "(document)"
    return _short(f"{where}: {error.message}")


def validate(doc: Mapping[str, Any], spec_version: str) -> list[str]:
    """Errors in ``doc`` for ``spec_version`` (empty when valid): strict schema, then references.

    What is validated is the document as JSON text parsed back (what :func:`render` writes).
    """
    _schema_version(spec_version)
    try:
        instance = json.loads(_compact(doc), parse_float=_canonical_number)
    except (TypeError, ValueError) as exc:
        return [f"(document): not serializable as JSON: {exc}"]
    errors = []
    if instance.get("specVersion") != spec_version:
        errors.append(f"specVersion: {instance.get('specVersion')!r}, expected {spec_version!r}")
    for error in _validator(spec_version).iter_errors(instance):
        if len(errors) >= MAX_ERRORS:
            errors.append("(document): more schema errors not shown")
            break
        errors.append(_describe(error))
    return errors + check_references(instance)


def _walk(node: Any) -> Iterator[tuple[str, Any]]:
    """Every (key, value) pair in a JSON document, iteratively (no recursion limit)."""
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            for key, value in item.items():
                yield key, value
                stack.append(value)
        elif isinstance(item, list):
            stack.extend(item)


def _components(doc: Mapping[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every component (metadata, top level, nested) with a JSON-pointer-like location."""
    metadata = doc.get("metadata")
    stack: list[tuple[str, Any]] = [("metadata/component", metadata.get("component"))] if isinstance(metadata, dict) else []
    stack += [(f"components/{i}", c) for i, c in enumerate(doc.get("components") or [])]
    while stack:
        where, comp = stack.pop()
        if isinstance(comp, dict):
            yield where, comp
            stack += [(f"{where}/components/{i}", c) for i, c in enumerate(comp.get("components") or [])]


def _uses(doc: Mapping[str, Any]) -> Iterator[tuple[str, Any]]:
    """Refs of the inventory graph: dependencies, vulnerability targets, model-card datasets.

    Formulation and annotation refs may point outside the inventory (the specification's own
    formulation example does), so they are left to the schema.
    """
    for i, dep in enumerate(doc.get("dependencies") or []):
        if isinstance(dep, dict):
            yield f"dependencies/{i}/ref", dep.get("ref")
            for key in ("dependsOn", "provides"):
                yield from ((f"dependencies/{i}/{key}/{j}", r) for j, r in enumerate(dep.get(key) or []))
    for i, vuln in enumerate(doc.get("vulnerabilities") or []):
        if isinstance(vuln, dict):
            for j, target in enumerate(vuln.get("affects") or []):
                yield f"vulnerabilities/{i}/affects/{j}/ref", target.get("ref") if isinstance(target, dict) else None
    for where, comp in _components(doc):
        card = comp.get("modelCard")
        params = card.get("modelParameters") if isinstance(card, dict) else None
        datasets = params.get("datasets") if isinstance(params, dict) else None
        for j, entry in enumerate(datasets or []):
            if isinstance(entry, dict) and "ref" in entry:
                yield f"{where}/modelCard/modelParameters/datasets/{j}/ref", entry["ref"]


def check_references(doc: Mapping[str, Any]) -> list[str]:
    """What the schema cannot check: unique bom-refs, refs that resolve, modelCard placement."""
    counts = Counter(v for k, v in _walk(doc) if k == "bom-ref" and isinstance(v, str))
    errors = [f"bom-ref {ref!r} is defined {n} times" for ref, n in sorted(counts.items()) if n > 1]
    for where, ref in _uses(doc):
        if not isinstance(ref, str) or (ref not in counts and not ref.startswith("urn:cdx:")):
            errors.append(f"{where}: ref {ref!r} does not resolve to a bom-ref in this BOM")
    for where, comp in _components(doc):
        if "modelCard" in comp and comp.get("type") != "machine-learning-model":
            errors.append(f"{where}: modelCard on a {comp.get('type')!r} component")
    return errors


# -- policy summary ----------------------------------------------------------------------------


def _properties(comp: Mapping[str, Any], name: str) -> list[str]:
    return [p.get("value", "") for p in comp.get("properties") or [] if isinstance(p, dict) and p.get("name") == name]


def _sha256(comp: Mapping[str, Any]) -> str:
    return next((h.get("content", "") for h in comp.get("hashes") or [] if h.get("alg") == "SHA-256"), "")


def _has_sha256(comp: Mapping[str, Any]) -> bool:
    """A SHA-256 of the component itself, or of every file nested in it (a model directory)."""
    nested = [c for c in comp.get("components") or [] if isinstance(c, dict)]
    return bool(_sha256(comp)) or (bool(nested) and all(_sha256(c) for c in nested))


def _license_names(comp: Mapping[str, Any]) -> list[str]:
    out = []
    for entry in comp.get("licenses") or []:
        lic = entry.get("license") or {}
        text = entry.get("expression") or lic.get("id") or lic.get("name")
        if text:
            out.append(str(text))
    return out


def _model_summary(comp: Mapping[str, Any]) -> dict[str, Any]:
    card = comp.get("modelCard") or {}
    params = card.get("modelParameters") or {}
    pedigree = comp.get("pedigree") or {}
    return {
        "bom_ref": comp.get("bom-ref", ""),
        "name": comp.get("name", ""),
        "version": comp.get("version", ""),
        "path": next(iter(_properties(comp, "mlsec:path")), comp.get("name", "")),
        "format": next(iter(_properties(comp, "mlsec:format")), ""),
        "sha256": _sha256(comp),
        "has_sha256": _has_sha256(comp),
        "licenses": _license_names(comp),
        "has_license": bool(_license_names(comp)),
        "has_model_card": bool(card),
        "datasets": [d["ref"] for d in params.get("datasets") or [] if isinstance(d, dict) and "ref" in d],
        "base_models": [a.get("name", "") for a in pedigree.get("ancestors") or []],
    }


def _dataset_summary(comp: Mapping[str, Any]) -> dict[str, Any]:
    entries = [d for d in comp.get("data") or [] if isinstance(d, dict)]
    path = next(iter(_properties(comp, "mlsec:path")), "")
    return {
        "bom_ref": comp.get("bom-ref", ""),
        "name": comp.get("name", ""),
        "path": path,
        "source": "file" if path else "declared",
        "has_sha256": bool(_sha256(comp)),
        "classification": next((d["classification"] for d in entries if d.get("classification")), ""),
        "sensitive_data": sorted({s for d in entries for s in d.get("sensitiveData") or []}),
        "has_owner": any((d.get("governance") or {}).get("owners") for d in entries),
    }


def summary(doc: Mapping[str, Any]) -> dict[str, Any]:
    """BOM facts for the policy input: counts, models lacking hash/licence/card, datasets, libraries.

    Reads plain JSON (never the library), so it works on any CycloneDX document.
    """
    comps = [c for c in doc.get("components") or [] if isinstance(c, dict)]
    models = [_model_summary(c) for c in comps if c.get("type") == "machine-learning-model"]
    datasets = [_dataset_summary(c) for c in comps if c.get("type") == "data"]
    libraries = sorted(str(c.get("purl") or c.get("bom-ref") or c.get("name")) for c in comps if c.get("type") == "library")
    vulns = [v for v in doc.get("vulnerabilities") or [] if isinstance(v, dict)]
    return {
        "serial": doc.get("serialNumber", ""),
        "spec_version": doc.get("specVersion", ""),
        "counts": {
            "components": len(comps),
            "models": len(models),
            "datasets": len(datasets),
            "libraries": len(libraries),
            "vulnerabilities": len(vulns),
            "vulnerabilities_with_analysis": sum(1 for v in vulns if v.get("analysis")),
        },
        "models": models,
        "models_without_sha256": [m["path"] for m in models if not m["has_sha256"]],
        "models_without_license": [m["path"] for m in models if not m["has_license"]],
        "models_without_model_card": [m["path"] for m in models if not m["has_model_card"]],
        "datasets": datasets,
        "libraries": libraries,
    }
