"""The recommended recipe's training budget, set from the data (issue 24): ``train.iters = "auto"``.

Chosen on ``benchmarks/quality_suite.py`` (ten data sets, seeds 0-4): at 1000, 2000 and 4000 steps
(``benchmarks/results/quality_suite_budgets.md``) the 32 x 2 MLP of ``configs/default.toml`` is near a true
sample's distance on the seed's 1-D mixture after 1,000 steps, but 2-D and higher data (moons, the
checkerboard, the swiss roll, a user's file of rings, Gaussian mixtures in 3-D and 10-D) need about
4,000; a wider network buys little (``quality_suite_width64.md``). ``quality_suite.md`` measures the rule.
So the rule counts the features of one example (its dimension):

    1 feature         -> ITERS_1D = 1000 steps
    2 or more         -> ITERS_ND = 4000 steps

It is resolved when the trainer knows its data (``Trainer``) and the number is what the run's
``config.toml`` records; a number given with ``--set train.iters=N`` (or in your config) replaces the
rule. Images want their own recipe (``configs/digits.toml``): the rule gives them 4,000 MLP steps, far
from their floor, and the post-training line says so.
"""
from __future__ import annotations

import math

AUTO = "auto"
ITERS_1D = 1000
ITERS_ND = 4000


def auto_iters(data_shape) -> int:
    """The rule's number of training steps for examples of shape ``data_shape`` (without the batch)."""
    return ITERS_1D if math.prod(tuple(data_shape)) <= 1 else ITERS_ND


def resolve_iters(train, data_shape) -> None:
    """Replace ``train.iters = "auto"`` by the rule's number for this data (in place); a number stays."""
    if train.iters == AUTO:
        train.iters = auto_iters(data_shape)
