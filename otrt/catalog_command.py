"""`otrt catalog`: otrt_core/catalog.json, rebuilt from the registries (imports torch).

The API reads the JSON without torch (``otrt_core.catalog``); this command, and a
test that the file is current, are the only readers of the registries themselves.
"""

from __future__ import annotations

from dataclasses import fields

from otrt_core.catalog import ArchitectureInfo, Catalog, DatasetInfo


def live_catalog() -> Catalog:
    """The catalog built from the registries themselves (imports torch)."""
    from otrt_core.data import DATASETS
    from otrt_core.models import REGISTRY, skeleton

    architectures = {}
    for name, entry in REGISTRY.items():
        model = skeleton(name)  # meta device: shapes, no memory
        architectures[name] = ArchitectureInfo(
            name=name,
            family=entry.family,
            parameters=sum(p.numel() for p in model.parameters()),
            input_shape=tuple(entry.input_shape),
            stages=tuple(model.stage_names),
            head_prefix=model.head_prefix,
        )
    entry_fields = [field.name for field in fields(DatasetInfo)]
    datasets = {
        info.name: DatasetInfo(**{name: getattr(info, name) for name in entry_fields})
        for info in DATASETS.values()
    }
    import timm
    import torchvision

    libraries = {
        "timm": tuple(timm.list_models()),
        # Classifiers only: detection and segmentation models live in submodules.
        "torchvision": tuple(torchvision.models.list_models(module=torchvision.models)),
    }
    return Catalog(architectures, datasets, libraries)
