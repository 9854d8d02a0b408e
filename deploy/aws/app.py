#!/usr/bin/env python3
"""`cdk synth` / `cdk deploy` entry point (see docs/deploy-aws.md).

The stacks are environment-agnostic: the templates work in whichever account and region the
CLI deploys to (`--profile`, AWS_REGION), and `cdk synth` needs no AWS credentials.
"""

from __future__ import annotations

import aws_cdk as cdk
from bidfilter_cdk import build


def main() -> None:
    app = cdk.App()
    build(app)
    app.synth()


if __name__ == "__main__":
    main()
