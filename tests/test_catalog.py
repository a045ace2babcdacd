"""The rule catalog and the pickle allow/deny lists are consistent with the code."""

from __future__ import annotations

import re

from mlsec import catalog
from tests.conftest import FIXTURES, REPO


def test_every_rule_id_used_in_code_is_catalogued() -> None:
    used = set()
    for path in (REPO / "mlsec").rglob("*.py"):
        used |= set(re.findall(r'"(MLSEC-[A-Z]+-\d{3})"', path.read_text()))
    assert used, "no rule ids found: the pattern is wrong"
    assert used <= set(catalog.rules())


def test_rules_have_help_and_remediation() -> None:
    for rule in catalog.rules().values():
        assert rule.help and rule.remediation and rule.title, rule.id
        assert rule.cwe, rule.id


def test_deny_wins_over_allow_and_patterns_match_as_documented() -> None:
    lists = catalog.pickle_globals()
    assert lists.unsafe_reason("os", "system") and not lists.is_safe("os", "system")
    assert lists.is_safe("torch._utils", "_rebuild_tensor_v2")
    assert lists.is_safe("sklearn.tree._classes", "DecisionTreeClassifier")
    assert not lists.is_safe("sklearn.datasets._openml", "FetchOpenML")  # excluded module
    assert not lists.is_safe("sklearn.utils", "deprecated")  # functions are not allowlisted
    assert lists.is_safe("torch.jit._pickle", "build_intlist") and lists.unsafe_reason("torch.jit", "load")


def test_every_global_in_the_benign_inventory_is_allowlisted() -> None:
    """GLOBALS.txt lists what real libraries wrote; each must be allowed after name mapping."""
    from mlsec.engine.pickle import normalize

    lists = catalog.pickle_globals()
    missing = []
    for line in (FIXTURES / "benign" / "GLOBALS.txt").read_text().splitlines():
        if ": " not in line or line.split(": ", 1)[1].startswith("("):  # generator notes
            continue
        qual = line.split(": ", 1)[1].split()[0]
        module, _, name = qual.rpartition(".")
        module, name = normalize(module, name)
        if not lists.is_safe(module, name):
            missing.append(qual)
    assert missing == []
