"""Tables and plots of run summaries."""

from locallearn.report.table import format_bytes, format_table, summary_table

__all__ = ["format_bytes", "format_table", "summary_table"]
