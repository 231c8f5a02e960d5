"""`orchestration`: Prefect's retries and the scheduled deployments."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from evergreen.config.base import StrictModel

FlowName = Literal["pipeline", "retrain", "monitor", "tune"]


class DeploymentConfig(StrictModel):
    """One Prefect deployment: when it runs, and where (a work pool, or served by `evergreen deploy`)."""

    cron: str | None = Field(None, description="cron schedule; none means run on demand only")
    timezone: str = "UTC"
    paused: bool = False
    work_pool: str | None = Field(None, description="e.g. 'gpu': a process work pool whose worker runs it")
    parameters: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check(self) -> DeploymentConfig:
        if self.cron is not None and len(self.cron.split()) not in (5, 6):
            raise ValueError(f"cron {self.cron!r} must have 5 fields (minute hour day month weekday)")
        try:
            import zoneinfo

            zoneinfo.ZoneInfo(self.timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"timezone {self.timezone!r} is not a known IANA time zone") from None
        return self


class OrchestrationConfig(StrictModel):
    """Prefect: retries for stages that touch the outside world, and the scheduled deployments."""

    retries: dict[str, int] = Field(default_factory=lambda: {"ingest": 2})
    retry_delay_seconds: float = Field(10, ge=0)
    deployments: dict[FlowName, DeploymentConfig] = Field(default_factory=dict)
