"""Scanners (whole-artifact) and format readers (nested content), one per file."""
