"""The VPC: public subnets for NAT (and an internet-facing NLB), private subnets for the servers,
in at least two availability zones."""

from __future__ import annotations

from aws_cdk import aws_ec2 as ec2
from constructs import Construct

from bidfilter_cdk.config import DeploymentConfig

VPC_CIDR = "10.40.0.0/16"


class ServingNetwork(Construct):
    def __init__(self, scope: Construct, construct_id: str, *, config: DeploymentConfig) -> None:
        super().__init__(scope, construct_id)
        # Without explicit zones the stack stays environment-agnostic: the template picks the
        # region's first two zones with Fn::GetAZs at deploy time, and synthesis needs no AWS
        # account (no context lookup).
        zones = list(config.availability_zones) or None
        self.vpc = ec2.Vpc(
            self,
            "Vpc",
            ip_addresses=ec2.IpAddresses.cidr(VPC_CIDR),
            availability_zones=zones,
            max_azs=None if zones else 2,
            nat_gateways=config.nat_gateways,
            subnet_configuration=[
                ec2.SubnetConfiguration(
                    name="public", subnet_type=ec2.SubnetType.PUBLIC, cidr_mask=24
                ),
                # awsvpc tasks take one address each; leave room for many.
                ec2.SubnetConfiguration(
                    name="servers", subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS, cidr_mask=20
                ),
            ],
            # Model downloads go to S3 without crossing the NAT gateway (and its per-GB charge).
            gateway_endpoints={
                "S3": ec2.GatewayVpcEndpointOptions(service=ec2.GatewayVpcEndpointAwsService.S3)
            },
        )
        self.server_subnets = ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS)
