"""The ECS cluster and the EC2 instances it runs on: an Auto Scaling group over the private
subnets of every zone, sized by an ECS capacity provider (managed scaling)."""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_autoscaling as autoscaling
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_iam as iam
from constructs import Construct

from bidfilter_cdk.config import DeploymentConfig
from bidfilter_cdk.network import ServingNetwork

# Managed scaling keeps the group this full of reserved CPU/memory; the rest is room for a
# scale-out to place tasks while new instances boot.
CAPACITY_TARGET_PERCENT = 90
INSTANCE_WARMUP = Duration.seconds(180)


class ClusterCapacity(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: DeploymentConfig,
        network: ServingNetwork,
    ) -> None:
        super().__init__(scope, construct_id)
        vpc = network.vpc
        self.cluster = ecs.Cluster(self, "Cluster", vpc=vpc)

        user_data = ec2.UserData.for_linux()
        # Tasks use their task role only: with awsvpc networking the agent can cut them off from
        # the instance metadata service, and so from the instance role's credentials.
        user_data.add_commands("echo ECS_AWSVPC_BLOCK_IMDS=true >> /etc/ecs/ecs.config")
        instance_role = iam.Role(
            self,
            "InstanceRole",
            assumed_by=iam.ServicePrincipal("ec2.amazonaws.com"),
            managed_policies=[
                # Session Manager instead of SSH: no key pairs, no inbound port.
                iam.ManagedPolicy.from_aws_managed_policy_name("AmazonSSMManagedInstanceCore")
            ],
        )
        instance_security_group = ec2.SecurityGroup(
            self,
            "InstanceSecurityGroup",
            vpc=vpc,
            description="ECS container instances: no inbound; tasks have their own groups",
        )
        launch_template = ec2.LaunchTemplate(
            self,
            "LaunchTemplate",
            instance_type=ec2.InstanceType(config.instance_type),
            machine_image=ecs.EcsOptimizedImage.amazon_linux2023(),
            user_data=user_data,
            role=instance_role,
            security_group=instance_security_group,
            require_imdsv2=True,
        )
        self.auto_scaling_group = autoscaling.AutoScalingGroup(
            self,
            "Instances",
            vpc=vpc,
            vpc_subnets=network.server_subnets,
            launch_template=launch_template,
            min_capacity=config.min_instances,
            max_capacity=config.max_instances,
            default_instance_warmup=INSTANCE_WARMUP,
        )
        self.capacity_provider = ecs.AsgCapacityProvider(
            self,
            "CapacityProvider",
            auto_scaling_group=self.auto_scaling_group,
            enable_managed_scaling=True,
            target_capacity_percent=CAPACITY_TARGET_PERCENT,
            # Managed draining moves tasks off an instance before the group terminates it, which
            # is what termination protection would buy, without blocking `cdk destroy`.
            enable_managed_draining=True,
            enable_managed_termination_protection=False,
            instance_warmup_period=int(INSTANCE_WARMUP.to_seconds()),
        )
        self.cluster.add_asg_capacity_provider(self.capacity_provider)
