"""Real ONNX graphs for tests, from two frameworks, trained on scikit-learn's digits.

- :func:`torch_graph`: a small conv net written here (not in otrt's zoo),
  trained for a few epochs and exported by ``torch.onnx.export``.
- :func:`sklearn_graph`: a scikit-learn ``MLPClassifier`` exported by
  skl2onnx (MatMul/Add layers, a label output through ``ai.onnx.ml``).
- :func:`unknown_operator_graph`: a graph with an operator no converter knows.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper
from sklearn.datasets import load_digits
from torch import nn

# otrt's digits split holds out the last 297 images as its test set.
TRAIN_ROWS = 1500


def digits(classes: tuple[int, ...] = tuple(range(10))) -> tuple[np.ndarray, np.ndarray]:
    """The first ``TRAIN_ROWS`` digits of ``classes`` in [0, 1], ``(n, 1, 8, 8)``, relabelled."""
    data = load_digits()
    x = (data.data[:TRAIN_ROWS] / 16.0).astype(np.float32).reshape(-1, 1, 8, 8)
    y = data.target[:TRAIN_ROWS]
    keep = np.isin(y, classes)
    relabel = {label: index for index, label in enumerate(classes)}
    return x[keep], np.array([relabel[label] for label in y[keep]])


class SmallConvNet(nn.Module):
    """conv(w) - ReLU - max-pool - conv(2w) - ReLU - flatten - linear(4w) - linear."""

    def __init__(self, classes: int, width: int = 16) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, 2 * width, 3, padding=1)
        self.hidden = nn.Linear(2 * width * 4 * 4, 4 * width)
        self.out = nn.Linear(4 * width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.max_pool2d(torch.relu(self.conv1(x)), 2)
        x = torch.relu(self.conv2(x))
        return self.out(torch.relu(self.hidden(x.flatten(1))))


def torch_graph(
    path: Path, *, classes: tuple[int, ...] = tuple(range(10)), epochs: int = 30, width: int = 16
) -> Path:
    """``SmallConvNet`` trained on the digits of ``classes`` (``epochs=0``: untrained),
    exported with a dynamic batch."""
    torch.manual_seed(0)
    model = SmallConvNet(len(classes), width)
    x, y = digits(classes)
    inputs, labels = torch.from_numpy((x - 0.3) / 0.37), torch.from_numpy(y)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(epochs):
        for start in range(0, len(inputs), 64):
            loss = nn.functional.cross_entropy(
                model(inputs[start : start + 64]), labels[start : start + 64]
            )
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return export(model.eval(), inputs[:2], path, "image")


def export(model: nn.Module, sample: torch.Tensor, path: Path, input_name: str) -> Path:
    """``model`` as ONNX with a dynamic batch, as a user would export it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            model,
            (sample,),
            str(path),
            dynamo=False,
            input_names=[input_name],
            output_names=["scores"],
            dynamic_axes={input_name: {0: "batch"}, "scores": {0: "batch"}},
        )
    return path


def sklearn_graph(path: Path) -> tuple[Path, object]:
    """An ``MLPClassifier`` (one hidden layer of 64) trained on flat digits in [0, 1],
    exported by skl2onnx; returns the path and the fitted classifier."""
    from skl2onnx import to_onnx
    from sklearn.neural_network import MLPClassifier

    x, y = digits()
    flat = x.reshape(len(x), -1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn's ConvergenceWarning
        classifier = MLPClassifier(hidden_layer_sizes=(64,), max_iter=300, random_state=0)
        classifier.fit(flat, y)
    graph = to_onnx(classifier, flat[:1], options={id(classifier): {"zipmap": False}})
    path.write_bytes(graph.SerializeToString())
    return path, classifier


def unknown_operator_graph(path: Path) -> Path:
    """x (n, 4) -> com.example.Mystery -> Gemm: valid ONNX, with an operator nobody converts."""
    weight = helper.make_tensor("w", TensorProto.FLOAT, [3, 4], np.ones(12).tolist())
    graph = helper.make_graph(
        [
            helper.make_node("Mystery", ["x"], ["m"], domain="com.example"),
            helper.make_node("Gemm", ["m", "w"], ["y"], transB=1),
        ],
        "mystery",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3])],
        [weight],
    )
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)]
    onnx.save(helper.make_model(graph, opset_imports=opsets), str(path))
    return path
