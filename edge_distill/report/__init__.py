"""The report stage: report.json (everything, machine-readable) and report.md (for people)."""

from .writer import write_report

__all__ = ["write_report"]
