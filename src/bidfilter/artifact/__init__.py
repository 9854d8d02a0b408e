"""Versioned model artifacts (a directory described by its manifest) and the stores that hold them.

``S3ModelStore`` lives in ``bidfilter.artifact.s3_store`` and is not re-exported here, so that
importing this package (and using a local store) does not import boto3; ``open_store``
(``bidfilter.artifact.stores``) picks the right store from a URI's scheme.
"""

from bidfilter.artifact.errors import ArtifactError, StoreError
from bidfilter.artifact.local_store import LocalModelStore
from bidfilter.artifact.manifest import (
    MANIFEST_NAME,
    FileEntry,
    Manifest,
    check_version_id,
    is_version_id,
    library_versions,
    new_version_id,
    read_manifest,
    verify,
    write_manifest,
)
from bidfilter.artifact.store import ModelStore
from bidfilter.artifact.stores import open_store

__all__ = [
    "MANIFEST_NAME",
    "ArtifactError",
    "FileEntry",
    "LocalModelStore",
    "Manifest",
    "ModelStore",
    "StoreError",
    "check_version_id",
    "is_version_id",
    "library_versions",
    "new_version_id",
    "open_store",
    "read_manifest",
    "verify",
    "write_manifest",
]
