"""The task: `bidfilter serve` plus a metrics collector sidecar, their logs, and a task role that
can read the model store and nothing else."""

from __future__ import annotations

import json

import aws_cdk as cdk
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from constructs import Construct

from bidfilter_cdk import metrics_collector
from bidfilter_cdk.config import (
    COLLECTOR_CPU_UNITS,
    COLLECTOR_MEMORY_MIB,
    METRICS_PORT,
    MODEL_PREFIX,
    THRIFT_PORT,
    DeploymentConfig,
)

SERVER_CONTAINER = "server"
COLLECTOR_CONTAINER = "metrics-collector"
# The directory the image (Dockerfile) creates for its non-root user; set here too so that an
# image given with -c image=... is told the same place.
CACHE_DIR = "/var/cache/bidfilter"
# Each worker holds up to max_connections (4096) sockets.
OPEN_FILES_LIMIT = 65536


class ServerTask(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: DeploymentConfig,
        model_bucket: s3.IBucket,
        image: ecs.ContainerImage,
    ) -> None:
        super().__init__(scope, construct_id)
        region = cdk.Stack.of(self).region

        self.task_role = iam.Role(
            self,
            "TaskRole",
            assumed_by=iam.ServicePrincipal("ecs-tasks.amazonaws.com"),
            description="bidfilter serve: read the model store, write its own metrics",
        )
        # Serving needs GetObject and ListBucket only (docs/model-store.md); publishing and
        # promoting happen elsewhere, with other credentials.
        self.task_role.add_to_policy(
            iam.PolicyStatement(
                sid="ReadModels",
                actions=["s3:GetObject"],
                resources=[model_bucket.arn_for_objects(f"{MODEL_PREFIX}/*")],
            )
        )
        self.task_role.add_to_policy(
            iam.PolicyStatement(
                sid="ListModels",
                actions=["s3:ListBucket"],
                resources=[model_bucket.bucket_arn],
                conditions={"StringLike": {"s3:prefix": [f"{MODEL_PREFIX}/*"]}},
            )
        )

        self.server_log_group = logs.LogGroup(
            self,
            "ServerLogs",
            retention=logs.RetentionDays.ONE_MONTH,
            removal_policy=cdk.RemovalPolicy.DESTROY,
        )
        # The collector writes embedded-metric-format events here; CloudWatch turns them into
        # metrics as they arrive, so the events themselves are kept only briefly.
        self.metrics_log_group = logs.LogGroup(
            self,
            "MetricsLogs",
            log_group_name=config.metrics_log_group_name,
            retention=logs.RetentionDays.ONE_WEEK,
            removal_policy=cdk.RemovalPolicy.DESTROY,
        )
        self.metrics_log_group.grant_write(self.task_role)

        self.definition = ecs.Ec2TaskDefinition(
            self,
            "Definition",
            family=f"{config.name}-server",
            network_mode=ecs.NetworkMode.AWS_VPC,
            task_role=self.task_role,
        )
        store_uri = f"s3://{model_bucket.bucket_name}/{MODEL_PREFIX}"
        self.server = self.definition.add_container(
            SERVER_CONTAINER,
            image=image,
            entry_point=["bidfilter"],
            command=["serve"],
            environment={
                "BIDFILTER_HOST": "0.0.0.0",
                "BIDFILTER_PORT": str(THRIFT_PORT),
                "BIDFILTER_METRICS_PORT": str(METRICS_PORT),
                "BIDFILTER_STORE": store_uri,
                "BIDFILTER_WORKERS": str(config.workers),
                "BIDFILTER_DRAIN_S": f"{config.drain_s:g}",
                "BIDFILTER_CACHE_DIR": CACHE_DIR,
                "BIDFILTER_LOG_JSON": "true",
                # With the metadata service blocked boto3 cannot discover the region, and the
                # S3 gateway endpoint only serves the regional S3 endpoint.
                "AWS_REGION": region,
                "AWS_DEFAULT_REGION": region,
            },
            cpu=config.server_cpu_units,
            memory_limit_mib=config.server_memory_mib,
            essential=True,
            port_mappings=[
                ecs.PortMapping(container_port=THRIFT_PORT, name="thrift"),
                ecs.PortMapping(container_port=METRICS_PORT, name="metrics"),
            ],
            stop_timeout=cdk.Duration.seconds(config.stop_timeout_s),
            # An init process as PID 1 forwards SIGTERM to the supervisor and reaps children.
            linux_parameters=ecs.LinuxParameters(self, "ServerLinux", init_process_enabled=True),
            ulimits=[
                ecs.Ulimit(
                    name=ecs.UlimitName.NOFILE,
                    soft_limit=OPEN_FILES_LIMIT,
                    hard_limit=OPEN_FILES_LIMIT,
                )
            ],
            logging=ecs.LogDrivers.aws_logs(
                stream_prefix="server",
                log_group=self.server_log_group,
                # A slow log pipe must never stall the scoring loop: drop lines instead.
                mode=ecs.AwsLogDriverMode.NON_BLOCKING,
                max_buffer_size=cdk.Size.mebibytes(25),
            ),
        )
        self.collector = self.definition.add_container(
            COLLECTOR_CONTAINER,
            image=ecs.ContainerImage.from_registry(config.collector_image),
            environment={
                "AOT_CONFIG_CONTENT": json.dumps(
                    metrics_collector.collector_config(
                        namespace=config.metrics_namespace,
                        log_group_name=config.metrics_log_group_name,
                        region=region,
                        deployment=config.name,
                        metrics_port=METRICS_PORT,
                    ),
                    separators=(",", ":"),
                ),
            },
            cpu=COLLECTOR_CPU_UNITS,
            memory_limit_mib=COLLECTOR_MEMORY_MIB,
            # Losing metrics must not take a serving task down with it.
            essential=False,
            logging=ecs.LogDrivers.aws_logs(
                stream_prefix="metrics-collector", log_group=self.server_log_group
            ),
        )
