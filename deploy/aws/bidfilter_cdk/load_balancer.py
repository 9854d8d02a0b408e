"""The Network Load Balancer in front of the servers: plain TCP on the Thrift port, with target
health taken from the server's readiness endpoint on its HTTP side port."""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_elasticloadbalancingv2 as elbv2
from constructs import Construct

from bidfilter_cdk.config import METRICS_PORT, READINESS_PATH, THRIFT_PORT, DeploymentConfig
from bidfilter_cdk.network import ServingNetwork

# Readiness flips to 503 while a server starts, has no model or drains; react within ~20 s.
HEALTH_CHECK_INTERVAL = Duration.seconds(10)
HEALTH_CHECK_TIMEOUT = Duration.seconds(5)
HEALTHY_THRESHOLD = 2
UNHEALTHY_THRESHOLD = 2


class ThriftLoadBalancer(Construct):
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
        self.security_group = ec2.SecurityGroup(
            self,
            "SecurityGroup",
            vpc=vpc,
            description="bidfilter NLB: Thrift from clients, to the servers only",
            allow_all_outbound=False,
        )
        clients = ec2.Peer.ipv4(config.client_cidr or vpc.vpc_cidr_block)
        self.security_group.add_ingress_rule(
            clients, ec2.Port.tcp(THRIFT_PORT), "Thrift clients (SSP auction servers)"
        )
        self.load_balancer = elbv2.NetworkLoadBalancer(
            self,
            "LoadBalancer",
            vpc=vpc,
            internet_facing=config.internet_facing,
            vpc_subnets=ec2.SubnetSelection(
                subnet_type=ec2.SubnetType.PUBLIC
                if config.internet_facing
                else ec2.SubnetType.PRIVATE_WITH_EGRESS
            ),
            # Auction servers keep long-lived connections; without cross-zone balancing a zone
            # with fewer servers would get the same share of them.
            cross_zone_enabled=True,
            security_groups=[self.security_group],
        )
        self.target_group = elbv2.NetworkTargetGroup(
            self,
            "Servers",
            vpc=vpc,
            port=THRIFT_PORT,
            protocol=elbv2.Protocol.TCP,
            target_type=elbv2.TargetType.IP,
            deregistration_delay=Duration.seconds(config.deregistration_delay_s),
            # Flows still open when the delay ends are left to the server, which closes each
            # connection once its calls are answered; a reset here would drop calls in flight.
            connection_termination=False,
            health_check=elbv2.HealthCheck(
                protocol=elbv2.Protocol.HTTP,
                port=str(METRICS_PORT),
                path=READINESS_PATH,
                healthy_http_codes="200",
                interval=HEALTH_CHECK_INTERVAL,
                timeout=HEALTH_CHECK_TIMEOUT,
                healthy_threshold_count=HEALTHY_THRESHOLD,
                unhealthy_threshold_count=UNHEALTHY_THRESHOLD,
            ),
        )
        # The NLB's TCP idle timeout (350 s) is longer than the server's (idle_timeout_s, 300 s),
        # so an idle connection is closed by the server, cleanly, rather than silently dropped.
        self.listener = self.load_balancer.add_listener(
            "Thrift",
            port=THRIFT_PORT,
            protocol=elbv2.Protocol.TCP,
            default_target_groups=[self.target_group],
        )
