"""The bidfilter AWS deployment as a CDK app: an artifacts stack (model store bucket, image
repository) and a serving stack (VPC, ECS on EC2, NLB, scaling, dashboard)."""

from __future__ import annotations

from dataclasses import dataclass

import aws_cdk as cdk

from bidfilter_cdk.artifacts_stack import ArtifactsStack
from bidfilter_cdk.config import DeploymentConfig
from bidfilter_cdk.serving_stack import ServingStack

__all__ = ["ArtifactsStack", "Deployment", "DeploymentConfig", "ServingStack", "build"]


@dataclass(frozen=True)
class Deployment:
    config: DeploymentConfig
    artifacts: ArtifactsStack
    serving: ServingStack


def build(app: cdk.App) -> Deployment:
    """Add both stacks to ``app``, configured from its context."""
    config = DeploymentConfig.from_context(app.node)
    prefix = config.stack_prefix
    artifacts = ArtifactsStack(
        app,
        f"{prefix}Artifacts",
        config=config,
        description="bidfilter model store (S3) and image repository (ECR)",
    )
    serving = ServingStack(
        app,
        f"{prefix}Serving",
        config=config,
        description="bidfilter serve on ECS (EC2) behind a Network Load Balancer",
    )
    for stack in (artifacts, serving):
        cdk.Tags.of(stack).add("application", "bidfilter")
        cdk.Tags.of(stack).add("deployment", config.name)
    return Deployment(config=config, artifacts=artifacts, serving=serving)
