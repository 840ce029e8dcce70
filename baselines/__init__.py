"""Baseline optimizers on the torch-only two-pass core (``baselines.core``): SAM/ASAM and ESAM, and the
cheaper sharpness-aware methods a user would weigh against Sparse SAM (LookSAM, GSAM, Momentum-SAM, RST;
periodic SAM is ``SAM(sam_every=k)``). SGD is plain ``torch.optim.SGD``. Nothing here imports the suite:
one file (``sam.py``, ``looksam.py``, ...) plus ``core/`` can be copied into any project."""

from .core import Meter, ModelClosure, TwoPassOptimizer, call_closure, frozen_bn_stats
from .esam import ESAM
from .gsam import GSAM
from .looksam import LookSAM
from .msam import MSAM
from .rst import RST
from .sam import SAM

__all__ = ["ESAM", "GSAM", "MSAM", "RST", "SAM", "LookSAM", "Meter", "ModelClosure", "TwoPassOptimizer",
           "call_closure", "frozen_bn_stats"]
