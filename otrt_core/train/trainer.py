"""The training loop: a resolved job spec in, a trained student and its metrics out.

Knows no HTTP, DB or queue. It reports through ``emit`` (JSON-able dicts: the
progress protocol of docs/training.md), checkpoints atomically every epoch and
on request, and stops when ``should_stop()`` says so or ``max_runtime_s`` runs
out, leaving a checkpoint that ``resume`` continues from exactly.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from otrt_core.spec import JobSpec
from otrt_core.train.checkpoint import load_checkpoint, save_checkpoint, save_weights
from otrt_core.train.export import export_onnx
from otrt_core.train.setup import (
    build_models,
    load_data,
    make_optimizer,
    make_schedule,
    pick_device,
)
from otrt_core.train.teacher_cache import TeacherCache
from otrt_core.train.terms import KDTerm, build_term

CHECKPOINT = "checkpoint.pt"
STEP_LINES_PER_EPOCH = 4

Emit = Callable[[dict[str, Any]], None]


class TrainingStopped(Exception):
    """The run stopped early with a checkpoint saved; ``reason`` is 'signal' or 'max_runtime'."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class RunOptions:
    out_dir: Path
    teacher_path: Path | None = None
    dataset_path: Path | None = None  # a user's .npz or .zip instead of a built-in dataset
    datasets_root: Path | None = None
    device: str = "auto"
    resume: bool = False
    should_stop: Callable[[], bool] = lambda: False
    teacher_cache_max_bytes: int = 1 << 30  # in memory, on the training device
    teacher_cache_max_disk_bytes: int = 8 << 30  # memory-mapped under out_dir/teacher_cache
    device_data_max_bytes: int = 2 << 30


@dataclass
class Progress:
    """What a checkpoint carries besides tensors: where the run is and what it saw."""

    epoch: int = 0  # completed epochs
    batch: int = 0  # completed batches of the current epoch
    history: list[dict[str, float]] = field(default_factory=list)
    best_val_accuracy: float = -1.0
    best_epoch: int = 0
    elapsed: float = 0.0


def train(spec: JobSpec, options: RunOptions, emit: Emit) -> dict[str, Any]:
    """Runs the job; returns the final metrics (also written to ``metrics.json``)."""
    started = time.monotonic()
    out_dir = options.out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    training = spec.training

    # ---- set-up: data, models, the regularizer, the optimizer
    device = pick_device(options.device)
    torch.manual_seed(training.seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    data = load_data(spec, options.datasets_root, options.dataset_path)
    models = build_models(spec, data, options.teacher_path)
    student, teacher = models.student.to(device), models.teacher
    if teacher is not None:
        teacher.to(device)
    term = build_term(spec, teacher, student).to(device)
    extra_kd = KDTerm(spec.kd.weight, spec.kd.temperature) if spec.kd.weight > 0 else None
    needs_teacher = teacher is not None and (term.needs_teacher_features or extra_kd is not None)
    optimizer = make_optimizer(training, [*student.parameters(), *term.parameters()])
    steps_per_epoch = math.ceil(len(data.y_train) / training.batch_size)
    total_steps = steps_per_epoch * training.epochs
    scheduler = make_schedule(optimizer, training, total_steps)
    autocast = _autocast(training.amp, device)

    # Inputs: labeled, then the unlabeled pool when the term uses it, so that one
    # index space serves batches and the teacher cache alike.
    use_unlabeled = spec.regularizer.unlabeled and len(data.x_unlabeled) > 0
    inputs = torch.cat([data.x_train, data.x_unlabeled]) if use_unlabeled else data.x_train
    labels = data.y_train
    unlabeled_offset = len(data.x_train)
    # Datasets that fit live on the device: batches are gathered there, with no
    # host-to-device copy per step.
    if inputs.numel() * inputs.element_size() <= options.device_data_max_bytes:
        inputs, labels = inputs.to(device), labels.to(device)
    channels_last = device.type == "cuda" and inputs.dim() == 4
    if channels_last:  # the layout cuDNN's convolutions are fastest in
        student.to(memory_format=torch.channels_last)
        if teacher is not None:
            teacher.to(memory_format=torch.channels_last)
    cache = None
    if needs_teacher and training.teacher_cache == "auto":
        stages = {pair.teacher for pair in spec.regularizer.layers}
        cache = TeacherCache.build(
            teacher,
            inputs,
            stages,
            device,
            training.batch_size,
            max_memory_bytes=options.teacher_cache_max_bytes,
            max_disk_bytes=options.teacher_cache_max_disk_bytes,
            disk_dir=out_dir / "teacher_cache",
        )

    # ---- resume
    progress = Progress()
    best_state = None
    checkpoint_path = out_dir / CHECKPOINT
    if options.resume and checkpoint_path.exists():
        state = load_checkpoint(checkpoint_path)
        student.load_state_dict(state["model"])
        term.load_state_dict(state["term"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"])
        progress = Progress(**state["progress"])
        best_state = state["best_model"]

    def save(progress: Progress) -> None:
        progress.elapsed = progress_elapsed()
        save_checkpoint(
            checkpoint_path,
            {
                "model": student.state_dict(),
                "term": term.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "rng": torch.get_rng_state(),
                "progress": progress.__dict__,
                "best_model": best_state,
            },
        )

    resumed_elapsed = progress.elapsed

    def progress_elapsed() -> float:
        return resumed_elapsed + time.monotonic() - started

    emit(
        {
            "event": "start",
            "epoch": progress.epoch,
            "epochs": training.epochs,
            "step": progress.epoch * steps_per_epoch + progress.batch,
            "steps": total_steps,
            "device": str(device),
            "teacher_cache": "off" if cache is None else ("disk" if cache.on_disk else "memory"),
            "resumed": options.resume and progress.epoch + progress.batch > 0,
        }
    )

    # ---- epochs
    step_line_every = max(1, steps_per_epoch // STEP_LINES_PER_EPOCH)
    while progress.epoch < training.epochs:
        epoch = progress.epoch
        student.train()
        order = torch.randperm(len(labels), generator=_generator(training.seed, epoch))
        order = order.to(inputs.device)  # one copy per epoch, not per step
        # Sums stay on the device: reading them every step would sync the GPU.
        sums = torch.zeros(4, device=device)  # loss * n, correct, ot_distance * n, n
        for batch in range(progress.batch, steps_per_epoch):
            stop_requested = options.should_stop()
            if stop_requested or progress_elapsed() > training.max_runtime_s:
                reason = "signal" if stop_requested else "max_runtime"
                save(Progress(**{**progress.__dict__, "batch": batch}))
                emit({"event": "stopped", "reason": reason, "epoch": epoch, "batch": batch})
                raise TrainingStopped(reason)
            indices = order[batch * training.batch_size : (batch + 1) * training.batch_size]
            if use_unlabeled:
                pool = torch.randint(
                    len(data.x_unlabeled),
                    (spec.regularizer.unlabeled_batch_size,),
                    generator=_generator(training.seed, epoch, batch),
                )
                indices_all = torch.cat([indices, pool.to(inputs.device) + unlabeled_offset])
            else:
                indices_all = indices
            x = inputs[indices_all].to(device, non_blocking=True)
            y = labels[indices].to(device, non_blocking=True)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            labeled = len(indices)

            with autocast():
                student_features = student.forward_stages(x)
                logits = student_features["logits"][:labeled]
                loss = F.cross_entropy(logits, y)
                teacher_features = {}
                if needs_teacher:
                    if cache is not None:
                        teacher_features = cache.lookup(indices_all)
                    else:
                        with torch.no_grad():
                            teacher_features = teacher.forward_stages(x)
                out = term(teacher_features, student_features)
                loss = loss + out.loss
                if extra_kd is not None:
                    loss = loss + extra_kd(teacher_features, student_features).loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()

            ot_value = out.logs.get("ot_distance", torch.zeros((), device=device))
            sums += torch.stack(
                [
                    loss.detach().float() * labeled,
                    (logits.argmax(dim=1) == y).sum().float(),
                    ot_value.float() * labeled,
                    torch.tensor(float(labeled), device=device),
                ]
            )
            step = epoch * steps_per_epoch + batch + 1
            if (batch + 1) % step_line_every == 0 and batch + 1 < steps_per_epoch:
                loss_sum, _, ot_sum, count = sums.tolist()  # a few syncs per epoch
                emit(
                    {
                        "event": "step",
                        "epoch": epoch + 1,
                        "step": step,
                        "steps": total_steps,
                        "train_loss": loss_sum / count,
                        "ot_distance": ot_sum / count if spec.regularizer.kind == "ot" else None,
                        "lr": scheduler.get_last_lr()[0],
                        "seconds": progress_elapsed(),
                    }
                )
            progress.batch = batch + 1

        # ---- end of epoch: validate, record, checkpoint
        loss_sum, correct, ot_sum, count = sums.tolist()
        val_loss, val_accuracy = evaluate(
            student, data.x_val, data.y_val, device, training.batch_size
        )
        record = {
            "epoch": epoch + 1,
            "step": (epoch + 1) * steps_per_epoch,
            "steps": total_steps,
            "train_loss": loss_sum / count if count else math.nan,
            "train_accuracy": correct / count if count else math.nan,
            "val_loss": val_loss,
            "val_accuracy": val_accuracy,
            "ot_distance": ot_sum / count if count and spec.regularizer.kind == "ot" else None,
            "lr": scheduler.get_last_lr()[0],
            "seconds": progress_elapsed(),
        }
        progress.history.append(record)
        if val_accuracy > progress.best_val_accuracy:
            progress.best_val_accuracy, progress.best_epoch = val_accuracy, epoch + 1
            best_state = {k: v.detach().clone().cpu() for k, v in student.state_dict().items()}
        progress.epoch, progress.batch = epoch + 1, 0
        save(progress)
        emit({"event": "epoch", **record})

    # ---- outputs
    if training.select == "best" and best_state is not None:
        student.load_state_dict(best_state)
        selected_epoch = progress.best_epoch
    else:
        selected_epoch = progress.epoch
    test_loss, test_accuracy = evaluate(
        student, data.x_test, data.y_test, device, training.batch_size
    )
    metrics = {
        "test_accuracy": test_accuracy,
        "test_loss": test_loss,
        "best_val_accuracy": progress.best_val_accuracy,
        "selected_epoch": selected_epoch,
        "select": training.select,
        "num_classes": data.num_classes,
        "input_shape": list(data.x_train.shape[1:]),
        "normalization": {"mean": data.mean.tolist(), "std": data.std.tolist()},
        "history": progress.history,
        "seconds": progress_elapsed(),
    }
    save_weights(out_dir / "student.safetensors", student)
    onnx = export_onnx(
        student,
        data.x_test[:16] if len(data.x_test) else data.x_train[:16],
        out_dir / "student.onnx",
    )
    metrics["onnx"] = {"max_abs_diff": onnx.max_abs_diff, "ok": onnx.ok}
    if not onnx.ok:
        emit({"event": "warning", "message": f"ONNX outputs differ by {onnx.max_abs_diff:.2e}"})
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    (out_dir / "spec.json").write_text(spec.model_dump_json(indent=2) + "\n")
    if spec.regularizer.kind == "ot" and teacher is not None:
        np.save(out_dir / "plan.npy", sample_plan(spec, teacher, student, term, data, device))
    emit(
        {
            "event": "done",
            "test_accuracy": test_accuracy,
            "best_val_accuracy": progress.best_val_accuracy,
            "selected_epoch": selected_epoch,
            "seconds": progress_elapsed(),
        }
    )
    return metrics


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
    for start in range(0, len(y), batch_size):
        inputs = x[start : start + batch_size].to(device)
        labels = y[start : start + batch_size].to(device)
        logits = model(inputs).float()
        loss_sum += F.cross_entropy(logits, labels, reduction="sum")
        correct += (logits.argmax(dim=1) == labels).sum()
    model.train(was_training)
    return loss_sum.item() / len(y), correct.item() / len(y)


@torch.no_grad()
def sample_plan(spec: JobSpec, teacher, student, term, data, device: torch.device) -> np.ndarray:
    """The transport plan of the first OT layer pair on a validation batch (for visualization)."""
    student.eval()
    x = (data.x_val if len(data.x_val) else data.x_train)[: spec.training.batch_size].to(device)
    out = term(teacher.forward_stages(x), student.forward_stages(x))
    first = next(iter(out.plans.values()))
    return first.float().cpu().numpy()


def _generator(*seeds: int) -> torch.Generator:
    """A CPU generator determined by ``seeds``: batch order needs no saved RNG state."""
    value = 0
    for seed in seeds:
        value = (value * 1_000_003 + seed) % (2**63 - 1)
    return torch.Generator().manual_seed(value)


def _autocast(amp: str, device: torch.device):
    """bfloat16 autocast on CUDA devices that support it; off on the CPU.

    bfloat16 keeps float32's range, so no loss scaling is needed; the OT cost
    is computed in float32 regardless (otrt_core.ot.cost_matrix).
    """
    enabled = device.type == "cuda" and amp != "off" and torch.cuda.is_bf16_supported()
    return lambda: torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=enabled)
