"""SGD with momentum: plain ``torch.optim.SGD``, whose ``step(closure)`` runs the closure once."""

import torch

from suite.registry import register

register(
    "sgd",
    description="SGD with momentum (torch.optim.SGD): one forward/backward pass per step",
    passes_per_step=1,
)(torch.optim.SGD)
