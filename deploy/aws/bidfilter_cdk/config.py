"""What one deployment is: the CDK context parameters, read once into a typed object, and the
sizes and timings derived from them.

Context comes from ``cdk.json`` (JSON values) or from ``cdk deploy -c key=value`` (always
strings), so every reader accepts both. Nothing else in the app reads the context.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, fields
from typing import Any, Protocol

# Ports and path the server uses (bidfilter.settings defaults, set explicitly in the container).
THRIFT_PORT = 9090
METRICS_PORT = 9100
READINESS_PATH = "/readyz"

# Where in the bucket the servers read; the task role may read nothing else.
MODEL_PREFIX = "models"

# One scoring worker is one single-threaded event loop: give it a whole vCPU.
SERVER_CPU_UNITS_PER_WORKER = 1024
# The supervisor (model download, sha256 verification, HTTP side port) and each worker hold the
# Python runtime, numpy and xgboost plus one copy of the booster.
SERVER_MEMORY_MIB_BASE = 512
SERVER_MEMORY_MIB_PER_WORKER = 512
COLLECTOR_CPU_UNITS = 128
COLLECTOR_MEMORY_MIB = 256

# ECS stops a load-balanced task in two steps: it deregisters the target and waits for the
# deregistration delay, then sends SIGTERM. The delay covers the seconds an NLB keeps routing new
# flows to a target it is deregistering (the server refuses connections once it drains); the
# drain itself happens after SIGTERM, bounded by drain_s.
DEREGISTRATION_MARGIN_S = 20
# After SIGTERM the supervisor waits drain_s + 5 s for its workers before killing them; SIGKILL
# from ECS must come later still.
STOP_TIMEOUT_MARGIN_S = 10
MAX_STOP_TIMEOUT_S = 120  # the ECS limit for containerDefinition.stopTimeout

DEFAULT_COLLECTOR_IMAGE = "public.ecr.aws/aws-observability/aws-otel-collector:v0.43.3"

_NAME = re.compile(r"^[a-z][a-z0-9-]{0,19}$")
_AZ = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d[a-z]$")
_CIDR = re.compile(r"^\d{1,3}(\.\d{1,3}){3}/\d{1,2}$")


class ContextSource(Protocol):
    """What the config needs from a construct node (``app.node``), so tests can pass a dict."""

    def try_get_context(self, key: str) -> Any: ...


class ConfigError(ValueError):
    """A context parameter with a value the deployment cannot use."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"context parameter {field!r}: {message}")
        self.field = field


@dataclass(frozen=True)
class DeploymentConfig:
    """Every knob of a deployment; defaults give a small two-AZ production-shaped setup."""

    name: str = "bidfilter"
    workers: int = 3
    drain_s: float = 10.0
    image: str | None = None
    image_tag: str = "latest"
    instance_type: str = "c6i.xlarge"
    min_instances: int = 2
    max_instances: int = 10
    min_tasks: int = 2
    max_tasks: int = 10
    cpu_target_percent: int = 60
    availability_zones: tuple[str, ...] = ()
    nat_gateways: int = 1
    internet_facing: bool = False
    client_cidr: str | None = None
    model_bucket: str | None = None
    collector_image: str = DEFAULT_COLLECTOR_IMAGE

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ConfigError("name", "lowercase letters, digits and '-', at most 20 characters")
        if not 1 <= self.workers <= 64:
            raise ConfigError("workers", "between 1 and 64")
        if self.stop_timeout_s > MAX_STOP_TIMEOUT_S or self.drain_s < 0:
            limit = MAX_STOP_TIMEOUT_S - STOP_TIMEOUT_MARGIN_S
            raise ConfigError("drain_s", f"between 0 and {limit} (ECS stopTimeout is at most 120)")
        if not 1 <= self.min_instances <= self.max_instances:
            raise ConfigError("min_instances", "at least 1 and at most max_instances")
        if not 1 <= self.min_tasks <= self.max_tasks:
            raise ConfigError("min_tasks", "at least 1 and at most max_tasks")
        if not 10 <= self.cpu_target_percent <= 90:
            raise ConfigError("cpu_target_percent", "between 10 and 90")
        if self.availability_zones and (
            len(self.availability_zones) < 2
            or len(set(self.availability_zones)) != len(self.availability_zones)
            or not all(_AZ.match(zone) for zone in self.availability_zones)
        ):
            raise ConfigError("availability_zones", "at least two distinct zone names")
        if not 0 <= self.nat_gateways <= max(len(self.availability_zones), 2):
            raise ConfigError("nat_gateways", "between 0 and the number of availability zones")
        if self.client_cidr is not None and not _CIDR.match(self.client_cidr):
            raise ConfigError("client_cidr", "an IPv4 CIDR such as 203.0.113.7/32")
        if self.internet_facing and self.client_cidr is None:
            # The Thrift port has no authentication: never open it to the internet by default.
            raise ConfigError("client_cidr", "required with internet_facing=true")

    @classmethod
    def from_context(cls, source: ContextSource) -> DeploymentConfig:
        values: dict[str, Any] = {}
        for field in fields(cls):
            raw = source.try_get_context(field.name)
            if raw is None or raw == "":
                continue
            values[field.name] = _parse(field.name, raw, getattr(cls, field.name))
        return cls(**values)

    # --- derived sizes and timings ----------------------------------------------------------------

    @property
    def server_cpu_units(self) -> int:
        return SERVER_CPU_UNITS_PER_WORKER * self.workers

    @property
    def server_memory_mib(self) -> int:
        return SERVER_MEMORY_MIB_BASE + SERVER_MEMORY_MIB_PER_WORKER * self.workers

    @property
    def deregistration_delay_s(self) -> int:
        return math.ceil(self.drain_s) + DEREGISTRATION_MARGIN_S

    @property
    def stop_timeout_s(self) -> int:
        return math.ceil(self.drain_s) + STOP_TIMEOUT_MARGIN_S

    # --- names shared by the two stacks -----------------------------------------------------------

    @property
    def stack_prefix(self) -> str:
        return "".join(part.capitalize() for part in self.name.split("-"))

    @property
    def repository_name(self) -> str:
        return self.name

    @property
    def metrics_namespace(self) -> str:
        return self.name

    @property
    def metrics_log_group_name(self) -> str:
        return f"/{self.name}/metrics"


def model_bucket_name(config: DeploymentConfig, account: str, region: str) -> str:
    """The artifacts stack's bucket, or an existing one; the serving stack finds it by name, so
    the two stacks share no CloudFormation exports and deploy independently."""
    if config.model_bucket:
        return config.model_bucket
    return f"{config.name}-models-{account}-{region}"


def _parse(name: str, raw: Any, default: Any) -> Any:
    try:
        if isinstance(default, bool):
            return _parse_bool(raw)
        if isinstance(default, int):
            return int(raw)
        if isinstance(default, float):
            return float(raw)
        if isinstance(default, tuple):
            items = raw.split(",") if isinstance(raw, str) else list(raw)
            return tuple(str(item).strip() for item in items if str(item).strip())
    except (TypeError, ValueError) as error:
        raise ConfigError(name, f"cannot read {raw!r}: {error}") from None
    return str(raw)


def _parse_bool(raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no"):
        return False
    raise ValueError("expected true or false")
