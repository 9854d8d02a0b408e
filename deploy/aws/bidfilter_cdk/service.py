"""The ECS service: tasks on the capacity provider, registered with the NLB target group, scaled
on CPU."""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecs as ecs
from constructs import Construct

from bidfilter_cdk.capacity import ClusterCapacity
from bidfilter_cdk.config import METRICS_PORT, THRIFT_PORT, DeploymentConfig
from bidfilter_cdk.load_balancer import ThriftLoadBalancer
from bidfilter_cdk.network import ServingNetwork
from bidfilter_cdk.task import SERVER_CONTAINER, ServerTask

# A new task downloads, verifies and loads the model before /readyz says 200.
HEALTH_CHECK_GRACE = Duration.seconds(120)
SCALE_OUT_COOLDOWN = Duration.seconds(60)
# Scaling in stops tasks, which closes their clients' connections; do it unhurriedly.
SCALE_IN_COOLDOWN = Duration.seconds(300)


class ServerService(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: DeploymentConfig,
        network: ServingNetwork,
        capacity: ClusterCapacity,
        task: ServerTask,
        load_balancer: ThriftLoadBalancer,
    ) -> None:
        super().__init__(scope, construct_id)
        self.security_group = ec2.SecurityGroup(
            self,
            "SecurityGroup",
            vpc=network.vpc,
            description="bidfilter servers: Thrift and health checks from the NLB",
        )
        self.service = ecs.Ec2Service(
            self,
            "Service",
            cluster=capacity.cluster,
            task_definition=task.definition,
            desired_count=config.min_tasks,
            capacity_provider_strategies=[
                ecs.CapacityProviderStrategy(
                    capacity_provider=capacity.capacity_provider.capacity_provider_name, weight=1
                )
            ],
            vpc_subnets=network.server_subnets,
            security_groups=[self.security_group],
            placement_strategies=[
                ecs.PlacementStrategy.spread_across(ecs.BuiltInAttributes.AVAILABILITY_ZONE),
                ecs.PlacementStrategy.packed_by_cpu(),
            ],
            # Never fewer ready servers than before a deployment; a release that cannot become
            # ready is rolled back instead of replacing the old tasks.
            min_healthy_percent=100,
            max_healthy_percent=200,
            circuit_breaker=ecs.DeploymentCircuitBreaker(rollback=True),
            health_check_grace_period=HEALTH_CHECK_GRACE,
        )
        # A service naming a capacity provider fails to create until the provider is attached
        # to the cluster, and CDK adds that attachment late, at synthesis, without ordering the
        # two; depending on the whole cluster construct covers it (cfn-lint notes, W3005, that
        # the cluster part of this dependency is redundant).
        self.service.node.add_dependency(capacity.cluster)

        for port in (THRIFT_PORT, METRICS_PORT):
            self.service.connections.allow_from(
                load_balancer.load_balancer, ec2.Port.tcp(port), "from the NLB"
            )
        load_balancer.target_group.add_target(
            self.service.load_balancer_target(
                container_name=SERVER_CONTAINER, container_port=THRIFT_PORT
            )
        )

        self.scaling = self.service.auto_scale_task_count(
            min_capacity=config.min_tasks, max_capacity=config.max_tasks
        )
        self.scaling.scale_on_cpu_utilization(
            "Cpu",
            target_utilization_percent=config.cpu_target_percent,
            scale_out_cooldown=SCALE_OUT_COOLDOWN,
            scale_in_cooldown=SCALE_IN_COOLDOWN,
        )
