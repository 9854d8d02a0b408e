"""The two ways handling a model artifact fails, each naming what was wrong.

``ArtifactError`` is about the artifact itself (a manifest that does not parse, a file whose
checksum does not match, a path that escapes its directory); ``StoreError`` is about reaching it
(the store is unreachable, the credentials are refused, the version does not exist). Callers map
them once, by type, never by matching their text.
"""

from __future__ import annotations


class ArtifactError(Exception):
    """A model version is malformed or does not match its manifest; ``field`` names the culprit.

    ``field`` is a manifest field (``"version"``, ``"files"``) or, for checksum and listing
    problems, the file's path relative to the version directory (``"model.ubj"``).
    """

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class StoreError(Exception):
    """A model store cannot do what was asked; ``field`` names the setting or input at fault.

    Typical fields: ``"endpoint_url"`` (unreachable), ``"credentials"`` (missing or refused),
    ``"bucket"``, ``"uri"``, ``"version"`` (unknown or already published), ``"LATEST"``.
    """

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message
