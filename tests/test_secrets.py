"""Secrets: the shared detector, the scanner's file selection, and masking in every output.

Tokens are generated here (fake, well formed, random per run from a fixed seed) rather than
committed, except the notebook fixture's ``hf_`` token.
"""

from __future__ import annotations

import json
import random
import string
from pathlib import Path

import pytest
from click.testing import CliRunner

from mlsec.cli import main
from mlsec.detect.secrets import SecretHit, find_secrets, kinds, mask, rule_for_kind
from mlsec.model import Artifact, ArtifactKind
from mlsec.pipeline import Options, run
from mlsec.registry import ScanContext
from mlsec.report import renderer
from mlsec.scanners.secrets import SecretsScanner

RNG = random.Random(20261128)
ALNUM = string.ascii_letters + string.digits


def rand(n: int, alphabet: str = ALNUM) -> str:
    return "".join(RNG.choice(alphabet) for _ in range(n))


TOKENS = {
    "huggingface-token": "hf_" + rand(34, string.ascii_letters),
    "openai-api-key": "sk-proj-" + rand(74, ALNUM + "_-") + "T3BlbkFJ" + rand(74, ALNUM),
    "anthropic-api-key": "sk-ant-api03-" + rand(93, ALNUM + "_-") + "AA",
    "wandb-api-key": "wandb_v1_" + rand(77, ALNUM + "_"),
    "replicate-api-token": "r8_" + rand(37),
    "aws-access-key-id": "AKIA" + rand(16, string.ascii_uppercase + "234567"),
    "github-token": "ghp_" + rand(36),
    "slack-token": "xoxb-" + rand(11, string.digits) + "-" + rand(24),
    "gcp-api-key": "AIza" + rand(35, ALNUM + "_-"),
    "groq-api-key": "gsk_" + rand(52),
}


@pytest.mark.parametrize("kind", sorted(TOKENS))
def test_each_provider_format_is_found_and_masked(kind: str) -> None:
    token = TOKENS[kind]
    text = f"config:\n  value: {token}\n"
    (hit,) = find_secrets(text)
    assert hit == SecretHit(kind, text.index(token), text.index(token) + len(token), mask(token))
    assert hit.masked == f"{token[:4]}…({len(token)} chars)" and token[4:] not in hit.masked
    assert rule_for_kind(kind).startswith("MLSEC-SECRET-")


def test_context_rules_need_their_context() -> None:
    secret = rand(20, string.ascii_uppercase) + rand(20, string.ascii_lowercase + string.digits + "/+")
    assert [h.kind for h in find_secrets(f"aws_secret_access_key = {secret}\n")] == ["aws-secret-access-key"]
    assert find_secrets(f"checksum = {secret}\n") == []  # the same 40 characters without AWS around
    legacy = rand(40, "0123456789abcdef")
    assert [h.kind for h in find_secrets(f"WANDB_API_KEY={legacy}\n")] == ["wandb-api-key"]
    assert find_secrets(f"commit = {legacy}\n") == []


def test_gcp_service_account_key_is_one_hit_of_the_specific_kind() -> None:
    body = "\\n".join(rand(64, ALNUM + "+/") for _ in range(6))
    doc = json.dumps({"type": "service_account", "project_id": "p", "private_key_id": rand(40, "0123456789abcdef"),
                      "private_key": f"-----BEGIN PRIVATE KEY-----\n{body}\n-----END PRIVATE KEY-----\n",
                      "client_email": "svc@p.iam.gserviceaccount.com"}, indent=1)
    assert [h.kind for h in find_secrets(doc)] == ["gcp-service-account-key"]
    pem = f"-----BEGIN RSA PRIVATE KEY-----\n{body.replace(chr(92) + 'n', chr(10))}\n-----END RSA PRIVATE KEY-----\n"
    assert [h.kind for h in find_secrets(pem)] == ["private-key"]
    cut = pem.split("-----END")[0]
    assert [h.kind for h in find_secrets(cut)] == ["private-key"]  # truncated paste


def test_generic_assignments() -> None:
    value = rand(24)
    while not any(c.isdigit() for c in value):
        value = rand(24)
    for line in (f'OPENAI_API_KEY = "{value}"', f'{{"client_secret": "{value}"}}', f"DB_PASSWORD={value}",
                 f"  auth_token: {value}", f'login(token="{value}")'):
        assert [h.kind for h in find_secrets(line + "\n")] == ["generic-secret"], line
    for line in ('api_key = os.environ["API_KEY"]', 'api_key = "your-api-key-here-1234"', "TOKEN=${HF_TOKEN_123456789}",
                 'max_tokens = 1024', 'tokenizer_name = "bert-base-uncased-12345678"', 'password = "changeme123456789"',
                 'secret = "xxxxxxxxxxxxxxxxxxxxxxxx"', "sort_key = a8Fk29dLqP0zX7vB3nM1"):
        assert find_secrets(line + "\n") == [], line


def test_placeholders_and_docs_examples_are_not_secrets() -> None:
    for text in ("hf_" + "x" * 34, "AKIAIOSFODNN7EXAMPLE", "sk-" + "0" * 48, "Set HF_TOKEN to hf_... from your settings",
                 "-----BEGIN PRIVATE KEY-----", 'if pem.startswith("-----BEGIN RSA PRIVATE KEY-----"):'):
        assert find_secrets(text) == [], text


def test_overlapping_matches_keep_the_specific_kind() -> None:
    token = TOKENS["huggingface-token"]
    assert [h.kind for h in find_secrets(f'HF_TOKEN = "{token}"')] == ["huggingface-token"]


def test_every_kind_maps_to_a_catalogued_rule() -> None:
    from mlsec import catalog

    assert set(kinds().values()) <= set(catalog.rules())
    assert {f"MLSEC-SECRET-{i:03d}" for i in range(1, 13)} == set(kinds().values())


@pytest.mark.parametrize(
    ("name", "kind", "fmt", "wanted"),
    [(".env", ArtifactKind.OTHER, "text", True), (".env.production", ArtifactKind.OTHER, "text", True),
     ("deploy/settings.yaml", ArtifactKind.OTHER, "text", True), ("train.py", ArtifactKind.CODE, "text", True),
     ("requirements.txt", ArtifactKind.DEPENDENCIES, "text", True), ("sa-key.json", ArtifactKind.DATASET, "json", True),
     ("rows.json", ArtifactKind.DATASET, "json", False), ("data.csv", ArtifactKind.DATASET, "csv", False),
     ("nb.ipynb", ArtifactKind.NOTEBOOK, "text", False), ("model.bin", ArtifactKind.MODEL, "pickle", False),
     ("notes.unknownext", ArtifactKind.OTHER, "text", False)],
)
def test_scanner_reads_code_and_config_not_data(name: str, kind: ArtifactKind, fmt: str, wanted: bool) -> None:
    art = Artifact(name, kind, fmt, 100, "0" * 64, name)
    assert SecretsScanner().applies(art, ScanContext()) is wanted


def _leaky_project(tmp_path: Path) -> list[str]:
    hf, gh, aws = TOKENS["huggingface-token"], TOKENS["github-token"], TOKENS["aws-access-key-id"]
    password = "Sup3r-S3cret-Passw0rd"
    (tmp_path / ".env").write_text(f"HF_TOKEN={hf}\nAWS_ACCESS_KEY_ID={aws}\n")
    (tmp_path / "app.py").write_text(f'import os\n\nGITHUB = "{gh}"\npassword = "{password}"\n')
    return [hf, gh, aws, password]


def test_raw_secrets_never_reach_json_or_table_from_the_cli(tmp_path: Path) -> None:
    raws = _leaky_project(tmp_path)
    cli = CliRunner()
    for fmt in ("json", "table", "sarif", "markdown"):
        res = cli.invoke(main, ["scan", str(tmp_path), "--format", fmt, "-q", "--no-cache"], catch_exceptions=False)
        assert res.exit_code == 1, res.output
        for raw in raws:
            assert raw[4:] not in res.output, (fmt, raw[:4])
    doc = json.loads(cli.invoke(main, ["scan", str(tmp_path), "--format", "json", "-q"]).output)
    by_rule = {f["rule_id"]: f for f in doc["findings"]}
    assert by_rule["MLSEC-SECRET-001"]["location"]["line"] == 1 and by_rule["MLSEC-SECRET-001"]["path"] == ".env"
    assert by_rule["MLSEC-SECRET-008"]["location"] == {"line": 3, "column": 11}
    assert by_rule["MLSEC-SECRET-001"]["evidence"]["masked"] == mask(raws[0])


def test_raw_secrets_never_reach_reports_with_bandit_either(tmp_path: Path) -> None:
    """bandit quotes hard-coded passwords in its messages; the adapter masks them."""
    pytest.importorskip("bandit", reason="bandit is not installed")
    raws = _leaky_project(tmp_path)
    result = run([str(tmp_path)], Options(engines=frozenset({"mlsec", "bandit"})))
    assert {"MLSEC-BANDIT-B105", "MLSEC-SECRET-008"} <= {f.rule_id for f in result.findings}
    from mlsec.model import Severity

    for fmt in ("json", "table", "sarif", "gitlab", "markdown", "junit"):
        text = renderer(fmt)(result, Severity.INFO, False, decision=None)
        for raw in raws:
            assert raw[4:] not in text, (fmt, raw[:4])
    rescan = run([str(tmp_path)], Options(engines=frozenset({"mlsec", "bandit"})))  # from the result cache
    assert [f.to_dict() for f in rescan.findings] == [f.to_dict() for f in result.findings]


def test_big_config_file_is_skipped_not_read(tmp_path: Path) -> None:
    big = tmp_path / "huge.yaml"
    big.write_bytes(b"a: b\n" * (1 << 20))
    result = run([str(big)], Options(use_cache=False))
    assert [s.code for s in result.skipped] == ["too-large"]
