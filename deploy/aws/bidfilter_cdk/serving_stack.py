"""Everything that serves traffic: network, instances, tasks, NLB, scaling, dashboard."""

from __future__ import annotations

from typing import Any

import aws_cdk as cdk
from aws_cdk import aws_ecr as ecr
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_s3 as s3
from constructs import Construct

from bidfilter_cdk.capacity import ClusterCapacity
from bidfilter_cdk.config import MODEL_PREFIX, THRIFT_PORT, DeploymentConfig, model_bucket_name
from bidfilter_cdk.dashboard import ServingDashboard
from bidfilter_cdk.load_balancer import ThriftLoadBalancer
from bidfilter_cdk.network import ServingNetwork
from bidfilter_cdk.service import ServerService
from bidfilter_cdk.task import ServerTask


class ServingStack(cdk.Stack):
    def __init__(
        self, scope: Construct, construct_id: str, *, config: DeploymentConfig, **kwargs: Any
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        model_bucket = s3.Bucket.from_bucket_name(
            self, "ModelStore", model_bucket_name(config, self.account, self.region)
        )
        image: ecs.ContainerImage
        if config.image:
            image = ecs.ContainerImage.from_registry(config.image)
        else:
            repository = ecr.Repository.from_repository_name(self, "Images", config.repository_name)
            image = ecs.ContainerImage.from_ecr_repository(repository, config.image_tag)

        network = ServingNetwork(self, "Network", config=config)
        capacity = ClusterCapacity(self, "Capacity", config=config, network=network)
        task = ServerTask(self, "Task", config=config, model_bucket=model_bucket, image=image)
        load_balancer = ThriftLoadBalancer(self, "LoadBalancer", config=config, network=network)
        service = ServerService(
            self,
            "Servers",
            config=config,
            network=network,
            capacity=capacity,
            task=task,
            load_balancer=load_balancer,
        )
        dashboard = ServingDashboard(
            self,
            "Dashboard",
            config=config,
            capacity=capacity,
            service=service,
            load_balancer=load_balancer,
        )

        dns_name = load_balancer.load_balancer.load_balancer_dns_name
        cdk.CfnOutput(self, "ThriftEndpoint", value=f"{dns_name}:{THRIFT_PORT}")
        cdk.CfnOutput(
            self, "ModelStoreUri", value=f"s3://{model_bucket.bucket_name}/{MODEL_PREFIX}"
        )
        cdk.CfnOutput(self, "ClusterName", value=capacity.cluster.cluster_name)
        cdk.CfnOutput(self, "ServiceName", value=service.service.service_name)
        cdk.CfnOutput(self, "ServerLogGroup", value=task.server_log_group.log_group_name)
        cdk.CfnOutput(self, "DashboardName", value=dashboard.dashboard.dashboard_name)
