"""Command line: the only module that prints, reads the terminal or exits.

Exit codes (every command): 0 pass; 1 blocked (findings at or above ``--fail-on``);
2 usage or configuration error; 3 a scanner could not complete (fail closed).
``--exit-zero`` turns 1 into 0 and never hides 2 or 3.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from mlsec import __version__
from mlsec.limits import Limits
from mlsec.model import ScanResult, Severity
from mlsec.report import FORMATS, renderer

if TYPE_CHECKING:
    from mlsec.verdicts import Decision

EXIT_PASS, EXIT_BLOCKED, EXIT_USAGE, EXIT_INCOMPLETE = 0, 1, 2, 3

_SEVERITIES = [s.label for s in Severity]


def _severity(_ctx: click.Context, _param: click.Parameter, value: str) -> Severity:
    return Severity.parse(value)


class _Progress:
    """Rich progress bar on stderr, shown only for interactive, longer-than-a-moment scans."""

    def __init__(self, enabled: bool) -> None:
        self._enabled = enabled
        self._start = time.monotonic()
        self._bar: Any = None
        self._task: Any = None

    def __call__(self, done: int, total: int, path: str) -> None:
        if not self._enabled:
            return
        if self._bar is None:
            if time.monotonic() - self._start < 0.5:
                return
            from rich.console import Console
            from rich.progress import Progress

            self._bar = Progress(console=Console(stderr=True), transient=True)
            self._bar.start()
            self._task = self._bar.add_task("scanning", total=total)
        self._bar.update(self._task, completed=done, description=f"scanning {path[-40:]}")

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="mlsec")
@click.pass_context
def main(ctx: click.Context) -> None:
    """mlsec: security scanner and policy gate for ML artifacts.

    Settings come from the command line, then MLSEC_* environment variables, then the
    [tool.mlsec] table of the nearest pyproject.toml (or mlsec.toml), then defaults.
    """
    from mlsec.config import ConfigError, command_defaults

    try:
        ctx.default_map = command_defaults(Path.cwd())
    except ConfigError as exc:
        _fail(str(exc))


def _scan_options(fn: Any) -> Any:
    """Options shared by ``scan`` and ``gate`` (what to scan, how, and what to print)."""
    options = [
        click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path)),
        click.option("--format", "formats", multiple=True, metavar="FORMAT[:FILE]", callback=_formats,
                     help=f"Report format ({', '.join(sorted(FORMATS))}; default table). Repeatable: "
                          "'--format sarif:mlsec.sarif --format markdown:summary.md' writes several reports."),
        click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
                     help="Write the report that has no :FILE to FILE instead of stdout."),
        click.option("--severity", type=click.Choice(_SEVERITIES, case_sensitive=False), default="low", envvar="MLSEC_SEVERITY",
                     show_default=True, callback=_severity,
                     help="Lowest severity to display (does not change the exit code)."),
        click.option("--exit-zero", is_flag=True, help="Exit 0 even when blocked (never hides 2 or 3)."),
        click.option("-j", "--jobs", type=click.IntRange(0, 64), default=1, show_default=True, envvar="MLSEC_JOBS",
                     help="Parallel worker processes (0 = one per CPU)."),
        click.option("--exclude", multiple=True, metavar="GLOB", envvar="MLSEC_EXCLUDE",
                     help="gitignore-style pattern to skip (repeatable)."),
        click.option("--no-gitignore", is_flag=True, help="Do not honour .gitignore files."),
        click.option("--only", "only", multiple=True, envvar="MLSEC_ONLY",
                     type=click.Choice(["code", "notebook", "dependencies", "dataset", "model", "archive"]),
                     help="Scan only artifacts of this kind (repeatable), e.g. --only dependencies."),
        click.option("--no-cache", is_flag=True, envvar="MLSEC_NO_CACHE", help="Do not use the hash and result caches."),
        click.option("--engine", "engines", multiple=True, type=click.Choice(["mlsec", "bandit", "modelscan"]),
                     help="Engines to run (default: mlsec and bandit). mlsec: models, ML code rules, notebooks, "
                          "secrets, dependencies, data; bandit: general Python rules; modelscan: second opinion on models."),
        click.option("--timeout", type=click.FloatRange(min=1), default=Limits().timeout, show_default=True, envvar="MLSEC_TIMEOUT",
                     help="Seconds allowed per artifact before it is reported as incomplete."),
        click.option("--policy", "policy_dirs", multiple=True, type=click.Path(exists=True, path_type=Path), envvar="MLSEC_POLICY",
                     help="Extra Rego policy directory or file; a file named like a shipped one replaces it."),
        click.option("--waivers", type=click.Path(dir_okay=False, path_type=Path), envvar="MLSEC_WAIVERS",
                     help="Waivers file (default: the nearest .mlsec/waivers.yaml)."),
        click.option("--config", "config_file", type=click.Path(dir_okay=False, exists=True, path_type=Path),
                     envvar="MLSEC_CONFIG", help="Stage settings file (default: mlsec.toml or [tool.mlsec] in pyproject.toml)."),
        click.option("--now", "now_text", metavar="TIME",
                     help="Evaluate waiver expiry and the policy as of this ISO date/time (audits, tests)."),
        click.option("--from", "from_stage", metavar="STAGE", help="The stage the artifacts are promoted from."),
        click.option("--bom", "bom_file", type=click.Path(dir_okay=False, path_type=Path),
                     help="Also write the CycloneDX ML-BOM (JSON) to FILE."),
        click.option("--spec-version", type=click.Choice(["1.6", "1.7"]), default="1.6", show_default=True,
                     help="CycloneDX version of the ML-BOM."),
        click.option("--reproducible", is_flag=True,
                     help="ML-BOM serial number and timestamp from the content (and SOURCE_DATE_EPOCH)."),
        click.option("--online", is_flag=True, envvar="MLSEC_ONLINE",
                     help="Also ask an online vulnerability service about dependencies (network; pip install 'mlsec[online]')."),
        click.option("-q", "--quiet", is_flag=True, help="No progress bar and no summary on stderr."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _formats(_ctx: click.Context, _param: click.Parameter, values: tuple[str, ...]) -> list[tuple[str, Path | None]]:
    """Parse ``FORMAT[:FILE]`` values; at most one report may go to stdout (or ``-o``)."""
    out: list[tuple[str, Path | None]] = []
    for value in values or ("table",):
        name, _, target = value.partition(":")
        if name not in FORMATS:
            raise click.BadParameter(f"unknown format {name!r} (choose from {', '.join(sorted(FORMATS))})")
        out.append((name, Path(target) if target else None))
    if sum(1 for _, target in out if target is None) > 1:
        raise click.BadParameter("only one format can go to stdout; give the others a file: FORMAT:FILE")
    return out


def _fail(message: str, code: int = EXIT_USAGE) -> None:
    click.echo(f"mlsec: {message}", err=True)
    sys.exit(code)


@main.command()
@_scan_options
@click.option("--fail-on", type=click.Choice(_SEVERITIES, case_sensitive=False), default="high", envvar="MLSEC_FAIL_ON",
              show_default=True, callback=_severity, help="Exit 1 when a finding is at or above this severity.")
@click.option("--stage", metavar="STAGE", envvar="MLSEC_STAGE", help="Also decide with the policy for this stage (the decision sets the exit code).")
@click.option("--baseline", type=click.Path(path_type=Path, dir_okay=False), envvar="MLSEC_BASELINE",
              help="An earlier `--format json` report: its findings are reported as suppressed (baseline), "
                   "so only new ones count for --fail-on. Not with --stage.")
def scan(fail_on: Severity, stage: str | None, baseline: Path | None, **kw: Any) -> None:
    """Scan files and directories for hostile or risky ML artifacts."""
    _run(stage=stage, fail_on=fail_on, baseline=baseline, **kw)


@main.command()
@_scan_options
@click.option("--stage", metavar="STAGE", required=True, envvar="MLSEC_STAGE", help="Target lifecycle stage (dev, staging, production or an alias).")
def gate(stage: str, **kw: Any) -> None:
    """Scan, then decide with the policy whether the artifacts may enter STAGE.

    Exit 0 pass (warnings allowed), 1 blocked, 2 policy or configuration error,
    3 incomplete scan when the stage requires completeness.
    """
    _run(stage=stage, fail_on=None, **kw)


@main.command()
@_scan_options
@click.option("--stage", metavar="STAGE", envvar="MLSEC_STAGE",
              help="Lifecycle stage recorded in the BOM (and used for waivers' VEX analysis).")
def bom(stage: str | None, **kw: Any) -> None:
    """Scan, then write the CycloneDX ML-BOM (models, datasets, libraries, vulnerabilities).

    Writes to -o FILE (or --bom FILE), else stdout. The BOM is validated against the CycloneDX
    schema before it is written. Exit 0, or 3 when the scan was incomplete or the BOM invalid.
    """
    kw["bom_file"] = kw.get("bom_file") or kw.get("output")
    kw["output"] = None
    _run(stage=stage, fail_on=None, bom_only=True, **kw)


def _run(*, paths: tuple[Path, ...], formats: list[tuple[str, Path | None]], output: Path | None, severity: Severity, fail_on: Severity | None,
         exit_zero: bool, jobs: int, exclude: tuple[str, ...], no_gitignore: bool, only: tuple[str, ...], no_cache: bool,
         engines: tuple[str, ...], timeout: float, policy_dirs: tuple[Path, ...], waivers: Path | None,
         config_file: Path | None, now_text: str | None, from_stage: str | None, stage: str | None,
         bom_file: Path | None, spec_version: str, reproducible: bool, online: bool, quiet: bool,
         bom_only: bool = False, baseline: Path | None = None) -> None:
    from mlsec import gate as gating
    from mlsec.config import ConfigError
    from mlsec.errors import BaselineError, PolicyError, WaiverError
    from mlsec.pipeline import Options, run

    for p in paths:
        if not os.path.lexists(p):
            raise click.BadParameter(f"{p} does not exist", param_hint="PATHS")
    if "modelscan" in engines:
        from mlsec.scanners.model_modelscan import available

        if not available():
            raise click.UsageError("--engine modelscan needs the modelscan package: pip install 'mlsec[modelscan]'")
    try:
        settings = gating.Settings(
            stage=stage,
            from_stage=from_stage,
            policy_dirs=policy_dirs,
            waivers=waivers,
            config=config_file,
            now=gating.parse_now(now_text) if now_text else None,
            start=paths[0],
            baseline=baseline,
        )
        prepared = gating.prepare(settings if not bom_only else dataclasses.replace(settings, stage=None))
        if bom_only and stage is not None:
            prepared = dataclasses.replace(prepared, stage=stage)  # recorded in the BOM; no policy runs
    except (ConfigError, WaiverError, BaselineError, PolicyError) as exc:
        _fail(str(exc))
    options = Options(
        excludes=exclude,
        use_gitignore=not no_gitignore,
        jobs=jobs or (os.cpu_count() or 1),
        use_cache=not no_cache,
        limits=Limits(timeout=timeout),
        engines=frozenset(engines or ("mlsec", "bandit")),
        kinds=frozenset(only),
        online=online,
    )
    progress = _Progress(enabled=not quiet and sys.stderr.isatty())
    try:
        raw = run([str(p) for p in paths], options, on_progress=progress)
    finally:
        progress.close()
    want_bom = bom_only or bom_file is not None
    request = gating.BomRequest(root=paths[0] if paths[0].is_dir() else paths[0].parent,
                                spec_version=spec_version, reproducible=reproducible) if want_bom else None
    try:
        result, decision, _, bom_doc = gating.decide(prepared, raw, request)
    except PolicyError as exc:
        _fail(str(exc))
    except ValueError as exc:  # the BOM builder's documented failure (e.g. a bad SOURCE_DATE_EPOCH)
        _fail(f"cannot build the ML-BOM: {exc}")
    if bom_doc is not None and want_bom:
        from mlsec import bom as bom_module

        problems = bom_module.validate(bom_doc, spec_version)
        if problems:
            _fail("the ML-BOM does not validate (a bug in mlsec):\n  " + "\n  ".join(problems[:20]), EXIT_INCOMPLETE)
        text = bom_module.render(bom_doc)
        if bom_file is None:
            click.echo(text, nl=False)
        else:
            try:
                bom_file.write_text(text, encoding="utf-8")
            except OSError as exc:
                _fail(f"cannot write {bom_file}: {exc.strerror}")
    if bom_only:
        if not quiet:
            click.echo(_summary(result, None, None) + (f"; ML-BOM written to {bom_file}" if bom_file else ""), err=True)
        sys.exit(EXIT_INCOMPLETE if result.errors else EXIT_PASS)
    to_stdout = False
    for fmt, target in formats:
        target = target or output
        color = target is None and fmt == "table" and sys.stdout.isatty()
        text = renderer(fmt)(result, severity, color, decision=decision)
        if target is not None:
            try:
                target.write_text(text, encoding="utf-8")
            except OSError as exc:
                _fail(f"cannot write {target}: {exc.strerror}")
        else:
            to_stdout = True
            click.echo(text, nl=False)
    if decision is None:
        assert fail_on is not None
        code = exit_code(result, fail_on, exit_zero)
    else:
        code = decision_exit_code(result, decision, gating.requires_completeness(prepared), exit_zero)
    if not quiet and not (to_stdout and any(f == "table" and t is None for f, t in formats) and output is None):
        click.echo(_summary(result, fail_on, decision), err=True)
    sys.exit(code)


def decision_exit_code(result: ScanResult, decision: Decision, need_complete: bool, exit_zero: bool) -> int:
    """0 pass/warn, 1 block, 3 incomplete when the stage requires a complete scan."""
    if result.errors and need_complete:
        return EXIT_INCOMPLETE
    if not decision.allow and not exit_zero:
        return EXIT_BLOCKED
    return EXIT_PASS


def exit_code(result: ScanResult, fail_on: Severity, exit_zero: bool) -> int:
    """0/1/3 from a scan result (see module docstring)."""
    if result.errors:
        return EXIT_INCOMPLETE
    worst = result.max_severity()
    if worst is not None and worst >= fail_on and not exit_zero:
        return EXIT_BLOCKED
    return EXIT_PASS


def _summary(result: ScanResult, fail_on: Severity | None, decision: Decision | None) -> str:
    head = (
        f"mlsec: {len(result.artifacts)} files, {len(result.findings)} findings, "
        f"{len(result.suppressed)} suppressed, {len(result.skipped)} skipped, {len(result.errors)} errors"
    )
    if decision is not None:
        return (f"{head}; {decision.stage}: {decision.decision.upper()} "
                f"({len(decision.violations)} violations, {len(decision.warnings)} warnings)")
    if fail_on is None:
        return head
    blocking = sum(1 for f in result.findings if f.severity >= fail_on)
    return f"{head}; {blocking} at or above {fail_on.label}"


_STARTER_CONFIG = """\
# mlsec settings. Command-line options win over MLSEC_* environment variables, which win over
# this file. The same keys work as [tool.mlsec] in pyproject.toml.

# fail_on = "high"          # scan: exit 1 at or above this severity (without --stage)
# severity = "low"          # lowest severity shown in reports
# exclude = ["data/raw/**"] # gitignore-style patterns not to scan
# jobs = 0                  # parallel workers (0 = one per CPU)
# policy = ["policies/"]    # extra Rego policy folders (package mlsec.custom.<name>)
# waivers = ".mlsec/waivers.yaml"
# baseline = "mlsec-baseline.json" # scan: findings of this earlier JSON report are not new

# Lifecycle stages used by `mlsec gate --stage NAME` (shipped defaults shown).
# [stages.dev]
# block_at = "critical"
# [stages.staging]
# block_at = "high"
# [stages.production]
# block_at = "medium"
# aliases = ["prod", "champion"]
# allowed_model_formats = ["safetensors", "onnx", "gguf"]
# require_model_card = true
"""

_STARTER_WAIVERS = """\
# Accepted findings, each with an owner, a reason and an expiry date (see the README).
version: 1
waivers: []
#  - id: W-0001
#    match: {rule: MLSEC-PICKLE-003, paths: ["models/legacy/**"]}
#    stages: [dev, staging]
#    expires: 2027-01-31
#    reason: legacy model, replaced by the safetensors export next quarter
#    owner: ml-platform@example.com
"""


@main.command()
@click.argument("folder", required=False, default=".", type=click.Path(file_okay=False, path_type=Path))
@click.option("--force", is_flag=True, help="Overwrite existing files.")
def init(folder: Path, force: bool) -> None:
    """Write a commented starter mlsec.toml and .mlsec/waivers.yaml into FOLDER."""
    targets = [(folder / "mlsec.toml", _STARTER_CONFIG), (folder / ".mlsec" / "waivers.yaml", _STARTER_WAIVERS)]
    existing = [str(p) for p, _ in targets if p.exists()]
    if existing and not force:
        _fail(f"not overwriting {', '.join(existing)} (use --force)")
    for path, text in targets:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        click.echo(f"wrote {path}")


@main.group()
def db() -> None:
    """The offline advisory database used by the dependency scanner."""


@db.command("update")
@click.option("--from", "source", required=True, metavar="PATH_OR_URL",
              help="OSV data: a PyPI all.zip, a directory of OSV JSON/YAML files (e.g. the PyPA advisory database), or one file.")
@click.option("--db", "db_path", type=click.Path(dir_okay=False, path_type=Path), envvar="MLSEC_ADVISORY_DB",
              help="Database file (default: advisories.sqlite in the cache directory).")
def db_update(source: str, db_path: Path | None) -> None:
    """Import OSV advisories into the local database (network only when SOURCE is a URL)."""
    from mlsec.deps import advisories

    try:
        report = advisories.update(source, db_path)
    except advisories.AdvisoryDbError as exc:
        _fail(str(exc))
    for line in report.lines():
        click.echo(line)


@db.command("info")
@click.option("--db", "db_path", type=click.Path(dir_okay=False, path_type=Path), envvar="MLSEC_ADVISORY_DB",
              help="Database file (default: advisories.sqlite in the cache directory).")
@click.option("--max-age-days", type=click.IntRange(min=1), help="Warn when the data is older than this.")
def db_info(db_path: Path | None, max_age_days: int | None) -> None:
    """Where the advisory database is, where it came from, and how old its data is."""
    from mlsec.deps import advisories

    info = advisories.info(db_path, max_age=max_age_days)
    for line in info.lines():
        click.echo(line)


@main.group("policy")
def policy_group() -> None:
    """Work with the gate's Rego policies."""


@policy_group.command("test")
@click.argument("folder", required=False, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--config", "config_file", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="Stage settings file (default: mlsec.toml or [tool.mlsec] near FOLDER).")
@click.option("-v", "--verbose", is_flag=True, help="Also list passing cases.")
def policy_test(folder: Path | None, config_file: Path | None, verbose: bool) -> None:
    """Run table-driven policy cases (FOLDER/tests/*.yaml) against the policies in FOLDER.

    FOLDER defaults to the shipped policies. A team folder is tested together with the shipped
    policies it extends (a file named like a shipped one replaces it). Exit 0 when every case
    passes, 1 when one fails, 2 when the policies or cases cannot be loaded.
    """
    from mlsec import config, policy
    from mlsec import policy_test as runner

    shipped = policy.default_dir()
    folder = folder or shipped
    try:
        extra = () if folder.resolve() == shipped.resolve() else (folder,)
        policies = policy.load(extra)
        policy.check_compiles(policies)
        stages = config.load(policies.defaults(), folder, config_file)
        cases = runner.load_cases(folder)
    except (policy.PolicyError, config.ConfigError) as exc:
        _fail(str(exc))
    if not cases:
        _fail(f"no test cases under {folder}/tests")
    failed = 0
    for file, case in cases:
        res = runner.run_case(policies, stages, file, case)
        if res.passed:
            if verbose:
                click.echo(f"PASS  {res.file}: {res.name}")
            continue
        failed += 1
        click.echo(f"FAIL  {res.file}: {res.name}")
        for line in res.diff:
            click.echo(f"      {line}")
    click.echo(f"{len(cases) - failed} passed, {failed} failed ({len(cases)} cases, policy {policies.digest[:19]}...)")
    sys.exit(EXIT_BLOCKED if failed else EXIT_PASS)


@main.group()
def rules() -> None:
    """Inspect the rule catalog."""


@rules.command("list")
def rules_list() -> None:
    """List every rule with its default severity."""
    from mlsec import catalog

    for rule in catalog.rules().values():
        click.echo(f"{rule.id:22} {rule.severity.label:9} {rule.title}")


@rules.command("explain")
@click.argument("rule_id")
def rules_explain(rule_id: str) -> None:
    """Explain a rule: what it finds, why it matters, how to fix it."""
    from mlsec import catalog

    rule = catalog.rules().get(rule_id.upper())
    if rule is None:
        click.echo(f"unknown rule {rule_id!r}; see `mlsec rules list`", err=True)
        sys.exit(EXIT_USAGE)
    cwe = ", ".join(f"CWE-{c}" for c in rule.cwe)
    click.echo(f"{rule.id}: {rule.title}\nseverity: {rule.severity.label}   {cwe}\n\n{rule.help}\n\nFix: {rule.remediation}")
    for ref in rule.references:
        click.echo(f"see: {ref}")
