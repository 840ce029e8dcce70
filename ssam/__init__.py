"""Sparse SAM (Mi et al., 2023, arXiv 2306.17504): the optimizer, its masks, Fisher scores and the
implicit (masked-backward) form."""

from ssam.implicit import MaskedBackward
from ssam.ssam import SSAM

SSAMF = SSAM  # mask="fisher" is the default
__all__ = ["SSAM", "SSAMF", "SSAMD", "MaskedBackward"]


def SSAMD(params, **kwargs):  # noqa: N802 - reads as a class name, like the paper's
    """SSAM with the dynamic-sparse-training mask: ``SSAM(params, mask="dynamic", ...)``."""
    return SSAM(params, mask="dynamic", **kwargs)
