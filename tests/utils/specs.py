"""Small job specs on built-in data, for tests that train for real."""

from typing import Any

from otrt_core.spec import JobSpec, resolve_spec


def digits_spec(
    mode: str = "supervised", *, teacher_path: str | None = None, **sections: Any
) -> JobSpec:
    """A seconds-long job on scikit-learn's digits: MLP teacher, quarter-width MLP student."""
    body: dict[str, Any] = {
        "mode": mode,
        "student": {"architecture": "mlp" if mode in ("supervised", "transfer") else "mlp_small"},
        "dataset": {"name": "digits"},
        "training": {"epochs": 3, "batch_size": 64, "lr": 0.05},
    }
    if teacher_path is not None:
        body["teacher"] = {"architecture": "mlp", "checkpoint": teacher_path}
    for name, values in sections.items():
        body[name] = {**body.get(name, {}), **values}
    return resolve_spec(body)
