"""The AWS CDK app in deploy/aws: synthesised offline (no AWS account), then checked resource by
resource with aws_cdk.assertions and linted with cfn-lint.

Synthesis starts a node process (jsii), so each configuration is synthesised once per module.
"""

from __future__ import annotations

import json
import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aws_cdk as cdk
import cfnlint.api as cfnlint_api
import numpy as np
import pytest
from aws_cdk.assertions import Match, Template

from bidfilter.server import metrics as server_metrics

DEPLOY_DIR = Path(__file__).resolve().parents[2] / "deploy" / "aws"
sys.path.insert(0, str(DEPLOY_DIR))

from bidfilter_cdk import build  # noqa: E402
from bidfilter_cdk import metrics_collector as collector  # noqa: E402
from bidfilter_cdk.config import (  # noqa: E402
    ConfigError,
    DeploymentConfig,
)

# Values a CloudFormation deployment would substitute for pseudo parameters.
ACCOUNT = "111122223333"
REGION = "eu-west-1"

# Non-default values, passed as strings the way `cdk deploy -c key=value` passes them, so the
# assertions also prove that context reaches the resources.
WORKERS = 4
DRAIN_S = 12
CONTEXT = {"workers": str(WORKERS), "drain_s": str(DRAIN_S), "max_tasks": "7"}


@dataclass(frozen=True)
class Synthesised:
    config: DeploymentConfig
    artifacts: Template
    serving: Template
    artifacts_json: dict[str, Any]
    serving_json: dict[str, Any]


def synthesise(outdir: Path, context: dict[str, str]) -> Synthesised:
    feature_flags = json.loads((DEPLOY_DIR / "cdk.json").read_text())["context"]
    app = cdk.App(context={**feature_flags, **context}, outdir=str(outdir))
    deployment = build(app)
    assembly = app.synth()
    artifacts_json = assembly.get_stack_by_name(deployment.artifacts.stack_name).template
    serving_json = assembly.get_stack_by_name(deployment.serving.stack_name).template
    return Synthesised(
        config=deployment.config,
        artifacts=Template.from_json(artifacts_json),
        serving=Template.from_json(serving_json),
        artifacts_json=artifacts_json,
        serving_json=serving_json,
    )


@pytest.fixture(scope="module")
def synthesised(tmp_path_factory: pytest.TempPathFactory) -> Synthesised:
    return synthesise(tmp_path_factory.mktemp("cdk-out"), CONTEXT)


@pytest.fixture(scope="module")
def public_variant(tmp_path_factory: pytest.TempPathFactory) -> Synthesised:
    """Explicit zones, an internet-facing NLB for one client address, a prebuilt image."""
    return synthesise(
        tmp_path_factory.mktemp("cdk-out-public"),
        {
            "availability_zones": "eu-west-1a,eu-west-1b,eu-west-1c",
            "nat_gateways": "3",
            "internet_facing": "true",
            "client_cidr": "203.0.113.7/32",
            "image": "registry.example.com/bidfilter:1.2.3",
        },
    )


# --- helpers --------------------------------------------------------------------------------------


def resources(template: dict[str, Any], resource_type: str) -> dict[str, dict[str, Any]]:
    return {
        logical_id: resource
        for logical_id, resource in template["Resources"].items()
        if resource["Type"] == resource_type
    }


def only(template: dict[str, Any], resource_type: str) -> tuple[str, dict[str, Any]]:
    found = resources(template, resource_type)
    assert len(found) == 1, f"expected one {resource_type}, found {sorted(found)}"
    return next(iter(found.items()))


def render(value: Any) -> Any:
    """Evaluate the intrinsics the stacks use for names, with concrete pseudo parameters."""
    if isinstance(value, dict) and len(value) == 1:
        ((function, argument),) = value.items()
        if function == "Ref" and argument.startswith("AWS::"):
            return {
                "AWS::AccountId": ACCOUNT,
                "AWS::Region": REGION,
                "AWS::Partition": "aws",
                "AWS::URLSuffix": "amazonaws.com",
            }[argument]
        if function == "Fn::Join":
            separator, parts = argument
            return separator.join(str(render(part)) for part in parts)
    return value


def server_container(template: dict[str, Any]) -> dict[str, Any]:
    _, task_definition = only(template, "AWS::ECS::TaskDefinition")
    containers: list[dict[str, Any]] = task_definition["Properties"]["ContainerDefinitions"]
    (container,) = [c for c in containers if c["Name"] == "server"]
    return container


def environment(container: dict[str, Any]) -> dict[str, Any]:
    return {item["Name"]: render(item["Value"]) for item in container["Environment"]}


def task_role_statements(template: dict[str, Any]) -> list[dict[str, Any]]:
    _, task_definition = only(template, "AWS::ECS::TaskDefinition")
    role_id = task_definition["Properties"]["TaskRoleArn"]["Fn::GetAtt"][0]
    role = template["Resources"][role_id]["Properties"]
    assert "ManagedPolicyArns" not in role and "Policies" not in role
    statements = [
        statement
        for policy in resources(template, "AWS::IAM::Policy").values()
        if {"Ref": role_id} in policy["Properties"]["Roles"]
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]
    ]
    assert statements
    return statements


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


# --- the model store and the image repository -----------------------------------------------------


def test_model_bucket_is_private_encrypted_versioned_and_tls_only(synthesised: Synthesised) -> None:
    synthesised.artifacts.has_resource_properties(
        "AWS::S3::Bucket",
        {
            "BucketEncryption": {
                "ServerSideEncryptionConfiguration": [
                    {"ServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}
                ]
            },
            "VersioningConfiguration": {"Status": "Enabled"},
            "PublicAccessBlockConfiguration": {
                "BlockPublicAcls": True,
                "BlockPublicPolicy": True,
                "IgnorePublicAcls": True,
                "RestrictPublicBuckets": True,
            },
        },
    )
    synthesised.artifacts.has_resource_properties(
        "AWS::S3::BucketPolicy",
        {
            "PolicyDocument": {
                "Statement": Match.array_with(
                    [
                        Match.object_like(
                            {
                                "Effect": "Deny",
                                "Action": "s3:*",
                                "Condition": {"Bool": {"aws:SecureTransport": "false"}},
                            }
                        )
                    ]
                )
            }
        },
    )
    synthesised.artifacts.has_resource(
        "AWS::S3::Bucket", {"DeletionPolicy": "Retain", "UpdateReplacePolicy": "Retain"}
    )


def test_serving_stack_reads_the_bucket_and_repository_the_artifacts_stack_creates(
    synthesised: Synthesised,
) -> None:
    _, bucket = only(synthesised.artifacts_json, "AWS::S3::Bucket")
    bucket_name = render(bucket["Properties"]["BucketName"])
    _, repository = only(synthesised.artifacts_json, "AWS::ECR::Repository")
    container = server_container(synthesised.serving_json)

    assert environment(container)["BIDFILTER_STORE"] == f"s3://{bucket_name}/models"
    assert render(container["Image"]) == (
        f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/{repository['Properties']['RepositoryName']}"
        ":latest"
    )


# --- the network and the instances ----------------------------------------------------------------


def subnet_zones(template: dict[str, Any], subnet_refs: list[dict[str, str]]) -> list[str]:
    return [
        json.dumps(template["Resources"][ref["Ref"]]["Properties"]["AvailabilityZone"])
        for ref in subnet_refs
    ]


def test_instances_span_private_subnets_in_two_zones(synthesised: Synthesised) -> None:
    template = synthesised.serving_json
    _, group = only(template, "AWS::AutoScaling::AutoScalingGroup")
    subnet_refs = group["Properties"]["VPCZoneIdentifier"]
    zones = subnet_zones(template, subnet_refs)

    assert len(set(zones)) >= 2
    for ref in subnet_refs:
        assert template["Resources"][ref["Ref"]]["Properties"]["MapPublicIpOnLaunch"] is False
    # Environment-agnostic: the template picks zones at deploy time, so synthesis needs no
    # account and the same template deploys in any region.
    assert all("Fn::GetAZs" in zone for zone in zones)
    assert group["Properties"]["MinSize"] == "2"


def test_explicit_zones_are_used_as_given(public_variant: Synthesised) -> None:
    template = public_variant.serving_json
    _, group = only(template, "AWS::AutoScaling::AutoScalingGroup")
    zones = subnet_zones(template, group["Properties"]["VPCZoneIdentifier"])

    assert sorted(json.loads(zone) for zone in zones) == ["eu-west-1a", "eu-west-1b", "eu-west-1c"]
    assert len(resources(template, "AWS::EC2::NatGateway")) == 3


def test_capacity_provider_scales_the_group_and_serves_the_service(
    synthesised: Synthesised,
) -> None:
    template = synthesised.serving_json
    group_id, _ = only(template, "AWS::AutoScaling::AutoScalingGroup")
    provider_id, provider = only(template, "AWS::ECS::CapacityProvider")
    settings = provider["Properties"]["AutoScalingGroupProvider"]

    assert settings["AutoScalingGroupArn"] == {"Ref": group_id}
    assert settings["ManagedScaling"]["Status"] == "ENABLED"
    assert 0 < settings["ManagedScaling"]["TargetCapacity"] <= 100
    synthesised.serving.has_resource_properties(
        "AWS::ECS::ClusterCapacityProviderAssociations",
        {"CapacityProviders": [{"Ref": provider_id}]},
    )
    association_id, _ = only(template, "AWS::ECS::ClusterCapacityProviderAssociations")
    _, service = only(template, "AWS::ECS::Service")
    assert service["Properties"]["CapacityProviderStrategy"] == [
        {"CapacityProvider": {"Ref": provider_id}, "Weight": 1}
    ]
    assert association_id in service["DependsOn"]


def test_instances_keep_tasks_off_the_instance_role(synthesised: Synthesised) -> None:
    _, launch_template = only(synthesised.serving_json, "AWS::EC2::LaunchTemplate")
    data = launch_template["Properties"]["LaunchTemplateData"]
    user_data = render(data["UserData"]["Fn::Base64"])

    assert "ECS_AWSVPC_BLOCK_IMDS=true" in user_data
    assert "ECS_CLUSTER=" in user_data
    assert data["MetadataOptions"]["HttpTokens"] == "required"


# --- the task -------------------------------------------------------------------------------------


def test_server_container_runs_bidfilter_serve_configured_by_environment(
    synthesised: Synthesised,
) -> None:
    container = server_container(synthesised.serving_json)
    command = [*container.get("EntryPoint", []), *container["Command"]]
    env = environment(container)

    assert command == ["bidfilter", "serve"]
    assert env["BIDFILTER_HOST"] == "0.0.0.0"
    assert env["BIDFILTER_WORKERS"] == str(WORKERS)
    assert env["BIDFILTER_LOG_JSON"] == "true"
    assert env["BIDFILTER_PORT"] == "9090"
    assert env["BIDFILTER_METRICS_PORT"] == "9100"
    assert float(env["BIDFILTER_DRAIN_S"]) == DRAIN_S
    assert env["AWS_REGION"] == REGION
    assert container["LogConfiguration"]["LogDriver"] == "awslogs"
    assert {m["ContainerPort"] for m in container["PortMappings"]} == {9090, 9100}


def test_server_container_is_sized_by_worker_count(synthesised: Synthesised) -> None:
    container = server_container(synthesised.serving_json)
    config = synthesised.config

    assert config.workers == WORKERS
    assert container["Cpu"] == 1024 * WORKERS
    assert container["Memory"] == config.server_memory_mib
    assert config.server_memory_mib > DeploymentConfig(workers=WORKERS - 1).server_memory_mib


def test_task_role_only_reads_the_model_prefix(synthesised: Synthesised) -> None:
    statements = task_role_statements(synthesised.serving_json)
    actions = {action for s in statements for action in as_list(s["Action"])}
    s3_statements = [
        s for s in statements if any(a.startswith("s3:") for a in as_list(s["Action"]))
    ]

    assert {a for a in actions if a.startswith("s3:")} == {"s3:GetObject", "s3:ListBucket"}
    assert not [a for a in actions if "*" in a]
    assert all(s["Effect"] == "Allow" for s in statements)
    for statement in s3_statements:
        resource = render(statement["Resource"])
        if statement["Action"] == "s3:GetObject":
            assert resource.endswith("/models/*")
            assert resource.startswith("arn:aws:s3:::bidfilter-models-")
        else:
            assert statement["Action"] == "s3:ListBucket"
            assert "/" not in resource.removeprefix("arn:aws:s3:::")
            assert statement["Condition"] == {"StringLike": {"s3:prefix": ["models/*"]}}
    # The only other grant: the metrics collector writing its own log group.
    other = [s for s in statements if s not in s3_statements]
    assert {a for s in other for a in as_list(s["Action"])} <= {
        "logs:CreateLogStream",
        "logs:PutLogEvents",
    }


def test_metrics_collector_scrapes_the_side_port_into_the_namespace(
    synthesised: Synthesised,
) -> None:
    template = synthesised.serving_json
    _, task_definition = only(template, "AWS::ECS::TaskDefinition")
    (sidecar,) = [
        c
        for c in task_definition["Properties"]["ContainerDefinitions"]
        if c["Name"] == "metrics-collector"
    ]
    config = json.loads(environment(sidecar)["AOT_CONFIG_CONTENT"])
    (scrape,) = config["receivers"]["prometheus"]["config"]["scrape_configs"]
    exporter = config["exporters"]["awsemf"]
    log_groups = [
        group["Properties"].get("LogGroupName")
        for group in resources(template, "AWS::Logs::LogGroup").values()
    ]

    assert sidecar["Essential"] is False
    assert scrape["static_configs"][0]["targets"] == ["localhost:9100"]
    assert exporter["namespace"] == "bidfilter"
    assert exporter["region"] == REGION
    assert exporter["log_group_name"] in log_groups
    assert config["service"]["pipelines"]["metrics"]["exporters"] == ["awsemf"]


def exported_metric_labels() -> dict[str, set[str]]:
    """Metric families and their label names, as the server renders /metrics (every counter
    non-zero, so every family and label appears)."""
    text = server_metrics.render(
        np.ones(server_metrics.WIDTH),
        partners=["dsp-a"],
        model_version="20260101T000000Z-abcdef",
        workers_alive=1,
        workers_configured=1,
        worker_restarts=0,
        reloads={"success": 1},
    )
    families = {m.group(1) for m in re.finditer(r"^# TYPE (\S+) ", text, re.MULTILINE)}
    labels: dict[str, set[str]] = {family: set() for family in families}
    for sample in re.finditer(r"^(\w+)\{([^}]*)\}", text, re.MULTILINE):
        name = sample.group(1)
        family = name if name in families else name.rpartition("_")[0]
        if family in labels:
            labels[family] |= set(re.findall(r'(\w+)="', sample.group(2))) - {"le"}
    return labels


def test_collector_publishes_metrics_the_server_exports_with_their_labels() -> None:
    exported = exported_metric_labels()

    for name, label_sets in collector.DIMENSIONS.items():
        assert name in exported, f"{name} is not exported by bidfilter serve"
        for labels in label_sets:
            assert set(labels) <= exported[name], f"{name} has no label among {labels}"


# --- the load balancer, draining and the service --------------------------------------------------


def test_nlb_forwards_thrift_over_tcp(synthesised: Synthesised) -> None:
    template = synthesised.serving
    target_group_id, _ = only(synthesised.serving_json, "AWS::ElasticLoadBalancingV2::TargetGroup")

    template.has_resource_properties(
        "AWS::ElasticLoadBalancingV2::LoadBalancer", {"Type": "network", "Scheme": "internal"}
    )
    template.has_resource_properties(
        "AWS::ElasticLoadBalancingV2::Listener",
        {
            "Port": 9090,
            "Protocol": "TCP",
            "DefaultActions": [{"Type": "forward", "TargetGroupArn": {"Ref": target_group_id}}],
        },
    )
    template.has_resource_properties(
        "AWS::ECS::Service",
        {
            "LoadBalancers": [
                {
                    "ContainerName": "server",
                    "ContainerPort": 9090,
                    "TargetGroupArn": {"Ref": target_group_id},
                }
            ]
        },
    )


def test_target_health_is_readiness_on_the_side_port(synthesised: Synthesised) -> None:
    synthesised.serving.has_resource_properties(
        "AWS::ElasticLoadBalancingV2::TargetGroup",
        {
            "Port": 9090,
            "Protocol": "TCP",
            "TargetType": "ip",
            "HealthCheckProtocol": "HTTP",
            "HealthCheckPort": "9100",
            "HealthCheckPath": "/readyz",
            "Matcher": {"HttpCode": "200"},
        },
    )


def test_servers_accept_thrift_and_health_checks_from_the_nlb_only(
    synthesised: Synthesised,
) -> None:
    template = synthesised.serving_json
    _, nlb = only(template, "AWS::ElasticLoadBalancingV2::LoadBalancer")
    (nlb_group,) = nlb["Properties"]["SecurityGroups"]
    _, service = only(template, "AWS::ECS::Service")
    (service_group,) = service["Properties"]["NetworkConfiguration"]["AwsvpcConfiguration"][
        "SecurityGroups"
    ]
    ingress = [
        rule["Properties"]
        for rule in resources(template, "AWS::EC2::SecurityGroupIngress").values()
        if rule["Properties"]["GroupId"] == service_group
    ]
    inline = template["Resources"][service_group["Fn::GetAtt"][0]]["Properties"]

    assert {(r["FromPort"], r["ToPort"]) for r in ingress} == {(9090, 9090), (9100, 9100)}
    assert all(r["SourceSecurityGroupId"] == nlb_group for r in ingress)
    assert not inline.get("SecurityGroupIngress")


def test_deregistration_delay_and_stop_timeout_follow_the_drain(synthesised: Synthesised) -> None:
    _, target_group = only(synthesised.serving_json, "AWS::ElasticLoadBalancingV2::TargetGroup")
    attributes = {a["Key"]: a["Value"] for a in target_group["Properties"]["TargetGroupAttributes"]}
    delay = int(attributes["deregistration_delay.timeout_seconds"])
    stop_timeout = server_container(synthesised.serving_json)["StopTimeout"]

    # ECS waits out the delay before SIGTERM, then the server drains for up to drain_s, and
    # its supervisor kills stragglers after drain_s + 5 s: SIGKILL must come after that.
    assert DRAIN_S < delay <= DRAIN_S + 60
    assert stop_timeout > DRAIN_S + 5
    assert stop_timeout <= 120
    # A reset at the end of the delay would cut calls the server is still answering.
    assert attributes["deregistration_delay.connection_termination.enabled"] == "false"


@pytest.mark.parametrize("drain_s", [0.0, 0.5, 10.0, 37.2, 105.0])
def test_derived_timings_hold_for_any_drain(drain_s: float) -> None:
    config = DeploymentConfig(drain_s=drain_s)

    assert config.deregistration_delay_s > drain_s
    assert config.stop_timeout_s > drain_s + 5
    assert config.stop_timeout_s <= 120


def test_deployments_keep_capacity_and_roll_back_on_failure(synthesised: Synthesised) -> None:
    synthesised.serving.has_resource_properties(
        "AWS::ECS::Service",
        {
            "DeploymentConfiguration": {
                "MinimumHealthyPercent": 100,
                "DeploymentCircuitBreaker": {"Enable": True, "Rollback": True},
            },
            "HealthCheckGracePeriodSeconds": Match.any_value(),
        },
    )


def test_service_scales_on_cpu_between_its_bounds(synthesised: Synthesised) -> None:
    template = synthesised.serving_json
    service_id, _ = only(template, "AWS::ECS::Service")
    target_id, target = only(template, "AWS::ApplicationAutoScaling::ScalableTarget")
    policies = resources(template, "AWS::ApplicationAutoScaling::ScalingPolicy").values()
    (cpu_policy,) = [
        p["Properties"]
        for p in policies
        if p["Properties"]["TargetTrackingScalingPolicyConfiguration"]
        .get("PredefinedMetricSpecification", {})
        .get("PredefinedMetricType")
        == "ECSServiceAverageCPUUtilization"
    ]

    assert target["Properties"]["ScalableDimension"] == "ecs:service:DesiredCount"
    assert {"Fn::GetAtt": [service_id, "Name"]} in target["Properties"]["ResourceId"]["Fn::Join"][1]
    assert (target["Properties"]["MinCapacity"], target["Properties"]["MaxCapacity"]) == (2, 7)
    assert cpu_policy["PolicyType"] == "TargetTrackingScaling"
    assert cpu_policy["ScalingTargetId"] == {"Ref": target_id}
    assert cpu_policy["TargetTrackingScalingPolicyConfiguration"]["TargetValue"] == 60


# --- the dashboard --------------------------------------------------------------------------------


def dashboard_widgets(template: dict[str, Any]) -> list[dict[str, Any]]:
    _, dashboard = only(template, "AWS::CloudWatch::Dashboard")
    body = dashboard["Properties"]["DashboardBody"]
    if isinstance(body, dict):  # Fn::Join around references to the NLB, cluster, ...
        body = "".join(
            p if isinstance(p, str) else "resolved-at-deploy" for p in body["Fn::Join"][1]
        )
    widgets: list[dict[str, Any]] = json.loads(body)["widgets"]
    return widgets


def test_dashboard_charts_server_and_nlb_metrics(synthesised: Synthesised) -> None:
    widgets = dashboard_widgets(synthesised.serving_json)
    text = json.dumps(widgets)
    charted = set(re.findall(r"bidfilter_[a-z_]+", text))

    for metric in (
        collector.CALLS,
        collector.CALL_LATENCY,
        collector.PARTNER_SEND_RATE,
        collector.MODEL_INFO,
        "ActiveFlowCount",
        "ProcessedBytes",
        "UnHealthyHostCount",
    ):
        assert metric in text
    # Every server metric on the dashboard is one the collector actually publishes.
    assert charted <= set(collector.DIMENSIONS)
    assert all(widget["type"] == "metric" for widget in widgets)


# --- variants and validation ----------------------------------------------------------------------


def test_internet_facing_nlb_admits_only_the_client_cidr(public_variant: Synthesised) -> None:
    template = public_variant.serving_json
    _, nlb = only(template, "AWS::ElasticLoadBalancingV2::LoadBalancer")
    nlb_group_id = nlb["Properties"]["SecurityGroups"][0]["Fn::GetAtt"][0]
    group = template["Resources"][nlb_group_id]["Properties"]

    assert nlb["Properties"]["Scheme"] == "internet-facing"
    for subnet in nlb["Properties"]["Subnets"]:
        assert template["Resources"][subnet["Ref"]]["Properties"]["MapPublicIpOnLaunch"] is True
    assert [(r["CidrIp"], r["FromPort"]) for r in group["SecurityGroupIngress"]] == [
        ("203.0.113.7/32", 9090)
    ]


def test_prebuilt_image_is_used_as_given(public_variant: Synthesised) -> None:
    assert server_container(public_variant.serving_json)["Image"] == (
        "registry.example.com/bidfilter:1.2.3"
    )


@pytest.mark.parametrize(
    ("context", "field"),
    [
        ({"workers": "0"}, "workers"),
        ({"workers": "three"}, "workers"),
        ({"drain_s": "111"}, "drain_s"),
        ({"availability_zones": "eu-west-1a"}, "availability_zones"),
        ({"internet_facing": "true"}, "client_cidr"),
        ({"internet_facing": "maybe"}, "internet_facing"),
        ({"min_tasks": "5", "max_tasks": "3"}, "min_tasks"),
        ({"name": "Bid Filter"}, "name"),
    ],
)
def test_unusable_context_is_refused_with_the_parameter_named(
    context: dict[str, str], field: str
) -> None:
    class Node:
        def try_get_context(self, key: str) -> Any:
            return context.get(key)

    with pytest.raises(ConfigError) as raised:
        DeploymentConfig.from_context(Node())
    assert raised.value.field == field


def test_context_accepts_cli_strings_and_json_values() -> None:
    values: dict[str, Any] = {
        "workers": "2",
        "drain_s": 7.5,
        "internet_facing": False,
        "availability_zones": ["us-east-1a", "us-east-1b"],
    }

    class Node:
        def try_get_context(self, key: str) -> Any:
            return values.get(key)

    config = DeploymentConfig.from_context(Node())

    assert config.workers == 2
    assert config.drain_s == 7.5
    assert config.stop_timeout_s == math.ceil(7.5) + 10
    assert config.availability_zones == ("us-east-1a", "us-east-1b")


# --- cfn-lint -------------------------------------------------------------------------------------


@pytest.mark.parametrize("stack", ["artifacts", "serving"])
def test_templates_pass_cfn_lint(synthesised: Synthesised, stack: str) -> None:
    template = getattr(synthesised, f"{stack}_json")
    matches = cfnlint_api.lint(json.dumps(template), regions=["us-east-1", REGION])
    errors = [f"{m.rule.id} {m.message} ({'/'.join(map(str, m.path))})" for m in matches]

    assert not [e for e in errors if e.startswith("E")], "\n".join(errors)
