"""The training loop: a resolved job spec in, a trained student and its metrics out.

Knows no HTTP, DB or queue. It reports through ``emit`` (the typed events of
``otrt_core.protocol``), checkpoints atomically every epoch and
on request, and stops when ``should_stop()`` says so or ``max_runtime_s`` runs
out, leaving a checkpoint that ``resume`` continues from exactly.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from otrt_core import protocol
from otrt_core.atomic import atomic_path
from otrt_core.protocol import (
    CHECKPOINT,
    METRICS,
    PLAN,
    RESOLVED_SPEC,
    STUDENT_ONNX,
    STUDENT_WEIGHTS,
)
from otrt_core.spec import JobSpec
from otrt_core.train import balance
from otrt_core.train.batches import Batch, seeded
from otrt_core.train.checkpoint import (
    load_checkpoint,
    save_checkpoint,
    save_weights,
)
from otrt_core.train.collapse import collapse_warning
from otrt_core.train.distributed import (
    STOP_EVERY,
    Group,
    agreed_stop,
    from_leader,
    summed,
)
from otrt_core.train.export import export_onnx
from otrt_core.train.job_report import write_report
from otrt_core.train.predict import input_batches, predict
from otrt_core.train.setup import Limits, Run, StreamOptions, build_run, pick_device
from otrt_core.train.terms import Features, on_rows

STEP_LINES_PER_EPOCH = 4
# An epoch's running sums over its labeled inputs, in this order: the loss, the correct
# answers, the OT distance, the inputs, and the loss's parts (task, regularizer, kd).
SUMS = ("loss", "correct", "ot_distance", "count", "task", "regularizer", "kd")
AUGMENT_STREAM = 104729  # seeds a batch's augmentation apart from its unlabeled draw

Emit = Callable[[protocol.Event], None]


class TrainingStopped(Exception):
    """The run stopped early with a checkpoint saved; ``reason`` is 'signal' or 'max_runtime'."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Diverged(Exception):
    """The training loss turned non-finite (NaN or infinite): the weights are lost."""

    def __init__(self, epoch: int, step: int) -> None:
        super().__init__(
            f"the training loss turned non-finite in epoch {epoch} (by step {step}); "
            "lower training.lr or the regularizer's weight"
        )


@dataclass
class RunOptions:
    out_dir: Path
    teacher_path: Path | None = None
    student_init_path: Path | None = None  # a model the student starts from (student.init)
    dataset_path: Path | None = None  # a user's .npz or .zip instead of a built-in dataset
    datasets_root: Path | None = None
    # Teacher caches shared with other runs on the same teacher and data (a sweep's trials).
    shared_cache_dir: Path | None = None
    device: str = "auto"
    resume: bool = False
    should_stop: Callable[[], bool] = lambda: False
    limits: Limits = field(default_factory=Limits)
    group: Group = field(default_factory=Group)  # ranks under torchrun (train.distributed)
    stream: StreamOptions | None = None  # a registered dataset's snapshot (dataset.name ds_…)
    pool: StreamOptions | None = None  # a registered pool's snapshot (dataset.unlabeled ds_…)
    checkpoint_seconds: float = 600.0  # checkpoints inside an epoch this often, too


@dataclass
class Progress:
    """What a checkpoint carries besides tensors: where the run is and what it saw."""

    epoch: int = 0  # completed epochs
    batch: int = 0  # completed batches of the current epoch
    # The current epoch's running sums (see :data:`SUMS`) up to ``batch``, so a resumed
    # epoch reports the same train_loss and train_accuracy as an uninterrupted one.
    sums: list[float] = field(default_factory=list)
    history: list[dict[str, float]] = field(default_factory=list)
    best_val_accuracy: float = -1.0
    best_epoch: int = 0
    elapsed: float = 0.0  # training seconds of earlier attempts and this one
    # The numbers chosen for the spec's "auto" weights, by dotted path (train.balance).
    weights: dict[str, float] = field(default_factory=dict)


class Clock:
    """Training seconds across attempts: what earlier ones used plus this one's."""

    def __init__(self) -> None:
        self.started, self.earlier = time.monotonic(), 0.0

    def __call__(self) -> float:
        return self.earlier + time.monotonic() - self.started


class Checkpoints:
    """The run's training state in one file, written atomically (temp, fsync, rename)."""

    def __init__(self, path: Path, run: Run, clock: Clock, every: float = math.inf) -> None:
        self.path, self.run, self.clock = path, run, clock
        self.best_state: dict[str, Tensor] | None = None  # weights of the best validation epoch
        self.every = every  # seconds between checkpoints inside an epoch
        self.saved_at = 0.0  # the clock's reading at the last save

    def due(self) -> bool:
        """Whether a checkpoint inside the epoch is due (``every`` seconds since the last)."""
        return self.clock() - self.saved_at >= self.every

    def save(self, progress: Progress) -> None:
        """Rank 0 writes; the other ranks' state is the same (DDP keeps them equal)."""
        run = self.run
        if not run.group.leader:
            return
        progress.elapsed = self.clock()
        state = {
            "model": run.student.state_dict(),
            "term": run.term.state_dict(),
            "optimizer": run.optimizer.state_dict(),
            "scheduler": run.scheduler.state_dict(),
            "rng": torch.get_rng_state(),
            "progress": asdict(progress),
            "best_model": self.best_state,
        }
        save_checkpoint(self.path, state)
        self.saved_at = self.clock()

    def load(self) -> Progress:
        run, state = self.run, load_checkpoint(self.path)
        run.student.load_state_dict(state["model"])
        run.term.load_state_dict(state["term"])
        run.optimizer.load_state_dict(state["optimizer"])
        run.scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"])
        self.best_state = state["best_model"]
        progress = Progress(**state["progress"])
        self.clock.earlier = progress.elapsed
        return progress


def train(spec: JobSpec, options: RunOptions, emit: Emit) -> dict[str, Any]:
    """Runs the job; returns the final metrics (also written to ``metrics.json``)."""
    clock = Clock()
    options.out_dir.mkdir(parents=True, exist_ok=True)
    run = build_run(
        spec,
        device=pick_device(options.device),
        datasets_root=options.datasets_root,
        dataset_path=options.dataset_path,
        teacher_path=options.teacher_path,
        student_init_path=options.student_init_path,
        cache_dir=options.out_dir / "teacher_cache" / f"rank{options.group.rank}",
        limits=options.limits,
        shared_cache_dir=options.shared_cache_dir,
        stream=options.stream,
        pool=options.pool,
        group=options.group,
    )
    spec = run.spec  # with the training values sized for the data
    checkpoints = Checkpoints(
        options.out_dir / CHECKPOINT, run, clock, every=options.checkpoint_seconds
    )
    resumed = options.resume and checkpoints.path.exists()
    progress = checkpoints.load() if resumed else Progress()
    balanced = balance.balanced_terms(spec, run.term, run.kd)
    if balanced and not progress.weights:
        progress.weights = from_leader(balanced_weights(run, balanced), run.group)
    balance.apply(balanced, progress.weights)
    run.spec = spec = balance.resolved(spec, progress.weights)
    emit(
        protocol.Start(
            epoch=progress.epoch,
            epochs=spec.training.epochs,
            step=progress.epoch * run.steps_per_epoch + progress.batch,
            steps=run.total_steps,
            device=str(run.device),
            teacher_cache=run.cache.where if run.cache is not None else "off",
            resumed=resumed,
            history=progress.history,
            world_size=run.group.world,
            data_path="streamed" if run.data.streamed else "memory",
            weights=progress.weights,
            unlabeled_inputs=run.unlabeled_inputs,
            teacher_cache_off=run.cache_off,
        )
    )
    while progress.epoch < spec.training.epochs and not out_of_patience(spec, progress):
        sums = train_epoch(run, progress, checkpoints, options.should_stop, clock, emit)
        record = from_leader(
            epoch_record(run, progress.epoch, summed(sums, run.group), clock), run.group
        )
        progress.history.append(record)
        if record["val_accuracy"] > progress.best_val_accuracy:
            progress.best_val_accuracy, progress.best_epoch = (
                record["val_accuracy"],
                record["epoch"],
            )
            checkpoints.best_state = {
                k: v.detach().clone().cpu() for k, v in run.student.state_dict().items()
            }
        progress.epoch, progress.batch, progress.sums = progress.epoch + 1, 0, []
        checkpoints.save(progress)
        if spec.regularizer.kind == "ot" and run.teacher is not None and run.group.leader:
            save_plan(options.out_dir / PLAN, sample_plan(run))
            emit(protocol.Plan(epoch=progress.epoch))
        emit(protocol.Epoch(**record))
    if out_of_patience(spec, progress):
        emit(
            protocol.Warned(
                message=f"stopped early after epoch {progress.epoch}: validation accuracy has "
                f"not improved for {spec.training.patience} epochs "
                f"(best {progress.best_val_accuracy:.1%} at epoch {progress.best_epoch})"
            )
        )
    if not run.group.leader:
        return {}  # rank 0 writes the outputs
    return write_outputs(run, progress, checkpoints.best_state, options.out_dir, clock, emit)


def out_of_patience(spec: JobSpec, progress: Progress) -> bool:
    """Early stopping: ``training.patience`` epochs without a better validation accuracy."""
    patience = spec.training.patience
    return patience is not None and progress.epoch - progress.best_epoch >= patience


def train_epoch(
    run: Run,
    progress: Progress,
    checkpoints: Checkpoints,
    should_stop: Callable[[], bool],
    clock: Clock,
    emit: Emit,
) -> Tensor:
    """Trains the rest of epoch ``progress.epoch``; returns its sums (:data:`SUMS`).

    Saves a checkpoint and raises ``TrainingStopped`` when asked to stop or out of time.
    With several ranks, the sums are this rank's (rank 0's carry a resumed epoch's).
    """
    epoch, group = progress.epoch, run.group
    run.student.train()
    # Sums stay on the device: reading them every step would sync the GPU.
    carried = [0.0] * len(SUMS)
    if group.leader and progress.sums:  # a checkpoint of an earlier version has fewer sums
        carried[: len(progress.sums)] = progress.sums
    sums = torch.tensor(carried, dtype=torch.float32, device=run.device)
    step_line_every = max(1, run.steps_per_epoch // STEP_LINES_PER_EPOCH)
    first = progress.batch  # where this attempt starts the epoch
    batches = run.batches.epoch(epoch, first, group)
    for batch in range(first, run.steps_per_epoch):
        reason = stop_reason(run, batch, should_stop, clock)
        if reason is not None:
            progress.batch, progress.sums = batch, summed(sums, group).tolist()
            checkpoints.save(progress)
            emit(protocol.Stopped(reason=reason, epoch=epoch, batch=batch))
            raise TrainingStopped(reason)
        if batch > first and checkpoints.due() and agreed(run, batch):
            progress.batch, progress.sums = batch, summed(sums, group).tolist()
            checkpoints.save(progress)  # the loader's state is the batch: it resumes there
            emit(protocol.Checkpointed(epoch=epoch + 1, batch=batch))
        sums += train_step(run, next(batches), epoch, batch)
        progress.batch = batch + 1
        if progress.batch % step_line_every == 0 and progress.batch < run.steps_per_epoch:
            loss_sum, _, ot_sum, count, *_ = summed(sums, group).tolist()  # a few syncs
            check_finite(loss_sum, epoch, progress.batch, run)
            emit(
                protocol.Step(
                    epoch=epoch + 1,
                    step=epoch * run.steps_per_epoch + progress.batch,
                    steps=run.total_steps,
                    train_loss=loss_sum / count,
                    ot_distance=ot_sum / count if run.spec.regularizer.kind == "ot" else None,
                    lr=run.scheduler.get_last_lr()[0],
                    seconds=clock(),
                )
            )
    return sums


def agreed(run: Run, batch: int) -> bool:
    """Whether every rank takes a mid-epoch checkpoint at ``batch``: alone, always; with
    several ranks, only on the batches where they agree on stopping (their clocks differ)."""
    return run.group.world == 1 or batch % STOP_EVERY == 0


def stop_reason(run: Run, batch: int, should_stop: Callable[[], bool], clock: Clock) -> str | None:
    """Why the run must stop before ``batch``, if it must: a signal, or ``max_runtime_s``.

    Several ranks agree on it every :data:`STOP_EVERY` batches (an all-reduce), so
    that they stop together.
    """
    reason = "signal" if should_stop() else None
    if reason is None and clock() > run.spec.training.max_runtime_s:
        reason = "max_runtime"
    if run.group.world == 1:
        return reason
    return agreed_stop(reason, run.group, run.device) if batch % STOP_EVERY == 0 else None


def check_finite(loss_sum: float, epoch: int, batch: int, run: Run) -> None:
    """Raises :class:`Diverged` when the summed loss is NaN or infinite."""
    if not math.isfinite(loss_sum):
        raise Diverged(epoch + 1, epoch * run.steps_per_epoch + batch)


def train_step(run: Run, batch: Batch, epoch: int, step: int) -> Tensor:
    """One optimizer step on a batch (its labeled rows, then any unlabeled ones).

    Returns the batch's sums (:data:`SUMS`) over its n labeled inputs, on the device.
    """
    x, indices, views = step_inputs(run, batch, epoch, step)
    y = batch.labels
    n = len(y)
    with run.autocast():
        student_features, teacher_features = forward(run, x, indices, views)
        logits = student_features["logits"][:n]  # the unlabeled rows have no label
        task = task_loss(run, student_features, y)
        out = on_rows(run.term, teacher_features, student_features, y)
        kd = torch.zeros((), device=run.device)
        if run.kd is not None:
            kd = on_rows(run.kd, teacher_features, student_features, y).loss
        loss = task + out.loss + kd
    run.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    run.optimizer.step()
    run.scheduler.step()

    ot_value = out.logs.get("ot_distance", torch.zeros((), device=run.device))
    return torch.stack(
        [
            loss.detach().float() * n,
            (logits.argmax(dim=1) == y).sum().float(),
            ot_value.float() * n,
            torch.tensor(float(n), device=run.device),
            task.detach().float() * n,
            out.loss.detach().float() * n,
            kd.detach().float() * n,
        ]
    )


def step_inputs(
    run: Run, batch: Batch, epoch: int, step: int
) -> tuple[Tensor, Tensor, Tensor | None]:
    """A step's inputs as the models see them (augmented when the run augments on the
    device), the rows they are, and their cached views (None: drawn fresh)."""
    x, views = batch.inputs, None
    if run.augmenter is not None:
        x, views = augmented(run, x, batch.rows, epoch, step)
    if run.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x, batch.rows, views


def forward(
    run: Run, x: Tensor, indices: Tensor | None, views: Tensor | None, ddp: bool = True
) -> tuple[Features, Features]:
    """The student's stages on ``x`` (through DDP with several ranks, unless ``ddp`` is
    false: for what syncs no gradient) and the teacher's."""
    student_forward = run.forward_student if ddp else None
    student_features = (student_forward or run.student.forward_stages)(x)
    teacher_features = teacher_outputs(run, x, indices, views) if run.needs_teacher else {}
    return student_features, teacher_features


def task_loss(run: Run, student_features: Features, labels: Tensor) -> Tensor:
    """Cross-entropy on the labeled rows (the first ``len(labels)``)."""
    logits = student_features["logits"][: len(labels)]
    return F.cross_entropy(logits, labels, label_smoothing=run.spec.training.label_smoothing)


def balanced_weights(run: Run, balanced: list[balance.Balanced]) -> dict[str, float]:
    """The "auto" weights from the gradients on the first batches of epoch 1, before any
    step (:mod:`otrt_core.train.balance`). The models' buffers (BatchNorm's running
    statistics) and the random state are as they were after, so that the run is the
    one it would be with those numbers given."""
    buffers = [
        (buffer, buffer.clone())
        for module in (run.student, run.term, *([run.kd] if run.kd is not None else []))
        for buffer in module.buffers()
    ]
    devices = [run.device] if run.device.type == "cuda" else []
    batches = run.batches.epoch(0, 0, run.group)

    def batch_features(batch: int):
        def features() -> tuple[Features, Features, Tensor]:
            drawn = next(batches)
            x, indices, views = step_inputs(run, drawn, 0, batch)
            with run.autocast():
                return (*forward(run, x, indices, views, ddp=False), drawn.labels)

        return features

    run.student.train()
    with torch.random.fork_rng(devices=devices):
        chosen = balance.balance(
            balanced,
            (batch_features(b) for b in range(min(balance.BATCHES, run.steps_per_epoch))),
            lambda student, labels: task_loss(run, student, labels),
            [p for p in run.student.parameters() if p.requires_grad],
        )
    for buffer, saved in buffers:
        buffer.copy_(saved)
    return chosen


def augmented(
    run: Run, x: Tensor, indices: Tensor | None, epoch: int, batch: int
) -> tuple[Tensor, Tensor | None]:
    """The batch's random views, and which cached view each input is (None without a
    teacher cache: the views are then drawn fresh). Seeded by (seed, epoch, batch)."""
    generator = seeded(run.spec.training.seed, epoch, batch, AUGMENT_STREAM)
    if run.cache is not None and run.cache.view_params is not None:
        views = torch.randint(run.cache.views, (len(indices),), generator=generator)
        params = run.cache.params(indices, views)
    else:
        views, params = None, run.augmenter.draw(len(x), generator)
    return run.augmenter.apply(x, params), views


def teacher_outputs(
    run: Run, x: Tensor, indices: Tensor, views: Tensor | None = None
) -> dict[str, Tensor]:
    """The frozen teacher's stages on a batch: from the cache (the views the batch shows),
    or a forward pass on the batch as the student sees it."""
    if run.cache is not None:
        return run.cache.lookup(indices, views)
    with torch.no_grad():
        return run.teacher.forward_stages(x)


def epoch_record(run: Run, epoch: int, sums: Tensor, clock: Clock) -> dict[str, Any]:
    """The epoch's line of the history, validation included."""
    loss_sum, correct, ot_sum, count, *parts = sums.tolist()
    check_finite(loss_sum, epoch, run.steps_per_epoch, run)
    val_loss, val_accuracy = evaluate(
        run.student, run.data.x_val, run.data.y_val, run.device, run.spec.training.batch_size
    )
    return {
        "epoch": epoch + 1,
        "step": (epoch + 1) * run.steps_per_epoch,
        "steps": run.total_steps,
        "train_loss": loss_sum / count if count else math.nan,
        "train_accuracy": correct / count if count else math.nan,
        "val_loss": val_loss,
        "val_accuracy": val_accuracy,
        "ot_distance": ot_sum / count if count and run.spec.regularizer.kind == "ot" else None,
        "lr": run.scheduler.get_last_lr()[0],
        "seconds": clock(),
        # The mean of each loss part per labeled input (the collapse guard reads them).
        "losses": {
            part: value / count if count else math.nan
            for part, value in zip(SUMS[4:], parts, strict=True)
        },
    }


def write_outputs(
    run: Run,
    progress: Progress,
    best_state: dict[str, Tensor] | None,
    out_dir: Path,
    clock: Clock,
    emit: Emit,
) -> dict[str, Any]:
    """The selected student as safetensors and ONNX, metrics.json, spec.json, plan.npy,
    and its report (report.json, report.html, student.int8.onnx)."""
    spec, data, student = run.spec, run.data, run.student
    if spec.training.select == "best" and best_state is not None:
        student.load_state_dict(best_state)
        selected_epoch = progress.best_epoch
    else:
        selected_epoch = progress.epoch
    # The selected student's test logits, computed once for the metrics and the report.
    test_logits = predict(student, data.x_test, run.device, spec.training.batch_size)
    test_loss, test_accuracy = scores(test_logits, data.y_test.to(run.device))
    metrics = {
        "test_accuracy": test_accuracy,
        "test_loss": test_loss,
        "best_val_accuracy": progress.best_val_accuracy,
        "selected_epoch": selected_epoch,
        "epochs_run": progress.epoch,  # fewer than training.epochs after early stopping
        "select": spec.training.select,
        "num_classes": data.num_classes,
        "input_shape": list(data.x_train.shape[1:]),
        "normalization": {"mean": data.mean.tolist(), "std": data.std.tolist()},
        "history": progress.history,
        "seconds": clock(),
    }
    metrics["collapsed"] = collapsed(run, progress, test_accuracy, emit)
    save_weights(out_dir / STUDENT_WEIGHTS, student)
    sample = data.x_test[:16] if len(data.x_test) else data.x_train[:16]
    onnx = export_onnx(student, sample, out_dir / STUDENT_ONNX)
    metrics["onnx"] = {"max_abs_diff": onnx.max_abs_diff, "ok": onnx.ok}
    if not onnx.ok:
        emit(protocol.Warned(message=f"ONNX outputs differ by {onnx.max_abs_diff:.2e}"))
    (out_dir / METRICS).write_text(json.dumps(metrics, indent=2) + "\n")
    (out_dir / RESOLVED_SPEC).write_text(spec.model_dump_json(indent=2) + "\n")
    plan = None
    if spec.regularizer.kind == "ot" and run.teacher is not None:
        plan = sample_plan(run)  # of the selected student
        save_plan(out_dir / PLAN, plan)
    if len(data.y_test):
        write_report(
            run,
            test_logits.cpu().numpy(),
            out_dir,
            progress.history,
            plan,
            emit,
            collapsed=metrics["collapsed"],
        )
    emit(
        protocol.Done(
            test_accuracy=test_accuracy,
            best_val_accuracy=progress.best_val_accuracy,
            selected_epoch=selected_epoch,
            seconds=clock(),
            collapsed=metrics["collapsed"],
        )
    )
    return metrics


def collapsed(run: Run, progress: Progress, test_accuracy: float, emit: Emit) -> bool:
    """The collapse guard (:mod:`otrt_core.train.collapse`) on the selected student's test
    accuracy (its best validation accuracy without a test split): warns when it fires."""
    final = test_accuracy if math.isfinite(test_accuracy) else progress.best_val_accuracy
    why = collapse_warning(progress.history, final, run.data.num_classes, run.spec.regularizer.kind)
    if why is not None:
        emit(protocol.Warned(message=why))
    return why is not None


@torch.no_grad()
def evaluate(
    model, x: Tensor, y: Tensor, device: torch.device, batch_size: int
) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) of ``model`` on (x, y); NaN for an empty set."""
    if len(y) == 0:
        return math.nan, math.nan
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device)
    starts = range(0, len(y), batch_size)
    for start, inputs in zip(starts, input_batches(x, batch_size), strict=True):
        labels = y[start : start + batch_size].to(device)
        logits = model(inputs.to(device)).float()
        loss_sum += F.cross_entropy(logits, labels, reduction="sum")
        correct += (logits.argmax(dim=1) == labels).sum()
    model.train(was_training)
    return loss_sum.item() / len(y), correct.item() / len(y)


def scores(logits: Tensor, labels: Tensor) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) of ``logits`` against ``labels``, as :func:`evaluate`
    gives them; NaN for an empty set."""
    if len(labels) == 0:
        return math.nan, math.nan
    loss = F.cross_entropy(logits, labels, reduction="sum").item() / len(labels)
    return loss, (logits.argmax(dim=1) == labels).sum().item() / len(labels)


@torch.no_grad()
def sample_plan(run: Run) -> np.ndarray:
    """The transport plan of the first OT layer pair on a validation batch (for visualization)."""
    was_training = run.student.training
    run.student.eval()
    data = run.data
    x = (data.x_val if len(data.x_val) else data.x_train)[: run.spec.training.batch_size]
    x = x.to(run.device)
    out = run.term(run.teacher.forward_stages(x), run.student.forward_stages(x), None)
    run.student.train(was_training)
    first = next(iter(out.plans.values()))
    return first.float().cpu().numpy()


def save_plan(path: Path, plan: np.ndarray) -> None:
    """Writes ``plan.npy`` atomically: a reader (the service) never sees half a file."""

    with atomic_path(path) as temp, open(temp, "wb") as handle:
        np.save(handle, plan)
