"""What a job may name, readable without torch: the zoo's architectures, the names timm
and torchvision can build, and the datasets.

The API checks specs and lists the catalog from ``catalog.json`` beside this
file, so the API process never builds a model to learn a stage name. The file
is generated from the live registries (``otrt catalog --write``, or ``make
catalog``), and a test fails when it drifts from them.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path

CATALOG_FILE = Path(__file__).with_name("catalog.json")


@dataclass(frozen=True)
class ArchitectureInfo:
    name: str
    family: str
    parameters: int  # at the default input shape, 10 classes
    input_shape: tuple[int, ...]
    stages: tuple[str, ...]
    head_prefix: str


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    input_shape: tuple[int, ...]
    num_classes: int
    train_size: int
    test_size: int
    description: str


LIBRARIES = ("timm", "torchvision")


@dataclass(frozen=True)
class Catalog:
    architectures: dict[str, ArchitectureInfo]
    datasets: dict[str, DatasetInfo]
    # "timm" / "torchvision" -> the names each builds (jobs name them "timm/<name>").
    libraries: dict[str, tuple[str, ...]]

    def knows(self, architecture: str) -> bool:
        """Whether ``architecture`` is a zoo name or a name a library can build."""
        source, _, name = architecture.partition("/")
        return architecture in self.architectures or name in self.libraries.get(source, ())

    def to_json(self) -> str:
        """The catalog as JSON, one entry a line (a change of the zoo is a one-line diff)."""

        def rows(entries) -> str:
            return ",\n".join(f"  {json.dumps(asdict(entry))}" for entry in entries)

        architectures = rows(self.architectures.values())
        datasets = rows(self.datasets.values())
        libraries = ",\n".join(
            f"  {json.dumps(source)}: {json.dumps(list(names))}"
            for source, names in self.libraries.items()
        )
        return (
            f'{{\n "architectures": [\n{architectures}\n ],\n "datasets": [\n{datasets}\n ],'
            f'\n "libraries": {{\n{libraries}\n }}\n}}'
        )


def from_library(architecture: str | None) -> bool:
    """Whether an architecture is a timm or torchvision name (``timm/<name>``)."""
    return architecture is not None and architecture.split("/", 1)[0] in LIBRARIES


def is_dataset_file(name: str) -> bool:
    """Whether a spec's dataset name refers to a user's file rather than a built-in dataset.

    ``file_…`` is an upload the service resolves to a path, ``ds_…`` a registered
    dataset (its shards); a path ending in ``.npz`` or ``.zip`` is for ``otrt train``.
    """
    return name.startswith(("file_", "ds_")) or name.endswith((".npz", ".zip"))


@cache
def catalog() -> Catalog:
    """The catalog as shipped in ``catalog.json``."""
    data = json.loads(CATALOG_FILE.read_text())
    return Catalog(
        architectures={
            a["name"]: ArchitectureInfo(
                **a | {"input_shape": tuple(a["input_shape"]), "stages": tuple(a["stages"])}
            )
            for a in data["architectures"]
        },
        datasets={
            d["name"]: DatasetInfo(**d | {"input_shape": tuple(d["input_shape"])})
            for d in data["datasets"]
        },
        libraries={source: tuple(names) for source, names in data["libraries"].items()},
    )
