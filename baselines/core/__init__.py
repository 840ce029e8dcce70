"""The torch-only core every two-pass optimizer builds on: the closure and its feature names, the
two-pass skeleton, and the hyper-parameter checks. It imports torch and nothing of the suite."""

from .checks import check_bool, check_choice, check_int, check_number
from .closure import (
    BACKWARD,
    BATCH,
    FEATURES,
    FREEZE_BN,
    OBJECTIVE,
    PER_SAMPLE,
    SUBSET,
    SYNC,
    Meter,
    ModelClosure,
    Objective,
    call_closure,
    frozen_bn_stats,
    has_features,
    several_processes,
    unwrapped,
)
from .two_pass import Closure, TwoPassOptimizer

__all__ = [
    "BACKWARD", "BATCH", "FEATURES", "FREEZE_BN", "OBJECTIVE", "Objective", "PER_SAMPLE", "SUBSET", "SYNC", "Closure",
    "Meter", "ModelClosure",
    "TwoPassOptimizer", "call_closure", "check_bool", "check_choice", "check_int", "check_number",
    "frozen_bn_stats", "has_features", "several_processes", "unwrapped",
]
