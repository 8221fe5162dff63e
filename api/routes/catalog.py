"""/v1/architectures and /v1/datasets: what a job may name."""

from __future__ import annotations

from dataclasses import asdict

from fastapi import APIRouter, Depends

from api.auth import current_owner
from api.routes import problems
from api.schemas import ArchitectureOut, DatasetOut
from otrt_core.catalog import catalog

router = APIRouter(prefix="/v1", tags=["catalog"], dependencies=[Depends(current_owner)])


@router.get("/architectures", response_model=list[ArchitectureOut], responses=problems())
def architectures() -> list[ArchitectureOut]:
    return [ArchitectureOut(**asdict(info)) for info in catalog().architectures.values()]


@router.get("/datasets", response_model=list[DatasetOut], responses=problems())
def datasets() -> list[DatasetOut]:
    return [DatasetOut(**asdict(info)) for info in catalog().datasets.values()]
