"""The regularizers every mode can add to the task loss, behind one interface.

A term is called with the teacher's and the student's stage outputs on the
same batch (and the labels of its labeled rows) and returns a ``TermOutput``:
the loss to add, already weighted, and detached values to log. Its weights
are ``weight`` (lambda) and, for a term over layer pairs, ``pair_weights``
(w_l): numbers, set at construction from the spec or later by
:mod:`otrt_core.train.balance` for those the spec leaves to ``"auto"``.
Baselines run in the same loop as OT so that comparisons are fair (METHOD.md,
"Baselines").
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from otrt_core.errors import UserError
from otrt_core.models import StagedModel
from otrt_core.ot import LayerPair, OTRegularizer
from otrt_core.spec import JobSpec, LayerPairSpec, is_auto
from otrt_core.train import wkd

Features = Mapping[str, Tensor]

# WKD-L's entropic OT, as the authors run it: lambda 0.05, 10 unrolled iterations.
WKD_SINKHORN_REG = 0.05
WKD_SINKHORN_ITERATIONS = 10
WKD_SHARPEN = 1.0  # kappa in C = 1 - exp(-kappa d)
WKD_F_MEAN_WEIGHT = 4.0  # WKD-F's weight on the means' part (the authors' MEAN_COV_RATIO)


@dataclass(frozen=True)
class TermOutput:
    loss: Tensor
    logs: dict[str, Tensor] = field(default_factory=dict)  # detached scalars on the device
    plans: dict[str, Tensor] = field(default_factory=dict)  # OT only


def number(weight: float | str) -> float:
    """A spec's weight as the term starts with it: ``"auto"`` is 1 until balanced."""
    return 1.0 if is_auto(weight) else float(weight)


class Term(nn.Module):
    """A regularizer: ``term(teacher_features, student_features, labels) -> TermOutput``.

    ``labels`` are those of the batch's first rows (the labeled ones); rows past them
    are unlabeled. ``reads_pool``: whether the trainer hands the term those rows.
    """

    needs_teacher_features = True
    reads_pool = False
    pairs: Sequence[LayerPairSpec] = ()  # the layer pairs of a term over them

    def __init__(self, weight: float = 0.0, pair_weights: Sequence[float] = ()) -> None:
        super().__init__()
        self.weight, self.pair_weights = weight, tuple(pair_weights)

    def set_weights(self, weight: float, pair_weights: Sequence[float] = ()) -> None:
        """lambda and, for a term over layer pairs, each pair's w_l."""
        self.weight, self.pair_weights = weight, tuple(pair_weights)

    @property
    def teacher_stages(self) -> set[str]:
        """The teacher's stages the term reads (besides its logits)."""
        return {pair.teacher for pair in self.pairs}

    def forward(self, teacher: Features, student: Features, labels: Tensor) -> TermOutput:
        raise NotImplementedError


class NoTerm(Term):
    needs_teacher_features = False

    def forward(self, teacher: Features, student: Features, labels: Tensor) -> TermOutput:
        return TermOutput(loss=torch.zeros((), device=student["logits"].device))


class OTTerm(Term):
    """lambda * sum_l w_l Omega(S_l, T_l): this method."""

    def __init__(self, spec: JobSpec) -> None:
        reg = spec.regularizer
        super().__init__(number(reg.weight), [number(p.weight) for p in reg.layers])
        self.pairs = reg.layers
        self.regularizer = OTRegularizer(
            [LayerPair(p.teacher, p.student, number(p.weight)) for p in reg.layers],
            weight=self.weight,
            solver=reg.solver,
            spatial=reg.spatial,
            normalize=reg.normalize,
            epsilon=reg.epsilon,
            max_iter=reg.max_iter,
        )

    def set_weights(self, weight: float, pair_weights: Sequence[float] = ()) -> None:
        super().set_weights(weight, pair_weights)
        self.regularizer.weight = weight
        self.regularizer.pairs = tuple(
            replace(pair, weight=w)
            for pair, w in zip(self.regularizer.pairs, pair_weights, strict=True)
        )

    def forward(self, teacher: Features, student: Features, labels: Tensor) -> TermOutput:
        out = self.regularizer(teacher, student)
        ot_distance = torch.stack(list(out.distances.values())).sum()
        return TermOutput(loss=out.loss, logs={"ot_distance": ot_distance}, plans=out.plans)


class KDTerm(Term):
    """lambda * T^2 KL(softmax(t / T) || softmax(s / T)) (Hinton et al., 2015)."""

    def __init__(self, weight: float, temperature: float) -> None:
        super().__init__(weight)
        self.temperature = temperature

    def forward(self, teacher: Features, student: Features, labels: Tensor) -> TermOutput:
        loss = kd_loss(student["logits"], teacher["logits"], self.temperature)
        return TermOutput(loss=self.weight * loss, logs={"kd": loss.detach()})


class WKDLogitTerm(Term):
    """WKD-L (Lv et al., 2024): L_t + gamma * W_eps over the non-target classes, with
    gamma this term's weight (:func:`otrt_core.train.wkd.wkd_logit_loss`).

    ``class_cost`` is the (k, k) cost between classes from the teacher, computed once
    per job (:func:`class_cost`). Rows past the labeled ones take the teacher's
    argmax as their target.
    """

    def __init__(self, weight: float, temperature: float, class_cost: Tensor) -> None:
        super().__init__(weight)
        self.temperature = temperature
        self.register_buffer("class_cost", class_cost)

    def forward(self, teacher: Features, student: Features, labels: Tensor) -> TermOutput:
        t_logits = teacher["logits"]
        targets = torch.cat([labels, t_logits[len(labels) :].argmax(dim=1)])
        target_part, wasserstein = wkd.wkd_logit_loss(
            student["logits"],
            t_logits,
            targets,
            self.class_cost,
            self.temperature,
            reg=WKD_SINKHORN_REG,
            iterations=WKD_SINKHORN_ITERATIONS,
        )
        return TermOutput(
            loss=target_part + self.weight * wasserstein, logs={"wkd": wasserstein.detach()}
        )


@torch.no_grad()
def class_cost(teacher: StagedModel, inputs: Tensor, labels: Tensor, batch_size: int) -> Tensor:
    """WKD-L's cost between the teacher's classes, from CKA between its per-class
    penultimate features on ``inputs`` (the labeled training inputs), or from the
    cosine between its classifier rows when it has no penultimate stage."""
    device = next(teacher.parameters()).device
    num_classes = _num_classes(teacher)
    was_training = teacher.training
    teacher.eval()
    try:
        features = [
            teacher.forward_stages(inputs[i : i + batch_size].to(device)).get("penultimate")
            for i in range(0, len(inputs), batch_size)
        ]
    finally:
        teacher.train(was_training)
    if any(f is None or f.dim() != 2 for f in features) or not features:
        return wkd.class_cost_from_head(_head_weight(teacher), WKD_SHARPEN)
    return wkd.class_cost_from_features(
        torch.cat(features).float(), labels.to(device), num_classes, WKD_SHARPEN
    )


def _num_classes(model: StagedModel) -> int:
    probe = torch.zeros(1, *model.input_shape, device=next(model.parameters()).device)
    return _probe(model, probe)["logits"].shape[1]


def _head_weight(model: StagedModel) -> Tensor:
    heads = [p for name, p in model.named_parameters() if model.is_head(name) and p.dim() == 2]
    if not heads:
        raise UserError(
            "WKD-L needs the teacher's classes' features (a penultimate stage) or its "
            "classifier's weights; this teacher shows neither",
            ("kd", "kind"),
        )
    return heads[-1].detach()


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
        reg = spec.regularizer
        super().__init__(number(reg.weight), [number(p.weight) for p in reg.layers])
        self.pairs = reg.layers
        t_shapes, s_shapes = _stage_shapes(teacher, student)
        self.regressors = nn.ModuleList(
            _regressor(s_shapes[p.student], t_shapes[p.teacher]) for p in self.pairs
        )

    def forward(self, teacher: Features, student: Features, labels: Tensor) -> TermOutput:
        loss = sum(
            w
            * F.mse_loss(
                _resize(regressor(student[pair.student]), teacher[pair.teacher]),
                teacher[pair.teacher],
            )
            for pair, w, regressor in zip(
                self.pairs, self.pair_weights, self.regressors, strict=True
            )
        )
        return TermOutput(loss=self.weight * loss, logs={"fitnet": loss.detach()})


class WKDFeatureTerm(Term):
    """WKD-F (Lv et al., 2024): lambda * sum_l w_l W2^2 between each channel's Gaussian
    over the spatial positions of the teacher's map and of the student's, projected to
    the teacher's channels (1x1 conv, BN, ReLU; trained with the student).

    Pairs name maps: the spec resolves a zoo model's ``penultimate`` to its last map.
    """

    def __init__(self, spec: JobSpec, teacher: StagedModel, student: StagedModel) -> None:
        reg = spec.regularizer
        super().__init__(number(reg.weight), [number(p.weight) for p in reg.layers])
        self.pairs = reg.layers
        t_shapes, s_shapes = _stage_shapes(teacher, student)
        for index, pair in enumerate(self.pairs):
            for side, shapes in (("teacher", t_shapes), ("student", s_shapes)):
                if len(shapes[getattr(pair, side)]) < 3:
                    raise UserError(
                        f"WKD-F compares feature maps; the {side}'s {getattr(pair, side)!r} "
                        "is a vector: name a map (of an ONNX graph, a conv layer's output "
                        "tensor), or use fitnet or ot",
                        ("regularizer", "layers", index, side),
                    )
        self.projectors = nn.ModuleList(
            wkd.WKDFeatureProjector(
                s_shapes[p.student][1], t_shapes[p.teacher][1], len(s_shapes[p.student]) - 2
            )
            for p in self.pairs
        )

    def forward(self, teacher: Features, student: Features, labels: Tensor) -> TermOutput:
        loss = sum(
            w
            * wkd.gaussian_w2(
                projector(student[pair.student], teacher[pair.teacher].shape[2:]),
                teacher[pair.teacher],
                mean_weight=WKD_F_MEAN_WEIGHT,
            )
            for pair, w, projector in zip(
                self.pairs, self.pair_weights, self.projectors, strict=True
            )
        )
        return TermOutput(loss=self.weight * loss, logs={"wkd_f": loss.detach()})


class ATTerm(Term):
    """lambda * sum_l w_l ||a(S_l) - a(T_l)||^2 (Zagoruyko & Komodakis, 2017).

    a(x) is the channel mean of x^2, flattened and L2-normalized; the student's
    maps are pooled to the teacher's size.
    """

    def __init__(self, spec: JobSpec) -> None:
        reg = spec.regularizer
        super().__init__(number(reg.weight), [number(p.weight) for p in reg.layers])
        self.pairs = reg.layers

    def forward(self, teacher: Features, student: Features, labels: Tensor) -> TermOutput:
        loss = sum(
            w * attention_loss(teacher[pair.teacher], student[pair.student])
            for pair, w in zip(self.pairs, self.pair_weights, strict=True)
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
        super().__init__(number(spec.regularizer.weight))
        self.beta = spec.regularizer.l2sp_beta
        # In a list so that the student is not registered as a submodule: its
        # parameters reach the optimizer once, from the student itself.
        self.student = [student]
        for name, param in student.named_parameters():
            if not student.is_head(name):
                self.register_buffer("w0_" + name.replace(".", "_"), param.detach().clone())

    def forward(self, teacher: Features, student: Features, labels: Tensor) -> TermOutput:
        model = self.student[0]
        drift = head = 0.0
        for name, param in model.named_parameters():
            if model.is_head(name):
                head = head + param.pow(2).sum()
            else:
                drift = drift + (param - getattr(self, "w0_" + name.replace(".", "_"))).pow(2).sum()
        return TermOutput(
            loss=0.5 * (self.weight * drift + self.beta * head), logs={"l2sp_drift": drift.detach()}
        )


def build_term(
    spec: JobSpec, teacher: StagedModel | None, student: StagedModel, cost: Tensor | None
) -> Term:
    """The regularizer ``regularizer.kind`` names (``cost``: WKD-L's class cost, when
    ``kd.kind`` is ``wkd``)."""
    kind = spec.regularizer.kind
    if kind == "kd":
        term = build_kd(spec.regularizer.weight, spec, cost)
    elif kind == "ot":
        term = OTTerm(spec)
    elif kind == "fitnet":
        assert teacher is not None
        term = FitNetTerm(spec, teacher, student)
    elif kind == "wkd_f":
        assert teacher is not None
        term = WKDFeatureTerm(spec, teacher, student)
    elif kind == "at":
        term = ATTerm(spec)
    elif kind == "l2sp":
        term = L2SPTerm(spec, student)
    else:
        term = NoTerm()
    term.reads_pool = spec.regularizer.unlabeled or (kind == "kd" and bool(spec.kd.unlabeled))
    return term


def build_kd(weight: float | str, spec: JobSpec, cost: Tensor | None) -> Term:
    """KD of ``kd.kind`` at ``weight``: Hinton's (``kl``) or WKD-L (``wkd``)."""
    if spec.kd.kind == "wkd":
        assert cost is not None
        term: Term = WKDLogitTerm(number(weight), spec.kd.temperature, cost)
    else:
        term = KDTerm(number(weight), spec.kd.temperature)
    term.reads_pool = bool(spec.kd.unlabeled)
    return term


def _stage_shapes(
    teacher: StagedModel, student: StagedModel
) -> tuple[dict[str, torch.Size], dict[str, torch.Size]]:
    """Each stage's output shape on a batch of two, the teacher's and the student's."""
    probe = torch.zeros(2, *student.input_shape)
    with torch.no_grad():
        t_shapes = {k: v.shape for k, v in _probe(teacher, probe).items()}
        s_shapes = {k: v.shape for k, v in _probe(student, probe).items()}
    return t_shapes, s_shapes


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


def on_rows(term: Term, teacher: Features, student: Features, labels: Tensor) -> TermOutput:
    """``term`` on the rows it reads: every row of the batch when it reads the unlabeled
    pool (``reads_pool``), else the labeled rows only (the first ``len(labels)``)."""
    if not term.reads_pool:
        n = len(labels)
        teacher = {name: value[:n] for name, value in teacher.items()}
        student = {name: value[:n] for name, value in student.items()}
    return term(teacher, student, labels)
