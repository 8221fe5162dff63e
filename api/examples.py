"""Example bodies of POST /v1/jobs, shown in the OpenAPI document (and tested to be valid).

``supervised`` runs as it is; ``distill`` is API.md's example, whose checkpoint
names an upload that a client replaces with its own ``file_…`` id; ``onnx``
distills an uploaded ONNX graph, reading one of its tensors by name.
"""

from __future__ import annotations

JOB_EXAMPLES = {
    "supervised": {
        "summary": "A small supervised job on built-in data (runs as it is)",
        "value": {
            "mode": "supervised",
            "student": {"architecture": "mlp"},
            "dataset": {"name": "digits"},
            "training": {"epochs": 3, "batch_size": 64},
        },
    },
    "distill": {
        "summary": "Distillation with OT on the penultimate layers (API.md)",
        "value": {
            "mode": "distill",
            "teacher": {"architecture": "resnet56", "checkpoint": "file_0123456789abcdef01234567"},
            "student": {"architecture": "resnet20"},
            "dataset": {
                "name": "fashion_mnist",
                "classes": None,
                "train_subset": None,
                "val_fraction": 0.1,
            },
            "regularizer": {
                "kind": "ot",
                "weight": 1.0,
                "layers": [{"teacher": "penultimate", "student": "penultimate", "weight": 1.0}],
                "solver": "auto",
                "epsilon": 0.002,
                "max_iter": 50,
                "spatial": "pool",
                "normalize": "none",
                "unlabeled": False,
                "unlabeled_batch_size": None,
            },
            "kd": {"weight": 0.0, "temperature": 4.0},
            "training": {
                "epochs": 20,
                "batch_size": 128,
                "optimizer": "sgd",
                "lr": 0.05,
                "momentum": 0.9,
                "weight_decay": 5e-4,
                "schedule": "cosine",
                "seed": 0,
                "amp": "auto",
                "teacher_cache": "auto",
                "select": "best",
                "max_runtime_s": 86400,
            },
            "metadata": {"any": "string pairs"},
        },
    },
    "onnx": {
        "summary": "An uploaded ONNX teacher seen as RGB 32x32, one of its tensors matched",
        "value": {
            "mode": "distill",
            "teacher": {
                "checkpoint": "file_0123456789abcdef01234567",
                "input": {"size": [32, 32], "channels": 3, "mean": [0.5] * 3, "std": [0.25] * 3},
            },
            "student": {"architecture": "cnn_small"},
            "dataset": {"name": "fashion_mnist"},
            "regularizer": {"layers": [{"teacher": "/layer2/Relu_output_0", "student": "stage2"}]},
        },
    },
}
