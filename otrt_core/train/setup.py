"""Everything a run needs before its first step: device, data, models, optimizer, schedule."""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from otrt_core import sizing
from otrt_core.data import PreparedData, is_dataset_file, load_arrays, load_dataset_file, prepare
from otrt_core.data.shard_cache import ShardCache
from otrt_core.errors import UserError
from otrt_core.models import StagedModel, build_model, skeleton
from otrt_core.models.graph import GraphModel
from otrt_core.models.views import InputView
from otrt_core.spec import LAYER_KINDS, JobSpec, ModelInput, TrainingSpec, takes_flattened
from otrt_core.train.augment import Augmenter, Op, standard
from otrt_core.train.batches import (
    BatchGatherer,
    BatchSource,
    GatheredBatches,
    StreamedBatches,
    seeded,
)
from otrt_core.train.checkpoint import CHECKPOINT_LOC, check_fits, read_weights
from otrt_core.train.distributed import Group, data_parallel
from otrt_core.train.teacher_cache import TeacherCache
from otrt_core.train.terms import Term, build_kd, build_term, class_cost

if TYPE_CHECKING:
    from otrt_core.data.registered import StreamedInputs

DATASET_LOC = ("dataset", "name")
VIEW_STREAM = 7919  # seeds the teacher cache's views apart from the batch order
INIT_LOC = ("student", "init")


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError("device 'cuda' was asked for, but no CUDA device is available")
    return device


@dataclass(frozen=True)
class StreamOptions:
    """Where a registered dataset's snapshot is and how to read it."""

    location: str  # a local directory, or s3://bucket/prefix/ of the snapshot
    cache: ShardCache  # the host's cache of remote shards
    s3_endpoint_url: str | None = None
    workers: int = 2  # DataLoader worker processes
    in_memory_bytes: int = 256 << 20  # decoded below this, the data is held in memory


def load_data(
    spec: JobSpec,
    datasets_root: Path | None,
    dataset_path: Path | None = None,
    stream: StreamOptions | None = None,
    device: torch.device | None = None,
    pool: StreamOptions | None = None,
) -> PreparedData:
    """The job's splits: a built-in dataset, a user's file when ``dataset_path`` is given,
    or a registered dataset's snapshot (``stream``); with ``dataset.unlabeled``, the
    unlabeled inputs from the registered pool's snapshot (``pool``)."""
    data = _labeled_data(spec, datasets_root, dataset_path, stream, device)
    if spec.dataset.unlabeled is None:
        return data
    if pool is None:
        message = f"the registered pool {spec.dataset.unlabeled!r} needs its snapshot's location"
        raise UserError(message, ("dataset", "unlabeled"))
    from otrt_core.data.registered import pool_inputs
    from otrt_core.data.shard_reader import open_snapshot

    snapshot = open_snapshot(pool.location, pool.cache, pool.s3_endpoint_url)
    inputs = pool_inputs(
        snapshot,
        data,
        in_memory_bytes=pool.in_memory_bytes,
        workers=pool.workers,
        pin=device is not None and device.type == "cuda",
        augment=spec.dataset.augment == "standard",
        seed=spec.training.seed,
    )
    return replace(data, x_unlabeled=inputs)


def _labeled_data(
    spec: JobSpec,
    datasets_root: Path | None,
    dataset_path: Path | None,
    stream: StreamOptions | None,
    device: torch.device | None,
) -> PreparedData:
    if spec.dataset.name.startswith("ds_"):
        if stream is None:
            message = f"the registered dataset {spec.dataset.name!r} needs its snapshot's location"
            raise UserError(message, DATASET_LOC)
        return _registered(spec, stream, device)
    if dataset_path is not None:
        arrays = load_dataset_file(dataset_path)
    elif is_dataset_file(spec.dataset.name):
        raise UserError(f"the dataset file {spec.dataset.name!r} was not found", DATASET_LOC)
    else:
        arrays = load_arrays(spec.dataset.name, datasets_root)
    if spec.dataset.classes and max(spec.dataset.classes) > int(arrays.y_train.max()):
        raise UserError(
            f"dataset.classes {spec.dataset.classes} name classes the dataset does not have "
            f"(its labels go up to {int(arrays.y_train.max())})",
            ("dataset", "classes"),
        )
    return prepare(
        arrays,
        classes=spec.dataset.classes,
        train_subset=spec.dataset.train_subset,
        val_fraction=spec.dataset.val_fraction,
        seed=spec.training.seed,
    )


def _registered(spec: JobSpec, stream: StreamOptions, device: torch.device | None) -> PreparedData:
    """A registered dataset's rows, in memory or streamed (otrt_core.data.registered)."""
    from otrt_core.data.image_size import image_size
    from otrt_core.data.registered import load_registered
    from otrt_core.data.shard_reader import open_snapshot

    snapshot = open_snapshot(stream.location, stream.cache, stream.s3_endpoint_url)
    size = image_size(spec, snapshot.median_size)
    return load_registered(
        spec,
        snapshot,
        size,
        in_memory_bytes=stream.in_memory_bytes,
        workers=stream.workers,
        pin=device is not None and device.type == "cuda",
    )


@dataclass(frozen=True)
class Models:
    student: StagedModel
    teacher: StagedModel | None


def build_models(
    spec: JobSpec,
    data: PreparedData,
    teacher_path: Path | None,
    student_init_path: Path | None = None,
) -> Models:
    """The student, and the frozen teacher loaded from ``teacher_path``.

    A teacher is a state dict of a named architecture or an ONNX graph (``.onnx``).
    ``transfer`` starts the student from the teacher's weights with a new head
    (for a graph: a copy of the graph with a new last linear layer); otherwise
    ``student_init_path`` (``student.init``) may start it from a state dict of
    its architecture, or be an ONNX graph that becomes the student.
    ``distill`` checks that the teacher was trained on the dataset's classes.
    Each model sees the batches through its own ``input`` view.
    """
    layers = spec.regularizer.layers if spec.regularizer.kind in LAYER_KINDS else []
    teacher = None
    if spec.teacher is not None:
        if teacher_path is None or not teacher_path.exists():
            message = f"the teacher checkpoint {spec.teacher.checkpoint!r} was not found"
            raise UserError(message, CHECKPOINT_LOC)
        try:
            teacher = _teacher(spec, data, teacher_path, [pair.teacher for pair in layers])
        except UserError as error:
            raise UserError(f"teacher: {error.message}", error.loc or CHECKPOINT_LOC) from None
        teacher_classes = _num_classes(teacher)
        if spec.mode == "distill" and teacher_classes != data.num_classes:
            raise UserError(
                f"distill keeps the teacher's task, but the teacher has {teacher_classes} "
                f"classes and the dataset {data.num_classes}",
                CHECKPOINT_LOC,
            )
    student = _student(spec, data, teacher_path, student_init_path, [p.student for p in layers])
    return Models(student=student, teacher=teacher)


def _student(
    spec: JobSpec,
    data: PreparedData,
    teacher_path: Path | None,
    init_path: Path | None,
    layers: list[str],
) -> StagedModel:
    """The student: the teacher's graph (transfer), ``student.init``, or a fresh
    ``student.architecture`` (with the teacher's body in transfer)."""
    if spec.mode == "transfer" and spec.student.architecture is None:  # the teacher's graph
        graph = GraphModel.from_file(teacher_path).keep(layers)
        graph.replace_head(data.num_classes)
        return _viewed(graph, spec.student.input, data, "student")
    if spec.student.init is not None:
        if init_path is None or not init_path.exists():
            raise UserError(f"the student's init {spec.student.init!r} was not found", INIT_LOC)
        try:
            return _initialized_student(spec, data, init_path, layers)
        except UserError as error:
            raise UserError(f"student.init: {error.message}", error.loc or INIT_LOC) from None
    student = _built_student(spec, data).keep(layers)
    if spec.mode == "transfer":
        weights = read_weights(teacher_path)
        body = {k: v for k, v in weights.items() if not student.is_head(k)}
        student.load_state_dict(body, strict=False)
    return _with_view(student, _view(spec.student.input, data), data)


def _built_student(spec: JobSpec, data: PreparedData) -> StagedModel:
    """A fresh ``student.architecture`` for the inputs its view gives."""
    shape = _view_shape(spec.student.input, data, "student")
    return build_model(spec.student.architecture, num_classes=data.num_classes, input_shape=shape)


def _initialized_student(
    spec: JobSpec, data: PreparedData, path: Path, layers: list[str]
) -> StagedModel:
    """The student from ``student.init``: an ONNX graph (a new head when its class count
    is not the dataset's), or a state dict of ``student.architecture`` (its head kept
    only when it has the dataset's classes)."""
    if path.suffix.lower() == ".onnx":
        if spec.student.architecture is not None:
            raise UserError(
                "an ONNX graph is a whole model: leave student.architecture out",
                ("student", "architecture"),
            )
        graph = GraphModel.from_file(path).keep(layers)
        if _num_classes(graph) != data.num_classes:
            graph.replace_head(data.num_classes)
        return _viewed(graph, spec.student.input, data, "student")
    if spec.student.architecture is None:
        raise UserError("a state dict needs student.architecture", ("student", "architecture"))
    student = _built_student(spec, data)
    weights = read_weights(path)
    expected = student.state_dict()
    head = {k for k in expected if student.is_head(k)}
    if any(k in weights and weights[k].shape != expected[k].shape for k in head):
        weights = {k: v for k, v in weights.items() if not student.is_head(k)}  # a new head
        weights |= {k: expected[k] for k in head}
    check_fits(student, weights)
    student.load_state_dict(weights)
    return _with_view(student.keep(layers), _view(spec.student.input, data), data)


def _teacher(spec: JobSpec, data: PreparedData, path: Path, layers: list[str]) -> StagedModel:
    """The frozen teacher, from a graph or from a zoo architecture's state dict."""
    if path.suffix.lower() == ".onnx":
        if spec.teacher.architecture is not None:
            raise UserError(
                "an ONNX graph is a whole model: leave teacher.architecture out",
                ("teacher", "architecture"),
            )
        teacher = _viewed(
            GraphModel.from_file(path).keep(layers), spec.teacher.input, data, "teacher"
        )
    else:
        if spec.teacher.architecture is None:
            raise UserError(
                "a state dict needs its architecture (only an ONNX graph is a whole model)",
                ("teacher", "architecture"),
            )
        view = _view(spec.teacher.input, data)
        weights = read_weights(path)
        shape = _view_shape(spec.teacher.input, data, "teacher")
        teacher, _ = fitted_teacher(spec.teacher.architecture, weights, shape)
        teacher.load_state_dict(weights)
        teacher = _with_view(teacher.keep(layers), view, data)
    return teacher.eval().requires_grad_(False)


def _view(model_input: ModelInput | None, data: PreparedData) -> InputView | None:
    """The view ``input`` asks for (every caller checks, with :func:`_view_shape`,
    that it applies to the data)."""
    if model_input is None:
        return None
    return InputView(data.mean, data.std, **model_input.model_dump())


def _view_shape(model_input: ModelInput | None, data: PreparedData, side: str) -> tuple[int, ...]:
    """The inputs a model sees through its ``input`` (the dataset's without one)."""
    shape = tuple(data.x_train.shape[1:])
    if model_input is None:
        return shape
    try:
        return model_input.shape_for(shape)
    except UserError as error:
        raise UserError(error.message, (side, "input")) from None


def _with_view(model: StagedModel, view: nn.Module | None, data: PreparedData) -> StagedModel:
    """The model reading the dataset's batches through ``view``."""
    if view is not None:
        model.input_view = view  # a submodule: moves with the model, holds no state
    model.input_shape = tuple(data.x_train.shape[1:])
    return model


def _viewed(
    model: StagedModel, model_input: ModelInput | None, data: PreparedData, side: str
) -> StagedModel:
    """A model of fixed input shape (a graph) behind its view; ``UserError`` if they differ.

    A model of flat inputs (scikit-learn's, say) takes each input flattened when the
    sizes agree: the 64 features of an 8x8 image.
    """
    view = _view(model_input, data)
    seen = _view_shape(model_input, data, side)
    expected = tuple(model.input_shape)
    if takes_flattened(expected, seen):
        flat = nn.Flatten() if view is None else nn.Sequential(view, nn.Flatten())
        return _with_view(model, flat, data)
    if expected != seen:
        hint = "set its input (size, channels)" if view is None else "fix its input"
        raise UserError(
            f"the {side} takes inputs of shape {list(expected)}, but gets "
            f"{list(seen)} from the dataset: {hint}",
            (side, "input"),
        )
    return _with_view(model, view, data)


def _num_classes(model: StagedModel) -> int:
    with torch.no_grad():
        probe = torch.zeros(1, *model.input_shape, device=next(model.parameters()).device)
        return model.forward_stages(probe)["logits"].shape[1]


def fitted_teacher(
    architecture: str,
    weights: dict[str, torch.Tensor],
    input_shape: tuple[int, ...],
    *,
    meta: bool = False,
) -> tuple[StagedModel, int]:
    """The architecture built for the weights' class count, and that count.

    Raises ``UserError`` if the weights do not fit it.

    ``meta`` builds it on the meta device: names and shapes only, enough for
    the service to check an upload without allocating the model.
    """
    head_prefix = skeleton(architecture).head_prefix
    classes = _head_classes(weights, head_prefix)
    if meta:
        teacher = skeleton(architecture, num_classes=classes, input_shape=input_shape)
    else:
        teacher = build_model(architecture, num_classes=classes, input_shape=input_shape)
    check_fits(teacher, weights)
    return teacher, classes


def _head_classes(weights: dict[str, torch.Tensor], head_prefix: str) -> int:
    head = weights.get(f"{head_prefix}weight")
    if head is None or head.dim() != 2:
        raise UserError(f"no classifier head ('{head_prefix}weight') in the teacher's weights")
    return head.shape[0]


def make_optimizer(training: TrainingSpec, parameters: list[nn.Parameter]) -> torch.optim.Optimizer:
    if training.optimizer == "adamw":
        return torch.optim.AdamW(parameters, lr=training.lr, weight_decay=training.weight_decay)
    return torch.optim.SGD(
        parameters,
        lr=training.lr,
        momentum=training.momentum,
        weight_decay=training.weight_decay,
        nesterov=training.momentum > 0,
    )


def make_schedule(
    optimizer: torch.optim.Optimizer, training: TrainingSpec, total_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-step learning-rate factor: cosine to 0, step (x0.1 at 50% and 75%), or constant,
    times a linear warm-up from 0 over the first ``warmup_steps``."""
    warmup_steps = round(training.warmup_epochs * total_steps / training.epochs)

    def factor(step: int) -> float:
        warmup = min(1.0, (step + 1) / warmup_steps) if warmup_steps else 1.0
        progress = min(step / max(total_steps, 1), 1.0)
        if training.schedule == "cosine":
            return warmup * 0.5 * (1 + math.cos(math.pi * progress))
        if training.schedule == "step":
            return warmup * 0.1 ** sum(progress >= milestone for milestone in (0.5, 0.75))
        return warmup

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


@dataclass
class Run:
    """A run ready to step: everything the loop reads, built once by ``build_run``."""

    spec: JobSpec
    device: torch.device
    data: PreparedData
    student: StagedModel
    teacher: StagedModel | None
    term: Term
    kd: Term | None  # kd.weight's KD (or WKD-L) added to another regularizer (distill)
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    # Labeled training inputs, then the unlabeled pool when it is used (the rows the
    # batches name; streamed: decoded when read); what the teacher cache is built on.
    inputs: Tensor | StreamedInputs
    batches: BatchSource
    unlabeled_inputs: int  # of the pool, drawn from each step (0: none)
    channels_last: bool
    cache: TeacherCache | None
    cache_off: str | None  # why there is no cache when the run reads the teacher
    augmenter: Augmenter | None  # random views of the training inputs (dataset.augment)
    autocast: Callable[[], contextlib.AbstractContextManager]
    steps_per_epoch: int
    group: Group = field(default_factory=Group)  # this rank among the run's (training.gpus)
    # The student's stages through DDP when there are several ranks; else forward_stages.
    forward_student: Callable[[Tensor], dict[str, Tensor]] | None = None

    @property
    def total_steps(self) -> int:
        return self.steps_per_epoch * self.spec.training.epochs

    @property
    def needs_teacher(self) -> bool:
        return self.teacher is not None and (
            self.term.needs_teacher_features or self.kd is not None
        )


@dataclass(frozen=True)
class Limits:
    """Memory bounds of a run (bytes)."""

    teacher_cache_memory: int = 1 << 30  # on the training device
    teacher_cache_disk: int = 8 << 30  # memory-mapped under the output directory
    device_data: int = 2 << 30  # training inputs moved to the device once


def build_run(
    spec: JobSpec,
    *,
    device: torch.device,
    datasets_root: Path | None,
    dataset_path: Path | None,
    teacher_path: Path | None,
    cache_dir: Path,
    limits: Limits,
    student_init_path: Path | None = None,
    shared_cache_dir: Path | None = None,
    stream: StreamOptions | None = None,
    pool: StreamOptions | None = None,
    group: Group | None = None,
) -> Run:
    """Everything a run steps with, built once: the data and its batches, the models
    (the student through DDP when ``group`` has several ranks), the terms, the optimizer
    and the teacher cache."""
    torch.manual_seed(spec.training.seed)
    group = group or Group()
    torch.use_deterministic_algorithms(True, warn_only=True)
    data = load_data(spec, datasets_root, dataset_path, stream, device, pool)
    spec = sized_for_data(spec, len(data.y_train))
    training = spec.training
    if (
        data.streamed
        and (spec.regularizer.unlabeled or spec.kd.unlabeled)
        and not len(data.x_unlabeled)
    ):
        message = "a registered dataset has no unlabeled inputs of its own: name a registered pool"
        raise UserError(message, ("dataset", "unlabeled"))
    models = build_models(spec, data, teacher_path, student_init_path)
    student, teacher = models.student.to(device), models.teacher
    if teacher is not None:
        teacher.to(device)
    cost = None
    if (
        teacher is not None
        and spec.kd.kind == "wkd"
        and (spec.kd.on or spec.regularizer.kind == "kd")
    ):
        # WKD-L's cost between classes, once per job from the labeled training inputs.
        cost = class_cost(teacher, data.x_train, data.y_train, training.batch_size)
    term = build_term(spec, teacher, student, cost).to(device)
    kd = build_kd(spec.kd.weight, spec, cost).to(device) if spec.kd.on else None
    optimizer = make_optimizer(training, [*student.parameters(), *term.parameters()])
    steps_per_epoch = math.ceil(len(data.y_train) / training.batch_size)
    scheduler = make_schedule(optimizer, training, steps_per_epoch * training.epochs)

    # Labeled inputs, then the unlabeled pool when the term uses it, so that one
    # index space serves batches and the teacher cache alike.
    reads_pool = term.reads_pool or (kd is not None and kd.reads_pool)
    pool = len(data.x_unlabeled) if reads_pool else 0
    # A streamed pool stays in its shards: only its draws are decoded.
    inputs = (
        torch.cat([data.x_train, data.x_unlabeled]) if pool and not data.streamed else data.x_train
    )
    channels_last = device.type == "cuda" and len(inputs.shape) == 4
    if channels_last:  # the layout cuDNN's convolutions are fastest in
        student.to(memory_format=torch.channels_last)
        if teacher is not None:
            teacher.to(memory_format=torch.channels_last)
    # On streamed data the loader's workers draw the standard views (random resized
    # crop and flip); a list of ops still applies on the device.
    loader_augments = data.streamed and spec.dataset.augment == "standard"
    augmenter = None if loader_augments else make_augmenter(spec, tuple(data.x_train.shape[1:]))

    run = Run(
        spec=spec,
        device=device,
        data=data,
        student=student,
        teacher=teacher,
        term=term,
        kd=kd,
        optimizer=optimizer,
        scheduler=scheduler,
        inputs=inputs,
        batches=_batch_source(spec, data, inputs, pool, device, limits),
        unlabeled_inputs=pool,
        channels_last=channels_last,
        cache=None,
        cache_off=None,
        augmenter=augmenter,
        autocast=_autocast(training.amp, device),
        steps_per_epoch=steps_per_epoch,
        group=group,
        forward_student=data_parallel(student, term, device) if group.world > 1 else None,
    )
    if run.needs_teacher:
        run.cache_off = _cache_refused(spec, loader_augments or (pool > 0 and data.streamed))
        if run.cache_off is None:
            run.cache = _teacher_cache(run, cache_dir, limits, shared_cache_dir)
            if run.cache is None:
                run.cache_off = "the teacher's features fit neither bound (OTRT_TEACHER_CACHE_*)"
    return run


def _cache_refused(spec: JobSpec, loader_draws: bool) -> str | None:
    """Why the teacher's outputs are not cached, or None when they may be."""
    if spec.training.teacher_cache != "auto":
        return "training.teacher_cache is off"
    if loader_draws:
        return (
            "the loader draws new views or pool rows each step "
            "(streamed data with augment standard or a pool)"
        )
    return None


def _batch_source(
    spec: JobSpec,
    data: PreparedData,
    inputs: Tensor,
    pool: int,
    device: torch.device,
    limits: Limits,
) -> BatchSource:
    """Streamed batches from the dataset's loader, or batches gathered from ``inputs``:
    on the device when they fit ``limits.device_data`` (no host-to-device copy per step)."""
    training = spec.training
    if data.streamed:
        return StreamedBatches(
            data.stream,
            data.mean,
            data.std,
            device,
            training.batch_size,
            steps=math.ceil(len(data.y_train) / training.batch_size),
            pool=data.x_unlabeled if pool else None,
            pool_batch=spec.regularizer.unlabeled_batch_size or 0,
        )
    labels = data.y_train
    if inputs.numel() * inputs.element_size() <= limits.device_data:
        inputs, labels = inputs.to(device), labels.to(device)
    pool_batch = spec.regularizer.unlabeled_batch_size or 0
    return GatheredBatches(
        BatchGatherer(inputs, device, training.batch_size + pool_batch),
        BatchGatherer(labels, device, training.batch_size),
        labeled=len(labels),
        pool=pool,
        pool_batch=pool_batch,
        batch_size=training.batch_size,
        steps=math.ceil(len(labels) / training.batch_size),
        seed=training.seed,
    )


def _teacher_cache(
    run: Run, cache_dir: Path, limits: Limits, shared_dir: Path | None
) -> TeacherCache | None:
    """The run's teacher cache: read from ``shared_dir`` when a run of the same teacher
    outputs wrote it there, else built (and, when it fits in memory, written there)."""
    spec, training = run.spec, run.spec.training
    stages = run.term.teacher_stages
    # The OT term pools each map to its channel means: that is all it reads.
    pooled = spec.regularizer.kind == "ot" and spec.regularizer.spatial == "pool"
    shared = None
    if shared_dir is not None:
        shared = shared_dir / f"{_cache_key(spec, stages, pooled, len(run.inputs))}.pt"
        if shared.exists():
            return TeacherCache.load(shared, run.device)
    view_params = None
    if run.augmenter is not None:  # K views per input, each drawn once from its seed
        view_params = [
            run.augmenter.draw(len(run.inputs), seeded(training.seed, VIEW_STREAM, view))
            for view in range(training.teacher_views)
        ]
    cache = TeacherCache.build(
        run.teacher,
        run.inputs,
        stages,
        run.device,
        training.batch_size,
        max_memory_bytes=limits.teacher_cache_memory,
        max_disk_bytes=limits.teacher_cache_disk,
        disk_dir=cache_dir,
        pooled=pooled,
        augmenter=run.augmenter,
        view_params=view_params,
    )
    if shared is not None and cache is not None and not cache.on_disk:
        shared.parent.mkdir(parents=True, exist_ok=True)
        cache.save(shared)
    return cache


def _cache_key(spec: JobSpec, stages: set[str], pooled: bool, count: int) -> str:
    """What a teacher cache's contents depend on, hashed: the teacher and its input view,
    the data (and the seed, which draws subsets and augmented views), the stages kept."""
    parts = {
        "teacher": spec.teacher.model_dump(mode="json") if spec.teacher else None,
        "dataset": spec.dataset.model_dump(mode="json"),
        "seed": spec.training.seed,
        "views": spec.training.teacher_views,
        "unlabeled": spec.regularizer.unlabeled or bool(spec.kd.unlabeled),
        "stages": sorted(stages),
        "pooled": pooled,
        "inputs": count,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:32]


def make_augmenter(spec: JobSpec, input_shape: tuple[int, ...]) -> Augmenter | None:
    """The run's augmenter (None without augmentation); ``UserError`` for an op the
    inputs cannot take (rotating sequences)."""
    augment = spec.dataset.augment
    if augment == "none":
        return None
    if augment == "standard":
        ops = standard(input_shape)
    else:
        ops = [Op(op.op, op.amount()) for op in augment]
        if len(input_shape) != 3 and any(op.name == "rotate" for op in ops):
            raise UserError("rotate needs images (C, H, W)", ("dataset", "augment"))
    return Augmenter(ops, input_shape, spec.training.seed) if ops else None


def sized_for_data(spec: JobSpec, labeled: int) -> JobSpec:
    """The spec with the training values it leaves out set from the ``labeled`` set's
    size (:mod:`otrt_core.sizing`); the values a job gives are kept."""
    training = spec.training
    batch_size = training.batch_size or sizing.batch_size_for(labeled)
    training = training.model_copy(
        update={
            "batch_size": batch_size,
            "lr": training.lr or sizing.lr_for(training.optimizer, batch_size),
            "epochs": training.epochs or sizing.epochs_for(labeled, batch_size),
        }
    )
    regularizer = spec.regularizer
    if (regularizer.unlabeled or spec.kd.unlabeled) and regularizer.unlabeled_batch_size is None:
        regularizer = regularizer.model_copy(update={"unlabeled_batch_size": batch_size})
    return spec.model_copy(update={"training": training, "regularizer": regularizer})


def _autocast(amp: str, device: torch.device) -> Callable[[], contextlib.AbstractContextManager]:
    """bfloat16 autocast on CUDA devices that support it; off on the CPU.

    bfloat16 keeps float32's range, so no loss scaling is needed; the OT cost
    is computed in float32 regardless (otrt_core.ot.cost_matrix).
    """
    enabled = device.type == "cuda" and amp != "off" and torch.cuda.is_bf16_supported()
    return lambda: torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=enabled)
