"""What outlives any server fleet: the model store bucket and the image repository.

Deployed first, on its own, so that an image can be pushed and a model published before the
serving stack starts tasks that need both.
"""

from __future__ import annotations

from typing import Any

import aws_cdk as cdk
from aws_cdk import aws_ecr as ecr
from aws_cdk import aws_s3 as s3
from constructs import Construct

from bidfilter_cdk.config import MODEL_PREFIX, DeploymentConfig, model_bucket_name


class ArtifactsStack(cdk.Stack):
    def __init__(
        self, scope: Construct, construct_id: str, *, config: DeploymentConfig, **kwargs: Any
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)

        self.model_bucket = s3.Bucket(
            self,
            "ModelStore",
            bucket_name=model_bucket_name(config, self.account, self.region),
            encryption=s3.BucketEncryption.S3_MANAGED,
            enforce_ssl=True,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            # Versions are immutable by convention; bucket versioning makes that true even
            # against an accidental overwrite or delete, and keeps every LATEST ever written.
            versioned=True,
            lifecycle_rules=[
                s3.LifecycleRule(
                    id="expire-overwritten-objects",
                    noncurrent_version_expiration=cdk.Duration.days(90),
                    abort_incomplete_multipart_upload_after=cdk.Duration.days(7),
                )
            ],
            # A model store is the record of what served traffic; never delete it with the stack.
            removal_policy=cdk.RemovalPolicy.RETAIN,
        )

        self.repository = ecr.Repository(
            self,
            "Images",
            repository_name=config.repository_name,
            image_scan_on_push=True,
            lifecycle_rules=[
                ecr.LifecycleRule(
                    description="keep the last 30 untagged images",
                    tag_status=ecr.TagStatus.UNTAGGED,
                    max_image_count=30,
                )
            ],
            removal_policy=cdk.RemovalPolicy.RETAIN,
        )

        cdk.CfnOutput(
            self, "ModelStoreUri", value=f"s3://{self.model_bucket.bucket_name}/{MODEL_PREFIX}"
        )
        cdk.CfnOutput(self, "RepositoryUri", value=self.repository.repository_uri)
