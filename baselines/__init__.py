"""Baseline optimizers on the torch-only two-pass core (``baselines.core``): SAM/ASAM and ESAM, and the
cheaper sharpness-aware methods a user would weigh against Sparse SAM (LookSAM, GSAM, Momentum-SAM, RST,
AE-SAM, late-phase SAM, random weight perturbation, K-SAM; the loss-shaping SAF and MESA; periodic SAM is
``SAM(sam_every=k)``). SGD is plain ``torch.optim.SGD``. Nothing here imports the suite: one file (``sam.py``,
``looksam.py``, ...) plus ``core/`` can be copied into any project."""

from .aesam import AESAM
from .core import Meter, ModelClosure, TwoPassOptimizer, call_closure, frozen_bn_stats
from .esam import ESAM
from .gsam import GSAM
from .ksam import KSAM
from .late_sam import LateSAM
from .looksam import LookSAM
from .msam import MSAM
from .rst import RST
from .rwp import RWP
from .saf import MESA, SAF
from .sam import SAM

__all__ = ["AESAM", "ESAM", "GSAM", "KSAM", "MESA", "MSAM", "RST", "RWP", "SAF", "SAM", "LateSAM", "LookSAM",
           "Meter", "ModelClosure",
           "TwoPassOptimizer", "call_closure", "frozen_bn_stats"]
