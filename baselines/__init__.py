"""Baseline optimizers: SAM/ASAM and ESAM on the torch-only two-pass core (``baselines.core``).
SGD is plain ``torch.optim.SGD``. Nothing here imports the suite: ``sam.py`` (or ``esam.py``) plus
``core/`` can be copied into any project."""

from .core import Meter, ModelClosure, TwoPassOptimizer, call_closure, frozen_bn_stats
from .esam import ESAM
from .sam import SAM

__all__ = ["ESAM", "SAM", "Meter", "ModelClosure", "TwoPassOptimizer", "call_closure", "frozen_bn_stats"]
