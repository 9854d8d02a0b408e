"""Process-wide settings: flags and ``BIDFILTER_*`` environment variables, read once in the CLI
and passed down explicitly (nothing below the CLI reads the environment).

Each field's ``description`` is its help: the CLI makes the ``serve`` flags (and the store and
logging flags of the other commands) from these fields, so a new setting is one field here.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Final, Literal

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# Where the model store is when none is named: relative, so each checkout has its own.
DEFAULT_STORE_URI: Final = ".bidfilter/store"


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
    store: str = Field(
        default=DEFAULT_STORE_URI,
        description="model store: a directory, file://PATH or s3://BUCKET/PREFIX",
    )
    s3_endpoint_url: str | None = Field(
        default=None,
        description="S3-compatible endpoint such as MinIO; without it AWS_ENDPOINT_URL, else AWS",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = Field(
        default="INFO", description="DEBUG, INFO, WARNING, ERROR or CRITICAL, in any case"
    )
    log_json: bool = Field(default=False, description="log as JSON lines")

    @field_validator("log_level", mode="before")
    @classmethod
    def _level_in_any_case(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    # --- serve: network
    host: str = Field(default="127.0.0.1", description="address to bind")
    port: int = Field(default=9090, ge=0, le=65535, description="Thrift port; 0 picks one")
    metrics_port: int = Field(
        default=9100, ge=0, le=65535, description="HTTP /healthz, /readyz, /metrics port"
    )
    workers: int = Field(
        default_factory=lambda: os.cpu_count() or 1,
        ge=1,
        le=256,
        description="worker processes; without it one per CPU",
    )
    max_connections: int = Field(
        default=4096, ge=1, le=1_000_000, description="open connections per worker"
    )
    idle_timeout_s: float = Field(
        default=300.0,
        gt=0,
        le=86_400,
        description="close a connection that sends nothing for this long (seconds)",
    )
    read_timeout_s: float = Field(
        default=10.0,
        gt=0,
        le=3600,
        description="close a connection that takes longer to finish a started message, and bound"
        " the TLS handshake (seconds)",
    )
    # Frames carry a 32-bit length; past 256 MiB a message is an attack, not a bid request.
    max_message_bytes: int = Field(
        default=1 << 20,
        ge=1024,
        le=256 << 20,
        description="largest Thrift message or frame; a bigger frame is refused from its header",
    )
    max_unsent_bytes: int = Field(
        default=4 << 20,
        ge=65536,
        le=1 << 30,
        description="replies a client has not read, per connection: past a high-water mark the"
        " connection is not read, past this (or over the mark for read_timeout_s) it is dropped",
    )
    max_candidates: int = Field(
        default=1000, ge=1, le=100_000, description="candidates per request, else refused"
    )
    max_batch: int = Field(
        default=1000, ge=1, le=100_000, description="requests per filter_batch, else refused"
    )

    # --- serve: TLS on the Thrift port (checked, files read, by bidfilter.server.tls)
    tls_cert: Path | None = Field(
        default=None,
        description="serve Thrift over TLS (1.2+) with this PEM certificate (chain); needs"
        " tls_key. The HTTP side port stays plaintext",
    )
    tls_key: Path | None = Field(
        default=None, description="the unencrypted PEM private key of tls_cert"
    )
    tls_client_ca: Path | None = Field(
        default=None,
        description="mutual TLS: refuse clients without a certificate signed by this PEM CA",
    )

    # --- serve: decisions
    exploration_rate: float = Field(
        default=0.01,
        ge=0,
        le=1,
        description="share of below-threshold pairs sent anyway, flagged explore",
    )
    min_partner_exploration: float = Field(
        default=0.0,
        ge=0,
        le=1,
        description="every partner's exploration probability is at least this (the larger of it"
        " and exploration_rate): a floor that stays when exploration_rate is lowered",
    )
    sparse_partner_exploration: float = Field(
        default=0.05,
        ge=0,
        le=1,
        description="the exploration floor of a partner the model's report calls sparse (too"
        " few validation bids), so it stays learnable",
    )
    control_share: float = Field(
        default=0.0,
        ge=0,
        le=1,
        description="share of requests, chosen by request id, in the control group: scored but"
        " sent to every candidate, flagged control",
    )
    deadline_share_of_tmax: float = Field(
        default=0.5,
        gt=0,
        le=1,
        description="without deadline_ms, fail open after this share of the request's tmax",
    )
    default_deadline_ms: float = Field(
        default=50.0, gt=0, le=60_000, description="the deadline without deadline_ms or tmax"
    )
    max_pending_calls: int = Field(
        default=512,
        ge=1,
        le=1_000_000,
        description="per worker; calls beyond it are answered fail-open at once",
    )

    # --- serve: outcome feedback (the decision log, joined with report_outcomes)
    outcome_log: str | None = Field(
        default=None,
        description="keep a decision log and append the outcomes reported for it to this log"
        " store (a directory, file://PATH or s3://BUCKET/PREFIX, laid out as train reads logs);"
        " without it report_outcomes counts every outcome unknown",
    )
    decision_log_share: float = Field(
        default=0.05,
        gt=0,
        le=1,
        description="share of decided requests the decision log holds for their outcome (each"
        " record carries it as sample_rate); their responses say logged",
    )
    outcome_wait_s: float = Field(
        default=30.0,
        gt=0,
        le=3600,
        description="how long a held decision waits for its report_outcomes, then expires",
    )
    outcome_flush_s: float = Field(
        default=10.0,
        ge=0.1,
        le=3600,
        description="write joined records to the log store at least this often (seconds): a"
        " SIGKILL loses at most this much; SIGTERM writes everything first",
    )
    outcome_buffer_mb: float = Field(
        default=64.0,
        gt=0,
        le=65536,
        description="per worker, memory for held decisions and records not yet written (MiB);"
        " when spent, new decisions are not held (counted), nothing accepted is dropped",
    )

    # --- serve: model lifecycle
    poll_s: float = Field(
        default=30.0, gt=0, le=86_400, description="seconds between LATEST checks"
    )
    cache_dir: str = Field(default=".bidfilter/cache", description="where fetched versions go")
    drain_s: float = Field(
        default=10.0, ge=0, le=3600, description="on SIGTERM, seconds to finish in-flight calls"
    )

    # --- serve: worker health
    ready_share: float = Field(
        default=0.5,
        gt=0,
        le=1,
        description="/readyz answers 200 while at least this share of the workers serves, so one"
        " lost worker does not take the whole server out of its load balancer",
    )
    heartbeat_timeout_s: float = Field(
        default=5.0,
        ge=1,
        le=3600,
        description="a worker whose event loop has not turned for this long (stopped, or stuck in"
        " one call) is killed and replaced",
    )
