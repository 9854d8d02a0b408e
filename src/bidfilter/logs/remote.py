"""Reading a log directory kept in S3 (where ``serve --outcome-log s3://...`` writes): the newest
date partitions, downloaded into a local directory that every log reader takes as it is."""

from __future__ import annotations

from pathlib import Path

from bidfilter.logs.schema import LogFormatError


def is_remote(logs: str) -> bool:
    return logs.startswith("s3://")


def download_latest_partitions(
    uri: str, days: int, into: Path, *, endpoint_url: str | None = None
) -> Path:
    """The Parquet files of the newest ``days`` ``date=YYYY-MM-DD`` partitions under ``uri``
    (``s3://BUCKET/PREFIX``), copied into ``into`` with the same layout. Raises
    ``LogFormatError`` (field ``logs``) when there is no partition there."""
    from botocore.exceptions import BotoCoreError, ClientError

    from bidfilter.artifact.s3_store import s3_client

    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    base = f"{prefix.strip('/')}/" if prefix.strip("/") else ""
    client = s3_client(endpoint_url=endpoint_url)
    by_partition: dict[str, list[str]] = {}
    try:
        pages = client.get_paginator("list_objects_v2").paginate(
            Bucket=bucket, Prefix=f"{base}date="
        )
        for page in pages:
            for entry in page.get("Contents", []):
                key = entry["Key"]
                partition, _, name = key[len(base) :].partition("/")
                if name.endswith(".parquet") and "/" not in name:
                    by_partition.setdefault(partition, []).append(key)
        chosen = sorted(by_partition)[-days:]
        if not chosen:
            raise LogFormatError("logs", f"no date=YYYY-MM-DD partitions of Parquet under {uri}")
        for partition in chosen:
            folder = into / partition
            folder.mkdir(parents=True, exist_ok=True)
            for key in by_partition[partition]:
                client.download_file(bucket, key, str(folder / key.rsplit("/", 1)[1]))
    except (BotoCoreError, ClientError) as error:
        raise LogFormatError("logs", f"{uri}: {error}") from error
    return into
