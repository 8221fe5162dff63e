"""int8 quantization of graphs onnxruntime's symbolic shape inference cannot read."""

import numpy as np
import onnx
import onnxruntime
import torch

from otrt_core.models import small
from otrt_core.models.graph import GraphModel
from otrt_core.train.export import export_onnx, quantize_int8


def test_a_converted_graph_with_computed_reshapes_quantizes(tmp_path):
    """A user's graph student whose flatten reshapes to a computed shape made
    ``quant_pre_process`` assert, failing the job at its report; now it quantizes."""
    model = small.ConvNet(small.ConvNetConfig((4, 8), (1, 12, 12))).eval()  # a global mean
    torch.onnx.export(
        model,
        (torch.zeros(1, 1, 12, 12),),
        tmp_path / "user.onnx",
        input_names=["x"],
        output_names=["y"],
        dynamic_axes={"x": {0: "b"}, "y": {0: "b"}},
        dynamo=False,
    )
    student = GraphModel.from_file(tmp_path / "user.onnx")
    inputs = torch.rand(64, 1, 12, 12)
    assert export_onnx(student, inputs[:4], tmp_path / "student.onnx").ok
    quantize_int8(tmp_path / "student.onnx", tmp_path / "int8.onnx", inputs.numpy())
    session = onnxruntime.InferenceSession(
        tmp_path / "int8.onnx", providers=["CPUExecutionProvider"]
    )
    (logits,) = session.run(None, {session.get_inputs()[0].name: inputs[:8].numpy()})
    assert logits.shape == (8, 10) and np.isfinite(logits).all()
    ops = {node.op_type for node in onnx.load(tmp_path / "int8.onnx").graph.node}
    assert "QuantizeLinear" in ops
