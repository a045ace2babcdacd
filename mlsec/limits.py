"""Resource limits of one artifact's inspection, apart from the inspection machinery so that
options can name them without loading the readers (a run answered from the memo loads none)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Limits:
    """Resource limits for inspecting one artifact. Hitting one is a finding, never a crash."""

    max_depth: int = 8                      # container nesting (zip in tar in gzip ...)
    max_members: int = 100_000              # members per archive
    max_expanded: int = 32 << 30            # decompressed bytes per artifact
    max_ratio: int = 250                    # expansion ratio that marks a bomb ...
    ratio_floor: int = 256 << 20            # ... once this many bytes came out of one stream
    max_opcodes: int = 50_000_000           # opcodes per pickle stream
    max_memo: int = 1_000_000               # memo entries per pickle stream
    max_stack: int = 1_000_000              # stack items + marks per pickle stream
    max_pickles: int = 10_000               # pickles in one stream (STOP-separated)
    keep_bytes: int = 16 << 20              # bytes literals kept for nested-payload scanning
    timeout: float = 300.0                  # seconds per artifact
