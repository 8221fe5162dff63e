"""The regularizers every mode can add to the task loss, behind one interface.

A term is called with the teacher's and the student's stage outputs on the
same batch and returns a ``TermOutput``: the loss to add (already weighted by
``regularizer.weight``) and detached values to log. Baselines run in the same
loop as OT so that comparisons are fair (METHOD.md, "Baselines").
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from otrt_core.errors import UserError
from otrt_core.models import StagedModel
from otrt_core.ot import LayerPair, OTRegularizer
from otrt_core.spec import JobSpec

Features = Mapping[str, Tensor]


@dataclass(frozen=True)
class TermOutput:
    loss: Tensor
    logs: dict[str, Tensor] = field(default_factory=dict)  # detached scalars on the device
    plans: dict[str, Tensor] = field(default_factory=dict)  # OT only


class Term(nn.Module):
    """A regularizer: ``term(teacher_features, student_features) -> TermOutput``."""

    needs_teacher_features = True

    def forward(self, teacher: Features, student: Features) -> TermOutput:
        raise NotImplementedError


class NoTerm(Term):
    needs_teacher_features = False

    def forward(self, teacher: Features, student: Features) -> TermOutput:
        return TermOutput(loss=torch.zeros((), device=student["logits"].device))


class OTTerm(Term):
    """lambda * sum_l w_l Omega(S_l, T_l): this method."""

    def __init__(self, spec: JobSpec) -> None:
        super().__init__()
        reg = spec.regularizer
        self.regularizer = OTRegularizer(
            [LayerPair(p.teacher, p.student, p.weight) for p in reg.layers],
            weight=reg.weight,
            solver=reg.solver,
            spatial=reg.spatial,
            normalize=reg.normalize,
            epsilon=reg.epsilon,
            max_iter=reg.max_iter,
        )

    def forward(self, teacher: Features, student: Features) -> TermOutput:
        out = self.regularizer(teacher, student)
        ot_distance = torch.stack(list(out.distances.values())).sum()
        return TermOutput(loss=out.loss, logs={"ot_distance": ot_distance}, plans=out.plans)


class KDTerm(Term):
    """lambda * T^2 KL(softmax(t / T) || softmax(s / T)) (Hinton et al., 2015)."""

    def __init__(self, weight: float, temperature: float) -> None:
        super().__init__()
        self.weight, self.temperature = weight, temperature

    def forward(self, teacher: Features, student: Features) -> TermOutput:
        loss = kd_loss(student["logits"], teacher["logits"], self.temperature)
        return TermOutput(loss=self.weight * loss, logs={"kd": loss.detach()})


def kd_loss(student_logits: Tensor, teacher_logits: Tensor, temperature: float) -> Tensor:
    return F.kl_div(
        F.log_softmax(student_logits / temperature, dim=1),
        F.log_softmax(teacher_logits / temperature, dim=1),
        log_target=True,
        reduction="batchmean",
    ) * (temperature**2)


class FitNetTerm(Term):
    """lambda * sum_l w_l ||r_l(S_l) - T_l||^2 with a learned regressor r_l (Romero et al., 2015).

    r_l is a 1x1 convolution for maps (the student's map pooled to the
    teacher's size) and a linear layer for vectors; it is trained with the student.
    """

    def __init__(self, spec: JobSpec, teacher: StagedModel, student: StagedModel) -> None:
        super().__init__()
        self.weight = spec.regularizer.weight
        self.pairs = spec.regularizer.layers
        probe = torch.zeros(2, *student.input_shape)
        with torch.no_grad():
            t_shapes = {k: v.shape for k, v in _probe(teacher, probe).items()}
            s_shapes = {k: v.shape for k, v in _probe(student, probe).items()}
        self.regressors = nn.ModuleList(
            _regressor(s_shapes[p.student], t_shapes[p.teacher]) for p in self.pairs
        )

    def forward(self, teacher: Features, student: Features) -> TermOutput:
        loss = sum(
            pair.weight
            * F.mse_loss(
                _resize(regressor(student[pair.student]), teacher[pair.teacher]),
                teacher[pair.teacher],
            )
            for pair, regressor in zip(self.pairs, self.regressors, strict=True)
        )
        return TermOutput(loss=self.weight * loss, logs={"fitnet": loss.detach()})


class ATTerm(Term):
    """lambda * sum_l w_l ||a(S_l) - a(T_l)||^2 (Zagoruyko & Komodakis, 2017).

    a(x) is the channel mean of x^2, flattened and L2-normalized; the student's
    maps are pooled to the teacher's size.
    """

    def __init__(self, spec: JobSpec) -> None:
        super().__init__()
        self.weight = spec.regularizer.weight
        self.pairs = spec.regularizer.layers

    def forward(self, teacher: Features, student: Features) -> TermOutput:
        loss = sum(
            pair.weight * attention_loss(teacher[pair.teacher], student[pair.student])
            for pair in self.pairs
        )
        return TermOutput(loss=self.weight * loss, logs={"at": loss.detach()})


def attention_loss(teacher: Tensor, student: Tensor) -> Tensor:
    if teacher.dim() < 3 or student.dim() != teacher.dim():
        raise UserError(
            "attention transfer compares feature maps: pair conv stages of the same rank, "
            f"not shapes {tuple(teacher.shape)} and {tuple(student.shape)}",
            ("regularizer", "layers"),
        )

    def attention(x: Tensor) -> Tensor:
        return F.normalize(x.float().pow(2).mean(dim=1).flatten(1), dim=1)  # (B, spatial)

    return (attention(_resize(student, teacher)) - attention(teacher)).pow(2).mean()


class L2SPTerm(Term):
    """alpha/2 ||w - w0||^2 on transferred weights + beta/2 ||w_head||^2 (Li et al., 2018).

    alpha is ``regularizer.weight``, beta ``regularizer.l2sp_beta``; w0 are the
    teacher's weights the student started from.
    """

    needs_teacher_features = False

    def __init__(self, spec: JobSpec, student: StagedModel) -> None:
        super().__init__()
        self.alpha, self.beta = spec.regularizer.weight, spec.regularizer.l2sp_beta
        # In a list so that the student is not registered as a submodule: its
        # parameters reach the optimizer once, from the student itself.
        self.student = [student]
        for name, param in student.named_parameters():
            if not student.is_head(name):
                self.register_buffer("w0_" + name.replace(".", "_"), param.detach().clone())

    def forward(self, teacher: Features, student: Features) -> TermOutput:
        model = self.student[0]
        drift = head = 0.0
        for name, param in model.named_parameters():
            if model.is_head(name):
                head = head + param.pow(2).sum()
            else:
                drift = drift + (param - getattr(self, "w0_" + name.replace(".", "_"))).pow(2).sum()
        return TermOutput(
            loss=0.5 * (self.alpha * drift + self.beta * head), logs={"l2sp_drift": drift.detach()}
        )


def build_term(spec: JobSpec, teacher: StagedModel | None, student: StagedModel) -> Term:
    kind = spec.regularizer.kind
    if kind == "ot":
        return OTTerm(spec)
    if kind == "kd":
        return KDTerm(spec.regularizer.weight, spec.kd.temperature)
    if kind == "fitnet":
        assert teacher is not None
        return FitNetTerm(spec, teacher, student)
    if kind == "at":
        return ATTerm(spec)
    if kind == "l2sp":
        return L2SPTerm(spec, student)
    return NoTerm()


def _probe(model: StagedModel, x: Tensor) -> dict[str, Tensor]:
    was_training = model.training
    model.eval()
    try:
        return model.forward_stages(x.to(next(model.parameters()).device))
    finally:
        model.train(was_training)


def _regressor(student_shape: torch.Size, teacher_shape: torch.Size) -> nn.Module:
    s_channels, t_channels = student_shape[1], teacher_shape[1]
    if len(student_shape) == 2:
        return nn.Linear(s_channels, t_channels)
    conv = nn.Conv1d if len(student_shape) == 3 else nn.Conv2d
    return conv(s_channels, t_channels, kernel_size=1)


def _resize(x: Tensor, like: Tensor) -> Tensor:
    """x's maps average-pooled to ``like``'s spatial size (vectors pass through)."""
    if x.dim() == 2 or x.shape[2:] == like.shape[2:]:
        return x
    if x.dim() != like.dim():
        raise ValueError(f"cannot match a map of shape {tuple(x.shape)} to {tuple(like.shape)}")
    pool = F.adaptive_avg_pool1d if x.dim() == 3 else F.adaptive_avg_pool2d
    return pool(x, like.shape[2:])
