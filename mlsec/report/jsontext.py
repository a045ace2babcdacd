"""JSON text that people can read and that stays fast on 10,000-entry reports.

``json.dumps(indent=2)`` falls back to the pure-Python encoder: on a 2,000-file report it was
most of the time of a cached re-scan. Here every object or list *inside a list* (a finding, an
artifact, a SARIF result) is one line written by the C encoder, and only the levels above are
indented: still valid, deterministic JSON, and one finding per line diffs and greps well.
"""

from __future__ import annotations

import json
from typing import Any

# One encoder per setting: json.dumps with options builds a new JSONEncoder on every call.
_ENCODERS = {flag: json.JSONEncoder(ensure_ascii=flag, separators=(", ", ": "), allow_nan=False).encode
             for flag in (False, True)}


def _compact(value: Any, ascii_only: bool) -> str:
    return _ENCODERS[ascii_only](value)


def dumps(value: Any, ascii_only: bool = False, _depth: int = 0) -> str:
    """Indented JSON whose list members are one line each (see the module docstring)."""
    if not isinstance(value, (dict, list)) or not value:
        return _compact(value, ascii_only)
    pad, close = "  " * (_depth + 1), "  " * _depth
    if isinstance(value, dict):
        body = ",\n".join(f"{pad}{_compact(str(k), ascii_only)}: {dumps(v, ascii_only, _depth + 1)}"
                          for k, v in value.items())
        return "{\n" + body + "\n" + close + "}"
    body = ",\n".join(pad + _compact(v, ascii_only) for v in value)
    return "[\n" + body + "\n" + close + "]"
