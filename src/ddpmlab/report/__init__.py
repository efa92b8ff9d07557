"""``ddpmlab report``: one self-contained interactive HTML page for a run, or a comparison of runs."""
