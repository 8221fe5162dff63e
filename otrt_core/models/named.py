"""timm and torchvision architectures by name: ``timm/<name>``, ``torchvision/<name>``.

Built with random weights (``pretrained=False`` / ``weights=None``: nothing is
downloaded, ever); a teacher's weights come from the uploaded state dict, in
the library's own parameter names. Layers are module paths (``layer3``,
``stages.2``, ``blocks.5.mlp``): the model keeps the output of each path it is
asked for, whatever the architecture, by a forward hook on that module.
``penultimate`` is the input of the classifier (timm's ``get_classifier()``,
torchvision's last linear layer), ``logits`` the model's output.

The network keeps its own class and parameter names: otrt mixes
:class:`ModuleStages` into its class instead of wrapping it, so a state dict
saved by otrt loads into ``timm.create_model(name)`` as it is, and the other way.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from otrt_core.errors import UserError, nearest_first
from otrt_core.models.base import StagedModel


def build_named(architecture: str, num_classes: int, input_shape: tuple[int, ...]) -> StagedModel:
    """A timm or torchvision classifier for ``input_shape`` (channels first), as a
    :class:`StagedModel`; ``UserError`` for an unknown name or a shape it cannot take."""
    source, _, name = architecture.partition("/")
    if len(input_shape) != 3:
        raise UserError(
            f"{architecture} takes images (C, H, W); the inputs are {list(input_shape)}",
            ("student", "architecture"),
        )
    if source == "timm":
        import timm

        if name not in timm.list_models():
            raise UserError(f"timm has no architecture {name!r}", ("student", "architecture"))
        network = timm.create_model(
            name, pretrained=False, num_classes=num_classes, in_chans=input_shape[0]
        )
        stages = [info["module"] for info in network.feature_info]
        classifier = network.get_classifier()
    else:
        import torchvision

        if name not in torchvision.models.list_models(module=torchvision.models):
            message = f"torchvision has no architecture {name!r}"
            raise UserError(message, ("student", "architecture"))
        if input_shape[0] != 3:
            raise UserError(
                f"torchvision models take RGB images; the inputs have {input_shape[0]} "
                "channel(s): set input.channels to 3",
                ("student", "input"),
            )
        network = torchvision.models.get_model(name, weights=None, num_classes=num_classes)
        stages = [child for child, _ in network.named_children()]
        classifier = [m for m in network.modules() if isinstance(m, nn.Linear)][-1]
    return ModuleStages.adopt(network, stages, classifier, input_shape)


class ModuleStages(StagedModel):
    """Mixed into a network's class: its outputs at module paths, by forward hooks.

    ``stage_names`` are the paths ``forward_stages`` returns (those chosen with
    :meth:`keep`, then ``penultimate``); ``layer_names`` lists the stages the
    library declares, then every other module path, all of them valid.
    """

    network_forward: object  # the network class's own forward
    classifier_path: str

    @classmethod
    def adopt(
        cls,
        network: nn.Module,
        stages: Sequence[str],
        classifier: nn.Module,
        input_shape: tuple[int, ...],
    ) -> ModuleStages:
        base = type(network)
        network.__class__ = type(base.__name__, (cls, base), {"network_forward": base.forward})
        paths = {module: path for path, module in network.named_modules()}
        network.classifier_path = paths[classifier]
        network.head_prefix = f"{network.classifier_path}."
        network.input_shape = input_shape
        others = [path for path in paths.values() if path and path not in stages]
        network.layer_names = (*stages, "penultimate", "logits", *others)
        network._hooks = []
        return network.keep(())

    def keep(self, names: Sequence[str]) -> ModuleStages:
        """Makes ``forward_stages`` return the outputs of module paths ``names``, then
        ``penultimate`` and ``logits``; ``UserError`` for a path the network lacks."""
        modules = dict(self.named_modules())
        paths = [name for name in names if name not in ("penultimate", "logits")]
        unknown = [path for path in paths if path not in modules]
        if unknown:
            listed = ", ".join(nearest_first(unknown[0], list(self.layer_names))[:25])
            raise UserError(f"the model has no module {unknown[0]!r}; nearest first: {listed}")
        for handle in self._hooks:
            handle.remove()
        self._kept = {path: modules[path] for path in paths}  # in order, once each
        self._hooks = [module.register_forward_hook(_keep_output) for module in self._kept.values()]
        classifier = modules[self.classifier_path]
        self._hooks.append(classifier.register_forward_pre_hook(_keep_input))
        self.stage_names = (*self._kept, "penultimate")
        return self

    def stage_outputs(self, x: Tensor) -> dict[str, Tensor]:
        logits = self.network_forward(x)
        out = {path: module.__dict__.pop("otrt_output") for path, module in self._kept.items()}
        classifier = self.get_submodule(self.classifier_path)
        out["penultimate"] = classifier.__dict__.pop("otrt_input").flatten(1)
        return out | {"logits": logits}


# Hooks keep what they see on the module itself (no closure over the model), so that a
# deep copy of the model (the ONNX export makes one) captures into its own modules.
def _keep_output(module: nn.Module, _inputs: tuple, output: Tensor) -> None:
    module.otrt_output = output


def _keep_input(module: nn.Module, inputs: tuple) -> None:
    module.otrt_input = inputs[0]
