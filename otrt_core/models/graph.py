"""Models from ONNX graphs, whatever exported them, as trainable torch modules.

A graph is read with ``onnx``, cut to what its logits need, and converted by
``onnx2torch`` into an ``fx.GraphModule`` with one torch module per ONNX node.
Its layers are the graph's tensors, by their ONNX names: any single-output
node's output can be read by the regularizer. Two names work for every graph:

- ``logits``: the output of the graph's last linear layer (``Gemm``, or a
  ``MatMul`` by a constant, with the ``Add`` of a constant bias that follows);
- ``penultimate``: that layer's input.

What comes after the logits (softmax, argmax, a label lookup) is dropped
before conversion, so that scikit-learn's label outputs, for instance, are no
obstacle. A graph must have one input with a fixed channel count, and must
run on a batch of two (a batch size frozen to 1 at export cannot train).

Nothing in a graph is executed as Python: ``onnx`` parses protobuf, and the
converter maps each operator to a known torch module or refuses it by name.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import onnx
import torch
from torch import Tensor, fx, nn

from otrt_core.errors import UserError, nearest_first
from otrt_core.models.base import StagedModel

LINEAR_OPS = ("Gemm", "MatMul")
# The largest difference allowed between the converted graph and onnxruntime,
# relative to the logits' scale (at least 1).
CONVERSION_TOLERANCE = 1e-3
# The newest opset whose operators onnx2torch converts (its registry's versions).
CONVERTER_OPSET = 17


@dataclass(frozen=True)
class GraphHead:
    """Where the last linear layer of a graph is: its input and its output tensors."""

    penultimate: str
    logits: str


def read_graph(path: Path) -> onnx.ModelProto:
    """The checked ONNX graph at ``path``, cut to its logits; ``UserError`` if unusable."""
    try:
        model = onnx.load(str(path), load_external_data=False)
        onnx.checker.check_model(model)
    except Exception as error:  # protobuf and checker errors have no common base
        raise UserError(f"the file is not a readable ONNX graph ({_first_line(error)})") from None
    if any(init.data_location == onnx.TensorProto.EXTERNAL for init in model.graph.initializer):
        raise UserError("the graph keeps its weights in external files: export it as one file")
    inputs = graph_inputs(model)
    if len(inputs) != 1:
        raise UserError(f"otrt takes graphs with one input; this one has {len(inputs)}")
    shape = inputs[0][1]
    if len(shape) < 2 or not isinstance(shape[1], int):
        raise UserError(
            f"the graph's input {inputs[0][0]!r} has no fixed channel count (shape {shape}): "
            "export it with a fixed size for every dimension but the batch"
        )
    return _constant_identities_inlined(_cut_to(model, find_head(model).logits))


def graph_inputs(model: onnx.ModelProto) -> list[tuple[str, list[int | str]]]:
    """The graph's real inputs (initializers listed as inputs left out), with their shapes;
    a symbolic dimension is its name."""
    constants = {init.name for init in model.graph.initializer}
    return [
        (value.name, _shape(value)) for value in model.graph.input if value.name not in constants
    ]


def find_head(model: onnx.ModelProto) -> GraphHead:
    """The last linear layer: a ``Gemm``, or a ``MatMul`` by a constant (plus its bias)."""
    constants = {init.name for init in model.graph.initializer}
    constants |= {n.output[0] for n in model.graph.node if n.op_type == "Constant"}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    for node in reversed(model.graph.node):
        if node.op_type not in LINEAR_OPS or len(node.input) < 2:
            continue
        if node.input[1] not in constants:
            continue
        output = node.output[0]
        after = consumers.get(output, [])
        if (
            node.op_type == "MatMul"
            and len(after) == 1
            and after[0].op_type == "Add"
            and any(name in constants for name in after[0].input)
        ):
            output = after[0].output[0]
        return GraphHead(penultimate=node.input[0], logits=output)
    raise UserError(
        "the graph has no linear layer (Gemm, or MatMul by a weight) to read its logits from"
    )


def _cut_to(model: onnx.ModelProto, output: str) -> onnx.ModelProto:
    """The graph with only the nodes ``output`` depends on, and ``output`` its one output."""
    producers = {name: node for node in model.graph.node for name in node.output}
    needed, stack = set(), [output]
    while stack:
        node = producers.get(stack.pop())
        if node is not None and id(node) not in needed:
            needed.add(id(node))
            stack.extend(node.input)
    nodes = [node for node in model.graph.node if id(node) in needed]
    used = {name for node in nodes for name in node.input}
    cut = onnx.ModelProto()
    cut.CopyFrom(model)
    del cut.graph.node[:], cut.graph.output[:]
    cut.graph.node.extend(nodes)
    kept = [init for init in model.graph.initializer if init.name in used]
    del cut.graph.initializer[:]
    cut.graph.initializer.extend(kept)
    cut.graph.output.append(
        onnx.helper.make_tensor_value_info(output, onnx.TensorProto.FLOAT, None)
    )
    return cut


def _constant_identities_inlined(model: onnx.ModelProto) -> onnx.ModelProto:
    """The graph with ``Identity`` nodes of a weight replaced by a copy of the weight.

    torch's exporter shares equal weights that way, while the converter reads a
    layer's weights from initializers only.
    """
    initializers = {init.name: init for init in model.graph.initializer}
    kept = []
    for node in model.graph.node:
        if node.op_type == "Identity" and node.input[0] in initializers:
            copy = onnx.TensorProto()
            copy.CopyFrom(initializers[node.input[0]])
            copy.name = node.output[0]
            model.graph.initializer.append(copy)
        else:
            kept.append(node)
    del model.graph.node[:]
    model.graph.node.extend(kept)
    return model


def convert_graph(model: onnx.ModelProto) -> fx.GraphModule:
    """The graph as torch modules; ``UserError`` naming an operator the converter lacks.

    onnx2torch knows each operator up to some opset; a newer graph whose
    operators it lacks at their version is first converted down to
    ``CONVERTER_OPSET`` with ONNX's own version converter.
    """
    try:
        return _convert(model)
    except NotImplementedError as error:
        message = _first_line(error)
    try:
        older = onnx.version_converter.convert_version(model, CONVERTER_OPSET)
    except Exception:  # no adapter for some operator: the converter's message says more
        older = None
    if older is not None:
        try:
            return _convert(older)
        except NotImplementedError:
            pass
    raise UserError(f"the graph uses an operator otrt cannot convert: {message}")


def _convert(model: onnx.ModelProto) -> fx.GraphModule:
    """onnx2torch's conversion; ``NotImplementedError`` for an unknown operator."""
    from onnx2torch import convert

    _opset_during_export_readable()
    try:
        return convert(model, attach_onnx_mapping=True)
    except NotImplementedError:
        raise
    except Exception as error:
        raise UserError(f"the graph cannot be converted to torch: {_first_line(error)}") from None


def _opset_during_export_readable() -> None:
    """Lets a converted graph be exported to ONNX again (the student's ``student.onnx``).

    onnx2torch's ``Shape``-like modules read the export's opset from
    ``symbolic_helper.GLOBALS`` as bound when onnx2torch was imported. Since torch
    2.9, ``torch.onnx.symbolic_helper`` is a compatibility module without
    ``GLOBALS`` once it has been imported (which the exporter does), and the
    export fails on ``_export_onnx_opset_version``; the exporter's own module has it.
    """
    from onnx2torch.utils import common

    if hasattr(common.symbolic_helper, "GLOBALS"):
        return
    try:
        from torch.onnx._internal.torchscript_exporter import symbolic_helper
    except ImportError:  # a torch whose public module still is the exporter's
        return
    common.symbolic_helper = symbolic_helper


class GraphModel(StagedModel):
    """A converted ONNX graph whose layers are its tensors, by their ONNX names.

    ``stage_names`` are the tensors ``forward_stages`` returns (``penultimate``
    and the ones chosen with :meth:`keep`), then ``logits``. The graph's float
    constants (weights of ``MatMul``/``Add`` layers, which the converter keeps
    as buffers) become parameters, so that every weight of the graph trains.
    """

    head_prefix = "head."

    def __init__(self, body: fx.GraphModule, head: GraphHead, input_shape: Sequence[int]) -> None:
        super().__init__()
        self.body = body
        self.input_shape = tuple(input_shape)
        self.tensors = _tensor_nodes(body)  # ONNX tensor name -> fx node name
        self.tensors["penultimate"] = self.tensors[head.penultimate]
        self.tensors["logits"] = self.tensors[head.logits]
        self.layer_names = tuple(self.tensors)
        self.head: nn.Linear | None = None
        _trainable_constants(body)
        self.keep(())

    @classmethod
    def from_file(cls, path: Path) -> GraphModel:
        return cls.from_graph(read_graph(path))

    @classmethod
    def from_graph(cls, graph: onnx.ModelProto) -> GraphModel:
        """The model of a graph :func:`read_graph` returned."""
        shape = graph_inputs(graph)[0][1]
        if not all(isinstance(d, int) for d in shape[1:]):
            raise UserError(f"the graph's input has symbolic spatial dimensions ({shape})")
        return cls(convert_graph(graph), find_head(graph), shape[1:])

    def keep(self, names: Sequence[str]) -> GraphModel:
        """Makes ``forward_stages`` return ``names`` (tensor names), ``penultimate`` and
        ``logits``; ``UserError`` listing the graph's tensors for a name it lacks."""
        unknown = [name for name in names if name not in self.tensors]
        if unknown:
            listed = ", ".join(nearest_first(unknown[0], list(self.layer_names))[:25])
            raise UserError(f"the graph has no tensor {unknown[0]!r}; nearest first: {listed}")
        wanted = {*names, "penultimate"} - {"logits"}
        self.stage_names = tuple(n for n in self.layer_names if n in wanted)
        outputs = {n: self.tensors[n] for n in (*self.stage_names, "logits")}
        # Not an attribute nn.Module sees: its parameters are body's, counted once.
        object.__setattr__(self, "_runner", _with_outputs(self.body, outputs, self.head))
        return self

    def _apply(self, fn, recurse=True):
        # The runner holds references to body's constants; after a move, take them again.
        super()._apply(fn, recurse)
        return self.keep(self.stage_names)

    def replace_head(self, num_classes: int) -> None:
        """A new, freshly initialized last linear layer with ``num_classes`` outputs,
        reading ``penultimate`` (transfer to a new task)."""
        with torch.no_grad():
            width = self.stage_outputs(torch.zeros(2, *self.input_shape))["penultimate"].shape[1]
        self.head = nn.Linear(width, num_classes)
        self.keep(self.stage_names)

    def stage_outputs(self, x: Tensor) -> dict[str, Tensor]:
        out = self._runner(x)
        if self.head is not None:
            out["logits"] = self.head(out["penultimate"].flatten(1))
        return out

    def layer_shapes(self) -> dict[str, list[int]]:
        """Every layer's shape for one input (batch dim left out), in graph order."""
        runner = _with_outputs(self.body, self.tensors, None)
        with torch.no_grad():
            out = runner(torch.zeros(2, *self.input_shape))
        return {name: list(value.shape[1:]) for name, value in out.items()}


def conversion_error(model: GraphModel, graph: onnx.ModelProto) -> float:
    """The largest difference between ``model``'s logits and onnxruntime's on the
    ``graph`` it was converted from (as :func:`read_graph` returned it), on a random
    batch of two, relative to the logits' scale (at least 1)."""
    import numpy as np
    import onnxruntime

    session = onnxruntime.InferenceSession(
        graph.SerializeToString(), providers=["CPUExecutionProvider"]
    )
    x = torch.randn(2, *model.input_shape, generator=torch.Generator().manual_seed(0))
    (expected,) = session.run(None, {graph_inputs(graph)[0][0]: x.numpy()})
    with torch.no_grad():
        got = model.eval().stage_outputs(x)["logits"].numpy()
    scale = max(1.0, float(np.abs(expected).max()))
    return float(np.abs(got - expected).max()) / scale


def _with_outputs(
    body: fx.GraphModule, outputs: dict[str, str], head: nn.Module | None
) -> fx.GraphModule:
    """A module sharing ``body``'s submodules whose forward returns ``{name: tensor}``.

    Nodes no output needs are dropped (with a new head, the old one is). Not a
    submodule of the model: its parameters are ``body``'s, kept once.
    """
    graph = fx.Graph()
    values: dict[fx.Node, fx.Node] = {}
    graph.graph_copy(body.graph, values)
    by_name = {node.name: values[node] for node in body.graph.nodes if node.op != "output"}
    wanted = {name: by_name[node] for name, node in outputs.items()}
    if head is not None:
        wanted.pop("logits", None)
    graph.output(wanted)
    runner = fx.GraphModule(body, graph)
    runner.graph.eliminate_dead_code()
    runner.recompile()
    return runner


def _tensor_nodes(body: fx.GraphModule) -> dict[str, str]:
    """ONNX tensor name -> fx node name, for every node of one output, in graph order."""
    tensors = {}
    for node in body.graph.nodes:
        if node.op != "call_module":
            continue
        mapping = getattr(body.get_submodule(node.target), "onnx_mapping", None)
        if mapping is not None and len(mapping.outputs) == 1:
            tensors[mapping.outputs[0]] = node.name
    return tensors


def _trainable_constants(body: fx.GraphModule) -> None:
    """Float initializers (kept as buffers by the converter) become parameters."""
    initializers = getattr(body, "initializers", None)
    if initializers is None:
        return
    for name, buffer in list(initializers.named_buffers(recurse=False)):
        if buffer.is_floating_point():
            delattr(initializers, name)
            initializers.register_parameter(name, nn.Parameter(buffer.clone()))


def _shape(value: onnx.ValueInfoProto) -> list[int | str]:
    dims = value.type.tensor_type.shape.dim
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in dims]


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return (text[0] if text else type(error).__name__)[:300]
