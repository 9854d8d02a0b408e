"""The scheme -> store table behind ``open_store``: what it opens, and what it leaves unimported."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from bidfilter.artifact import StoreError, open_store
from bidfilter.artifact.s3_store import (
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_READ_TIMEOUT,
    S3ModelStore,
)
from bidfilter.artifact.stores import STORE_FACTORIES


def test_opening_a_local_store_does_not_import_boto3() -> None:
    # A fresh interpreter: this one imported boto3 for the S3 tests.
    script = (
        "import json, sys\n"
        "from bidfilter.artifact import open_store\n"
        "open_store('file:///nowhere/models')\n"
        "print(json.dumps([name for name in ('boto3', 'botocore') if name in sys.modules]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    assert json.loads(done.stdout) == []


def test_an_unknown_scheme_is_refused_naming_the_known_ones() -> None:
    with pytest.raises(StoreError) as caught:
        open_store("gs://bucket/models")
    assert caught.value.field == "uri"
    for scheme in STORE_FACTORIES:
        assert f"{scheme}://" in caught.value.message


def test_s3_options_reach_the_store_and_their_defaults_are_the_stores(
    aws_credentials: None,
) -> None:
    default = open_store("s3://models")
    tuned = open_store("s3://models", connect_timeout=1.5, read_timeout=7.0, max_attempts=1)
    assert isinstance(default, S3ModelStore)
    assert isinstance(tuned, S3ModelStore)
    configs = [store._client.meta.config for store in (default, tuned)]
    assert [(c.connect_timeout, c.read_timeout, c.retries) for c in configs] == [
        (
            DEFAULT_CONNECT_TIMEOUT,
            DEFAULT_READ_TIMEOUT,
            {"total_max_attempts": DEFAULT_MAX_ATTEMPTS, "mode": "standard"},
        ),
        (1.5, 7.0, {"total_max_attempts": 1, "mode": "standard"}),
    ]
