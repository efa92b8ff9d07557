"""Training data: named distributions (with exact densities where known) and the user's files."""
