"""Training objectives: small callables ``objective(model, x0, generator=None, cond=None)`` returning a
per-example loss of shape (B,), registered by name in ``ddpmlab.objectives.losses.OBJECTIVES``.

This package is the public ``dl.objectives`` namespace (``dl.objectives.Simple()``), part of the ``ddpmlab``
namespace: the one place besides ``ddpmlab`` itself that re-exports. Code inside ddpmlab imports each
name from the module that defines it. Importing the package registers every built-in objective."""
from ddpmlab.objectives.consistency import ConsistencyDistillation, ConsistencyTraining
from ddpmlab.objectives.flow_matching import FlowMatching
from ddpmlab.objectives.losses import Hybrid, Simple, TrajectoryBound, VLB
from ddpmlab.objectives.meanflow import MeanFlow
from ddpmlab.objectives.reflow import Reflow
from ddpmlab.objectives.shortcut import Shortcut

__all__ = ["ConsistencyDistillation", "ConsistencyTraining", "FlowMatching", "Hybrid", "MeanFlow", "Reflow",
           "Shortcut", "Simple", "TrajectoryBound", "VLB"]
