"""Training objectives: small callables ``objective(model, x0, generator=None, cond=None)`` returning a
per-example loss of shape (B,), registered by name in ``OBJECTIVES``."""
from ddpmlab.objectives.flow_matching import FlowMatching
from ddpmlab.objectives.losses import OBJECTIVES, Hybrid, Simple, TrajectoryBound, VLB, make_objective

__all__ = ["OBJECTIVES", "FlowMatching", "Hybrid", "Simple", "TrajectoryBound", "VLB", "make_objective"]
