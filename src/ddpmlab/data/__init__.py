"""Training data: named distributions (with exact densities where known) and the user's files."""
from ddpmlab.data.base import TrainingData, make_training_data  # noqa: F401
