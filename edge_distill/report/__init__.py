"""The report stage: report.json (everything, machine-readable), report.md and report.html (for people)."""

from .writer import rerender, write_report

__all__ = ["rerender", "write_report"]
