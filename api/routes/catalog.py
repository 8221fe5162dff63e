"""/v1/architectures and /v1/datasets: what a job may name."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from api.auth import current_owner
from api.routes import problems
from api.schemas import ArchitectureOut, DatasetOut
from otrt_core.catalog import catalog

router = APIRouter(prefix="/v1", tags=["catalog"], dependencies=[Depends(current_owner)])


@router.get("/architectures", response_model=list[ArchitectureOut], responses=problems())
def architectures() -> list[ArchitectureOut]:
    return [
        ArchitectureOut(
            name=info.name,
            family=info.family,
            parameters=info.parameters,
            input_shape=list(info.input_shape),
            stages=list(info.stages),
            head_prefix=info.head_prefix,
        )
        for info in catalog().architectures.values()
    ]


@router.get("/datasets", response_model=list[DatasetOut], responses=problems())
def datasets() -> list[DatasetOut]:
    return [
        DatasetOut(
            name=info.name,
            input_shape=list(info.input_shape),
            num_classes=info.num_classes,
            train_size=info.train_size,
            test_size=info.test_size,
            description=info.description,
        )
        for info in catalog().datasets.values()
    ]
