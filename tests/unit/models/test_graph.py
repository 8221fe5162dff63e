"""ONNX graphs from two frameworks as otrt models: conversion, layers, heads, refusals."""

from __future__ import annotations

import subprocess
import sys
import warnings

import numpy as np
import onnx
import onnxruntime
import pytest
import torch

from otrt_core.errors import UserError
from otrt_core.models import build_model
from otrt_core.models.graph import GraphModel, conversion_error, read_graph
from tests.utils.graphs import digits, sklearn_graph, torch_graph, unknown_operator_graph
from tests.utils.processes import ROOT


@pytest.fixture(scope="module")
def conv_graph(tmp_path_factory):
    return torch_graph(tmp_path_factory.mktemp("graphs") / "conv.onnx", epochs=2)


def test_a_torch_export_converts_to_the_same_function(conv_graph):
    model = GraphModel.from_file(conv_graph).eval()
    x = torch.randn(5, 1, 8, 8)
    session = onnxruntime.InferenceSession(str(conv_graph), providers=["CPUExecutionProvider"])
    (expected,) = session.run(None, {"image": x.numpy()})
    got = model(x).detach().numpy()
    assert np.abs(got - expected).max() < 1e-5
    assert conversion_error(model, read_graph(conv_graph)) < 1e-5
    assert model.input_shape == (1, 8, 8)


def test_layers_are_the_graph_tensors_by_name_with_shapes_in_graph_order(conv_graph):
    model = GraphModel.from_file(conv_graph)
    shapes = model.layer_shapes()
    names = list(shapes)
    assert names[:2] == ["/conv1/Conv_output_0", "/Relu_output_0"]
    assert shapes["/Relu_output_0"] == [16, 8, 8]
    assert shapes["penultimate"] == [64] and shapes["logits"] == [10]
    model.keep(["/Relu_1_output_0"])
    out = model.forward_stages(torch.zeros(3, 1, 8, 8))
    assert list(out) == ["/Relu_1_output_0", "penultimate", "logits"]
    assert out["/Relu_1_output_0"].shape == (3, 32, 4, 4)


def test_an_unknown_layer_name_lists_the_valid_ones(conv_graph):
    with pytest.raises(UserError, match=r"no tensor 'conv9'.*/conv1/Conv_output_0"):
        GraphModel.from_file(conv_graph).keep(["conv9"])


def test_a_new_head_trains_with_the_body(conv_graph):
    model = GraphModel.from_file(conv_graph)
    model.replace_head(3)
    x = torch.randn(4, 1, 8, 8)
    logits = model(x)
    assert logits.shape == (4, 3)
    logits.sum().backward()
    grads = {name for name, p in model.named_parameters() if p.grad is not None}
    assert {"head.weight", "body.conv1/Conv.weight"} <= grads
    assert "body.out/Gemm.weight" not in grads  # the old head no longer takes part


def test_a_scikit_learn_mlp_converts_with_its_accuracy(tmp_path):
    path, classifier = sklearn_graph(tmp_path / "mlp.onnx")
    model = GraphModel.from_file(path).eval()
    x, _ = digits()
    flat = x.reshape(len(x), -1)
    predicted = model(torch.from_numpy(flat)).argmax(dim=1).numpy()
    assert (predicted == classifier.predict(flat)).mean() == 1.0
    shapes = model.layer_shapes()
    # The hidden layer is a MatMul by a constant: its input is penultimate, MatMul + Add the logits.
    assert shapes["penultimate"] == [64] and shapes["logits"] == [10]
    # skl2onnx keeps weights as constants: they become parameters, so the graph trains.
    assert sum(p.numel() for p in model.parameters()) == 64 * 64 + 64 + 64 * 10 + 10


def test_bad_graphs_are_refused_with_the_reason(tmp_path):
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"\x08\x07garbage")
    with pytest.raises(UserError, match="not a readable ONNX graph"):
        GraphModel.from_file(corrupt)
    with pytest.raises(UserError, match=r"operator.*Mystery"):
        GraphModel.from_file(unknown_operator_graph(tmp_path / "mystery.onnx"))


def test_a_resnet_export_with_shared_weights_converts(tmp_path):
    """torch's exporter shares equal weights through Identity nodes; the converter
    reads weights from initializers only, so otrt inlines them first."""
    model = build_model("resnet20", input_shape=(3, 32, 32)).eval()
    x = torch.randn(2, 3, 32, 32)
    path = tmp_path / "resnet20.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), str(path), dynamo=False, input_names=["input"])
    graph = GraphModel.from_file(path).eval()
    with torch.no_grad():
        assert torch.allclose(graph(x), model(x), atol=1e-4)


def test_a_graph_without_a_fixed_channel_count_is_refused(tmp_path):
    weight = onnx.helper.make_tensor("w", onnx.TensorProto.FLOAT, [3, 4], [1.0] * 12)
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Gemm", ["x", "w"], ["y"], transB=1)],
        "free",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["n", "c"])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["n", 3])],
        [weight],
    )
    path = tmp_path / "free.onnx"
    onnx.save(onnx.helper.make_model(graph), str(path))
    with pytest.raises(UserError, match="no fixed channel count"):
        GraphModel.from_file(path)


def test_a_graph_with_shape_operators_exports_again_once_torch_onnx_is_loaded(tmp_path):
    """A student converted from a graph that reads shapes (a flatten before a mean, say)
    is exported to student.onnx at the end of a job. In a process that has imported
    ``torch.onnx.symbolic_helper`` before onnx2torch (as a trainer may), that export
    failed on an attribute torch no longer has; run in a fresh interpreter for that order."""
    script = f"""
import torch.onnx.symbolic_helper  # the compatibility module, first
import torch
from pathlib import Path
from otrt_core.models import small
from otrt_core.models.graph import GraphModel
from otrt_core.train.export import export_onnx

model = small.ConvNet(small.ConvNetConfig((4, 8), (1, 12, 12))).eval()  # global mean
torch.onnx.export(model, (torch.zeros(1, 1, 12, 12),), {str(tmp_path / "g.onnx")!r},
    input_names=["x"], output_names=["y"], dynamic_axes={{"x": {{0: "b"}}}}, dynamo=False)
student = GraphModel.from_file({str(tmp_path / "g.onnx")!r})
assert any(type(m).__name__ == "OnnxShape" for m in student.modules())
print(export_onnx(student, torch.randn(3, 1, 12, 12), Path({str(tmp_path / "out.onnx")!r})).ok)
"""
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().endswith("True")
