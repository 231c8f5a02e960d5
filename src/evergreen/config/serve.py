"""`serve`: the prediction service and its durable prediction log."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from evergreen.config.base import SecretText, SecretUrl, StrictModel


class ServeConfig(StrictModel):
    """The prediction service and its durable prediction log."""

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    # bound to anything but loopback, the service requires this environment variable to hold an API token
    token_env: str = "EVERGREEN_API_TOKEN"
    max_batch: int = Field(1000, ge=1, description="records per request; more is a 413")
    max_string_length: int = Field(256, ge=1)
    log_path: str = "monitoring/predictions.db"
    reload_interval_s: float = Field(1.0, gt=0, description="how often the champion pointer is checked")
    log_timeout_s: float = Field(
        5.0, gt=0, description="how long a request waits to commit to the prediction log (locked?) before a 503"
    )
    # a champion that cannot load at start-up: serve the newest loadable earlier champion, or refuse to start
    fallback: Literal["previous", "none"] = "previous"
    workers: int = Field(
        1, ge=1, le=64, description="server processes on the one port; they share the prediction log (SQLite WAL)"
    )
    # the prediction log in PostgreSQL instead of `log_path` (replicas on several machines): a URL
    # postgresql://user@host:port/database, or the name of an environment variable holding one (keeps a
    # password out of this file); at most one of the two
    log_url: SecretUrl | None = None  # a secret: shown masked; its value only through Workspace
    log_url_env: str | None = None
    # predictions (and their labels) older than this are deleted by `evergreen monitor` and the retention flow;
    # None keeps everything
    log_retention_days: float | None = Field(None, gt=0)

    @field_validator("log_url")
    @classmethod
    def _postgres_url(cls, url: SecretText | None) -> SecretText | None:
        if url is not None and not url.get_secret_value().startswith(("postgresql://", "postgres://")):
            raise ValueError("not a PostgreSQL URL: postgresql://user@host:port/database")
        return url

    @model_validator(mode="after")
    def _one_log_url(self) -> ServeConfig:
        if self.log_url is not None and self.log_url_env is not None:
            raise ValueError("set log_url or log_url_env, not both")
        return self
