"""Baseline optimizers: SGD (torch.optim.SGD), SAM/ASAM, and the two-pass skeleton they share."""

import baselines.sgd  # noqa: F401  (registered first: the reference every ratio is taken to)
from baselines.closure import Meter, ModelClosure, call_closure, frozen_bn_stats
from baselines.sam import SAM
from baselines.two_pass import TwoPassOptimizer

__all__ = ["SAM", "Meter", "ModelClosure", "TwoPassOptimizer", "call_closure", "frozen_bn_stats"]
