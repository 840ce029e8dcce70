"""Baseline optimizers: SGD (torch.optim.SGD), SAM/ASAM, ESAM, and the two-pass skeleton they share."""
# ruff: noqa: I001  -- import order is registration order: the registry lists sgd, sam, esam first

import baselines.sgd  # noqa: F401  (registered first: the reference every ratio is taken to)
from baselines.closure import Meter, ModelClosure, call_closure, frozen_bn_stats
from baselines.sam import SAM
from baselines.esam import ESAM
from baselines.two_pass import TwoPassOptimizer

__all__ = ["ESAM", "SAM", "Meter", "ModelClosure", "TwoPassOptimizer", "call_closure", "frozen_bn_stats"]
