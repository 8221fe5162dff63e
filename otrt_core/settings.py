"""otrt's settings: one pydantic-settings class, read from OTRT_* environment variables.

Nothing else in otrt reads the environment; entry points build a ``Settings``
and pass plain values down.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Every setting of otrt, with its default."""

    model_config = SettingsConfigDict(env_prefix="OTRT_", extra="ignore")

    torch_threads: int | None = Field(
        default=None,
        ge=1,
        description=(
            "CPU threads per training process (torch.set_num_threads). Unset: torch's "
            "default, one per core; set it when several training processes share a machine, "
            "or they stall each other."
        ),
    )
    datasets_root: Path | None = Field(
        default=None,
        description="Where installed datasets are looked up before their system paths.",
    )
