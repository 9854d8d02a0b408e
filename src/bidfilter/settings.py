"""Process-wide settings: flags and ``BIDFILTER_*`` environment variables, read once in the CLI
and passed down explicitly (nothing below the CLI reads the environment)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from bidfilter.artifact import DEFAULT_STORE_URI


def settings_error_lines(error: ValidationError) -> list[str]:
    """One line per bad setting, naming its flag and its variable, the rule and the value."""
    lines = []
    for problem in error.errors():
        name = str(problem["loc"][0]) if problem["loc"] else "settings"
        flag, variable = "--" + name.replace("_", "-"), "BIDFILTER_" + name.upper()
        lines.append(f"{flag} ({variable}): {problem['msg']} (got {problem.get('input')!r})")
    return lines


class Settings(BaseSettings):
    """Defaults for every command; a flag given on the command line wins over the environment.

    Every field can be set as ``BIDFILTER_<NAME>`` (e.g. ``BIDFILTER_STORE=s3://bucket/models``),
    which is how containers configure ``bidfilter serve``.
    """

    model_config = SettingsConfigDict(env_prefix="BIDFILTER_", extra="ignore")

    # --- shared
    store: str = DEFAULT_STORE_URI
    s3_endpoint_url: str | None = None
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    log_json: bool = False

    @field_validator("log_level", mode="before")
    @classmethod
    def _level_in_any_case(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    # --- serve: network
    host: str = "127.0.0.1"
    port: int = Field(default=9090, ge=0, le=65535)
    metrics_port: int = Field(default=9100, ge=0, le=65535)
    workers: int = Field(default_factory=lambda: os.cpu_count() or 1, ge=1, le=256)
    max_connections: int = Field(default=4096, ge=1, le=1_000_000, description="per worker")
    idle_timeout_s: float = Field(default=300.0, gt=0, le=86_400)
    read_timeout_s: float = Field(
        default=10.0, gt=0, le=3600, description="to finish a started message"
    )
    # Frames carry a 32-bit length; past 256 MiB a message is an attack, not a bid request.
    max_message_bytes: int = Field(default=1 << 20, ge=1024, le=256 << 20)
    max_unsent_bytes: int = Field(
        default=4 << 20,
        ge=65536,
        le=1 << 30,
        description="replies a client has not read, per connection",
    )
    max_candidates: int = Field(default=1000, ge=1, le=100_000, description="per request")
    max_batch: int = Field(default=1000, ge=1, le=100_000, description="requests per filter_batch")

    # --- serve: TLS on the Thrift port (checked, files read, by bidfilter.server.tls)
    tls_cert: Path | None = Field(default=None, description="PEM certificate (chain)")
    tls_key: Path | None = Field(default=None, description="PEM private key of tls_cert")
    tls_client_ca: Path | None = Field(
        default=None, description="PEM CA: clients must present a certificate it signed"
    )

    # --- serve: decisions
    exploration_rate: float = Field(default=0.01, ge=0, le=1)
    deadline_share_of_tmax: float = Field(default=0.5, gt=0, le=1)
    default_deadline_ms: float = Field(default=50.0, gt=0, le=60_000)
    max_pending_calls: int = Field(
        default=512, ge=1, le=1_000_000, description="per worker, then shed"
    )

    # --- serve: model lifecycle
    poll_s: float = Field(default=30.0, gt=0, le=86_400)
    cache_dir: str = ".bidfilter/cache"
    drain_s: float = Field(default=10.0, ge=0, le=3600)

    # --- serve: worker health
    ready_share: float = Field(
        default=0.5, gt=0, le=1, description="share of workers that must serve for /readyz 200"
    )
    heartbeat_timeout_s: float = Field(
        default=5.0, ge=1, le=3600, description="a worker silent this long is killed and replaced"
    )
