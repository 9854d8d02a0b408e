"""Process-wide settings: flags and ``BIDFILTER_*`` environment variables, read once in the CLI
and passed down explicitly (nothing below the CLI reads the environment)."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from bidfilter.artifact import DEFAULT_STORE_URI


class Settings(BaseSettings):
    """Defaults for every command; a flag given on the command line wins over the environment.

    Every field can be set as ``BIDFILTER_<NAME>`` (e.g. ``BIDFILTER_STORE=s3://bucket/models``),
    which is how containers configure ``bidfilter serve``.
    """

    model_config = SettingsConfigDict(env_prefix="BIDFILTER_", extra="ignore")

    # --- shared
    store: str = DEFAULT_STORE_URI
    s3_endpoint_url: str | None = None
    log_level: str = "INFO"
    log_json: bool = False

    # --- serve: network
    host: str = "127.0.0.1"
    port: int = Field(default=9090, ge=0, le=65535)
    metrics_port: int = Field(default=9100, ge=0, le=65535)
    workers: int = Field(default_factory=lambda: os.cpu_count() or 1, ge=1, le=256)
    max_connections: int = Field(default=4096, ge=1, description="per worker")
    idle_timeout_s: float = Field(default=300.0, gt=0)
    read_timeout_s: float = Field(default=10.0, gt=0, description="to finish a started message")
    max_message_bytes: int = Field(default=1 << 20, ge=1024)
    max_unsent_bytes: int = Field(
        default=4 << 20, ge=65536, description="replies a client has not read, per connection"
    )
    max_candidates: int = Field(default=1000, ge=1, description="per request")
    max_batch: int = Field(default=1000, ge=1, description="requests per filter_batch")

    # --- serve: TLS on the Thrift port (checked, files read, by bidfilter.server.tls)
    tls_cert: Path | None = Field(default=None, description="PEM certificate (chain)")
    tls_key: Path | None = Field(default=None, description="PEM private key of tls_cert")
    tls_client_ca: Path | None = Field(
        default=None, description="PEM CA: clients must present a certificate it signed"
    )

    # --- serve: decisions
    exploration_rate: float = Field(default=0.01, ge=0, le=1)
    deadline_share_of_tmax: float = Field(default=0.5, gt=0, le=1)
    default_deadline_ms: float = Field(default=50.0, gt=0)
    max_pending_calls: int = Field(default=512, ge=1, description="per worker, then shed")

    # --- serve: model lifecycle
    poll_s: float = Field(default=30.0, gt=0)
    cache_dir: str = ".bidfilter/cache"
    drain_s: float = Field(default=10.0, ge=0)

    # --- serve: worker health
    ready_share: float = Field(
        default=0.5, gt=0, le=1, description="share of workers that must serve for /readyz 200"
    )
    heartbeat_timeout_s: float = Field(
        default=5.0, ge=1, le=3600, description="a worker silent this long is killed and replaced"
    )
