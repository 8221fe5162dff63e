"""/v1/architectures and /v1/datasets: what a job may name."""

from __future__ import annotations

from functools import cache

from fastapi import APIRouter, Depends

from api.auth import current_owner
from api.routes import problems
from api.schemas import ArchitectureOut, DatasetOut

router = APIRouter(prefix="/v1", tags=["catalog"], dependencies=[Depends(current_owner)])


@cache
def _architectures() -> list[ArchitectureOut]:
    from otrt_core.models import REGISTRY, skeleton

    entries = []
    for name, entry in REGISTRY.items():
        model = skeleton(name)  # meta device: shapes, no memory
        entries.append(
            ArchitectureOut(
                name=name,
                family=entry.family,
                parameters=sum(p.numel() for p in model.parameters()),
                input_shape=list(entry.input_shape),
                stages=list(model.stage_names),
                head_prefix=model.head_prefix,
            )
        )
    return entries


@router.get("/architectures", response_model=list[ArchitectureOut], responses=problems())
def architectures() -> list[ArchitectureOut]:
    return _architectures()


@router.get("/datasets", response_model=list[DatasetOut], responses=problems())
def datasets() -> list[DatasetOut]:
    from otrt_core.data import DATASETS

    return [
        DatasetOut(
            name=info.name,
            input_shape=list(info.input_shape),
            num_classes=info.num_classes,
            train_size=info.train_size,
            test_size=info.test_size,
            description=info.description,
        )
        for info in DATASETS.values()
    ]
