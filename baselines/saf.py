"""SAF and MESA (Du, Zhou, Feng, Tan, Zhou and Yu, NeurIPS 2022, "Sharpness-Aware Training for Free",
https://arxiv.org/abs/2205.14083; code: github.com/AngusDujw/SAF, Apache-2.0): SGD's one pass per step on the
training loss plus a trajectory loss that keeps the outputs near where they were, which the paper shows stands in
for SAM's sharpness term at almost no cost.

    L_i = CE(f_w(x_i), y_i) + lam * tau^2 * KL( softmax(z_i / tau) || softmax(f_w(x_i) / tau) )
            while start_epoch < e < end_epoch (e the epoch from 0); CE alone otherwise
    SAF:  z_i = the outputs the network gave example i in epoch e - past_epochs (a memory of N x
          (past_epochs + 1) x classes logits, written every step: each example's outputs of this epoch)
    MESA: z_i = the outputs of an exponential moving average of the weights (decay ema_decay per step, from the
          initial weights, BatchNorm's buffers averaged alike, in eval mode) on the same inputs
    w <- base_step(w, grad mean_i L_i)

Defaults as the code's README and commands: tau 5, start_epoch 5, SAF lam 0.3 with past_epochs 3
(``--minus_epoch``'s argparse default; the README says 2 or 3 and ``run.sh``'s SAF line uses 2), MESA lam 0.8
with ema_decay 0.9998 (timm's ``--model-ema-decay`` default, which its command uses). Both commands also smooth
the labels by 0.1; here the loss is the profile's (plain cross-entropy). The rule is written from ``SAF_train.py`` and
``MESA_train.py``: the KL term only strictly after ``start_epoch`` and strictly before ``end_epoch``; SAF
stores the outputs of the pass that trains (augmented, as the code's); MESA's teacher runs on every step, as the
code's does (its cost is the same in every epoch), its update after each step. Where this file differs from the
code (docs/peers.md): the trained model is evaluated, not the EMA (the code reports the EMA model when
``--model-ema`` is on); SAF does not also run an EMA teacher it never reads.

Both are loss-shaping methods, not two-pass ones: each owns an ``Objective`` (``optimizer.objective``) that the
closure calls with each example's index in the training set (``ModelClosure(model, x, y, indices=idx,
objective=optimizer.objective)``; the suite's loop does this for every optimizer that has one). SAF's memory and
MESA's teacher live on the model's device, so a run's peak memory includes them, and travel in ``state_dict``.
Under several processes each keeps its own memory of the examples its slice saw, as the code's DDP runs do (an
example another replica trained on last time reads an older row, or zeros): not the one-process algorithm.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .core.checks import check_int, check_number
from .core.closure import LossFn, Objective, unwrapped
from .core.two_pass import Closure, TwoPassOptimizer


class TrajectoryLoss(Objective):
    """The cross-entropy plus ``lam * tau^2 * KL(softmax(z / tau) || softmax(outputs / tau))`` per example, where
    ``reference(outputs, indices, inputs)`` gives z; ``epoch`` is set by the owning optimizer before each pass."""

    def __init__(self, lam: float, temperature: float, start_epoch: int, end_epoch: int | None) -> None:
        self.lam, self.temperature, self.start_epoch, self.end_epoch = lam, temperature, start_epoch, end_epoch
        self.epoch = 0

    def active(self) -> bool:
        return self.start_epoch < self.epoch and (self.end_epoch is None or self.epoch < self.end_epoch)

    def reference(self, outputs: torch.Tensor, indices: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def __call__(self, outputs: torch.Tensor, targets: torch.Tensor, indices: torch.Tensor, inputs: torch.Tensor,
                 loss_fn: LossFn) -> torch.Tensor:
        losses = loss_fn(outputs, targets)
        z = self.reference(outputs, indices, inputs)
        if not self.active():
            return losses
        tau = self.temperature
        target = F.log_softmax(z.float() / tau, dim=1)
        kl = (target.exp() * (target - F.log_softmax(outputs.float() / tau, dim=1))).sum(dim=1)
        return losses + self.lam * tau**2 * kl


class PastOutputs(TrajectoryLoss):
    """SAF's reference: each example's outputs ``past_epochs`` epochs ago, from a memory of the last
    ``past_epochs + 1`` epochs' outputs (allocated at the first call, on the outputs' device)."""

    def __init__(self, train_size: int, past_epochs: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.train_size, self.past_epochs = train_size, past_epochs
        self.memory: torch.Tensor | None = None

    def reference(self, outputs: torch.Tensor, indices: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        slots = self.past_epochs + 1
        if self.memory is None:
            self.memory = torch.zeros(self.train_size, slots, outputs.shape[1], device=outputs.device)
        elif self.memory.device != outputs.device:  # loaded from a checkpoint (read onto the CPU): back beside the
            self.memory = self.memory.to(outputs.device)  # outputs it is compared with, once
        rows = indices.to(self.memory.device)
        self.memory[rows, self.epoch % slots] = outputs.detach().float()
        return self.memory[rows, (self.epoch - self.past_epochs) % slots]


class TeacherOutputs(TrajectoryLoss):
    """MESA's reference: the outputs of ``teacher`` (the EMA of the weights, in eval mode) on the same inputs."""

    extra_forwards = 1

    def __init__(self, teacher: nn.Module, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.teacher = teacher

    @torch.no_grad()
    def reference(self, outputs: torch.Tensor, indices: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        return self.teacher(inputs)


class _LossShaping(TwoPassOptimizer):
    """SGD's one pass on the objective's loss (the skeleton's one-pass step: its fp16 handling, its step count,
    which gives the epoch). The skeleton's radius and ascent settings are unused."""

    shared_hparams = ("ascent_fraction", "sam_every", "lam", "temperature", "start_epoch", "end_epoch")
    objective: TrajectoryLoss

    def __init__(self, params: Iterable[Any], base_optimizer: type[torch.optim.Optimizer], steps_per_epoch: int | None,
                 own: dict[str, Any], base_kwargs: dict[str, Any]) -> None:
        self.steps_per_epoch = steps_per_epoch
        super().__init__(params, base_optimizer, extra_defaults=own, **base_kwargs)
        check_int("steps_per_epoch (the epoch of the trajectory loss)", steps_per_epoch)

    def check_group(self, group: dict[str, Any]) -> None:
        super().check_group(group)
        check_number("lam", group["lam"], low=0)
        check_number("temperature", group["temperature"], low=0, low_open=True)
        check_int("start_epoch", group["start_epoch"], minimum=0)
        if group["end_epoch"] is not None:
            # the term applies in epochs start_epoch + 1 .. end_epoch - 1: at least one
            check_int("end_epoch", group["end_epoch"], minimum=group["start_epoch"] + 2)

    def two_passes(self) -> bool:
        return False

    def one_pass(self, closure: Closure) -> torch.Tensor:
        if getattr(closure, "objective", None) is not self.objective:
            raise TypeError(f"{type(self).__name__} shapes the training loss: step it with a closure that evaluates "
                            "its objective, ModelClosure(model, x, y, indices=<each example's index in the training "
                            "set>, objective=optimizer.objective)")
        objective = self.objective  # its settings are the groups' (one value for all), read at every step
        objective.lam, objective.temperature, objective.start_epoch, objective.end_epoch = (
            self.shared(key) for key in ("lam", "temperature", "start_epoch", "end_epoch"))
        objective.epoch = (self.steps_taken - 1) // self.steps_per_epoch  # steps_taken counts this step
        self.before_pass()
        return closure()

    def before_pass(self) -> None:
        """Before the step's pass (MESA: the teacher's update with the weights the last step made)."""

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "objective": self.objective_state()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state_dict = dict(state_dict)
        self.load_objective_state(state_dict.pop("objective"))
        super().load_state_dict(state_dict)

    def objective_state(self) -> dict[str, Any]:
        raise NotImplementedError

    def load_objective_state(self, state: dict[str, Any]) -> None:
        raise NotImplementedError


class SAF(_LossShaping):
    """``SAF(params, base_optimizer=torch.optim.SGD, lam=0.3, temperature=5.0, start_epoch=5, past_epochs=3,
    end_epoch=None, train_size=None, steps_per_epoch=None, **base_kwargs)``: ``train_size`` (N, the memory's rows;
    indices run over 0..N-1) and ``steps_per_epoch`` are required; the suite hands them from the run."""

    shared_hparams = (*_LossShaping.shared_hparams, "past_epochs")

    def __init__(
        self, params: Iterable[Any], base_optimizer: type[torch.optim.Optimizer] = torch.optim.SGD, lam: float = 0.3,
        temperature: float = 5.0, start_epoch: int = 5, past_epochs: int = 3, end_epoch: int | None = None,
        train_size: int | None = None, steps_per_epoch: int | None = None, **base_kwargs: Any,
    ) -> None:
        own = {"lam": lam, "temperature": temperature, "start_epoch": start_epoch, "past_epochs": past_epochs,
               "end_epoch": end_epoch}
        super().__init__(params, base_optimizer, steps_per_epoch, own, base_kwargs)
        check_int("train_size (SAF's memory of every training example's outputs)", train_size)
        self.objective = PastOutputs(train_size, past_epochs, lam=lam, temperature=temperature,
                                     start_epoch=start_epoch, end_epoch=end_epoch)

    def check_group(self, group: dict[str, Any]) -> None:
        super().check_group(group)
        check_int("past_epochs", group["past_epochs"])
        if group["past_epochs"] > group["start_epoch"] + 1:
            raise ValueError(f"past_epochs={group['past_epochs']} reaches before training from the first epoch with "
                             f"the trajectory loss (start_epoch={group['start_epoch']} + 1): at most "
                             f"{group['start_epoch'] + 1}")

    def objective_state(self) -> dict[str, Any]:
        return {"memory": self.objective.memory}

    def load_objective_state(self, state: dict[str, Any]) -> None:
        self.objective.memory = state["memory"]


class MESA(_LossShaping):
    """``MESA(params, base_optimizer=torch.optim.SGD, lam=0.8, temperature=5.0, start_epoch=5, ema_decay=0.9998,
    end_epoch=None, model=None, steps_per_epoch=None, **base_kwargs)``: ``model`` (whose weights ``params`` are;
    its copy is the teacher) and ``steps_per_epoch`` are required; the suite hands them."""

    shared_hparams = (*_LossShaping.shared_hparams, "ema_decay")

    def __init__(
        self, params: Iterable[Any], base_optimizer: type[torch.optim.Optimizer] = torch.optim.SGD, lam: float = 0.8,
        temperature: float = 5.0, start_epoch: int = 5, ema_decay: float = 0.9998, end_epoch: int | None = None,
        model: nn.Module | None = None, steps_per_epoch: int | None = None, **base_kwargs: Any,
    ) -> None:
        own = {"lam": lam, "temperature": temperature, "start_epoch": start_epoch, "ema_decay": ema_decay,
               "end_epoch": end_epoch}
        super().__init__(params, base_optimizer, steps_per_epoch, own, base_kwargs)
        if not isinstance(model, nn.Module):
            raise TypeError(f"MESA needs model= (the network its teacher averages), got {type(model).__name__}")
        self.student = unwrapped(model)
        teacher = copy.deepcopy(self.student).eval()
        teacher.requires_grad_(False)
        self.objective = TeacherOutputs(teacher, lam=lam, temperature=temperature, start_epoch=start_epoch,
                                        end_epoch=end_epoch)

    def check_group(self, group: dict[str, Any]) -> None:
        super().check_group(group)
        check_number("ema_decay", group["ema_decay"], 0, 1, high_open=True)

    @torch.no_grad()
    def before_pass(self) -> None:
        """ema <- d * ema + (1 - d) * w over the state (BatchNorm's buffers too; its step counter copied): the
        code's update after step t - 1, made before step t's pass (the same teacher for every pass)."""
        d = self.shared("ema_decay")
        student = self.student.state_dict()
        for name, value in self.objective.teacher.state_dict().items():
            if value.is_floating_point():
                value.mul_(d).add_(student[name].to(value.dtype), alpha=1 - d)
            else:
                value.copy_(student[name])

    def objective_state(self) -> dict[str, Any]:
        return {"teacher": self.objective.teacher.state_dict()}

    def load_objective_state(self, state: dict[str, Any]) -> None:
        self.objective.teacher.load_state_dict(state["teacher"])
