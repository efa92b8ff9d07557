"""``ddpmlab report``: one self-contained interactive HTML page for a run, or a comparison of runs."""
from ddpmlab.report.build import build_report  # noqa: F401
from ddpmlab.report.collect import ReportSettings  # noqa: F401
